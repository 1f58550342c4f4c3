//! A Stratum V1 upstream (OCEAN, ckpool, hashpool's own translator): `mining.configure` for
//! version rolling, `mining.subscribe`, `mining.authorize`, optionally
//! `mining.suggest_difficulty`, then `mining.extranonce.subscribe`.
//!
//! Messages are sv1_api's types. Its client state machine (`IsClient`) is not used: it
//! subscribes with a fixed extranonce1 and cannot match the answer to `suggest_difficulty`.
//! Instead each notification is mapped onto the Sv2 message it stands for and handed to the
//! same [`UpstreamChannel`] an Sv2 upstream uses: `mining.notify` is a `NewExtendedMiningJob`
//! (with a `SetNewPrevHash` on a new tip), `mining.set_difficulty` a `SetTarget`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use hashpool_service::lines::{read_lines, LineError};
use hashpool_sv2_client::VERSION_ROLLING_MASK;
use serde_json::{json, Value};
use stratum_apps::stratum_core::binary_sv2::{Seq0255Owned, Sv2OptionOwned, U256Owned};
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::mining_sv2::{NewExtendedMiningJobOwned, SetNewPrevHashOwned};
use stratum_core::sv1_api::json_rpc::{self, Message};
use stratum_core::sv1_api::methods::client_to_server::{
    Authorize, Configure, ExtranonceSubscribe, Submit, Subscribe,
};
use stratum_core::sv1_api::methods::server_to_client::Notify;
use stratum_core::sv1_api::methods::{Method, MethodError, Server2Client, Server2ClientResponse};
use stratum_core::sv1_api::utils::{Extranonce, HexU32Be};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::channel::{Opened, UpstreamChannel};
use super::{ForwardedShare, Protocol, Shared, UpstreamError};
use crate::config::UpstreamConfig;

pub(super) const URL_SCHEME: &str = "stratum+tcp://";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upstream may take over the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// An upstream's lines carry whole coinbases (OCEAN's pays many outputs): far longer than a
/// miner's.
const MAX_LINE: usize = 1 << 20;
const CONFIGURE_ID: u64 = 1;
const SUBSCRIBE_ID: u64 = 2;
const AUTHORIZE_ID: u64 = 3;
const SUGGEST_DIFFICULTY_ID: u64 = 4;
const EXTRANONCE_SUBSCRIBE_ID: u64 = 5;
/// Submits are numbered from here: request id = this + the share's sequence number.
const FIRST_SUBMIT_ID: u64 = 1_000;
/// Upstream job ids kept for submitting late shares.
const JOB_IDS_KEPT: usize = 64;

pub(super) struct Sv1Session {
    channel: UpstreamChannel,
    writer: OwnedWriteHalf,
    lines: mpsc::Receiver<Result<String, LineError>>,
    reader: JoinHandle<()>,
    username: String,
    jobs: JobIds,
    /// The tip of the last job, to tell a new tip from a new job on the same one.
    last_prev_hash: Option<[u8; 32]>,
}

impl Drop for Sv1Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What the handshake learned before the channel exists.
#[derive(Default)]
struct Handshake {
    extranonce: Option<(Vec<u8>, usize)>,
    version_mask: Option<u32>,
    authorized: Option<bool>,
    difficulty: Option<f64>,
    /// Notifications that came before the channel could take them (DATUM notifies right after
    /// subscribe).
    early: Vec<Server2Client>,
}

