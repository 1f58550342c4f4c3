//! Writes the seed corpora under `fuzz/seeds/<target>/` (`just fuzz-seeds`).
//!
//! - `sv2_frames`, `sv2_noise_responder`, `ehash_messages`: recorded from real traffic. The CPU
//!   mining device mines on the pool the `sv2_frames` target fuzzes, through a relay that keeps
//!   the raw bytes it sends (the handshake and ciphertext: the responder's seed); the pool keeps
//!   the plaintext frames (the frames seed: real shares, valid again when replayed) and what it
//!   published for them (the quote stream's seeds). The real translator's extended channel is
//!   recorded the same way, with a Sv1 session driving it.
//! - `mint_http`: the bodies the wallet sends for those quotes (signed lookup, NUT-20 mint,
//!   NUT-29 batch), built with cdk's request types as the wallet builds them, on the fuzzed mint's
//!   keyset.
//! - `sv1_lines`: a Bitaxe's session as AxeOS writes it (configure, subscribe, authorize,
//!   suggest_difficulty, submit). The stack has no Sv1 device of its own to record.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cdk::amount::{FeeAndAmounts, SplitTarget};
use cdk::nuts::{BatchMintRequest, MintRequest, PreMintSecrets, SecretKey};
use cdk::Amount;
use ehash::{lookup_message, QuoteLookupRequest};
use hashpool_fuzz::mint_http::{paid_quotes, MintHttpHarness, MINER_SECRETS, ROUTES};
use hashpool_mining_device::device::{run_device, DeviceConfig, DeviceStats};
use hashpool_pool::config::AuthorityConfig;
use hashpool_pool::fuzzing::record_miner;
use hashpool_translator::config::{TranslatorConfig, UpstreamConfig};
use hashpool_translator::Translator;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Shares the CPU miner has accepted before the recording stops.
const SHARES: u64 = 6;

fn main() -> anyhow::Result<()> {
    let seeds = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    // The mint harness runs its own runtime: build it before entering ours.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    eprintln!("record_seeds: starting the mint");
    let mint = MintHttpHarness::get();
    eprintln!("record_seeds: recording the CPU miner");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            record_sv2(&seeds).await?;
            record_translator(&seeds).await
        })?;
    write_mint_bodies(&seeds, mint)?;
    write_sv1_session(&seeds)?;
    Ok(())
}

async fn record_sv2(seeds: &Path) -> anyhow::Result<()> {
    let pool = TcpListener::bind("127.0.0.1:0").await?;
    let relay = TcpListener::bind("127.0.0.1:0").await?;
    let (pool_address, relay_address) = (pool.local_addr()?, relay.local_addr()?);
    let recording = tokio::spawn(async move {
        let (tcp, _) = pool.accept().await?;
        anyhow::Ok(record_miner(tcp).await?)
    });
    let raw = tokio::spawn(async move {
        let (miner, _) = relay.accept().await?;
        relay_keeping_what_the_miner_sends(miner, TcpStream::connect(pool_address).await?).await
    });

    let secret = SecretKey::from_slice(&MINER_SECRETS[0])?;
    let stats = Arc::new(DeviceStats::default());
    let (stop, stopped) = watch::channel(false);
    let device = tokio::spawn(run_device(
        DeviceConfig {
            pool_address: relay_address.to_string(),
            authority: Some(AuthorityConfig::default().public_key),
            identity: format!("{}.cpu", secret.public_key().to_hex()),
            threads: 1,
            // The easiest share target (2^12 hashes): a debug build finds shares at once.
            nominal_hashrate: 1.0,
        },
        stats.clone(),
        stopped,
    ));
    let mut waited = tokio::time::interval(Duration::from_millis(20));
    while stats.accepted.load(Ordering::Relaxed) < SHARES {
        anyhow::ensure!(!device.is_finished(), "the mining device stopped");
        waited.tick().await;
    }
    stop.send(true)?;
    device.await?.context("the mining device")?;

    let recording = recording.await??;
    let raw = raw.await??;
    write(
        seeds,
        "sv2_frames",
        "cpu-miner-standard-channel",
        &recording.frames,
    )?;
    write(seeds, "sv2_noise_responder", "cpu-miner-session", &raw)?;
    // Every share's messages have the same shape: the first of each kind is enough.
    for kind in ["create", "update"] {
        let message = recording
            .quote_messages
            .iter()
            .find(|message| message.kind() == kind)
            .with_context(|| format!("the pool published no {kind} message"))?;
        write(
            seeds,
            "ehash_messages",
            &format!("pool-{kind}"),
            message.to_json().as_bytes(),
        )?;
    }
    println!(
        "recorded {} bytes of frames, {} raw bytes, {} quote messages",
        recording.frames.len(),
        raw.len(),
        recording.quote_messages.len()
    );
    Ok(())
}

