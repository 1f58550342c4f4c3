use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hashpool_wallet::{
    BatchDone, MinerWallet, MintOptions, MintReport, Waiting, WalletDir, WalletError, WalletKeys,
    WalletUnit,
};

/// The hashpool miner's wallet: your locking key, your quotes, your ecash (`hash`, or `sat` from
/// payout epochs).
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
    /// Which ecash: `hash` (ehash, minted as shares are validated) or `sat` (payout epochs,
    /// minted when an epoch's payout lands).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "HASHPOOL_WALLET_UNIT"
    )]
    unit: WalletUnit,
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
    /// Mint every PAID quote (first finishing any mint an earlier run left unresolved).
    Mint {
        #[command(flatten)]
        batches: BatchArgs,
    },
    /// Unspent ecash.
    Balance,
    /// Take AMOUNT (of --unit) out as a cashu token (V4) to give to someone.
    Send { amount: u64 },
    /// Take a cashu token into this wallet.
    Receive { token: String },
    /// Pay a Lightning invoice (BOLT11, or a BOLT12 offer with an amount) from this wallet's
    /// sats (with --unit sat): a NUT-05 melt; unspent fee reserve comes back as change.
    Withdraw { invoice: String },
    /// Keep minting quotes as they become PAID.
    Watch {
        /// Seconds between polls.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Directory for logs/wallet.log.
        #[arg(long, default_value = "logs")]
        log_dir: PathBuf,
        #[command(flatten)]
        batches: BatchArgs,
    },
}

/// How `mint` and `watch` size their NUT-29 batches.
#[derive(clap::Args)]
struct BatchArgs {
    /// Largest request body to send, in bytes (the mint's `max_body_bytes`).
    #[arg(long, default_value_t = hashpool_wallet::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Quotes per batch instead of the mint's advertised size (for testing a mint's limits).
    #[arg(long, hide = true)]
    batch_size: Option<usize>,
}