impl Sv1Session {
    pub(super) async fn connect(
        address: &str,
        upstream: &UpstreamConfig,
        session: u64,
        shared: &Shared,
    ) -> Result<Self, UpstreamError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))?
            .map_err(|error| UpstreamError::Io(error.to_string()))?;
        let (reader, writer) = tcp.into_split();
        let (lines_tx, lines) = mpsc::channel(256);
        let reader = tokio::spawn(read_lines(reader, MAX_LINE, lines_tx));
        let mut connection = Connection { writer, lines };
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.handshake(upstream))
            .await
            .map_err(|_| {
                UpstreamError::Protocol("the upstream did not finish the handshake".into())
            })??;
        let Some((extranonce1, extranonce2_size)) = handshake.extranonce else {
            unreachable!("the handshake waits for the subscribe answer");
        };
        // The channel starts at the handshake's difficulty, so the first relayed job carries it.
        let channel = UpstreamChannel::new(
            session,
            Opened {
                channel_id: 0,
                identity: upstream.user_identity.clone(),
                extranonce_prefix: extranonce1,
                extranonce_size: extranonce2_size,
                target: handshake
                    .difficulty
                    .and_then(difficulty_target)
                    .unwrap_or_else(|| difficulty_target(1.0).expect("difficulty 1")),
                nominal_hashrate: upstream.nominal_hashrate,
                version_mask: handshake.version_mask,
            },
            shared,
        )?;
        tracing::info!(
            extranonce2_size,
            version_mask = ?handshake.version_mask.map(|mask| format!("{mask:#010x}")),
            "upstream channel open (Sv1)"
        );
        if let Some(difficulty) = upstream.suggest_difficulty {
            connection
                .send(Message::StandardRequest(json_rpc::StandardRequest {
                    id: SUGGEST_DIFFICULTY_ID,
                    method: "mining.suggest_difficulty".into(),
                    params: json!([difficulty]),
                }))
                .await?;
        }
        connection
            .send(
                ExtranonceSubscribe {
                    id: EXTRANONCE_SUBSCRIBE_ID,
                }
                .into(),
            )
            .await?;
        let mut session = Self {
            channel,
            writer: connection.writer,
            lines: connection.lines,
            reader,
            username: upstream.user_identity.clone(),
            jobs: JobIds::default(),
            last_prev_hash: None,
        };
        for early in handshake.early {
            session.on_notification(early, shared)?;
        }
        Ok(session)
    }

    fn on_line(&mut self, line: &str, shared: &Shared) -> Result<(), UpstreamError> {
        match parse(line)? {
            Parsed::Notification(notification) => self.on_notification(notification, shared),
            Parsed::Answer { id, accepted } => {
                if let Some(sequence_number) = submit_sequence(id) {
                    self.channel.answered(sequence_number, accepted, shared);
                }
                Ok(())
            }
            Parsed::Other(what) => {
                tracing::debug!(%what, "upstream message ignored");
                Ok(())
            }
        }
    }

    fn on_notification(
        &mut self,
        notification: Server2Client,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        match notification {
            Server2Client::Notify(notify) => self.on_notify(notify, shared),
            Server2Client::SetDifficulty(set) => {
                let target = difficulty_target(set.value).ok_or_else(|| {
                    UpstreamError::Protocol(format!("difficulty {} is not a difficulty", set.value))
                })?;
                self.channel.set_target(target)
            }
            Server2Client::SetExtranonce(set) => {
                // The rollable size of a channel is fixed: a new one needs a new session.
                let prefix: Vec<u8> = set.extra_nonce1.into();
                if set.extra_nonce2_size != self.channel.extranonce_size() {
                    return Err(UpstreamError::Protocol(format!(
                        "the upstream changed extranonce2_size to {}",
                        set.extra_nonce2_size
                    )));
                }
                // The next notify is a clean start (the pool sends one right away).
                self.last_prev_hash = None;
                self.channel.set_extranonce_prefix(prefix, true, shared)
            }
            Server2Client::SetVersionMask(set) => {
                self.channel
                    .set_version_mask(usable_mask(set.version_mask.0));
                Ok(())
            }
        }
    }

    /// A job: on a new tip (or `clean_jobs`), a future job then the prev hash that activates
    /// it, so the channels start clean; otherwise a job on the current tip.
    fn on_notify(&mut self, notify: Notify, shared: &Shared) -> Result<(), UpstreamError> {
        let job_id = self.jobs.insert(notify.job_id.clone());
        let prev_hash = notify.prev_hash.0.to_array();
        let new_tip = notify.clean_jobs || self.last_prev_hash != Some(prev_hash);
        let time = notify.time.0;
        let merkle_path: Vec<U256Owned> = notify
            .merkle_branch
            .into_iter()
            .map(|node| node.0)
            .collect();
        let merkle_path = Seq0255Owned::new(merkle_path)
            .map_err(|_| UpstreamError::Protocol("a merkle branch of over 255 nodes".into()))?;
        let too_long = |_| UpstreamError::Protocol("a coinbase part over 64 KiB".into());
        let job = NewExtendedMiningJobOwned {
            channel_id: self.channel.channel_id(),
            job_id,
            min_ntime: Sv2OptionOwned::new((!new_tip).then_some(time)),
            version: notify.version.0,
            // BIP310's version_bits are read as the rolled bits only while the job sets none.
            version_rolling_allowed: self
                .channel
                .version_mask()
                .is_some_and(|mask| notify.version.0 & mask == 0),
            merkle_path,
            coinbase_tx_prefix: Vec::from(notify.coin_base1).try_into().map_err(too_long)?,
            coinbase_tx_suffix: Vec::from(notify.coin_base2).try_into().map_err(too_long)?,
        };
        self.channel.on_job(job, shared)?;
        if new_tip {
            self.last_prev_hash = Some(prev_hash);
            self.channel.on_prev_hash(
                SetNewPrevHashOwned {
                    channel_id: self.channel.channel_id(),
                    job_id,
                    prev_hash: prev_hash.into(),
                    min_ntime: time,
                    nbits: notify.bits.0,
                },
                shared,
            )?;
        }
        Ok(())
    }
}

