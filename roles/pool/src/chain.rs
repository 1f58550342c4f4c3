//! The pool's view of bitcoind: a template feed that follows the tip, and block submission.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoincore_rpc::json::{GetBlockTemplateModes, GetBlockTemplateResult, GetBlockTemplateRules};
use bitcoincore_rpc::{Auth, Client, RpcApi};
use stratum_apps::stratum_core::bitcoin::{Address, Block, BlockHash, ScriptBuf};
use thiserror::Error;
use tokio::sync::watch;

use crate::config::BitcoindConfig;
use crate::template::Template;
use crate::work::Work;

/// Templates kept for assembling blocks from late shares.
const TEMPLATES_KEPT: usize = 64;

#[derive(Debug, Error)]
pub enum ChainError {
    #[error("bitcoind RPC client: {0}")]
    Rpc(#[from] bitcoincore_rpc::Error),
    #[error("coinbase address {address:?} is invalid: {reason}")]
    Address { address: String, reason: String },
}

/// A blocking RPC client to bitcoind, shared by the template feed and block submission.
///
/// bitcoind writes a new random cookie every time it starts, and `bitcoincore_rpc` reads the
/// cookie file once, when a client is made. So a client that outlives a bitcoind restart is
/// refused (HTTP 401) forever. Every call that fails below the JSON-RPC layer (refused
/// connection, HTTP error status) therefore re-reads the credentials, makes a new client and
/// retries once.
#[derive(Debug)]
pub struct BitcoindRpc {
    url: String,
    auth: Auth,
    client: Mutex<Arc<Client>>,
}

impl BitcoindRpc {
    /// Connects to bitcoind. With cookie authentication it first waits for bitcoind to write the
    /// cookie (they start together).
    pub async fn connect(config: &BitcoindConfig) -> Result<Self, ChainError> {
        if let (Some(cookie), None) = (&config.cookie_file, &config.rpc_user) {
            hashpool_service::wait_for_cookie(cookie, hashpool_service::COOKIE_WAIT).await;
        }
        let auth = match (&config.cookie_file, &config.rpc_user, &config.rpc_password) {
            (_, Some(user), Some(password)) => Auth::UserPass(user.clone(), password.clone()),
            (Some(cookie), _, _) => Auth::CookieFile(cookie.clone()),
            _ => Auth::None,
        };
        let client = Client::new(&config.rpc_url, auth.clone())?;
        Ok(Self {
            url: config.rpc_url.clone(),
            auth,
            client: Mutex::new(Arc::new(client)),
        })
    }

    /// Runs `request` on the current client; on a transport failure, once more on a new client
    /// made with freshly read credentials.
    pub fn call<T>(
        &self,
        request: impl Fn(&Client) -> Result<T, bitcoincore_rpc::Error>,
    ) -> Result<T, bitcoincore_rpc::Error> {
        let client = self.current();
        match request(&client) {
            Err(error) if is_transport_failure(&error) => {
                let client = self.reconnect(&client)?;
                request(&client)
            }
            result => result,
        }
    }

    fn current(&self) -> Arc<Client> {
        self.client.lock().expect("rpc client lock").clone()
    }

