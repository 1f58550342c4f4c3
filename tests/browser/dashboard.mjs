#!/usr/bin/env node
// Browser test of the pool's dashboard, in Debian's Chromium driven by playwright-core.
//
//   node tests/browser/dashboard.mjs --url http://127.0.0.1:9091 --pubkey <66 hex> --worker <name>
//        [--screenshots DIR]
//
// 1. The pool page shows at least one miner, draws the hashrate chart and shows the Sv2 address.
// 2. "Look up a miner" with --pubkey leads to /miner/<pubkey>, whose workers table gets a row
//    for --worker, and whose share count goes up by itself (the page refreshes every 5 s while
//    a real miner mines).
// 3. No console error and no uncaught page error happened meanwhile.
// Exit 0 on success; otherwise one message naming the step and what the page showed, exit 1.
// Chromium: $CHROMIUM or /usr/bin/chromium (bin/setup-browser installs it). Nothing is downloaded.

import { parseArgs } from 'node:util';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const WAIT_MS = 90_000;

const usage = 'usage: node tests/browser/dashboard.mjs --url http://127.0.0.1:PORT --pubkey <66hex> --worker <name> [--screenshots DIR]';
let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: 'string' },
      pubkey: { type: 'string' },
      worker: { type: 'string' },
      screenshots: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (e) {
  console.error(`dashboard: ${e.message}\n${usage}`);
  process.exit(2);
}
if (opts.help) { console.log(usage); process.exit(0); }
if (!opts.url || !opts.pubkey || opts.worker === undefined) {
  console.error(`dashboard: --url, --pubkey and --worker are required\n${usage}`);
  process.exit(2);
}
const base = opts.url.replace(/\/+$/, '');
const pubkey = opts.pubkey;
const worker = opts.worker;
const shotDir = opts.screenshots;
if (shotDir) mkdirSync(shotDir, { recursive: true });

const log = (msg) => console.log(`dashboard: ${msg}`);

/** A failed step: its message says which step and what the page showed. */
class StepFailure extends Error {}

/** Runs fn; on failure, rethrows with the step's name and describe()'s view of the page. */
async function step(name, fn, describe) {
  log(`${name} ...`);
  try {
    await fn();
  } catch (e) {
    let seen = '';
    try { seen = await describe(); } catch (d) { seen = `(could not read the page: ${d.message})`; }
    const why = e instanceof StepFailure ? e.message : (e.message || String(e)).split('\n')[0];
    throw new StepFailure(`step "${name}" failed: ${why}\n  seen: ${seen}`);
  }
  log(`${name}: ok`);
}

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
let browser;
try {
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
} catch (e) {
  console.error(`dashboard: FAIL: cannot start Chromium at ${executablePath} (set CHROMIUM, or run bin/setup-browser): ${e.message.split('\n')[0]}`);
  process.exit(1);
}