impl Protocol for Sv1Session {
    type Incoming = String;

    async fn next_incoming(&mut self) -> Result<String, UpstreamError> {
        match self.lines.recv().await {
            Some(Ok(line)) => Ok(line),
            Some(Err(error)) => Err(UpstreamError::Protocol(error.to_string())),
            None => Err(UpstreamError::Io(
                "the upstream closed the connection".into(),
            )),
        }
    }

    fn on_incoming(&mut self, line: String, shared: &Shared) -> Result<(), UpstreamError> {
        self.on_line(&line, shared)
    }

    async fn submit(
        &mut self,
        share: ForwardedShare,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        let Some(submit) = self.channel.share_to_submit(share, shared) else {
            return Ok(());
        };
        let Some(job_id) = self.jobs.get(submit.job_id) else {
            self.channel.answered(submit.sequence_number, false, shared);
            return Ok(());
        };
        let extranonce = Extranonce::try_from(submit.extranonce.as_bytes().to_vec())
            .map_err(|error| UpstreamError::Protocol(format!("extranonce: {error:?}")))?;
        let message: Message = Submit {
            user_name: self.username.clone(),
            job_id,
            extra_nonce2: extranonce,
            time: HexU32Be(submit.ntime),
            nonce: HexU32Be(submit.nonce),
            version_bits: self
                .channel
                .version_mask()
                .map(|mask| HexU32Be(submit.version & mask)),
            id: FIRST_SUBMIT_ID + u64::from(submit.sequence_number),
        }
        .into();
        write_message(&mut self.writer, &message).await
    }

    async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }

    fn gave_work(&self) -> bool {
        self.channel.gave_work()
    }
}

/// The session's connection before the channel exists.
struct Connection {
    writer: OwnedWriteHalf,
    lines: mpsc::Receiver<Result<String, LineError>>,
}

impl Connection {
    async fn send(&mut self, message: Message) -> Result<(), UpstreamError> {
        write_message(&mut self.writer, &message).await
    }

    /// Configure and subscribe (sent together, as cgminer does: some pools never answer
    /// configure), then authorize once subscribed.
    async fn handshake(&mut self, upstream: &UpstreamConfig) -> Result<Handshake, UpstreamError> {
        self.send(Configure::new(CONFIGURE_ID, Some(HexU32Be(VERSION_ROLLING_MASK)), None).into())
            .await?;
        let subscribe = Message::try_from(Subscribe {
            id: SUBSCRIBE_ID,
            agent_signature: format!("hashpool/{}", env!("CARGO_PKG_VERSION")),
            extranonce1: None,
        })
        .map_err(|error| UpstreamError::Protocol(format!("cannot encode subscribe: {error:?}")))?;
        self.send(subscribe).await?;
        let mut handshake = Handshake::default();
        let mut authorize_sent = false;
        while handshake.authorized.is_none() {
            if handshake.extranonce.is_some() && !authorize_sent {
                authorize_sent = true;
                self.send(
                    Authorize {
                        id: AUTHORIZE_ID,
                        name: upstream.user_identity.clone(),
                        password: upstream.password.clone().unwrap_or_else(|| "x".into()),
                    }
                    .into(),
                )
                .await?;
            }
            let line = match self.lines.recv().await {
                Some(Ok(line)) => line,
                Some(Err(error)) => return Err(UpstreamError::Protocol(error.to_string())),
                None => {
                    return Err(UpstreamError::Io(
                        "the upstream closed the connection".into(),
                    ))
                }
            };
            handshake.take(&line)?;
        }
        if handshake.authorized == Some(false) {
            return Err(UpstreamError::Refused(format!(
                "mining.authorize refused {}",
                upstream.user_identity
            )));
        }
        Ok(handshake)
    }
}

