use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Witness,
};
use bitcoincore_rpc::{Auth, Client, RpcApi};
use tempfile::TempDir;
use thiserror::Error;

use crate::{free_port, workspace_root};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum BitcoindError {
    #[error("cannot locate the pinned bitcoind (bin/build-bitcoind failed: {0})")]
    Binary(String),
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bitcoind exited during start-up with {status}: {stderr}")]
    ExitedEarly { status: ExitStatus, stderr: String },
    #[error("bitcoind RPC did not answer within {0:?}: {1}")]
    RpcTimeout(Duration, String),
    #[error("bitcoind did not stop within {0:?}")]
    StopTimeout(Duration),
    #[error("bitcoind RPC: {0}")]
    Rpc(#[from] bitcoincore_rpc::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The chain a test node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// Regtest: about every other hash is a block.
    Regtest,
    /// A signet of its own whose challenge is `OP_TRUE`, so blocks need no signature, at
    /// signet's least difficulty: about 2^22 hashes a block, harder than the pool's easiest
    /// share (2^12 hashes). What load benchmarks need: shares that are not blocks.
    Signet,
}

impl Chain {
    /// bitcoind's flags for this chain.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Chain::Regtest => &["-regtest"],
            Chain::Signet => &["-signet", "-signetchallenge=51"],
        }
    }

    /// The chain's directory inside bitcoind's data dir.
    pub fn subdir(self) -> &'static str {
        match self {
            Chain::Regtest => "regtest",
            Chain::Signet => "signet",
        }
    }

    pub fn network(self) -> Network {
        match self {
            Chain::Regtest => Network::Regtest,
            Chain::Signet => Network::Signet,
        }
    }
}

/// The pinned bitcoind running regtest (or a test signet) in a temporary data dir. Killed on
/// drop if not stopped.
pub struct Bitcoind {
    child: Option<Child>,
    rpc: Client,
    rpc_port: u16,
    chain: Chain,
    datadir: TempDir,
}

impl Bitcoind {
    /// Starts bitcoind on regtest on free ports and waits until its RPC answers.
    pub fn start() -> Result<Self, BitcoindError> {
        Self::start_on(Chain::Regtest)
    }

    /// Starts bitcoind on `chain` on free ports and waits until its RPC answers.
    pub fn start_on(chain: Chain) -> Result<Self, BitcoindError> {
        let datadir = tempfile::Builder::new()
            .prefix("hashpool-bitcoind-")
            .tempdir()?;
        let rpc_port = free_port();
        let child = spawn(chain, datadir.path(), rpc_port)?;
        let mut node = Self {
            child: Some(child),
            // Placeholder until the cookie exists; replaced below.
            rpc: Client::new(&format!("http://127.0.0.1:{rpc_port}"), Auth::None)?,
            rpc_port,
            chain,
            datadir,
        };
        node.rpc = node.wait_for_rpc()?;
        Ok(node)
    }

    /// Stops bitcoind and starts it again on the same data dir and RPC port, as an operator's
    /// restart does. bitcoind writes a new cookie on every start: clients holding the old one
    /// are refused until they read it again.
    pub fn restart(&mut self) -> Result<(), BitcoindError> {
        self.rpc.stop()?;
        let child = self.child.take().expect("a running node has a child");
        wait_for_exit(child)?;
        self.child = Some(spawn(self.chain, self.datadir.path(), self.rpc_port)?);
        self.rpc = self.wait_for_rpc()?;
        Ok(())
    }

