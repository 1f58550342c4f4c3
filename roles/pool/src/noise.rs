//! The pool's side of a miner's Noise connection, reading frames with the size limit enforced
//! on the frame header.
//!
//! stratum-apps' `NoiseTcpStream::read_frame` returns only whole frames: a peer whose header
//! announces a 10 MiB payload, then sends a few bytes and nothing more, holds its connection
//! open and unanswered for as long as it likes, and one that does send 16 MiB has it all read
//! and decrypted before anyone can look at the length. The handshake and the frame codec are
//! codec_sv2's (`Handshake`, `NoiseDecoder`, `NoiseEncoder`); only the read loop is ours, so that
//! the length is checked the moment the header decrypts.
//!
//! How the length is seen: the header is its own AEAD message (6 bytes + MAC). Once it is
//! decrypted, `NoiseDecoder::writable_len` is the number of encrypted payload bytes still
//! missing, capped at one chunk (`SV2_FRAME_CHUNK_SIZE`). We read exactly what the decoder asks
//! for, so nothing of the payload is buffered yet at that point and the value is the encrypted
//! payload length (or the cap). Our limit is far below one chunk, so comparing it with the
//! encrypted length of the largest allowed payload decides exactly whether the announced
//! payload exceeds the limit.

use std::time::Duration;

use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::stratum_core::codec_sv2::{
    self, Decrypted, EncodableFrame, Handshake, NoiseDecoder, NoiseEncoder, SerializedFrame,
    TransportDecryptState, TransportEncryptState,
};
use stratum_apps::stratum_core::framing_sv2::SV2_FRAME_CHUNK_SIZE;
use stratum_apps::stratum_core::noise_sv2::{Responder, AEAD_MAC_LEN, ELLSWIFT_ENCODING_SIZE};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a peer may take to send its half of the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("peer closed the connection")]
    Closed,
    #[error("Noise handshake timed out")]
    HandshakeTimeout,
    #[error("Noise handshake failed: {0}")]
    Handshake(String),
    #[error("frame header announces a payload over the {limit}-byte limit")]
    FrameTooLong { limit: usize },
    /// Undecryptable or malformed frame. After a failed decryption the cipher state is gone:
    /// the connection cannot continue.
    #[error("Noise transport: {0:?}")]
    Codec(codec_sv2::Error),
}

/// A connection's receiving byte stream: a TCP read half, or memory in the fuzz harness.
type ByteReader = Box<dyn AsyncRead + Send + Unpin>;
/// A connection's sending byte stream.
type ByteWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Runs the responder's side of the Noise handshake on a connection's two halves; frames of more
/// than `max_payload` bytes will be refused by the returned reader.
pub async fn accept(
    reader: impl AsyncRead + Send + Unpin + 'static,
    writer: impl AsyncWrite + Send + Unpin + 'static,
    public_key: Secp256k1PublicKey,
    secret_key: Secp256k1SecretKey,
    cert_validity: Duration,
    max_payload: usize,
) -> Result<(FrameReader, FrameWriter), TransportError> {
    assert!(
        max_payload + AEAD_MAC_LEN < SV2_FRAME_CHUNK_SIZE,
        "the header check sees encrypted lengths up to one chunk only"
    );
    let responder = Responder::from_authority_kp(
        &public_key.into_bytes(),
        &secret_key.into_bytes(),
        cert_validity,
    )
    .map_err(|error| TransportError::Handshake(format!("authority key: {error:?}")))?;
    let (mut reader, mut writer): (ByteReader, ByteWriter) = (Box::new(reader), Box::new(writer));

    // -> e: the initiator's ephemeral key, ElligatorSwift-encoded.
    let mut initiator_key = [0u8; ELLSWIFT_ENCODING_SIZE];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_exact(&mut initiator_key)).await {
        Err(_) => return Err(TransportError::HandshakeTimeout),
        Ok(Err(_)) => return Err(TransportError::Closed),
        Ok(Ok(_)) => {}
    }
    // <- e, ee, s, es, and the certificate signed by the authority key.
    let (reply, transport) = Handshake::responder(responder)
        .step_1(initiator_key)
        .map_err(|error| TransportError::Handshake(format!("{error:?}")))?;
    let mut encoder = NoiseEncoder::new();
    writer
        .write_all(encoder.encode_handshake(reply).as_ref())
        .await
        .map_err(|_| TransportError::Closed)?;

    let (encrypt, decrypt) = transport.split();
    Ok((
        FrameReader::new(reader, decrypt, max_payload),
        FrameWriter {
            writer,
            encoder,
            state: encrypt,
        },
    ))
}

/// The receiving half: decrypts frames, refusing oversize ones at their header.
pub struct FrameReader {
    reader: ByteReader,
    decoder: NoiseDecoder,
    /// `None` once a decryption failed: the cipher state is consumed by the failure.
    state: Option<TransportDecryptState>,
    max_encrypted_payload: usize,
    max_payload: usize,
}

impl FrameReader {
    /// Reads frames encrypted under `state` from `reader`, refusing those over `max_payload`.
    pub(crate) fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        state: TransportDecryptState,
        max_payload: usize,
    ) -> Self {
        Self {
            reader: Box::new(reader),
            decoder: NoiseDecoder::new(),
            state: Some(state),
            max_encrypted_payload: max_payload + AEAD_MAC_LEN,
            max_payload,
        }
    }

    /// The next whole frame. Not cancellation safe: a cancelled read loses its partial frame.
    pub async fn read_frame(&mut self) -> Result<SerializedFrame, TransportError> {
        // The decoder waits for a header first; its first `Incomplete` is the one after the
        // header was decrypted.
        let mut header_read = false;
        loop {
            let wanted = self.decoder.writable_len();
            if wanted > 0 {
                self.reader
                    .read_exact(self.decoder.writable())
                    .await
                    .map_err(|_| TransportError::Closed)?;
            }
            let state =
                self.state
                    .take()
                    .ok_or(TransportError::Codec(codec_sv2::Error::AeadError(
                        stratum_apps::stratum_core::noise_sv2::AeadError,
                    )))?;
            match self
                .decoder
                .next_transport_frame(state)
                .map_err(TransportError::Codec)?
            {
                Decrypted::Frame(frame, state) => {
                    self.state = Some(state);
                    return Ok(frame);
                }
                Decrypted::Incomplete(missing, state) => {
                    self.state = Some(state);
                    if !header_read && missing > self.max_encrypted_payload {
                        return Err(TransportError::FrameTooLong {
                            limit: self.max_payload,
                        });
                    }
                    header_read = true;
                }
            }
        }
    }
}

/// The sending half.
pub struct FrameWriter {
    writer: ByteWriter,
    encoder: NoiseEncoder,
    state: TransportEncryptState,
}

impl FrameWriter {
    /// Encrypts and sends one frame. Not cancellation safe.
    pub async fn write_frame<F: EncodableFrame>(&mut self, frame: F) -> Result<(), TransportError> {
        let bytes = self
            .encoder
            .encode_transport(frame, &mut self.state)
            .map_err(TransportError::Codec)?;
        self.writer
            .write_all(bytes.as_ref())
            .await
            .map_err(|_| TransportError::Closed)
    }

    pub async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.writer
            .shutdown()
            .await
            .map_err(|_| TransportError::Closed)
    }
}