    /// Replaces `failed` with a new client, unless another caller already did.
    fn reconnect(&self, failed: &Arc<Client>) -> Result<Arc<Client>, bitcoincore_rpc::Error> {
        let mut client = self.client.lock().expect("rpc client lock");
        if Arc::ptr_eq(&client, failed) {
            // Reading the cookie fails while bitcoind is down (it deletes the file on exit);
            // the caller's retry loop comes back here until bitcoind is up again.
            *client = Arc::new(Client::new(&self.url, self.auth.clone())?);
            tracing::debug!(url = %self.url, "bitcoind RPC client rebuilt");
        }
        Ok(client.clone())
    }
}

/// Failures of the HTTP exchange rather than answers from bitcoind: a refused or reset
/// connection, or an HTTP status such as 401 for a stale cookie.
fn is_transport_failure(error: &bitcoincore_rpc::Error) -> bool {
    matches!(
        error,
        bitcoincore_rpc::Error::JsonRpc(bitcoincore_rpc::jsonrpc::Error::Transport(_))
            | bitcoincore_rpc::Error::Io(_)
    )
}

/// The script the coinbase pays; the address is checked when the pool starts.
pub fn payout_script(address: &str) -> Result<ScriptBuf, ChainError> {
    let parsed = Address::from_str(address).map_err(|error| ChainError::Address {
        address: address.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(parsed.assume_checked().script_pubkey())
}

/// Recent templates by id, for turning a found share into a block.
#[derive(Debug, Default, Clone)]
pub struct TemplateStore {
    templates: Arc<Mutex<BTreeMap<u64, Arc<Template>>>>,
}

impl TemplateStore {
    pub(crate) fn insert(&self, template: Arc<Template>) {
        let mut templates = self.templates.lock().expect("template store lock");
        templates.insert(template.id, template);
        while templates.len() > TEMPLATES_KEPT {
            templates.pop_first();
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<Template>> {
        self.templates
            .lock()
            .expect("template store lock")
            .get(&id)
            .cloned()
    }
}

/// A thread that runs `step` every `poll` until dropped (its wait between steps ends at once):
/// for work against bitcoind, whose RPC calls block.
pub struct PollingThread {
    /// Dropped to stop the thread.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PollingThread {
    pub fn start(name: &str, poll: Duration, mut step: impl FnMut() + Send + 'static) -> Self {
        let (stop, stopping) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || loop {
                step();
                if !matches!(
                    stopping.recv_timeout(poll),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            })
            .expect("a thread can be spawned");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for PollingThread {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Follows bitcoind: polls the tip every `poll` and publishes a new template when it changes (and
/// every `refresh` otherwise). Stops when dropped.
pub struct TemplateFeed {
    _thread: PollingThread,
}

impl TemplateFeed {
    pub fn start(
        rpc: Arc<BitcoindRpc>,
        payout: ScriptBuf,
        poll: Duration,
        refresh: Duration,
        store: TemplateStore,
    ) -> (Self, watch::Receiver<Option<Work>>) {
        let (sender, receiver) = watch::channel(None);
        let mut follower = TipFollower {
            refresh,
            next_id: 1,
            tip: None,
            built_at: Instant::now(),
            failing: false,
        };
        let thread = PollingThread::start("template-feed", poll, move || {
            follower.step(&rpc, &payout, &store, &sender)
        });
        (Self { _thread: thread }, receiver)
    }
}

/// What the template feed knows between polls: the tip its last template builds on, when it
/// was built, and whether bitcoind was failing (so outages are logged once, not every poll).
struct TipFollower {
    refresh: Duration,
    next_id: u64,
    tip: Option<BlockHash>,
    built_at: Instant,
    failing: bool,
}

impl TipFollower {
    /// One poll: a new template, if there is one, into the store and out to the channels.
    fn step(
        &mut self,
        rpc: &BitcoindRpc,
        payout: &ScriptBuf,
        store: &TemplateStore,
        sender: &watch::Sender<Option<Work>>,
    ) {
        let Some(gbt) = self.poll(rpc) else {
            return;
        };
        match Template::from_gbt(&gbt, self.next_id, payout.clone()) {
            Ok(template) => {
                let template = Arc::new(self.built(template));
                store.insert(template.clone());
                sender.send_replace(Some(Work::Solo(template)));
            }
            Err(error) => tracing::error!(%error, "cannot use bitcoind's block template"),
        }
    }

    /// A new block template when the tip moved or the last one is older than `refresh`; `None`
    /// otherwise, or when bitcoind cannot be asked.
    fn poll(&mut self, rpc: &BitcoindRpc) -> Option<GetBlockTemplateResult> {
        let result = rpc.call(|client| {
            let best = client.get_best_block_hash()?;
            if self.tip == Some(best) && self.built_at.elapsed() < self.refresh {
                return Ok(None);
            }
            // A signet's bitcoind refuses clients that do not name its rule; the others ignore it.
            let gbt = client.get_block_template(
                GetBlockTemplateModes::Template,
                &[GetBlockTemplateRules::SegWit, GetBlockTemplateRules::Signet],
                &[],
            )?;
            Ok(Some(gbt))
        });
        match result {
            Ok(gbt) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("bitcoind is reachable again");
                }
                gbt
            }
            Err(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, "bitcoind is unreachable; retrying");
                }
                None
            }
        }
    }

    /// Records `template` as the newest and hands it back.
    fn built(&mut self, template: Template) -> Template {
        if self.tip != Some(template.prev_hash) {
            tracing::info!(height = template.height, prev_hash = %template.prev_hash, template_id = template.id, "new block template on a new tip");
        }
        self.tip = Some(template.prev_hash);
        self.built_at = Instant::now();
        self.next_id += 1;
        template
    }
}

/// How long a found block is offered to a bitcoind that cannot be reached (restarting, say).
const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(60);
const SUBMIT_RETRY_EVERY: Duration = Duration::from_secs(1);

/// What bitcoind made of a found block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Valid, and it extended the best chain.
    Accepted,
    /// Valid, but a block at the same height got there first (`inconclusive`): it is not on
    /// the best chain. Common on regtest, where nearly every share is a block.
    Stale,
    /// Invalid, or never delivered.
    Rejected,
}

/// Hands a found block to bitcoind. A block is worth a whole block reward, so while bitcoind
/// cannot be reached the submission is retried for [`SUBMIT_RETRY_FOR`].
pub async fn submit_block(rpc: Arc<BitcoindRpc>, block: Block) -> BlockOutcome {
    let hash = block.block_hash();
    let height = block.bip34_block_height().unwrap_or_default();
    let hex = stratum_apps::stratum_core::bitcoin::consensus::encode::serialize_hex(&block);
    let started = Instant::now();
    let mut retried = false;
    loop {
        let (rpc, hex) = (rpc.clone(), hex.clone());
        let result = tokio::task::spawn_blocking(move || {
            rpc.call(|client| client.call::<Option<String>>("submitblock", &[hex.clone().into()]))
        })
        .await;
        match result {
            Ok(Ok(None)) => {
                tracing::info!(%hash, height, "BLOCK FOUND and accepted by bitcoind");
                return BlockOutcome::Accepted;
            }
            // A retry after a lost reply finds the block already there.
            Ok(Ok(Some(reason))) if reason == "duplicate" && retried => {
                tracing::info!(%hash, height, "BLOCK FOUND; bitcoind already had it");
                return BlockOutcome::Accepted;
            }
            Ok(Ok(Some(reason))) if reason == "inconclusive" => {
                tracing::warn!(%hash, height, "block valid but stale: another block at this height came first");
                return BlockOutcome::Stale;
            }
            Ok(Ok(Some(reason))) => {
                tracing::error!(%hash, height, %reason, "block refused by bitcoind");
                return BlockOutcome::Rejected;
            }
            Ok(Err(error))
                if is_transport_failure(&error) && started.elapsed() < SUBMIT_RETRY_FOR =>
            {
                tracing::warn!(%hash, height, %error, "cannot reach bitcoind to submit a block; retrying");
                tokio::time::sleep(SUBMIT_RETRY_EVERY).await;
                retried = true;
            }
            Ok(Err(error)) => {
                tracing::error!(%hash, height, %error, "submitblock failed");
                return BlockOutcome::Rejected;
            }
            Err(error) => {
                tracing::error!(%hash, %error, "submitblock task failed");
                return BlockOutcome::Rejected;
            }
        }
    }
}