/// The real translator's extended channel, opened for a Sv1 session (configure, subscribe,
/// authorize) on the recording pool. Its shares are not recorded: the translator forwards only
/// shares that meet the target, and this session does not hash.
async fn record_translator(seeds: &Path) -> anyhow::Result<()> {
    let pool = TcpListener::bind("127.0.0.1:0").await?;
    let pool_address = pool.local_addr()?;
    let recording = tokio::spawn(async move {
        let (tcp, _) = pool.accept().await?;
        anyhow::Ok(record_miner(tcp).await?)
    });
    let logs = tempfile::tempdir()?;
    let translator = Translator::start(TranslatorConfig {
        listen_address: "127.0.0.1:0".parse()?,
        metrics_address: "127.0.0.1:0".parse()?,
        log_dir: logs.path().to_owned(),
        upstream: UpstreamConfig {
            address: pool_address.to_string(),
            ..UpstreamConfig::default()
        },
        ..TranslatorConfig::default()
    })
    .await?;

    let key = SecretKey::from_slice(&MINER_SECRETS[1])?
        .public_key()
        .to_hex();
    let user = format!("{key}.bitaxe");
    let (reader, mut writer) = TcpStream::connect(translator.sv1_address())
        .await?
        .into_split();
    let mut lines = BufReader::new(reader).lines();
    for line in [
        r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000"}]}"#.to_owned(),
        r#"{"id":2,"method":"mining.subscribe","params":["bitaxe/BM1366/v2.4.0"]}"#.to_owned(),
        format!(r#"{{"id":3,"method":"mining.authorize","params":["{user}","x"]}}"#),
    ] {
        writer.write_all(format!("{line}\n").as_bytes()).await?;
    }
    // Authorized, and the channel's first job relayed: the channel is open upstream.
    let (mut authorized, mut notified) = (false, false);
    while !(authorized && notified) {
        let line = lines.next_line().await?.context("the translator hung up")?;
        let message: serde_json::Value = serde_json::from_str(&line)?;
        authorized |= message["id"] == 3 && message["result"] == true;
        notified |= message["method"] == "mining.notify";
    }
    drop(writer);
    translator.shutdown().await;

    let recording = recording.await??;
    write(
        seeds,
        "sv2_frames",
        "translator-extended-channel",
        &recording.frames,
    )?;
    println!(
        "recorded {} bytes of the translator's frames",
        recording.frames.len()
    );
    Ok(())
}

/// Copies both ways until the miner hangs up; returns what the miner sent.
async fn relay_keeping_what_the_miner_sends(
    miner: TcpStream,
    pool: TcpStream,
) -> anyhow::Result<Vec<u8>> {
    let (mut miner_reader, mut miner_writer) = miner.into_split();
    let (mut pool_reader, mut pool_writer) = pool.into_split();
    let replies = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut pool_reader, &mut miner_writer).await;
    });
    let mut sent = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = miner_reader.read(&mut buffer).await.unwrap_or(0);
        if read == 0 {
            break;
        }
        sent.extend_from_slice(&buffer[..read]);
        if pool_writer.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = pool_writer.shutdown().await;
    replies.abort();
    Ok(sent)
}

