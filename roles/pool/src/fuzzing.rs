//! Harnesses for the fuzz targets in `fuzz/`: a miner's bytes through the pool's own connection
//! code — the Noise handshake, the frame read loop with its size check, Sv2 message dispatch,
//! channels, jobs and share validation — in memory, with no Redis and no bitcoind.
//!
//! Each input gets a fresh pool context (so an input's outcome depends on nothing before it)
//! mining one fixed template whose network target is easy enough that some shares fuzzed into
//! meeting the share target are blocks too, which takes them through block assembly.

use std::collections::HashSet;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ehash::{QuoteMessage, ReleasePolicy, ShareWork};
use stratum_apps::stratum_core::bitcoin::blockdata::opcodes::OP_TRUE;
use stratum_apps::stratum_core::bitcoin::blockdata::script::Builder;
use stratum_apps::stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_apps::stratum_core::bitcoin::{
    Amount, BlockHash, CompactTarget, ScriptBuf, Target, TxOut,
};
use stratum_apps::stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_apps::stratum_core::codec_sv2::{
    EncodableFrame, Handshake, NoiseEncoder, TransportDecryptState, TransportEncryptState,
};
use stratum_apps::stratum_core::framing_sv2;
use stratum_apps::stratum_core::framing_sv2::SV2_FRAME_CHUNK_SIZE;
use stratum_apps::stratum_core::noise_sv2::AEAD_MAC_LEN;
use stratum_apps::stratum_core::noise_sv2::{Initiator, INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::chain::TemplateStore;
use crate::config::AuthorityConfig;
use crate::dashboard::book::Book;
use crate::dashboard::Dashboard;
use crate::downstream::{PoolContext, MAX_PAYLOAD};
use crate::metrics::PoolMetrics;
use crate::noise::{FrameReader, TransportError};
use crate::publisher::QuoteSender;
use crate::server::serve_connection;
use crate::template::Template;
use crate::work::Work;

/// The template's compact target: 2^-14 of all hashes meet it, against 2^-12 for the easiest
/// share target, so a quarter of the shares that are credited at all are blocks.
const NETWORK_BITS: u32 = 0x1f03_ffff;
/// In-memory pipe capacity per direction: more than the pool writes for any one input.
const PIPE_BYTES: usize = 1 << 20;
/// Quote messages one input can leave queued (frames are at most 16 KiB of a 1 MiB input).
const QUOTE_QUEUE: usize = 1 << 16;
/// The largest reply the recorder relays from the pool to the miner (the read loop's bound).
const REPLY_MAX_PAYLOAD: usize = SV2_FRAME_CHUNK_SIZE - AEAD_MAC_LEN - 1;
/// Sv2 frame header: extension type (u16), message type (u8), payload length (u24).
const HEADER_LEN: usize = 6;

/// A fuzz target's view of the pool: built once per process, one fresh pool context per input.
pub struct PoolHarness {
    runtime: Runtime,
    authority: AuthorityConfig,
    template: Arc<Template>,
}

impl PoolHarness {
    /// The process-wide harness.
    pub fn get() -> &'static PoolHarness {
        static HARNESS: OnceLock<PoolHarness> = OnceLock::new();
        HARNESS.get_or_init(PoolHarness::new)
    }

    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        Self {
            runtime,
            authority: AuthorityConfig::default(),
            template: Arc::new(fixed_template()),
        }
    }

    /// `input` as everything a peer sends on a fresh TCP connection: the Noise responder, then
    /// whatever frames the rest decrypts to (nothing, without the session keys).
    pub fn raw_connection(&self, input: &[u8]) {
        self.runtime.block_on(async {
            let run = Run::start(&self.authority, self.template.clone());
            let (mut miner_reader, mut miner_writer) = tokio::io::split(run.miner_side);
            let drain = tokio::spawn(async move { drain(&mut miner_reader).await });
            let _ = miner_writer.write_all(input).await;
            let _ = miner_writer.shutdown().await;
            drop(miner_writer);
            let _ = run.pool.await;
            let _ = drain.await;
            run.checks.verify();
        });
    }

    /// `input` as plaintext Sv2 frames (header, then as much payload as the header announces
    /// and the input has) sent by a miner that completed the Noise handshake: the pool's frame
    /// reader, message dispatch, channels and share validation see them as a real miner's.
    /// Returns the quote messages the pool published for them.
    pub fn frames(&self, input: &[u8]) -> Vec<QuoteMessage> {
        self.runtime.block_on(async {
            let run = Run::start(&self.authority, self.template.clone());
            let mut miner = MinerEnd::handshake(run.miner_side, &self.authority).await;
            let mut reader = miner.reader;
            let drain = tokio::spawn(async move { drain(&mut reader).await });
            for frame in PlainFrames(input) {
                if !miner.sender.send(frame).await {
                    break;
                }
            }
            miner.sender.close().await;
            let _ = run.pool.await;
            let _ = drain.await;
            run.checks.verify()
        })
    }
}

