//! The two quote messages the pool appends to the stream.
//!
//! Wire form is JSON with a version field, readable with `redis-cli XRANGE`:
//!
//! ```json
//! {"v":1,"kind":"create","quote_id":"…","locking_pubkey":"02…","amount":64,"unit":"hash",
//!  "share_hash":"…","channel_id":1,"job_id":7,"template_id":3,"epoch":102,"created_at":1764000000}
//! {"v":1,"kind":"update","state":"PAID","quote_ids":["…"]}
//! {"v":1,"kind":"update","state":"PAID","epoch":7,"payout":50000,"work":1048576,"quotes":4096,
//!  "payment":"…"}
//! ```
//!
//! An epoch update names its totals, not its quotes: an epoch can hold millions of shares. The
//! mint, which stores every quote of the epoch with its work, splits the payout over them with
//! [`crate::split_payout`] once it holds exactly `quotes` quotes adding up to `work`.
//!
//! Decoding checks the version first, then the shape, then the invariants (the quote id matches
//! the share hash, amounts are positive, an epoch names some work and the payment that funds
//! it), so the mint can dead-letter a bad message with a precise reason.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::identity::LockingPubkey;
use crate::policy::ReleasePolicy;
use crate::work::{quote_id_for_share, ShareHash};

/// The message version this crate writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// Why bytes from the stream are not a valid quote message.
#[derive(Debug, Error)]
pub enum MessageError {
    #[error("message is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("message has no version field \"v\"")]
    MissingVersion,
    #[error(
        "message version {found} is not supported (this build reads version {MESSAGE_VERSION})"
    )]
    UnsupportedVersion { found: u64 },
    #[error("message does not have the shape of a version {MESSAGE_VERSION} quote message: {0}")]
    Shape(#[source] serde_json::Error),
    #[error("quote id {quote_id} is not the id of share {share_hash} (expected {expected})")]
    QuoteIdMismatch {
        quote_id: Uuid,
        share_hash: ShareHash,
        expected: Uuid,
    },
    #[error("quote {quote_id} has amount 0; a quote is worth at least 1 unit")]
    ZeroAmount { quote_id: Uuid },
    #[error("unit is empty")]
    EmptyUnit,
    #[error("update names no quote")]
    EmptyUpdate,
    #[error("update must name either quote_ids or an epoch, not both")]
    AmbiguousUpdate,
    #[error("epoch {epoch} update lacks its payout, work, quote count or payment")]
    IncompleteEpochUpdate { epoch: u64 },
    #[error("epoch {epoch} update names no work (quotes {quotes}, work {work})")]
    EmptyEpoch { epoch: u64, quotes: u64, work: u64 },
    #[error("update state {0:?} is not supported; only \"PAID\" releases quotes")]
    UnsupportedState(String),
}

/// A message on the quote stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteMessage {
    Create(CreateQuote),
    Update(UpdateQuote),
}

/// One accepted share: store an UNPAID quote locked to the miner's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateQuote {
    pub quote_id: Uuid,
    pub locking_pubkey: LockingPubkey,
    /// Credited work in units of 2^12 expected hashes (see [`crate::credited_work`]).
    pub amount: u64,
    pub unit: String,
    pub share_hash: ShareHash,
    pub channel_id: u32,
    pub job_id: u32,
    pub template_id: u64,
    /// Payout epoch: the height of the block the share's template builds.
    pub epoch: u64,
    /// Unix time, seconds, when the pool accepted the share.
    pub created_at: u64,
}

/// What the pool knows of a share it accepted: everything its create message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedShare {
    pub share_hash: ShareHash,
    pub locking_pubkey: LockingPubkey,
    /// Exactly the work the job's target proves (see [`crate::credited_work`]).
    pub credited_work: u64,
    pub channel_id: u32,
    pub job_id: u32,
    pub template_id: u64,
    /// The payout epoch the share belongs to: the height of the block its template builds.
    pub epoch: u64,
    /// Unix time, seconds.
    pub accepted_at: u64,
}

impl CreateQuote {
    /// The create message of a share accepted under the ehash policy (unit `hash`); its quote
    /// id is derived from the share hash.
    pub fn for_share(share: AcceptedShare) -> Self {
        Self::for_share_under(ReleasePolicy::Ehash, share)
    }

    /// The create message of a share accepted under `policy`, in the policy's unit.
    pub fn for_share_under(policy: ReleasePolicy, share: AcceptedShare) -> Self {
        Self {
            quote_id: quote_id_for_share(&share.share_hash),
            locking_pubkey: share.locking_pubkey,
            amount: share.credited_work,
            unit: policy.quote_unit().to_owned(),
            share_hash: share.share_hash,
            channel_id: share.channel_id,
            job_id: share.job_id,
            template_id: share.template_id,
            epoch: share.epoch,
            created_at: share.accepted_at,
        }
    }

