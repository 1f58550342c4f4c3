//! The harness for the fuzz target in `fuzz/`: a Sv1 miner's bytes through the translator's own
//! connection code — line reading with its length cap, JSON-RPC parsing, subscribe, configure,
//! authorize, suggest_difficulty and submit — in memory.
//!
//! The pool's side is a stand-in that answers the translator's commands the way the upstream
//! task relays a pool's messages: a channel opens with a job on a tip, every other share is
//! accepted and the rest refused. What the fuzzer drives is the miner-facing state machine; the
//! upstream task has its own tests against the real pool.

use std::sync::{Arc, OnceLock};

use stratum_core::binary_sv2::Sv2OptionOwned;
use stratum_core::bitcoin::Target;
use stratum_core::mining_sv2::{NewExtendedMiningJobOwned, SetNewPrevHashOwned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::config::DownstreamConfig;
use crate::downstream::{Downstream, DownstreamContext};
use crate::metrics::TranslatorMetrics;
use crate::reject::ShareRejection;
use crate::upstream::{Command, Event};

/// In-memory pipe capacity per direction.
const PIPE_BYTES: usize = 1 << 20;
const CHANNEL_ID: u32 = 1;
const JOB_ID: u32 = 1;

/// A fuzz target's view of the translator: one runtime per process, a fresh connection and
/// stand-in pool per input.
pub struct TranslatorHarness {
    runtime: Runtime,
}

impl TranslatorHarness {
    /// The process-wide harness.
    pub fn get() -> &'static TranslatorHarness {
        static HARNESS: OnceLock<TranslatorHarness> = OnceLock::new();
        HARNESS.get_or_init(|| TranslatorHarness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime"),
        })
    }

    /// `input` as everything a Sv1 miner sends on one connection.
    pub fn connection(&self, input: &[u8]) {
        self.runtime.block_on(async {
            let (commands, requests) = mpsc::channel(64);
            let context = Arc::new(DownstreamContext {
                config: DownstreamConfig::default(),
                commands,
                metrics: Arc::new(TranslatorMetrics::default()),
            });
            let pool = tokio::spawn(stand_in_pool(requests));
            let (miner_side, translator_side) = tokio::io::duplex(PIPE_BYTES);
            let (reader, writer) = tokio::io::split(translator_side);
            let (_shutdown, shutdown) = watch::channel(false);
            let translator = tokio::spawn(Downstream::serve_halves(
                1,
                reader,
                writer,
                "fuzz".into(),
                context,
                shutdown,
            ));
            let (mut miner_reader, mut miner_writer) = tokio::io::split(miner_side);
            let drain = tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(miner_reader.read(&mut buffer).await, Ok(read) if read > 0) {}
            });
            let _ = miner_writer.write_all(input).await;
            let _ = miner_writer.shutdown().await;
            drop(miner_writer);
            translator
                .await
                .expect("the connection task does not panic");
            let _ = drain.await;
            pool.abort();
        });
    }
}

/// Answers the connection's commands until it is gone.
async fn stand_in_pool(mut requests: mpsc::Receiver<Command>) {
    let mut miner = None;
    while let Some(command) = requests.recv().await {
        match command {
            Command::Open(registration) => {
                let events = registration.events;
                let _ = events.send(Event::Opened {
                    channel_id: CHANNEL_ID,
                    target: Target::MAX_ATTAINABLE_REGTEST,
                    extranonce_prefix: vec![0, 0, 0, 1],
                    rollable_extranonce_size: registration.min_extranonce_size.max(4),
                });
                let _ = events.send(Event::Job(job()));
                let _ = events.send(Event::PrevHash(prev_hash()));
                miner = Some(events);
            }
            Command::Submit { share, .. } => {
                let Some(events) = &miner else { continue };
                let answer = if share.nonce % 2 == 0 {
                    Event::Accepted {
                        channel_id: share.channel_id,
                        last_sequence_number: share.sequence_number,
                    }
                } else {
                    Event::Rejected {
                        channel_id: share.channel_id,
                        sequence_number: share.sequence_number,
                        reason: ShareRejection::Pool("difficulty-too-low".into()),
                    }
                };
                let _ = events.send(answer);
            }
            Command::UpdateHashrate { .. } => {}
            Command::Close { .. } => miner = None,
        }
    }
}

/// A future job whose coinbase has the shape the pool's jobs have: BIP34 height, then the
/// extranonce, then one output.
fn job() -> NewExtendedMiningJobOwned {
    let mut prefix = vec![2, 0, 0, 0, 1];
    prefix.extend([0; 32]);
    prefix.extend([0xff; 4]);
    prefix.extend([20, 3, 1, 0, 0]);
    let mut suffix = vec![0xff; 4];
    suffix.extend([1, 0, 0xf2, 0x05, 0x2a, 1, 0, 0, 0, 1, 0x51]);
    suffix.extend([0; 4]);
    NewExtendedMiningJobOwned {
        channel_id: CHANNEL_ID,
        job_id: JOB_ID,
        min_ntime: Sv2OptionOwned::new(None),
        version: 0x2000_0000,
        version_rolling_allowed: true,
        merkle_path: Vec::new().try_into().expect("an empty merkle path"),
        coinbase_tx_prefix: prefix.try_into().expect("a short prefix"),
        coinbase_tx_suffix: suffix.try_into().expect("a short suffix"),
    }
}

fn prev_hash() -> SetNewPrevHashOwned {
    SetNewPrevHashOwned {
        channel_id: CHANNEL_ID,
        job_id: JOB_ID,
        prev_hash: [7u8; 32].into(),
        min_ntime: 1_764_000_000,
        nbits: 0x207f_ffff,
    }
}
