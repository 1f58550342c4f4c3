use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hashpool_mint::{MintConfig, MintServer};

/// The hashpool mint: consumes the pool's quote stream and serves the cashu API for unit `hash`.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML); built-in regtest defaults when omitted.
    #[arg(short, long, env = "HASHPOOL_MINT_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut shutdown = hashpool_service::ShutdownSignal::install();
    let config: MintConfig = hashpool_service::load_config(args.config.as_deref())?;
    let _log = hashpool_service::init_logging("mint", &config.log_dir)?;
    hashpool_service::raise_open_files_limit();

    let server = MintServer::start(config)
        .await
        .context("starting the mint")?;
    shutdown.received().await;
    server.shutdown().await;
    Ok(())
}