impl Handshake {
    fn take(&mut self, line: &str) -> Result<(), UpstreamError> {
        let message: Message = serde_json::from_str(line)
            .map_err(|error| UpstreamError::Protocol(format!("not JSON-RPC: {error}")))?;
        match &message {
            Message::OkResponse(response) if response.id == SUBSCRIBE_ID => {
                let Ok(Server2ClientResponse::Subscribe(subscribe)) =
                    Server2ClientResponse::try_from(message.clone())
                else {
                    return Err(UpstreamError::Protocol(format!(
                        "mining.subscribe answered {line}"
                    )));
                };
                self.extranonce =
                    Some((subscribe.extra_nonce1.into(), subscribe.extra_nonce2_size));
            }
            Message::ErrorResponse(response) if response.id == SUBSCRIBE_ID => {
                return Err(UpstreamError::Refused(format!(
                    "mining.subscribe refused: {line}"
                )))
            }
            Message::OkResponse(response) if response.id == CONFIGURE_ID => {
                if let Ok(Server2ClientResponse::Configure(configure)) =
                    Server2ClientResponse::try_from(message.clone())
                {
                    self.version_mask = configure
                        .version_rolling_mask()
                        .and_then(|mask| usable_mask(mask.0));
                }
            }
            Message::OkResponse(response) | Message::ErrorResponse(response)
                if response.id == AUTHORIZE_ID =>
            {
                self.authorized = Some(response.result == Value::Bool(true));
            }
            _ => match classify(message)? {
                Parsed::Notification(Server2Client::SetDifficulty(set)) => {
                    self.difficulty = Some(set.value)
                }
                Parsed::Notification(Server2Client::SetVersionMask(set)) => {
                    self.version_mask = usable_mask(set.version_mask.0)
                }
                Parsed::Notification(other) => self.early.push(other),
                Parsed::Answer { .. } | Parsed::Other(_) => {}
            },
        }
        Ok(())
    }
}

/// What a line from the upstream is.
enum Parsed {
    Notification(Server2Client),
    /// An answer to a request: accepted (`true`) or not (`false`, or an error).
    Answer {
        id: u64,
        accepted: bool,
    },
    /// Something this client does not act on (`client.reconnect`, `client.show_message`, …).
    Other(String),
}

/// Classifies a line; anything that is not JSON-RPC, or a notification we act on that does not
/// parse, is garbage and ends the session.
fn parse(line: &str) -> Result<Parsed, UpstreamError> {
    let message: Message = match serde_json::from_str(line) {
        Ok(message) => message,
        // sv1_api refuses error codes that are strings (`["23", "low difficulty", null]`): an
        // answer is still an answer.
        Err(error) => {
            let value: Value = serde_json::from_str(line)
                .map_err(|_| UpstreamError::Protocol(format!("not JSON-RPC: {error}")))?;
            return match value.get("id").and_then(Value::as_u64) {
                Some(id) if value.get("method").is_none() => Ok(Parsed::Answer {
                    id,
                    accepted: value.get("result") == Some(&Value::Bool(true)),
                }),
                _ => Err(UpstreamError::Protocol(format!("not JSON-RPC: {error}"))),
            };
        }
    };
    classify(message)
}

/// What a decoded message from the upstream is.
fn classify(message: Message) -> Result<Parsed, UpstreamError> {
    match &message {
        Message::OkResponse(response) | Message::ErrorResponse(response) => {
            return Ok(Parsed::Answer {
                id: response.id,
                accepted: response.error.is_none() && response.result == Value::Bool(true),
            })
        }
        Message::StandardRequest(request) => return Ok(Parsed::Other(request.method.clone())),
        Message::Notification(_) => {}
    }
    match Method::try_from(message) {
        Ok(Method::Server2Client(notification)) => Ok(Parsed::Notification(notification)),
        Ok(other) => Ok(Parsed::Other(format!("{other:?}"))),
        Err(MethodError::MethodNotFound(method)) => Ok(Parsed::Other(method)),
        Err(error) => Err(UpstreamError::Protocol(format!(
            "unparsable notification: {error:?}"
        ))),
    }
}

/// The sequence number of the share a submit with request `id` carried.
fn submit_sequence(id: u64) -> Option<u32> {
    id.checked_sub(FIRST_SUBMIT_ID)
        .and_then(|sequence| u32::try_from(sequence).ok())
}

