//! Property: whatever frames a peer sends after the Noise handshake, the pool stays up, closes at
//! most that peer's connection, and an honest miner keeps getting its shares answered.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::oversize::{noise_connection, AnnouncedFrame};
use super::*;

/// One frame as the hostile peer writes it: any extension and message type, any payload, and a
/// header length that may lie about the payload (the lie desynchronises the Noise stream).
#[derive(Debug, Clone)]
struct HostileFrame {
    extension_type: u16,
    message_type: u8,
    payload: Vec<u8>,
    length_lie: Option<u32>,
}

impl HostileFrame {
    fn encode(&self) -> AnnouncedFrameWithExtension {
        AnnouncedFrameWithExtension {
            extension_type: self.extension_type,
            frame: AnnouncedFrame {
                message_type: self.message_type,
                announced: self.length_lie.unwrap_or(self.payload.len() as u32),
                sent: self.payload.clone(),
            },
        }
    }
}

/// [`AnnouncedFrame`] with an extension type (including the channel-message bit).
struct AnnouncedFrameWithExtension {
    extension_type: u16,
    frame: AnnouncedFrame,
}

impl stratum_apps::stratum_core::codec_sv2::EncodableFrame for AnnouncedFrameWithExtension {
    fn encoded_length(&self) -> usize {
        self.frame.encoded_length()
    }

    fn encode_into(
        self,
        dst: &mut [u8],
    ) -> Result<(), stratum_apps::stratum_core::framing_sv2::Error> {
        let extension_type = self.extension_type;
        self.frame.encode_into(dst)?;
        dst[..2].copy_from_slice(&extension_type.to_le_bytes());
        Ok(())
    }
}

fn hostile_frame() -> impl Strategy<Value = HostileFrame> {
    // Mostly the message types a pool parses (common 0x00.., mining 0x10..0x1f), with and
    // without the channel bit, but any byte at all some of the time.
    let message_type = prop_oneof![
        3 => 0x00u8..0x04,
        6 => 0x10u8..0x20,
        1 => any::<u8>(),
    ];
    let extension_type = prop_oneof![4 => Just(0u16), 4 => Just(0x8000u16), 1 => any::<u16>()];
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 64..600),
    ];
    let length_lie = prop_oneof![8 => Just(None), 1 => (0u32..1 << 24).prop_map(Some)];
    (extension_type, message_type, payload, length_lie).prop_map(
        |(extension_type, message_type, payload, length_lie)| HostileFrame {
            extension_type,
            message_type,
            payload,
            length_lie,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_never_take_the_pool_down() {
    let stack = Stack::start("pool-hostile").await;
    // The runner takes an `Fn`: the miner is borrowed mutably one case at a time.
    let miner = tokio::sync::Mutex::new(Miner::open(&stack, KEY, 1.0).await);
    let handle = tokio::runtime::Handle::current();

    let mut runner = TestRunner::new(Config {
        cases: 256,
        // Each case costs a connection and a share: shrink briefly, keep no regression file in
        // the source tree.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let setup_first = any::<bool>();
    let frames = prop::collection::vec(hostile_frame(), 1..5);
    let result = runner.run(&(setup_first, frames), |(setup_first, frames)| {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let (mut reader, mut writer) = noise_connection(&stack).await;
                if setup_first {
                    // A real SetupConnection first, so mining messages reach their parsers.
                    let setup = setup_connection_frame();
                    writer.write_frame(setup).await.unwrap();
                    reader.read_frame().await.expect("SetupConnection.Success");
                }
                for frame in &frames {
                    // The pool may already have closed the connection: that is allowed.
                    if writer.write_frame(frame.encode()).await.is_err() {
                        break;
                    }
                }
                drop((reader, writer));

                // The honest miner is answered as if nothing happened.
                let mut miner = miner.lock().await;
                let (reply, _) = miner.submit_valid_share().await;
                // Regtest shares are often blocks: one racing the new tip is stale, nothing else.
                let stale = matches!(&reply, MiningOwned::SubmitSharesError(error)
                    if error.error_code.as_utf8_or_hex() == "stale-share");
                prop_assert!(
                    matches!(reply, MiningOwned::SubmitSharesSuccess(_)) || stale,
                    "honest share refused after {frames:?}: {reply:?}"
                );
                miner.wait_for_work().await;
                Ok::<(), TestCaseError>(())
            })
        })
    });
    result.unwrap();

    // Every hostile connection ended through the pool's own close path (a panicking connection
    // task would never decrement the gauge): only the honest miner is left.
    let metrics = stack.pool.metrics().clone();
    wait_for("hostile connections closed", async || {
        metrics.connections.get() == 1
    })
    .await;
    stack.pool.shutdown().await;
}

/// SetupConnection for the mining protocol, as a frame.
fn setup_connection_frame(
) -> stratum_apps::stratum_core::framing_sv2::framing::MessageFrame<AnyMessageOwned> {
    use stratum_apps::stratum_core::binary_sv2::Str0255Owned;
    use stratum_apps::stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
    use stratum_apps::stratum_core::parsers_sv2::CommonMessagesOwned;
    let text = |value: &str| Str0255Owned::try_from(value.to_owned()).unwrap();
    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(SetupConnectionOwned {
        protocol: Protocol::MiningProtocol,
        min_version: 2,
        max_version: 2,
        flags: 0,
        endpoint_host: text(""),
        endpoint_port: 0,
        vendor: text("fuzz"),
        hardware_version: text(""),
        firmware: text(""),
        device_id: text(""),
    }))
    .try_into()
    .unwrap()
}

/// A peer that completes the Noise handshake and then says nothing is closed once the setup
/// timeout passes; a miner that set up in time keeps mining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_silent_after_the_handshake_is_closed_at_the_setup_timeout() {
    let stack = Stack::start_configured("pool-setup-timeout", |config| {
        config.setup_timeout_ms = 300;
        config.bitcoind.template_poll_ms = 600_000;
    })
    .await;
    let authority = PoolConfig::default().authority.public_key;
    let mut silent =
        PoolConnection::connect(&stack.pool.sv2_address().to_string(), Some(authority))
            .await
            .expect("the handshake completes");
    let mut honest = Miner::open(&stack, KEY, 1.0).await;

    let closed = tokio::time::timeout(Duration::from_secs(30), silent.recv())
        .await
        .expect("the pool closes the silent connection");
    assert!(closed.is_err(), "closed, not answered: {closed:?}");
    let metrics = stack.pool.metrics().clone();
    wait_for("only the honest connection left", async || {
        metrics.connections.get() == 1
    })
    .await;
    let (reply, _) = honest.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    stack.pool.shutdown().await;
}