    fn wait_for_rpc(&mut self) -> Result<Client, BitcoindError> {
        let (url, cookie) = (self.rpc_url(), self.cookie_file());
        let started = Instant::now();
        let mut last_error = String::from("no cookie yet");
        while started.elapsed() < STARTUP_TIMEOUT {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let mut stderr = String::new();
                if let Some(pipe) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(BitcoindError::ExitedEarly {
                    status,
                    stderr: stderr.trim().to_owned(),
                });
            }
            if cookie.exists() {
                let client = Client::new(&url, Auth::CookieFile(cookie.clone()))?;
                match client.get_blockchain_info() {
                    Ok(_) => return Ok(client),
                    Err(error) => last_error = error.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BitcoindError::RpcTimeout(STARTUP_TIMEOUT, last_error))
    }

    pub fn rpc(&self) -> &Client {
        &self.rpc
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// The RPC cookie file, for processes under test that authenticate the way `bin/up` does.
    pub fn cookie_file(&self) -> PathBuf {
        self.datadir
            .path()
            .join(self.chain.subdir())
            .join(".cookie")
    }

    /// The test key's address on this node's chain ([`regtest_address`] on regtest).
    pub fn address(&self) -> Address {
        test_key_address(self.chain.network())
    }

    /// Mines `count` blocks paying [`Bitcoind::address`] and returns their hashes.
    pub fn mine(&self, count: u64) -> Result<Vec<bitcoin::BlockHash>, BitcoindError> {
        Ok(self.rpc.generate_to_address(count, &self.address())?)
    }

    /// Broadcasts a transaction spending the coinbase of block `height` (mined by [`Bitcoind::mine`]
    /// and mature) back to [`regtest_address`], so templates carry real transactions.
    pub fn spend_coinbase(&self, height: u64) -> Result<bitcoin::Txid, BitcoindError> {
        let hash = self.rpc.get_block_hash(height)?;
        let coinbase = self.rpc.get_block(&hash)?.txdata.remove(0);
        let input_value = coinbase.output[0].value;
        let address = self.address();
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(coinbase.compute_txid(), 0),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: input_value - Amount::from_sat(10_000),
                script_pubkey: address.script_pubkey(),
            }],
        };
        let secp = Secp256k1::new();
        let secret = regtest_secret_key();
        let public = CompressedPublicKey(PublicKey::from_secret_key(&secp, &secret));
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(
                0,
                &ScriptBuf::new_p2wpkh(&public.wpubkey_hash()),
                input_value,
                EcdsaSighashType::All,
            )
            .expect("input 0 exists");
        let signature = secp.sign_ecdsa(&Message::from(sighash), &secret);
        tx.input[0].witness = Witness::p2wpkh(
            &bitcoin::ecdsa::Signature::sighash_all(signature),
            &public.0,
        );
        Ok(self.rpc.send_raw_transaction(&tx)?)
    }

    /// Asks bitcoind to stop over RPC and waits for the process to exit.
    pub fn stop(mut self) -> Result<ExitStatus, BitcoindError> {
        self.rpc.stop()?;
        wait_for_exit(self.child.take().expect("a running node has a child"))
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the pinned bitcoind on `chain` in `datadir`, RPC on `rpc_port`.
fn spawn(chain: Chain, datadir: &Path, rpc_port: u16) -> Result<Child, BitcoindError> {
    let binary = bitcoind_binary()?;
    Command::new(&binary)
        .args(chain.args())
        .arg(format!("-datadir={}", datadir.display()))
        .arg(format!("-rpcport={rpc_port}"))
        .args([
            // No P2P: tests talk to bitcoind over RPC only.
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            "-listen=0",
            "-dnsseed=0",
            "-fixedseeds=0",
            "-printtoconsole=0",
            "-server=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BitcoindError::Spawn {
            path: binary.clone(),
            source,
        })
}

/// Waits for a bitcoind asked to stop to exit; kills it after [`SHUTDOWN_TIMEOUT`].
fn wait_for_exit(mut child: Child) -> Result<ExitStatus, BitcoindError> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > SHUTDOWN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BitcoindError::StopTimeout(SHUTDOWN_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn regtest_secret_key() -> SecretKey {
    SecretKey::from_slice(&[1; 32]).expect("a valid secret key")
}

/// A fixed regtest P2WPKH address (secret key 0x01…01); tests mine their coinbases to it.
pub fn regtest_address() -> Address {
    test_key_address(Network::Regtest)
}

/// The P2WPKH address of the test key (0x01…01) on `network`.
fn test_key_address(network: Network) -> Address {
    let secp = Secp256k1::new();
    let public = CompressedPublicKey(PublicKey::from_secret_key(&secp, &regtest_secret_key()));
    Address::p2wpkh(&public, network)
}

/// `$BITCOIND` if set, else the pinned build from `bin/build-bitcoind` (cached after the first).
fn bitcoind_binary() -> Result<PathBuf, BitcoindError> {
    if let Some(path) = std::env::var_os("BITCOIND") {
        return Ok(PathBuf::from(path));
    }
    let script = workspace_root().join("bin").join("build-bitcoind");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| BitcoindError::Binary(format!("{}: {error}", script.display())))?;
    if !output.status.success() {
        return Err(BitcoindError::Binary(format!(
            "{} exited with {}",
            script.display(),
            output.status
        )));
    }
    let bin_dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(PathBuf::from(bin_dir).join("bitcoind"))
}