/// Serves the miner on `tcp` with the pool the `sv2_frames` target fuzzes (fresh context, fixed
/// template), relaying between the two, and returns the plaintext frames the miner sent in the
/// form that target reads: a seed made of a real miner's traffic, whose shares are valid again
/// when replayed (the harness is deterministic).
pub async fn record_miner(tcp: TcpStream) -> Result<Recording, TransportError> {
    let authority = AuthorityConfig::default();
    let run = Run::start(&authority, Arc::new(fixed_template()));
    let (tcp_reader, tcp_writer) = tcp.into_split();
    let (mut from_miner, mut to_miner) = crate::noise::accept(
        tcp_reader,
        tcp_writer,
        authority.public_key,
        authority.secret_key,
        Duration::from_secs(authority.cert_validity_secs),
        MAX_PAYLOAD,
    )
    .await?;
    let miner = MinerEnd::handshake(run.miner_side, &authority).await;
    let mut from_pool = FrameReader::new(miner.reader, miner.decrypt, REPLY_MAX_PAYLOAD);
    let replies = tokio::spawn(async move {
        while let Ok(frame) = from_pool.read_frame().await {
            tracing::debug!(
                message_type = frame.header().msg_type(),
                "relayed to the miner"
            );
            if to_miner
                .write_frame(PlainFrame(frame.as_bytes()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = to_miner.shutdown().await;
    });
    let mut sender = miner.sender;
    let mut recorded = Vec::new();
    while let Ok(frame) = from_miner.read_frame().await {
        tracing::debug!(
            message_type = frame.header().msg_type(),
            "recorded from the miner"
        );
        recorded.extend_from_slice(frame.as_bytes());
        if !sender.send(PlainFrame(frame.as_bytes())).await {
            break;
        }
    }
    sender.close().await;
    let _ = run.pool.await;
    let _ = replies.await;
    let quote_messages = run.checks.verify();
    Ok(Recording {
        frames: recorded,
        quote_messages,
    })
}

/// What [`record_miner`] saw.
pub struct Recording {
    /// The miner's plaintext frames, as the `sv2_frames` target reads its input.
    pub frames: Vec<u8>,
    /// What the pool published for the miner's shares.
    pub quote_messages: Vec<QuoteMessage>,
}

/// The miner's end of an in-memory connection to the pool, once the Noise handshake is done.
struct MinerEnd {
    reader: ReadHalf<DuplexStream>,
    decrypt: TransportDecryptState,
    sender: FrameSender,
}

impl MinerEnd {
    /// The initiator's side of the handshake, checking the pool's certificate.
    async fn handshake(miner_side: DuplexStream, authority: &AuthorityConfig) -> Self {
        let (mut reader, mut writer) = tokio::io::split(miner_side);
        let initiator = Initiator::from_raw_k(authority.public_key.into_bytes())
            .expect("the authority key is a valid x-only key");
        let (hello, sent) = Handshake::initiator(initiator)
            .step_0()
            .expect("the initiator's first message");
        let mut encoder = NoiseEncoder::new();
        writer
            .write_all(encoder.encode_handshake(hello).as_ref())
            .await
            .expect("the pool reads the handshake");
        let mut reply = [0u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE];
        reader
            .read_exact(&mut reply)
            .await
            .expect("the pool answers the handshake");
        let (encrypt, decrypt) = sent
            .step_2(reply)
            .expect("the pool's certificate verifies")
            .split();
        Self {
            reader,
            decrypt,
            sender: FrameSender {
                writer,
                encoder,
                encrypt,
            },
        }
    }
}

/// Encrypts plaintext frames to the pool.
struct FrameSender {
    writer: WriteHalf<DuplexStream>,
    encoder: NoiseEncoder,
    encrypt: TransportEncryptState,
}

impl FrameSender {
    /// Whether the frame was sent (the pool may have closed the connection).
    async fn send(&mut self, frame: PlainFrame<'_>) -> bool {
        match self.encoder.encode_transport(frame, &mut self.encrypt) {
            Ok(bytes) => self.writer.write_all(bytes.as_ref()).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Ends the miner's side: the pool reads the end of the stream.
    async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// One input's pool connection, running.
struct Run {
    miner_side: DuplexStream,
    pool: tokio::task::JoinHandle<()>,
    checks: Checks,
}

impl Run {
    fn start(authority: &AuthorityConfig, template: Arc<Template>) -> Self {
        let (quotes, quote_messages) = QuoteSender::to_receiver(QUOTE_QUEUE);
        let metrics = Arc::new(PoolMetrics::default());
        // Sent after the channel is made, as the template feed does: a connection mines the
        // work its receiver has not yet seen.
        let (work_sender, work) = watch::channel(None);
        work_sender.send_replace(Some(Work::Solo(template.clone())));
        let template_store = TemplateStore::default();
        template_store.insert(template);
        let context = Arc::new(PoolContext {
            release_policy: ReleasePolicy::Ehash,
            shares_per_minute: 6.0,
            initial_hashrate: 1e6,
            minimum_share_work: ShareWork::MIN,
            work,
            template_store,
            quotes,
            metrics: metrics.clone(),
            allocator: Mutex::new(
                ExtranonceAllocator::new(Vec::new(), 10, 65_536)
                    .expect("a valid extranonce layout"),
            ),
            next_channel_id: AtomicU32::new(1),
            next_job_id: AtomicU32::new(1),
            blocks: None,
            upstream: None,
            epochs: None,
            dashboard: Arc::new(Dashboard::restored(Book::default(), Vec::new())),
            setup_timeout: Duration::from_secs(10),
        });
        let (miner_side, pool_side) = tokio::io::duplex(PIPE_BYTES);
        let (pool_reader, pool_writer) = tokio::io::split(pool_side);
        let authority = authority.clone();
        let pool = tokio::spawn(async move {
            // The work sender lives as long as the connection: its end would read as shutdown.
            let _work_sender = work_sender;
            let (_shutdown, shutdown) = watch::channel(false);
            serve_connection(
                pool_reader,
                pool_writer,
                "fuzz".into(),
                context,
                &authority,
                shutdown,
            )
            .await;
        });
        Self {
            miner_side,
            pool,
            checks: Checks {
                metrics,
                quote_messages,
            },
        }
    }
}

/// What must hold after any input, whatever the miner sent.
struct Checks {
    metrics: Arc<PoolMetrics>,
    quote_messages: mpsc::Receiver<QuoteMessage>,
}

impl Checks {
    /// Returns the quote messages the input made the pool publish.
    fn verify(mut self) -> Vec<QuoteMessage> {
        // A found block is assembled from the template and the share's coinbase; a block that
        // is not the header the miner hashed is a bug in the pool.
        assert_eq!(
            self.metrics.blocks_rejected.get(),
            0,
            "an assembled block differed from the block found"
        );
        // One quote per accepted share, never two for the same share.
        let mut quote_ids = HashSet::new();
        let mut created: u64 = 0;
        let mut published = Vec::new();
        while let Ok(message) = self.quote_messages.try_recv() {
            if let QuoteMessage::Create(create) = &message {
                assert!(create.amount > 0, "a quote for no work: {create:?}");
                assert!(
                    quote_ids.insert(create.quote_id),
                    "two quotes for one share: {create:?}"
                );
                created += 1;
            }
            published.push(message);
        }
        assert_eq!(
            created,
            self.metrics.shares_accepted.get(),
            "quotes created differ from the shares accepted"
        );
        published
    }
}

/// Reads and drops everything the pool sends, until it closes.
async fn drain(reader: &mut (impl AsyncReadExt + Unpin)) {
    let mut buffer = [0u8; 4096];
    while matches!(reader.read(&mut buffer).await, Ok(read) if read > 0) {}
}

/// The input cut into frames as they appear on the wire.
struct PlainFrames<'a>(&'a [u8]);

impl<'a> Iterator for PlainFrames<'a> {
    type Item = PlainFrame<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.len() < HEADER_LEN {
            return None;
        }
        let announced = u32::from_le_bytes([self.0[3], self.0[4], self.0[5], 0]) as usize;
        let end = (HEADER_LEN + announced).min(self.0.len());
        let (frame, rest) = self.0.split_at(end);
        self.0 = rest;
        Some(PlainFrame(frame))
    }
}

/// One frame's plaintext, header included, sent as is (its header may announce more payload
/// than follows: the input ran out).
struct PlainFrame<'a>(&'a [u8]);

impl EncodableFrame for PlainFrame<'_> {
    fn encoded_length(&self) -> usize {
        self.0.len()
    }

    fn encode_into(self, dst: &mut [u8]) -> Result<(), framing_sv2::Error> {
        dst.copy_from_slice(self.0);
        Ok(())
    }
}

/// A regtest-like template on a fixed tip with no transactions, paying an anyone-can-spend
/// output, with the witness commitment of an empty block.
fn fixed_template() -> Template {
    let coinbase_value = Amount::from_btc(50.0).expect("50 BTC");
    // BIP141: the commitment is to the witness root (the coinbase's wtxid is all zeros) and
    // the coinbase's 32-byte witness reserved value (zeros).
    let commitment = sha256d::Hash::hash(&[0u8; 64]).to_byte_array();
    let mut commitment_script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    commitment_script.extend_from_slice(&commitment);
    let bits = CompactTarget::from_consensus(NETWORK_BITS);
    Template {
        id: 1,
        height: 1,
        prev_hash: BlockHash::from_byte_array([7; 32]),
        version: 0x2000_0000,
        time: 1_764_000_000,
        bits: NETWORK_BITS,
        network_target_le: Target::from_compact(bits).to_le_bytes(),
        coinbase_value,
        reward_outputs: vec![TxOut {
            value: coinbase_value,
            script_pubkey: Builder::new().push_opcode(OP_TRUE).into_script(),
        }],
        template_outputs: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(commitment_script),
        }],
        merkle_path: Vec::new(),
        transactions: Vec::new(),
    }
}
