use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hashpool_payout_payer::{Payer, PayerConfig};

/// Regtest payout payer: pays the mint's BOLT12 payout offer once per closed epoch.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML); built-in regtest defaults when omitted.
    #[arg(short, long, env = "HASHPOOL_PAYER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut shutdown = hashpool_service::ShutdownSignal::install();
    let config: PayerConfig = hashpool_service::load_config(args.config.as_deref())?;
    let _log = hashpool_service::init_logging("payer", &config.log_dir)?;
    std::fs::create_dir_all(&config.storage_dir).context("creating the payer's directory")?;
    hashpool_service::wait_for_cookie(&config.bitcoind_cookie_file, hashpool_service::COOKIE_WAIT)
        .await;
    let mut payer = Payer::start(config).context("starting the payer's node")?;
    let mut ticks = tokio::time::interval(payer.poll_interval());
    loop {
        tokio::select! {
            _ = shutdown.received() => break,
            _ = ticks.tick() => {
                if let Err(error) = payer.step().await {
                    tracing::warn!(%error, "payer round");
                }
            }
        }
    }
    payer.stop();
    Ok(())
}
