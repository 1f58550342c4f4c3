use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hashpool_translator::{Translator, TranslatorConfig};

/// The hashpool translator: Sv1 miners (Bitaxe, cgminer firmwares) in, one Sv2 channel per miner
/// out to the pool, each credited to the public key in the miner's username.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML); built-in regtest defaults when omitted.
    #[arg(short, long, env = "HASHPOOL_TRANSLATOR_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut shutdown = hashpool_service::ShutdownSignal::install();
    let config: TranslatorConfig = hashpool_service::load_config(args.config.as_deref())?;
    let _log = hashpool_service::init_logging("translator", &config.log_dir)?;
    hashpool_service::raise_open_files_limit();
    let translator = Translator::start(config)
        .await
        .context("starting the translator")?;
    shutdown.received().await;
    translator.shutdown().await;
    Ok(())
}
