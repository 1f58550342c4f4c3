use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hashpool_pool::{Pool, PoolConfig};

/// The hashpool pool: Stratum V2 for miners, a quote per accepted share for the mint.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML); built-in regtest defaults when omitted.
    #[arg(short, long, env = "HASHPOOL_POOL_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pool (the default).
    Run,
    /// Print a new Noise authority keypair for pool.toml; miners pin the public key.
    Keygen,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Keygen) = args.command {
        let (secret, public) = hashpool_pool::keys::generate_authority_keypair();
        println!("[authority]\npublic_key = \"{public}\"\nsecret_key = \"{secret}\"");
        return Ok(());
    }
    let mut shutdown = hashpool_service::ShutdownSignal::install();
    let config: PoolConfig = hashpool_service::load_config(args.config.as_deref())?;
    let _log = hashpool_service::init_logging("pool", &config.log_dir)?;
    hashpool_service::raise_open_files_limit();
    // Each miner connection's Noise buffers (1.25 MiB, mostly never written) must cost only the
    // memory they use, or a flood of silent connections takes gigabytes.
    hashpool_service::map_large_allocations();
    tracing::info!(
        authority_public_key = %config.authority.public_key,
        "miners connect with this authority key"
    );
    let pool = Pool::start(config).await.context("starting the pool")?;
    shutdown.received().await;
    pool.shutdown().await;
    Ok(())
}