impl BatchArgs {
    fn options(&self) -> MintOptions {
        MintOptions {
            max_request_bytes: Some(self.max_request_bytes),
            batch_size: self.batch_size,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `wallet quotes | head` should end quietly, as Unix tools do, not panic on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE at start, before any thread writes.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    if !matches!(args.command, Command::Watch { .. }) {
        log_warnings_to_stderr();
    }
    let dir = WalletDir::new(&args.dir);
    match args.command {
        Command::Init { phrase, if_missing } => {
            init(&dir, &args.mint, phrase.as_deref(), if_missing).await?
        }
        Command::Pubkey => println!("{}", WalletKeys::load(&dir)?.pubkey()),
        Command::Quotes { json } => {
            let wallet = open(&dir, &args.mint, args.unit).await?;
            let waiting = list_quotes(&wallet, json).await?;
            explain_waiting(waiting, args.unit);
            explain_pending(&wallet).await?;
        }
        Command::Mint { batches } => {
            mint(&open(&dir, &args.mint, args.unit).await?, &batches).await?
        }
        Command::Balance => {
            balance(&open(&dir, &args.mint, args.unit).await?).await?;
            let other = args.unit.other();
            let held = open(&dir, &args.mint, other).await?.balance().await?;
            eprintln!(
                "also held: {held} {} (--unit {})",
                other.name(),
                other.name()
            );
        }
        Command::Send { amount } => {
            let wallet = open(&dir, &args.mint, args.unit).await?;
            println!("{}", wallet.send(amount).await?);
        }
        Command::Receive { token } => {
            let wallet = open(&dir, &args.mint, args.unit).await?;
            let amount = wallet.receive(&token).await?;
            let unit = args.unit.name();
            println!(
                "received {amount} {unit}; balance {} {unit}",
                wallet.balance().await?
            );
        }
        Command::Withdraw { invoice } => {
            let wallet = open(&dir, &args.mint, args.unit).await?;
            let paid = wallet.withdraw(&invoice).await?;
            println!(
                "paid {} sat (fee {} of {} reserved); preimage {}; balance {} sat",
                paid.amount,
                paid.fee_paid,
                paid.fee_reserved,
                paid.preimage.as_deref().unwrap_or("-"),
                wallet.balance().await?
            );
        }
        Command::Watch {
            interval,
            log_dir,
            batches,
        } => {
            let _log = hashpool_service::init_logging("wallet", &log_dir)?;
            let wallet = open(&dir, &args.mint, args.unit).await?;
            let interval = Duration::from_secs(interval.max(1));
            watch(&wallet, interval, batches.options()).await;
        }
    }
    Ok(())
}

/// One-shot commands: warnings (a refused batch, a recovery step) on stderr, stdout stays the
/// answer. `watch` logs everything through hashpool-service instead.
fn log_warnings_to_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// `wallet init`: a new mnemonic, or the given one with its ecash restored and its waiting
/// quotes minted.
async fn init(
    dir: &WalletDir,
    mint_url: &str,
    phrase: Option<&str>,
    if_missing: bool,
) -> anyhow::Result<()> {
    if if_missing && phrase.is_none() {
        println!("{}", WalletKeys::load_or_create(dir)?.pubkey());
        return Ok(());
    }
    let keys = WalletKeys::create(dir, phrase)?;
    eprintln!(
        "wallet created in {}; back up the 12 words in {}",
        dir.path().display(),
        dir.mnemonic_file().display()
    );
    if phrase.is_some() {
        let wallet = open(dir, mint_url, WalletUnit::Hash).await?;
        let restored = wallet.restore().await?;
        let minted = wallet
            .mint_paid_with(MintOptions::default(), print_progress(WalletUnit::Hash))
            .await?;
        eprintln!(
            "restored {restored} hash of ecash; minted {} hash from {} waiting quotes",
            minted.amount, minted.quotes
        );
    }
    eprintln!("mine with this identity (append .worker if you like):");
    println!("{}", keys.pubkey());
    Ok(())
}

/// `wallet mint`: every PAID quote, after finishing what an earlier run left unresolved.
async fn mint(wallet: &MinerWallet, batches: &BatchArgs) -> anyhow::Result<()> {
    let report = wallet
        .mint_paid_with(batches.options(), print_progress(wallet.unit()))
        .await?;
    explain_recovery(&report);
    let unit = wallet.unit().name();
    println!(
        "minted {} {unit} from {} quotes; {} quotes not yet PAID; balance {} {unit}",
        report.amount,
        report.quotes,
        report.unpaid,
        wallet.balance().await?
    );
    Ok(())
}

/// `wallet balance`: the one figure on stdout; what is waiting or mid-recovery on stderr.
async fn balance(wallet: &MinerWallet) -> anyhow::Result<()> {
    println!("{} {}", wallet.balance().await?, wallet.unit().name());
    match wallet.waiting().await {
        Ok(waiting) => explain_waiting(waiting, wallet.unit()),
        Err(error) => eprintln!("(cannot ask the mint what is waiting: {error})"),
    }
    explain_pending(wallet).await?;
    Ok(())
}

async fn open(dir: &WalletDir, mint: &str, unit: WalletUnit) -> anyhow::Result<MinerWallet> {
    MinerWallet::open_in(dir, mint, unit)
        .await
        .with_context(|| format!("opening the wallet in {}", dir.path().display()))
}

/// One line per minted batch, on stderr (stdout carries the final report).
fn print_progress(unit: WalletUnit) -> impl Fn(&BatchDone) {
    let unit = unit.name();
    move |batch| {
        eprintln!(
            "minted a batch of {} quotes: {} {unit} ({} quotes, {} {unit} so far)",
            batch.quotes, batch.amount, batch.total_quotes, batch.total_amount
        )
    }
}

fn explain_recovery(report: &MintReport) {
    let recovery = report.recovery;
    if recovery.recovered + recovery.released > 0 {
        eprintln!(
            "finished {} interrupted mint requests (ecash recovered from the mint) and released \
             the quotes of {} the mint never applied",
            recovery.recovered, recovery.released
        );
    }
    if recovery.unresolved > 0 {
        eprintln!(
            "{} interrupted mint requests are still unresolved; their quotes wait for the next run",
            recovery.unresolved
        );
    }
}

/// Prints the quotes page by page as the mint answers them, never all at once; returns what
/// is waiting among them.
async fn list_quotes(wallet: &MinerWallet, json: bool) -> anyhow::Result<Waiting> {
    let mut pages = wallet.quote_pages();
    let mut waiting = Waiting::default();
    let mut first = true;
    if json {
        print!("[");
    } else {
        println!(
            "{:<38} {:<7} {:>12} {:>12}",
            "QUOTE", "STATE", "AMOUNT", "ISSUED"
        );
    }
    while let Some(page) = pages.next_page().await? {
        waiting.add(&page);
        for quote in &page {
            if json {
                let separator = if first { "\n" } else { ",\n" };
                print!("{separator}{}", serde_json::to_string(quote)?);
            } else {
                println!(
                    "{:<38} {:<7} {:>12} {:>12}",
                    quote.quote, quote.state, quote.amount, quote.amount_issued
                );
            }
            first = false;
        }
    }
    if json {
        println!("\n]");
    }
    if first {
        eprintln!(
            "no quotes for {} yet: mine with it as your identity",
            wallet.pubkey()
        );
    }
    Ok(waiting)
}

/// What is waiting at the mint, on stderr.
fn explain_waiting(waiting: Waiting, unit: WalletUnit) {
    eprintln!(
        "waiting: {} PAID quotes ({} {}) not yet minted; {} quotes not yet PAID",
        waiting.paid_quotes,
        waiting.paid_amount,
        unit.name(),
        waiting.unpaid_quotes
    );
}

/// Mint requests an earlier run left unresolved (from the wallet's store: works offline).
async fn explain_pending(wallet: &MinerWallet) -> anyhow::Result<()> {
    let pending = wallet.pending_recovery().await?;
    if pending.requests > 0 {
        eprintln!(
            "recovering: {} interrupted mint requests ({} quotes); the next `wallet mint` or \
             `watch` finishes them",
            pending.requests, pending.quotes
        );
    }
    Ok(())
}

/// Mints as quotes become PAID until Ctrl-C; an unreachable mint is logged and retried.
async fn watch(wallet: &MinerWallet, interval: Duration, options: MintOptions) {
    tracing::info!(pubkey = %wallet.pubkey(), mint = %wallet.mint_url(), "watching for PAID quotes");
    let mut shutdown = hashpool_service::ShutdownSignal::install();
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.received() => break,
            _ = ticks.tick() => {}
        }
        let progress = |batch: &BatchDone| {
            tracing::info!(
                quotes = batch.quotes,
                amount = batch.amount,
                total_quotes = batch.total_quotes,
                total_amount = batch.total_amount,
                "minted a batch"
            );
        };
        match wallet.mint_paid_with(options, progress).await {
            Ok(report) if report.quotes > 0 || report.recovery != Default::default() => {
                let balance = wallet.balance().await.unwrap_or_default();
                tracing::info!(
                    minted = report.amount,
                    quotes = report.quotes,
                    unpaid = report.unpaid,
                    balance,
                    recovered = report.recovery.recovered,
                    released = report.recovery.released,
                    unresolved = report.recovery.unresolved,
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