/// The upstream's version mask as far as our miners roll (BIP320's bits); `None` if that leaves
/// nothing.
fn usable_mask(mask: u32) -> Option<u32> {
    let usable = mask & VERSION_ROLLING_MASK;
    (usable != 0).then_some(usable)
}

async fn write_message(
    writer: &mut OwnedWriteHalf,
    message: &Message,
) -> Result<(), UpstreamError> {
    let mut line = serde_json::to_string(message)
        .map_err(|error| UpstreamError::Protocol(format!("cannot encode: {error}")))?;
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .await
        .map_err(|error| UpstreamError::Io(error.to_string()))
}

/// The target of Sv1 difficulty `difficulty`: `0xffff · 2^208 / difficulty`, rounded to be a
/// hair harder, never easier (so every share forwarded is one the upstream takes). `None` for
/// a difficulty that is not a positive number.
pub(super) fn difficulty_target(difficulty: f64) -> Option<Target> {
    if !difficulty.is_finite() || difficulty <= 0.0 {
        return None;
    }
    let quotient = 65_535.0 / difficulty;
    if !quotient.is_finite() {
        return Some(Target::MAX);
    }
    // quotient = mantissa · 2^exponent exactly, mantissa < 2^53.
    let bits = quotient.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    let mantissa = mantissa.saturating_sub(1);
    let shift = 208 + exponent;
    let mut le = [0u8; 32];
    let mantissa = if shift < 0 {
        mantissa.checked_shr((-shift) as u32).unwrap_or(0)
    } else {
        mantissa
    };
    let shift = shift.max(0) as u32;
    for bit in 0..64 {
        if mantissa >> bit & 1 == 1 {
            let at = shift + bit;
            if at >= 256 {
                return Some(Target::MAX);
            }
            le[(at / 8) as usize] |= 1 << (at % 8);
        }
    }
    Some(Target::from_le_bytes(le))
}

/// Our u32 job ids for the upstream's string ones, the most recent kept.
#[derive(Default)]
struct JobIds {
    next: u32,
    by_id: HashMap<u32, String>,
    order: VecDeque<u32>,
}

impl JobIds {
    fn insert(&mut self, upstream: String) -> u32 {
        self.next = self.next.wrapping_add(1);
        self.by_id.insert(self.next, upstream);
        self.order.push_back(self.next);
        if self.order.len() > JOB_IDS_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
        self.next
    }

    fn get(&self, id: u32) -> Option<String> {
        self.by_id.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difficulty_becomes_a_target_never_easier_than_its_own() {
        for difficulty in [1.0, 2.0, 65_536.0, 1.0 / 1_048_576.0, 1e-8, 3.7e12] {
            let target = difficulty_target(difficulty).unwrap();
            let back = target.difficulty_float();
            assert!(back >= difficulty, "{difficulty}: {back}");
            assert!(
                (back / difficulty - 1.0).abs() < 1e-12,
                "{difficulty}: {back}"
            );
        }
        assert_eq!(difficulty_target(0.0), None);
        assert_eq!(difficulty_target(f64::NAN), None);
        assert_eq!(difficulty_target(1e-80), Some(Target::MAX));
    }

    #[test]
    fn answers_notifications_and_garbage_are_told_apart() {
        assert!(matches!(
            parse(r#"{"id":1005,"result":true,"error":null}"#),
            Ok(Parsed::Answer {
                id: 1005,
                accepted: true
            })
        ));
        assert!(matches!(
            parse(r#"{"id":1006,"result":null,"error":["23","low difficulty",null]}"#),
            Ok(Parsed::Answer {
                id: 1006,
                accepted: false
            })
        ));
        assert!(matches!(
            parse(r#"{"id":null,"method":"mining.set_difficulty","params":[0.5]}"#),
            Ok(Parsed::Notification(Server2Client::SetDifficulty(_)))
        ));
        assert!(matches!(
            parse(r#"{"id":null,"method":"client.reconnect","params":[]}"#),
            Ok(Parsed::Other(_))
        ));
        assert!(parse("garbage").is_err());
        assert!(parse(r#"{"id":null,"method":"mining.notify","params":[1]}"#).is_err());
        assert_eq!(submit_sequence(1_007), Some(7));
        assert_eq!(submit_sequence(3), None);
    }

    proptest::proptest! {
        #[test]
        fn any_line_is_classified_or_refused(line in ".{0,300}") {
            let _ = parse(&line);
        }
    }
}