    fn validate(&self) -> Result<(), MessageError> {
        let expected = quote_id_for_share(&self.share_hash);
        if self.quote_id != expected {
            return Err(MessageError::QuoteIdMismatch {
                quote_id: self.quote_id,
                share_hash: self.share_hash,
                expected,
            });
        }
        if self.amount == 0 {
            return Err(MessageError::ZeroAmount {
                quote_id: self.quote_id,
            });
        }
        if self.unit.is_empty() {
            return Err(MessageError::EmptyUnit);
        }
        Ok(())
    }
}

/// Release quotes: mark them PAID so their owners can mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateQuote {
    pub release: Release,
}

/// What an update releases, one variant per release policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// ehash policy: these quotes are PAID for the amount they were created with.
    Quotes(Vec<Uuid>),
    /// payout-epoch policy: the epoch's quotes are PAID their share of its payout.
    Epoch(EpochRelease),
}

/// A payout that landed for a closed epoch, and the totals the pool credited in it: the mint
/// splits `payout` over the epoch's quotes pro-rata to their work once it holds all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRelease {
    pub epoch: u64,
    /// What landed, in sats; the quotes' amounts add up to exactly this.
    pub payout: u64,
    /// The work the pool credited in the epoch, in units (the sum of its quotes' amounts).
    pub total_work: u64,
    /// How many quotes the pool created in the epoch.
    pub quotes: u64,
    /// The payment that funds it (a Lightning payment hash): one payment pays one epoch.
    pub payment_id: String,
}

impl UpdateQuote {
    pub fn paid(quote_ids: Vec<Uuid>) -> Self {
        Self {
            release: Release::Quotes(quote_ids),
        }
    }

    pub fn epoch_paid(release: EpochRelease) -> Self {
        Self {
            release: Release::Epoch(release),
        }
    }
}

const STATE_PAID: &str = "PAID";

/// The flat wire form of an update; [`UpdateQuote`] is its validated form.
#[derive(Serialize, Deserialize)]
struct UpdateWire {
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quote_ids: Option<Vec<Uuid>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    work: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quotes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment: Option<String>,
}

impl From<&UpdateQuote> for UpdateWire {
    fn from(update: &UpdateQuote) -> Self {
        let mut wire = UpdateWire {
            state: STATE_PAID.to_owned(),
            quote_ids: None,
            epoch: None,
            payout: None,
            work: None,
            quotes: None,
            payment: None,
        };
        match &update.release {
            Release::Quotes(ids) => wire.quote_ids = Some(ids.clone()),
            Release::Epoch(epoch) => {
                wire.epoch = Some(epoch.epoch);
                wire.payout = Some(epoch.payout);
                wire.work = Some(epoch.total_work);
                wire.quotes = Some(epoch.quotes);
                wire.payment = Some(epoch.payment_id.clone());
            }
        }
        wire
    }
}

impl TryFrom<UpdateWire> for UpdateQuote {
    type Error = MessageError;

    fn try_from(mut wire: UpdateWire) -> Result<Self, MessageError> {
        if wire.state != STATE_PAID {
            return Err(MessageError::UnsupportedState(wire.state));
        }
        let release = match (wire.quote_ids.take(), wire.epoch) {
            (Some(_), Some(_)) => return Err(MessageError::AmbiguousUpdate),
            (None, None) => return Err(MessageError::EmptyUpdate),
            (Some(ids), None) if ids.is_empty() => return Err(MessageError::EmptyUpdate),
            (Some(ids), None) => Release::Quotes(ids),
            (None, Some(epoch)) => Release::Epoch(epoch_release(epoch, wire)?),
        };
        Ok(UpdateQuote { release })
    }
}