/// A wallet's requests for the first miner's PAID quotes.
fn write_mint_bodies(seeds: &Path, mint: &MintHttpHarness) -> anyhow::Result<()> {
    let secret = SecretKey::from_slice(&MINER_SECRETS[0])?;
    let key = secret.public_key().to_hex();
    let quotes: Vec<_> = paid_quotes()
        .into_iter()
        .filter(|quote| quote.locking_pubkey.to_string() == key)
        .collect();
    let keyset = mint.hash_keyset();
    let amounts: FeeAndAmounts = (0, (0..64).map(|bit| 1u64 << bit).collect()).into();
    let outputs = |amount: u64| {
        PreMintSecrets::random(keyset, Amount::from(amount), &SplitTarget::None, &amounts)
            .map(|secrets| secrets.blinded_messages())
    };

    let mut batch = BatchMintRequest {
        quotes: quotes
            .iter()
            .map(|quote| quote.quote_id.to_string())
            .collect(),
        quote_amounts: Some(quotes.iter().map(|quote| quote.amount.into()).collect()),
        outputs: outputs(quotes.iter().map(|quote| quote.amount).sum())?,
        signatures: None,
    };
    let signatures = batch
        .quotes
        .iter()
        .map(|quote| batch.sign_quote(quote, &secret).map(Some))
        .collect::<Result<_, _>>()?;
    batch.signatures = Some(signatures);

    let mut single = MintRequest {
        quote: quotes[0].quote_id.to_string(),
        outputs: outputs(quotes[0].amount)?,
        signature: None,
    };
    single.sign(&secret)?;

    let timestamp = hashpool_service::unix_now();
    let lookup = QuoteLookupRequest {
        pubkey: key.clone(),
        timestamp,
        signature: secret
            .sign(lookup_message(&key.parse()?, timestamp).as_bytes())?
            .to_string(),
        after: None,
        limit: Some(2),
    };
    let check = serde_json::json!({ "quotes": batch.quotes });
    let checkstate = serde_json::json!({ "Ys": [secret.public_key().to_hex()] });

    let bodies = [
        ("/v1/mint/ehash/batch", "batch", serde_json::to_vec(&batch)?),
        ("/v1/mint/ehash", "mint", serde_json::to_vec(&single)?),
        ("/v1/ehash/quotes", "lookup", serde_json::to_vec(&lookup)?),
        (
            "/v1/mint/quote/ehash/check",
            "check",
            serde_json::to_vec(&check)?,
        ),
        (
            "/v1/checkstate",
            "checkstate",
            serde_json::to_vec(&checkstate)?,
        ),
    ];
    for (route, name, body) in bodies {
        let index = ROUTES
            .iter()
            .position(|known| *known == route)
            .context("a fuzzed route")?;
        let mut input = vec![index as u8];
        input.extend_from_slice(&body);
        write(seeds, "mint_http", name, &input)?;
    }
    Ok(())
}

/// A Bitaxe's session with the translator, one line per request.
fn write_sv1_session(seeds: &Path) -> anyhow::Result<()> {
    let key = SecretKey::from_slice(&MINER_SECRETS[1])?
        .public_key()
        .to_hex();
    let user = format!("{key}.bitaxe");
    let session = [
        r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff"}]}"#.to_owned(),
        r#"{"id":2,"method":"mining.subscribe","params":["bitaxe/BM1366/v2.4.0"]}"#.to_owned(),
        format!(r#"{{"id":3,"method":"mining.authorize","params":["{user}","x"]}}"#),
        r#"{"id":4,"method":"mining.suggest_difficulty","params":[1000]}"#.to_owned(),
        format!(
            r#"{{"id":5,"method":"mining.submit","params":["{user}","1","00000000","6936d3c0","1a2b3c4d","00002000"]}}"#
        ),
        format!(
            r#"{{"id":6,"method":"mining.submit","params":["{user}","1","00000001","6936d3c1","1a2b3c4e"]}}"#
        ),
    ];
    write(
        seeds,
        "sv1_lines",
        "bitaxe-session",
        (session.join("\n") + "\n").as_bytes(),
    )
}

fn write(seeds: &Path, target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = seeds.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes).with_context(|| format!("writing {target}/{name}"))
}
