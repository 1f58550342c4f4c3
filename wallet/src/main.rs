use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hashpool_wallet::{MinerWallet, WalletDir, WalletError, WalletKeys};

/// The hashpool miner's wallet: your locking key, your quotes, your ecash (unit: hash).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where the wallet keeps its mnemonic and store.
    #[arg(long, env = "HASHPOOL_WALLET_DIR", default_value = ".data/wallet")]
    dir: PathBuf,
    /// The mint's URL.
    #[arg(
        long,
        env = "HASHPOOL_MINT_URL",
        default_value = "http://127.0.0.1:3338"
    )]
    mint: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the wallet (a new 12-word mnemonic), or restore one with --phrase.
    Init {
        /// Restore from this BIP39 phrase: the same locking key, and its ecash from the mint.
        #[arg(long)]
        phrase: Option<String>,
        /// Create one only if there is none; print its pubkey either way (for scripts).
        #[arg(long)]
        if_missing: bool,
    },
    /// Print the locking public key: use it as the mining identity (`<pubkey>[.worker]`).
    Pubkey,
    /// List this key's quotes at the mint.
    Quotes {
        /// Print them as JSON (the mint's lookup answer).
        #[arg(long)]
        json: bool,
    },
    /// Mint every PAID quote.
    Mint,
    /// Unspent ecash.
    Balance,
    /// Take AMOUNT hash out as a cashu token (V4) to give to someone.
    Send { amount: u64 },
    /// Take a cashu token into this wallet.
    Receive { token: String },
    /// Keep minting quotes as they become PAID.
    Watch {
        /// Seconds between polls.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Directory for logs/wallet.log.
        #[arg(long, default_value = "logs")]
        log_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `wallet quotes | head` should end quietly, as Unix tools do, not panic on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE at start, before any thread writes.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    let dir = WalletDir::new(&args.dir);
    match args.command {
        Command::Init { phrase, if_missing } => {
            if if_missing && phrase.is_none() {
                println!("{}", WalletKeys::load_or_create(&dir)?.pubkey());
                return Ok(());
            }
            let keys = WalletKeys::create(&dir, phrase.as_deref())?;
            eprintln!(
                "wallet created in {}; back up the 12 words in {}",
                args.dir.display(),
                dir.mnemonic_file().display()
            );
            if phrase.is_some() {
                let wallet = open(&dir, &args.mint).await?;
                let restored = wallet.restore().await?;
                let minted = wallet.mint_paid().await?;
                eprintln!(
                    "restored {restored} hash of ecash; minted {} hash from {} waiting quotes",
                    minted.amount, minted.quotes
                );
            }
            eprintln!("mine with this identity (append .worker if you like):");
            println!("{}", keys.pubkey());
        }
        Command::Pubkey => println!("{}", WalletKeys::load(&dir)?.pubkey()),
        Command::Quotes { json } => {
            let wallet = open(&dir, &args.mint).await?;
            let quotes = wallet.quotes().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&quotes)?);
                return Ok(());
            }
            if quotes.is_empty() {
                eprintln!(
                    "no quotes for {} yet: mine with it as your identity",
                    wallet.pubkey()
                );
            }
            println!(
                "{:<38} {:<7} {:>12} {:>12}",
                "QUOTE", "STATE", "AMOUNT", "ISSUED"
            );
            for quote in &quotes {
                println!(
                    "{:<38} {:<7} {:>12} {:>12}",
                    quote.quote, quote.state, quote.amount, quote.amount_issued
                );
            }
        }
        Command::Mint => {
            let wallet = open(&dir, &args.mint).await?;
            let report = wallet.mint_paid().await?;
            println!(
                "minted {} hash from {} quotes; {} quotes not yet PAID; balance {} hash",
                report.amount,
                report.quotes,
                report.unpaid,
                wallet.balance().await?
            );
        }
        Command::Balance => {
            let wallet = open(&dir, &args.mint).await?;
            println!("{} hash", wallet.balance().await?);
        }
        Command::Send { amount } => {
            let wallet = open(&dir, &args.mint).await?;
            println!("{}", wallet.send(amount).await?);
        }
        Command::Receive { token } => {
            let wallet = open(&dir, &args.mint).await?;
            let amount = wallet.receive(&token).await?;
            println!(
                "received {amount} hash; balance {} hash",
                wallet.balance().await?
            );
        }
        Command::Watch { interval, log_dir } => {
            let _log = hashpool_service::init_logging("wallet", &log_dir)?;
            let wallet = open(&dir, &args.mint).await?;
            watch(&wallet, Duration::from_secs(interval.max(1))).await;
        }
    }
    Ok(())
}

async fn open(dir: &WalletDir, mint: &str) -> anyhow::Result<MinerWallet> {
    MinerWallet::open(dir, mint)
        .await
        .with_context(|| format!("opening the wallet in {}", dir.path().display()))
}

/// Mints as quotes become PAID until Ctrl-C; an unreachable mint is logged and retried.
async fn watch(wallet: &MinerWallet, interval: Duration) {
    tracing::info!(pubkey = %wallet.pubkey(), mint = %wallet.mint_url(), "watching for PAID quotes");
    let shutdown = hashpool_service::shutdown_signal();
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        match wallet.mint_paid().await {
            Ok(report) if report.quotes > 0 => {
                let balance = wallet.balance().await.unwrap_or_default();
                tracing::info!(
                    minted = report.amount,
                    quotes = report.quotes,
                    unpaid = report.unpaid,
                    balance,
                    "minted PAID quotes"
                );
            }
            Ok(_) => {}
            Err(error @ WalletError::MintUnreachable { .. }) => {
                tracing::warn!(%error, "will retry");
            }
            Err(error) => tracing::error!(%error, "minting failed; will retry"),
        }
    }
    tracing::info!("stopped");
}