fn epoch_release(epoch: u64, wire: UpdateWire) -> Result<EpochRelease, MessageError> {
    let (Some(payout), Some(work), Some(quotes), Some(payment_id)) =
        (wire.payout, wire.work, wire.quotes, wire.payment)
    else {
        return Err(MessageError::IncompleteEpochUpdate { epoch });
    };
    if payment_id.is_empty() {
        return Err(MessageError::IncompleteEpochUpdate { epoch });
    }
    if work == 0 || quotes == 0 {
        return Err(MessageError::EmptyEpoch {
            epoch,
            quotes,
            work,
        });
    }
    Ok(EpochRelease {
        epoch,
        payout,
        total_work: work,
        quotes,
        payment_id,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Body {
    Create(CreateQuote),
    Update(UpdateWire),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    #[serde(flatten)]
    body: Body,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: Option<serde_json::Value>,
}

impl QuoteMessage {
    /// The JSON stored in the stream entry's [`crate::STREAM_FIELD`].
    pub fn to_json(&self) -> String {
        let body = match self {
            QuoteMessage::Create(create) => Body::Create(create.clone()),
            QuoteMessage::Update(update) => Body::Update(update.into()),
        };
        let envelope = Envelope {
            v: MESSAGE_VERSION,
            body,
        };
        serde_json::to_string(&envelope).expect("quote messages always serialize")
    }

    /// Decodes and validates a message; the error says exactly what is wrong with it.
    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        let probe: VersionProbe = serde_json::from_str(json).map_err(MessageError::Json)?;
        match probe.v {
            None => return Err(MessageError::MissingVersion),
            Some(v) if v.as_u64() == Some(u64::from(MESSAGE_VERSION)) => {}
            Some(v) => {
                return Err(MessageError::UnsupportedVersion {
                    found: v.as_u64().unwrap_or(u64::MAX),
                })
            }
        }
        let envelope: Envelope = serde_json::from_str(json).map_err(MessageError::Shape)?;
        match envelope.body {
            Body::Create(create) => {
                create.validate()?;
                Ok(QuoteMessage::Create(create))
            }
            Body::Update(wire) => Ok(QuoteMessage::Update(wire.try_into()?)),
        }
    }

    /// `create` or `update`, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            QuoteMessage::Create(_) => "create",
            QuoteMessage::Update(_) => "update",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use std::str::FromStr;

    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    fn accepted() -> AcceptedShare {
        AcceptedShare {
            share_hash: ShareHash::from_byte_array([7; 32]),
            locking_pubkey: LockingPubkey::from_str(KEY).unwrap(),
            credited_work: 64,
            channel_id: 3,
            job_id: 11,
            template_id: 5,
            epoch: 102,
            accepted_at: 1_764_000_000,
        }
    }

    fn create() -> CreateQuote {
        CreateQuote::for_share(accepted())
    }

    fn reencode(value: serde_json::Value) -> Result<QuoteMessage, MessageError> {
        QuoteMessage::from_json(&value.to_string())
    }

    #[test]
    fn create_round_trips() {
        let message = QuoteMessage::Create(create());
        let json = message.to_json();
        assert_eq!(QuoteMessage::from_json(&json).unwrap(), message);
    }

    #[test]
    fn a_policy_gives_its_quotes_its_unit() {
        let share = |policy| CreateQuote::for_share_under(policy, accepted());
        assert_eq!(share(ReleasePolicy::Ehash), create());
        let epoch = share(ReleasePolicy::PayoutEpoch);
        assert_eq!(epoch.unit, crate::EPOCH_UNIT);
        assert_eq!(
            CreateQuote {
                unit: crate::UNIT.to_owned(),
                ..epoch
            },
            create(),
            "only the unit differs"
        );
    }

    #[test]
    fn create_wire_form_is_stable() {
        let value: serde_json::Value =
            serde_json::from_str(&QuoteMessage::Create(create()).to_json()).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["kind"], "create");
        assert_eq!(value["unit"], "hash");
        assert_eq!(value["amount"], 64);
        assert_eq!(value["locking_pubkey"], KEY);
        assert_eq!(
            value["quote_id"],
            quote_id_for_share(&ShareHash::from_byte_array([7; 32])).to_string()
        );
        assert_eq!(value["share_hash"], "07".repeat(32));
    }

    #[test]
    fn updates_round_trip() {
        let ids = vec![create().quote_id, Uuid::from_u128(9)];
        let ehash = QuoteMessage::Update(UpdateQuote::paid(ids));
        assert_eq!(QuoteMessage::from_json(&ehash.to_json()).unwrap(), ehash);

        let epoch = QuoteMessage::Update(UpdateQuote::epoch_paid(EpochRelease {
            epoch: 7,
            payout: 50_000,
            total_work: 1 << 20,
            quotes: 4096,
            payment_id: "ab".repeat(32),
        }));
        let json = epoch.to_json();
        assert!(json.contains("\"state\":\"PAID\""));
        assert!(json.contains("\"work\":1048576"));
        assert_eq!(QuoteMessage::from_json(&json).unwrap(), epoch);
    }

    #[test]
    fn an_epoch_update_needs_its_totals_and_payment() {
        let full = serde_json::json!({"v": 1, "kind": "update", "state": "PAID", "epoch": 7,
            "payout": 50_000, "work": 8, "quotes": 3, "payment": "ab"});
        assert!(reencode(full.clone()).is_ok());
        for missing in ["payout", "work", "quotes", "payment"] {
            let mut value = full.clone();
            value.as_object_mut().unwrap().remove(missing);
            assert!(
                matches!(
                    reencode(value),
                    Err(MessageError::IncompleteEpochUpdate { epoch: 7 })
                ),
                "{missing}"
            );
        }
        let mut no_work = full.clone();
        no_work["work"] = 0.into();
        assert!(matches!(
            reencode(no_work),
            Err(MessageError::EmptyEpoch { epoch: 7, .. })
        ));
        let mut no_payment = full;
        no_payment["payment"] = "".into();
        assert!(matches!(
            reencode(no_payment),
            Err(MessageError::IncompleteEpochUpdate { epoch: 7 })
        ));
    }

    #[test]
    fn unknown_and_missing_versions_are_rejected_before_the_shape() {
        let mut value: serde_json::Value =
            serde_json::from_str(&QuoteMessage::Create(create()).to_json()).unwrap();
        value["v"] = 2.into();
        value["kind"] = "something-new".into();
        assert!(matches!(
            reencode(value.clone()),
            Err(MessageError::UnsupportedVersion { found: 2 })
        ));
        value["v"] = "1".into();
        assert!(matches!(
            reencode(value.clone()),
            Err(MessageError::UnsupportedVersion { .. })
        ));
        value.as_object_mut().unwrap().remove("v");
        assert!(matches!(reencode(value), Err(MessageError::MissingVersion)));
    }

    #[test]
    fn malformed_messages_say_why() {
        assert!(matches!(
            QuoteMessage::from_json("not json"),
            Err(MessageError::Json(_))
        ));
        assert!(matches!(
            QuoteMessage::from_json("[1,2]"),
            Err(MessageError::Json(_))
        ));
        assert!(matches!(
            QuoteMessage::from_json(r#"{"v":1,"kind":"delete"}"#),
            Err(MessageError::Shape(_))
        ));
        let mut value: serde_json::Value =
            serde_json::from_str(&QuoteMessage::Create(create()).to_json()).unwrap();
        value["locking_pubkey"] = "04abcd".into();
        assert!(matches!(reencode(value), Err(MessageError::Shape(_))));
    }

    #[test]
    fn create_invariants_are_checked() {
        let mut forged = create();
        forged.quote_id = Uuid::from_u128(1);
        assert!(matches!(
            QuoteMessage::from_json(&QuoteMessage::Create(forged).to_json()),
            Err(MessageError::QuoteIdMismatch { .. })
        ));
        let mut zero = create();
        zero.amount = 0;
        assert!(matches!(
            QuoteMessage::from_json(&QuoteMessage::Create(zero).to_json()),
            Err(MessageError::ZeroAmount { .. })
        ));
        let mut unitless = create();
        unitless.unit.clear();
        assert!(matches!(
            QuoteMessage::from_json(&QuoteMessage::Create(unitless).to_json()),
            Err(MessageError::EmptyUnit)
        ));
    }

    proptest::proptest! {
        // The mint feeds whatever is on the stream to this decoder: it must answer, never panic.
        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = QuoteMessage::from_json(&text);
        }

        #[test]
        fn decoding_mutated_messages_never_panics(cut in 0usize..400, byte in proptest::num::u8::ANY) {
            let mut json = QuoteMessage::Create(create()).to_json().into_bytes();
            let at = cut % json.len();
            json[at] = byte;
            let _ = QuoteMessage::from_json(&String::from_utf8_lossy(&json));
        }
    }

    #[test]
    fn update_invariants_are_checked() {
        let id = Uuid::from_u128(1).to_string();
        let cases = [
            (
                serde_json::json!({"v":1,"kind":"update","state":"PAID"}),
                "names no quote",
            ),
            (
                serde_json::json!({"v":1,"kind":"update","state":"PAID","quote_ids":[]}),
                "names no quote",
            ),
            (
                serde_json::json!({"v":1,"kind":"update","state":"PAID","quote_ids":[id],"epoch":1}),
                "not both",
            ),
            (
                serde_json::json!({"v":1,"kind":"update","state":"ISSUED","quote_ids":[id]}),
                "not supported",
            ),
            (
                serde_json::json!({"v":1,"kind":"update","state":"PAID","epoch":4}),
                "lacks its payout",
            ),
            (
                serde_json::json!({"v":1,"kind":"update","state":"PAID","epoch":4,"payout":10,"work":0,"quotes":0,"payment":"ab"}),
                "names no work",
            ),
        ];
        for (value, reason) in cases {
            let error = reencode(value.clone()).unwrap_err().to_string();
            assert!(error.contains(reason), "{value}: {error}");
        }
    }
}
