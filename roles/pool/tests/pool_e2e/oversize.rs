//! A frame whose header announces more than the pool takes closes the connection when the
//! header arrives, not after the payload.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stratum_apps::network_helpers::connect_with_noise;
use stratum_apps::network_helpers::noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf};
use stratum_apps::stratum_core::codec_sv2::EncodableFrame;
use stratum_apps::stratum_core::framing_sv2;

use super::*;

/// A frame whose header states `announced` payload bytes, followed by only `sent`: what the
/// encoder encrypts is the bytes written, whatever the header says.
pub(super) struct AnnouncedFrame {
    pub message_type: u8,
    pub announced: u32,
    pub sent: Vec<u8>,
}

impl EncodableFrame for AnnouncedFrame {
    fn encoded_length(&self) -> usize {
        6 + self.sent.len()
    }

    fn encode_into(self, dst: &mut [u8]) -> Result<(), framing_sv2::Error> {
        // extension_type (u16, 0), msg_type (u8), msg_length (u24), all little-endian.
        dst[..2].copy_from_slice(&0u16.to_le_bytes());
        dst[2] = self.message_type;
        dst[3..6].copy_from_slice(&self.announced.to_le_bytes()[..3]);
        dst[6..].copy_from_slice(&self.sent);
        Ok(())
    }
}

/// A Noise connection to the pool with nothing sent yet.
pub(super) async fn noise_connection(stack: &Stack) -> (NoiseTcpReadHalf, NoiseTcpWriteHalf) {
    let tcp = tokio::net::TcpStream::connect(stack.pool.sv2_address())
        .await
        .unwrap();
    connect_with_noise(tcp, Some(PoolConfig::default().authority.public_key))
        .await
        .expect("Noise handshake")
        .into_split()
}

/// Everything logged in this test process.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_header_closes_its_connection_at_once() {
    let log = CapturedLog::default();
    let writer = log.clone();
    // nextest runs every test in its own process, so this subscriber is this test's alone.
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    let stack = Stack::start("pool-oversize").await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;

    // Within the limit, a partial frame is just a slow peer: the pool waits for the rest.
    let (mut slow_reader, mut slow_writer) = noise_connection(&stack).await;
    slow_writer
        .write_frame(AnnouncedFrame {
            message_type: 0x1a,
            announced: 1_000,
            sent: vec![0; 8],
        })
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(1), slow_reader.read_frame()).await;
    assert!(
        waited.is_err(),
        "a frame within the limit is waited for: {waited:?}"
    );

    // 10 MiB announced, 8 bytes sent: the header alone closes the connection.
    let (mut reader, mut writer) = noise_connection(&stack).await;
    let sent_at = Instant::now();
    writer
        .write_frame(AnnouncedFrame {
            message_type: 0x1a,
            announced: 10 * 1024 * 1024,
            sent: vec![0; 8],
        })
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), reader.read_frame()).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the pool closes the connection: {closed:?}"
    );
    assert!(sent_at.elapsed() < Duration::from_secs(2));
    wait_for("the reason in the log", async || {
        log.text()
            .contains("frame header announces a payload over the 16384-byte limit")
    })
    .await;

    // The honest miner never noticed.
    let (reply, _) = miner.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)) || error_code(&reply) == "stale-share"
    );
    drop((slow_reader, slow_writer));
    stack.pool.shutdown().await;
}
