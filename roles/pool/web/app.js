// hashpool dashboard: the pool page (/) and the miner page (/miner/{pubkey}) in one script.
// Plain browser JavaScript, no build step. Reads the pool's JSON API (/api/v1/...) every 5 s.
//
// Every string that comes from the API goes into the page through textContent or attributes set
// by DOM methods, never through innerHTML: worker names are chosen by miners.
'use strict';

(() => {
  const REFRESH_MS = 5000;
  const DAY = 86400;
  const BLOCKS_SHOWN = 10;
  const PUBKEY_RE = /^0[23][0-9a-fA-F]{64}$/;

  const $ = (id) => document.getElementById(id);

  /** Creates an element with optional class and text. */
  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function setText(id, text) {
    const e = $(id);
    if (e) e.textContent = text;
  }

  // ------------------------------------------------------------------ formatting

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  /** Scales v by powers of 1000 onto the given suffixes, with 3 significant digits. */
  function scale1000(v, suffixes) {
    if (!isNum(v)) return '—';
    if (v === 0) return `0${suffixes[0]}`;
    let i = 0;
    let x = Math.abs(v);
    while (x >= 999.5 && i < suffixes.length - 1) { x /= 1000; i += 1; }
    const digits = x >= 99.95 ? 0 : x >= 9.995 ? 1 : 2;
    return `${v < 0 ? '-' : ''}${x.toFixed(digits)}${suffixes[i]}`;
  }

  const HASHRATE_UNITS = [' H/s', ' kH/s', ' MH/s', ' GH/s', ' TH/s', ' PH/s', ' EH/s', ' ZH/s'];
  const fmtHashrate = (hs) => scale1000(hs, HASHRATE_UNITS);
  const fmtSI = (v) => scale1000(v, ['', ' k', ' M', ' G', ' T', ' P', ' E', ' Z']);

  function fmtInt(n) {
    return isNum(n) ? Math.round(n).toLocaleString('en-US') : '—';
  }

  /** Difficulties range from 4.6e-10 (regtest network) to 1e14 (mainnet). */
  function fmtDifficulty(d) {
    if (!isNum(d)) return '—';
    if (d === 0) return '0';
    if (d >= 1000) return scale1000(d, ['', ' k', ' M', ' G', ' T', ' P', ' E']);
    if (d >= 0.01) return String(Number(d.toPrecision(4)));
    return d.toExponential(2);
  }

  /** Seconds as "45 s", "3 min 20 s", "4 h 12 min", "2 d 5 h", "31.7 years". */
  function fmtDuration(sec) {
    if (!isNum(sec)) return '—';
    const s = Math.max(0, sec);
    if (s < 1) return '< 1 s';
    if (s < 60) return `${Math.round(s)} s`;
    const two = (a, ua, b, ub) => (b ? `${a} ${ua} ${b} ${ub}` : `${a} ${ua}`);
    if (s < 3600) return two(Math.floor(s / 60), 'min', Math.floor(s % 60), 's');
    if (s < DAY) return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
    if (s < 365 * DAY) return two(Math.floor(s / DAY), 'd', Math.floor((s % DAY) / 3600), 'h');
    const years = s / (365.25 * DAY);
    return years < 1e6 ? `${Number(years.toPrecision(3)).toLocaleString('en-US')} years`
      : `${years.toExponential(2)} years`;
  }

  // Times from the API are the server's unix seconds. "x ago" is computed against the server's
  // clock (estimated from /api/v1/pool's `now`), so a wrong clock on the viewer's machine does not
  // show shares from the future.
  let clockOffset = 0; // server seconds minus local seconds
  const serverNow = () => Date.now() / 1000 + clockOffset;

  function fmtAgo(t) {
    if (!isNum(t)) return 'never';
    const d = serverNow() - t;
    return d < 2 ? 'just now' : `${fmtDuration(d)} ago`;
  }

  function shortHash(h) {
    return typeof h === 'string' && h.length > 24 ? `${h.slice(0, 12)}…${h.slice(-8)}` : String(h ?? '');
  }

  // ------------------------------------------------------------------ API access

  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail || code || `HTTP ${status}`);
      this.status = status; // 0 when the server could not be reached
      this.code = code;
      this.detail = detail;
    }
  }

  async function getJSON(path) {
    let res;
    try {
      res = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    } catch (e) {
      throw new ApiError(0, 'unreachable', 'pool unreachable');
    }
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON: handled below */ }
    if (!res.ok) {
      throw new ApiError(res.status, body && body.error, (body && body.detail) || `HTTP ${res.status} ${res.statusText}`);
    }
    if (body === null || typeof body !== 'object') throw new ApiError(res.status, 'bad-json', `${path}: not JSON`);
    return body;
  }

  // ------------------------------------------------------------------ "updated Ns ago" indicator

  const status = { lastOk: null, error: null };

  function markOk() { status.lastOk = Date.now(); status.error = null; renderStatus(); }
  function markError(msg) { status.error = msg; renderStatus(); }

  function renderStatus() {
    const box = $('status');
    const age = status.lastOk === null ? null : Math.round((Date.now() - status.lastOk) / 1000);
    let text;
    let cls;
    if (status.error) {
      cls = 'error';
      text = `error: ${status.error}${age === null ? '' : ` · data from ${age} s ago`}`;
    } else if (age === null) {
      cls = '';
      text = 'loading…';
    } else {
      // Three missed refreshes in a row without an error (e.g. a hung request) count as stale.
      cls = age > (3 * REFRESH_MS) / 1000 ? 'stale' : 'ok';
      text = `updated ${age} s ago`;
    }
    box.className = `status ${cls}`;
    setText('status-text', text);
  }

  /** Runs task now and then REFRESH_MS after each run ends (so slow requests never pile up).
   *  The task returns false to stop. */
  function every(task) {
    const run = async () => {
      let again = true;
      try {
        again = (await task()) !== false;
      } catch (e) {
        // A bug in rendering must not stop the refresh; show it instead.
        markError(e && e.message ? e.message : String(e));
        console.warn('dashboard refresh failed', e);
      }
      if (again) setTimeout(run, REFRESH_MS);
    };
    run();
  }

  // ------------------------------------------------------------------ charts (uPlot)

  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const seriesColor = (i) => cssVar(`--chart-${(i % 6) + 1}`) || '#d9480f';

  /**
   * Turns API hashrate series into uPlot's columnar data over the last 24 h.
   * The API leaves out buckets with no work; those are zeros, so they are filled in on the
   * buckets' grid. The current (unfinished) bucket is only shown once it has work, so the line
   * does not drop to zero at the right edge between shares.
   * @param {Array<Array<{time:number, hashrate:number}>>} lists one list per series
   */
  function toColumns(lists, bucketSeconds, now) {
    const b = isNum(bucketSeconds) && bucketSeconds > 0 ? bucketSeconds : 600;
    const all = lists.flat().filter((p) => p && isNum(p.time));
    // Align the grid to the server's bucket times (whatever their phase).
    const phase = all.length ? ((all[0].time % b) + b) % b : 0;
    const lastComplete = Math.floor((now - phase) / b) * b + phase - b;
    const end = Math.max(lastComplete, ...all.map((p) => p.time));
    const times = new Set();
    for (let t = end - DAY + b; t <= end; t += b) times.add(t);
    for (const p of all) times.add(p.time);
    const xs = [...times].sort((x, y) => x - y);
    const columns = [xs];
    for (const list of lists) {
      const byTime = new Map(list.filter((p) => p && isNum(p.time)).map((p) => [p.time, p.hashrate]));
      columns.push(xs.map((t) => (isNum(byTime.get(t)) ? byTime.get(t) : 0)));
    }
    return columns;
  }

  class HashrateChart {
    constructor(container) {
      this.container = container;
      this.plot = null;
      this.labels = null; // series labels the current plot was built with
      this.width = 0;
      // Follow the container's width (responsive layout). Only width changes matter; the
      // plot's own height never feeds back into this.
      new ResizeObserver(() => {
        const w = this.container.clientWidth;
        if (this.plot && w > 0 && w !== this.width) {
          this.width = w;
          this.plot.setSize({ width: w, height: this.height() });
        }
      }).observe(container);
    }

    height() { return window.innerWidth < 600 ? 200 : 260; }

    /** @param {Array<{label:string, points:Array}>} series */
    update(series, bucketSeconds) {
      const data = toColumns(series.map((s) => s.points || []), bucketSeconds, serverNow());
      const labels = series.map((s) => s.label);
      if (this.plot && JSON.stringify(labels) === JSON.stringify(this.labels)) {
        this.plot.setData(data);
      } else {
        this.labels = labels;
        this.data = data;
        this.build();
      }
    }

    /** (Re)creates the plot: on first data, when the series change, or when the colours do. */
    build() {
      if (!this.labels || typeof uPlot === 'undefined') return;
      if (this.plot) this.plot.destroy();
      this.container.replaceChildren();
      const axisColor = cssVar('--chart-axis');
      const gridColor = cssVar('--chart-grid');
      const axis = { stroke: axisColor, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor, width: 1 } };
      const single = this.labels.length === 1;
      this.width = this.container.clientWidth || 600;
      this.plot = new uPlot({
        width: this.width,
        height: this.height(),
        cursor: { drag: { x: false, y: false } },
        scales: {
          // Hashrate starts at zero; an all-zero series still gets a visible axis.
          y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        axes: [
          axis,
          { ...axis, size: 78, values: (u, splits) => splits.map((v) => fmtHashrate(v)) },
        ],
        series: [
          { value: (u, t) => (t == null ? '—' : new Date(t * 1000).toLocaleString()) },
          ...this.labels.map((label, i) => ({
            label,
            stroke: seriesColor(i),
            width: i === 0 ? 2 : 1.5,
            // Fill only the single-series chart: stacked-looking fills would mislead.
            fill: single ? `${seriesColor(i)}22` : undefined,
            points: { show: false },
            value: (u, v) => (v == null ? '—' : fmtHashrate(v)),
          })),
        ],
      }, this.data, this.container);
    }
  }

  const charts = [];
  // Charts are drawn on a canvas with colours read from CSS: redraw them when the scheme flips.
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
    for (const c of charts) { if (c.plot) { c.data = c.plot.data; c.build(); } }
  });

  function chartIn(id) {
    const c = new HashrateChart($(id));
    charts.push(c);
    return c;
  }

  // ------------------------------------------------------------------ shared pool data

  let pool = null; // the last /api/v1/pool answer

  function setClock(p) {
    if (p && isNum(p.now)) clockOffset = p.now - Date.now() / 1000;
  }

  const unit = () => (pool && typeof pool.unit === 'string' ? pool.unit : 'hash');

  /**
   * The pool reports the addresses it listens on. 0.0.0.0 / [::] mean "every interface", which a
   * miner cannot connect to: show the host this page was loaded from instead.
   */
  function connectable(addr) {
    if (typeof addr !== 'string') return null;
    return addr.replace(/^((?:[a-z][a-z0-9+.-]*:\/\/)?)(0\.0\.0\.0|\[::\]|::)(?=:\d+)/i, `$1${location.hostname}`);
  }

  // ------------------------------------------------------------------ pool page

  function renderPool(p) {
    const hr = p.hashrate || {};
    setText('pool-hashrate-m10', fmtHashrate(hr.m10));
    setText('pool-hashrate-h1', fmtHashrate(hr.h1));
    setText('pool-hashrate-h24', fmtHashrate(hr.h24));

    setText('pool-miners', fmtInt(p.miners));
    setText('pool-workers', fmtInt(p.workers));
    setText('pool-channels', fmtInt(p.channels));

    const shares = p.shares || {};
    const rejected = Object.entries(shares.rejected || {}).filter(([, n]) => isNum(n) && n > 0);
    rejected.sort((a, b) => b[1] - a[1]);
    setText('pool-shares-accepted', fmtInt(shares.accepted));
    setText('pool-shares-rejected', fmtInt(rejected.reduce((sum, [, n]) => sum + n, 0)));
    $('pool-rejected-reasons').replaceChildren(...rejected.map(([reason, n]) => {
      const li = el('li');
      li.append(el('span', null, reason), el('span', 'n', fmtInt(n)));
      return li;
    }));

    // work_credited is counted in `hash` (2^12 expected hashes each).
    setText('pool-work-credited', `${fmtInt(p.work_credited)} hash`);
    setText('pool-work-hashes', isNum(p.work_credited) ? `≈ ${fmtSI(p.work_credited * 4096)} hashes proven` : '');

    const net = p.network || {};
    setText('net-height', fmtInt(net.height));
    setText('net-difficulty', fmtDifficulty(net.difficulty));
    setText('net-expected', isNum(net.expected_seconds_to_block) ? fmtDuration(net.expected_seconds_to_block) : 'unknown (no hashrate yet)');

    renderMint(p);

    const redisUp = p.redis && p.redis.up === true;
    const redis = $('redis-up');
    redis.textContent = redisUp ? 'up' : 'down';
    redis.className = `big ${redisUp ? 'good' : 'bad'}`;
    setText('pool-policy', p.release_policy || '—');
    setText('pool-unit', p.unit || '—');
    setText('pool-uptime', isNum(p.started_at) ? fmtDuration(p.now - p.started_at) : '—');

    const c = p.connect || {};
    setText('connect-sv2', connectable(c.sv2_address) || '—');
    setText('connect-authority', c.authority_public_key || '—');
    const sv1 = connectable(c.sv1_url);
    setText('connect-sv1', sv1 || 'not offered by this pool');
    $('connect-sv1').classList.toggle('none', !sv1);
    document.querySelector('button.copy[data-copy="connect-sv1"]').hidden = !sv1;

    const blocks = Array.isArray(p.blocks) ? p.blocks : [];
    // The API keeps the latest 50; on a test network that is a minute of blocks, so the page
    // shows the newest few and says how many it left out.
    const shown = blocks.slice(0, BLOCKS_SHOWN);
    setText('blocks-more', blocks.length > shown.length
      ? `the latest ${shown.length} of ${blocks.length} kept` : '');
    $('blocks-table').tBodies[0].replaceChildren(...shown.map((b) => {
      const tr = el('tr');
      const hash = el('code', null, shortHash(b.hash));
      hash.title = String(b.hash ?? '');
      const hashTd = el('td');
      hashTd.append(hash);
      const when = el('td', null, fmtAgo(b.time));
      if (isNum(b.time)) when.title = new Date(b.time * 1000).toLocaleString();
      tr.append(el('td', 'num', fmtInt(b.height)), hashTd, when);
      return tr;
    }));
    $('blocks-table').hidden = blocks.length === 0;
    $('blocks-empty').hidden = blocks.length !== 0;
  }

  function renderMint(p) {
    const m = p.mint || {};
    const q = p.quotes || {};
    const state = $('mint-state');
    // consumers/pending/lag are null when the pool cannot tell (e.g. Redis is down).
    let text;
    let cls;
    if (!isNum(m.consumers)) { text = 'unknown'; cls = 'warn'; }
    else if (m.consumers === 0) { text = 'no consumer'; cls = 'bad'; }
    else if (m.lag === 0 && m.pending === 0) { text = 'caught up'; cls = 'good'; }
    else if (isNum(m.lag) || isNum(m.pending)) { text = 'catching up'; cls = 'warn'; }
    else { text = 'running'; cls = ''; }
    state.textContent = text;
    state.className = `big ${cls}`;
    setText('mint-lag', isNum(m.lag) ? fmtInt(m.lag) : 'unknown');
    setText('mint-pending', isNum(m.pending) ? fmtInt(m.pending) : 'unknown');
    setText('mint-consumers', isNum(m.consumers) ? fmtInt(m.consumers) : 'unknown');
    setText('quotes-published', fmtInt(q.published));
    setText('quotes-buffered', fmtInt(q.buffered));
    const dropped = $('quotes-dropped');
    dropped.textContent = fmtInt(q.dropped);
    dropped.className = isNum(q.dropped) && q.dropped > 0 ? 'bad' : '';
  }

  function startPoolPage() {
    $('pool-view').hidden = false;
    const chart = chartIn('pool-chart');

    every(async () => {
      const [p, h] = await Promise.allSettled([getJSON('/api/v1/pool'), getJSON('/api/v1/pool/hashrate')]);
      if (p.status === 'fulfilled') {
        pool = p.value;
        setClock(pool);
        renderPool(pool);
      }
      if (h.status === 'fulfilled') {
        chart.update([{ label: 'pool', points: h.value.points || [] }], h.value.bucket_seconds);
      }
      const failed = [p, h].find((r) => r.status === 'rejected');
      if (failed) markError(failed.reason.message); else markOk();
    });

    setupLookup();
    setupCopyButtons();
  }

  /** "Look up a miner": validates the key here so a typo gets an answer without a round trip. */
  function setupLookup() {
    const form = $('pubkey-form');
    const input = $('pubkey-input');
    const error = $('pubkey-error');
    const showError = (msg) => {
      error.textContent = msg;
      error.hidden = !msg;
      if (msg) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
    };
    input.addEventListener('input', () => showError(''));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      let key = input.value.trim();
      // A stratum username (`<pubkey>.<worker>`) pasted as is: the key is the part before the dot.
      const dot = key.indexOf('.');
      if (dot >= 0) key = key.slice(0, dot);
      if (!PUBKEY_RE.test(key)) {
        let why;
        if (key === '') why = 'Enter a public key.';
        else if (!/^[0-9a-fA-F]*$/.test(key)) why = 'A public key is hexadecimal: 0-9 and a-f only.';
        else if (key.length !== 66) why = `A public key is 66 hex characters; this has ${key.length}.`;
        else why = 'A compressed public key starts with 02 or 03.';
        showError(why);
        input.focus();
        return;
      }
      showError('');
      location.assign(`/miner/${key.toLowerCase()}`);
    });
  }

  function setupCopyButtons() {
    for (const button of document.querySelectorAll('button.copy')) {
      button.addEventListener('click', async () => {
        const target = $(button.dataset.copy);
        const text = target.textContent;
        try {
          // navigator.clipboard exists only in secure contexts (https, localhost).
          await navigator.clipboard.writeText(text);
          button.textContent = 'copied';
        } catch (_) {
          // Select the text so Ctrl-C copies it.
          const range = document.createRange();
          range.selectNodeContents(target);
          const sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          button.textContent = 'selected';
        }
        setTimeout(() => { button.textContent = 'copy'; }, 1500);
      });
    }
  }

  // ------------------------------------------------------------------ miner page

  /**
   * A quote tally: its work in `hash` (under payout epochs the mint pays a released epoch in
   * sats, pro-rata to this work, so the pool cannot show a sat amount per key).
   */
  function fmtTally(t) {
    if (t && isNum(t.work)) return `${fmtInt(t.work)} hash`;
    return '—';
  }

  function renderMiner(m) {
    const hr = m.hashrate || {};
    setText('miner-hashrate-m10', fmtHashrate(hr.m10));
    setText('miner-hashrate-h1', fmtHashrate(hr.h1));
    setText('miner-hashrate-h24', fmtHashrate(hr.h24));

    // Plain integer, no thousands separators: the browser test parses it.
    setText('miner-shares', isNum(m.shares) ? String(Math.round(m.shares)) : '—');
    setText('miner-last-share', fmtAgo(m.last_share));

    // Work is counted in `hash` whatever the payout unit (credited_hashes = work_credited * 2^12).
    setText('miner-work-credited', `${fmtInt(m.work_credited)} hash`);
    setText('miner-work-hashes', isNum(m.credited_hashes) ? `≈ ${fmtSI(m.credited_hashes)} hashes credited` : '');
    setText('miner-best', fmtDifficulty(m.best_share_difficulty));

    const q = m.quotes || {};
    const released = q.released || {};
    const pending = q.pending || {};
    setText('miner-released-amount', fmtTally(released));
    setText('miner-released-count', fmtInt(released.count));
    setText('miner-pending-amount', fmtTally(pending));
    setText('miner-pending-count', fmtInt(pending.count));
    setText('miner-pending-hint', pool && pool.release_policy === 'ehash'
      ? 'payout-epoch pools only: this pool releases each share at once'
      : 'waiting for the next payout');

    const workers = Array.isArray(m.workers) ? m.workers.slice() : [];
    // Connected first, then by name.
    workers.sort((a, b) => (Number(!!b.connected) - Number(!!a.connected)) || String(a.name).localeCompare(String(b.name)));
    const now = serverNow();
    $('workers-table').tBodies[0].replaceChildren(...workers.map((w) => {
      const tr = el('tr');
      tr.dataset.worker = String(w.name ?? '');
      const name = el('td', w.name ? null : 'muted', w.name ? w.name : '(default)');
      const statusTd = el('td');
      statusTd.append(el('span', `pill ${w.connected ? 'on' : 'off'}`, w.connected ? 'connected' : 'offline'));
      const uptime = w.connected && isNum(w.connected_since) ? fmtDuration(now - w.connected_since) : '—';
      tr.append(
        name,
        statusTd,
        el('td', 'num', fmtHashrate(w.hashrate_m10)),
        el('td', 'num', fmtInt(w.shares)),
        el('td', 'num', fmtDifficulty(w.best_share_difficulty)),
        el('td', null, fmtAgo(w.last_share)),
        el('td', null, uptime),
      );
      return tr;
    }));
    $('workers-empty').hidden = workers.length !== 0;

    // Payout epochs (payout-epoch pools only; absent or empty otherwise).
    const epochs = Array.isArray(m.epochs) ? m.epochs.slice().reverse() : [];
    $('epochs-panel').hidden = epochs.length === 0;
    $('epochs-table').tBodies[0].replaceChildren(...epochs.map((e) => {
      const tr = el('tr');
      tr.append(
        el('td', 'num', fmtInt(e.epoch)),
        el('td', null, e.state ?? '—'),
        el('td', 'num', fmtInt(e.quotes)),
        el('td', 'num', `${fmtInt(e.work)} hash`),
        el('td', 'num', isNum(e.payout) ? `${fmtInt(e.payout)} sat` : '—'),
        // The mint splits the payout per quote, largest remainder: within a sat per quote.
        el('td', 'num', isNum(e.estimated_sats) ? `≈ ${fmtInt(e.estimated_sats)} sat` : '—'),
      );
      return tr;
    }));
  }

  function minerChartSeries(h) {
    const series = [{ label: 'all workers', points: h.points || [] }];
    const workers = h.workers && typeof h.workers === 'object' ? Object.keys(h.workers).sort() : [];
    // One worker only: its line would hide under the total.
    if (workers.length > 1) {
      for (const name of workers) series.push({ label: name || '(default)', points: h.workers[name] || [] });
    }
    return series;
  }

  function startMinerPage(rawKey) {
    $('miner-view').hidden = false;
    setText('miner-key', rawKey);
    document.title = `hashpool · miner ${rawKey.slice(0, 10)}…`;
    const notice = $('miner-notice');
    const body = $('miner-body');
    const path = `/api/v1/miners/${encodeURIComponent(rawKey)}`;
    let chart = null;

    const showNotice = (text, isError) => {
      notice.textContent = text;
      notice.className = isError ? 'notice error' : 'notice';
      notice.hidden = false;
      body.hidden = true;
    };

    every(async () => {
      // The pool overview gives the unit, the release policy and the server clock.
      const [p, m] = await Promise.allSettled([getJSON('/api/v1/pool'), getJSON(path)]);
      if (p.status === 'fulfilled') { pool = p.value; setClock(pool); }

      if (m.status === 'rejected') {
        const err = m.reason;
        if (err.status === 404) {
          // Not an error: the key is valid but has no accepted share yet. Keep polling.
          showNotice('No shares from this key yet. This page updates itself as soon as the pool accepts one.', false);
          if (p.status === 'rejected') markError(p.reason.message); else markOk();
          return true;
        }
        if (err.status === 400) {
          // The key itself is wrong: polling again cannot help.
          showNotice(`Not a valid public key: ${err.detail || err.message}`, true);
          markError('invalid public key; not refreshing');
          return false;
        }
        markError(err.message);
        return true;
      }

      notice.hidden = true;
      body.hidden = false;
      renderMiner(m.value);

      // Asked only once the miner is known, so an unknown key costs one 404 per refresh, not two.
      let chartError = null;
      try {
        const h = await getJSON(`${path}/hashrate`);
        if (!chart) chart = chartIn('miner-chart');
        chart.update(minerChartSeries(h), h.bucket_seconds);
      } catch (e) {
        chartError = e;
      }
      const failed = p.status === 'rejected' ? p.reason : chartError;
      if (failed) markError(failed.message); else markOk();
      return true;
    });
  }

  // ------------------------------------------------------------------ start

  function start() {
    setInterval(renderStatus, 1000);
    const match = location.pathname.match(/^\/miner\/([^/]+)\/?$/);
    if (match) {
      let key;
      try { key = decodeURIComponent(match[1]); } catch (_) { key = match[1]; }
      startMinerPage(key);
    } else {
      startPoolPage();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