const problems = []; // console errors and page errors, in order
let failure = null;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();

  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const where = msg.location() && msg.location().url;
    // The miner page asks /api/v1/miners/{key} and gets 404 "unknown-miner" until the key's
    // first share is accepted; the page shows that as "No shares from this key yet", but
    // Chromium also logs every 4xx fetch as "Failed to load resource". Only that one is expected.
    if (/^Failed to load resource: the server responded with a status of 404/.test(msg.text())
        && where && new URL(where, base).pathname.startsWith('/api/v1/miners/')) return;
    problems.push(`console error: ${msg.text()}${where ? ` (${where})` : ''}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));

  // What the page shows, for failure messages.
  const text = (sel) => page.locator(sel).first().textContent({ timeout: 1000 }).then((t) => (t ?? '').trim()).catch(() => '(absent)');
  const seenPool = async () => `url ${page.url()}; miners "${await text('#pool-miners')}"; `
    + `chart canvases ${await page.locator('#pool-chart .uplot canvas').count()}; `
    + `sv2 address "${await text('#connect-sv2')}"; status "${await text('#status-text')}"`;
  const seenMiner = async () => `url ${page.url()}; notice "${await text('#miner-notice')}"; `
    + `shares "${await text('#miner-shares')}"; workers [${(await page.locator('#workers-table tbody tr')
      .evaluateAll((rows) => rows.map((r) => JSON.stringify(r.dataset.worker)))).join(', ')}]; `
    + `status "${await text('#status-text')}"`;

  // ---- 1. the pool page
  await step('pool page', async () => {
    const res = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
    if (!res || !res.ok()) throw new StepFailure(`GET / answered ${res ? res.status() : 'nothing'}`);
    await page.waitForFunction(() => {
      const miners = parseInt((document.getElementById('pool-miners')?.textContent || '').replace(/,/g, ''), 10);
      return miners >= 1 && document.querySelector('#pool-chart .uplot canvas') !== null;
    }, null, { timeout: WAIT_MS, polling: 250 }).catch(() => {
      throw new StepFailure('no miner in the overview, or no hashrate chart drawn, within 90 s');
    });
    const sv2 = await text('#connect-sv2');
    if (!/^\S+:\d+$/.test(sv2)) throw new StepFailure(`the Connect box shows no Sv2 address (host:port): "${sv2}"`);
    if (shotDir) await page.screenshot({ path: path.join(shotDir, 'pool.png'), fullPage: true });
  }, seenPool);

  // ---- 2. look up the miner, see its worker, see its shares grow
  const minerPath = `/miner/${pubkey.toLowerCase()}`;
  await step(`look up ${pubkey}`, async () => {
    await page.fill('#pubkey-input', pubkey);
    await Promise.all([
      page.waitForURL((u) => u.pathname === minerPath, { timeout: 10_000, waitUntil: 'domcontentloaded' }),
      page.click('#pubkey-go'),
    ]).catch(async () => {
      const err = await text('#pubkey-error');
      throw new StepFailure(`no navigation to ${minerPath}${err && err !== '(absent)' ? `; the form says "${err}"` : ''}`);
    });
  }, seenPool);

  let n0;
  await step(`worker "${worker}" in the workers table`, async () => {
    await page.waitForFunction((name) => {
      const rows = document.querySelectorAll('#workers-table tr[data-worker]');
      return [...rows].some((r) => r.dataset.worker === name)
        && /^\d+$/.test((document.getElementById('miner-shares')?.textContent || '').trim());
    }, worker, { timeout: WAIT_MS, polling: 250 }).catch(() => {
      throw new StepFailure(`no row tr[data-worker="${worker}"] in #workers-table within 90 s`);
    });
    n0 = parseInt(await text('#miner-shares'), 10);
    log(`shares now ${n0}`);
  }, seenMiner);

  await step('share count goes up', async () => {
    await page.waitForFunction((before) => {
      const n = parseInt((document.getElementById('miner-shares')?.textContent || '').trim(), 10);
      return n > before;
    }, n0, { timeout: WAIT_MS, polling: 250 }).catch(() => {
      throw new StepFailure(`#miner-shares stayed at ${n0} for 90 s`);
    });
    log(`shares now ${await text('#miner-shares')}`);
    if (shotDir) await page.screenshot({ path: path.join(shotDir, 'miner.png'), fullPage: true });
  }, seenMiner);

  // ---- 3. no errors on the way
  if (problems.length) {
    throw new StepFailure(`step "no console or page errors" failed: ${problems.length} error(s):\n  ${problems.join('\n  ')}`);
  }
  log('no console or page errors: ok');
} catch (e) {
  failure = e instanceof StepFailure ? e.message : `unexpected: ${e.stack || e}`;
} finally {
  await browser.close().catch(() => {});
}

if (failure) {
  console.error(`dashboard: FAIL: ${failure}`);
  if (problems.length) console.error(`dashboard: errors seen in the page:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
log(`PASS${shotDir ? ` (screenshots in ${shotDir})` : ''}`);
