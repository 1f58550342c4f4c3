//! What a batch of creates and ehash updates does to the store, decided before any write.
//!
//! The plan is pure: given the quotes the store already holds (with the payments recorded on
//! them), it says which quotes to insert, which payments to record, and what became of each
//! message. Both ways of writing a batch (cdk's store API, and set-based SQL on PostgreSQL)
//! carry out the same plan, so they cannot disagree on what a redelivered or early message does.

use std::collections::{HashMap, HashSet};

use cdk::nuts::CurrencyUnit;
use ehash::CreateQuote;
use uuid::Uuid;

use super::{cdk_unit, payment_id, within_retention, Applied, Batchable, Created, QuoteBookError};

/// A quote as the batch sees it: what an ehash update pays it, and the payments it has.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// The amount an ehash update pays: the created work (none for a sat epoch quote).
    pub amount: Option<u64>,
    pub payment_ids: HashSet<String>,
}

/// A quote to insert UNPAID.
#[derive(Debug)]
pub struct NewQuote<'a> {
    pub create: &'a CreateQuote,
    pub unit: CurrencyUnit,
    /// The message it came from, an index into [`BatchPlan::results`].
    pub message: usize,
}

/// A payment to record on a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub quote_id: Uuid,
    pub payment_id: String,
    pub amount: u64,
    /// The update it came from, an index into [`BatchPlan::results`].
    pub message: usize,
}

#[derive(Debug)]
pub struct BatchPlan<'a> {
    /// One per message, in order. A message's error leaves the store as it is.
    pub results: Vec<Result<Applied, QuoteBookError>>,
    pub creates: Vec<NewQuote<'a>>,
    pub payments: Vec<NewPayment>,
}

/// Plans `messages` against the quotes the store `held` (by id) when the batch began; a create
/// made before `refuse_created_before` that is not held is refused (see `Retention`).
pub fn plan_batch<'a>(
    messages: &[Batchable<'a>],
    mut held: HashMap<Uuid, Held>,
    refuse_created_before: Option<u64>,
) -> BatchPlan<'a> {
    let mut plan = BatchPlan {
        results: Vec::with_capacity(messages.len()),
        creates: Vec::new(),
        payments: Vec::new(),
    };
    for (index, &message) in messages.iter().enumerate() {
        let result = match message {
            Batchable::Create(create) => {
                plan_create(create, index, refuse_created_before, &mut held, &mut plan)
            }
            Batchable::Pay(ids) => plan_pay(ids, index, &mut held, &mut plan),
        };
        plan.results.push(result);
    }
    plan
}

fn plan_create<'a>(
    create: &'a CreateQuote,
    index: usize,
    refuse_created_before: Option<u64>,
    held: &mut HashMap<Uuid, Held>,
    plan: &mut BatchPlan<'a>,
) -> Result<Applied, QuoteBookError> {
    let unit = cdk_unit(create)?;
    if held.contains_key(&create.quote_id) {
        return Ok(Applied::Created(Created::AlreadyStored));
    }
    within_retention(create, refuse_created_before)?;
    held.insert(
        create.quote_id,
        Held {
            amount: (unit != CurrencyUnit::Sat).then_some(create.amount),
            payment_ids: HashSet::new(),
        },
    );
    plan.creates.push(NewQuote {
        create,
        unit,
        message: index,
    });
    Ok(Applied::Created(Created::New))
}

/// All of an update or none of it: an update naming a quote the store does not hold (yet)
/// records nothing, and is retried whole.
fn plan_pay(
    ids: &[Uuid],
    index: usize,
    held: &mut HashMap<Uuid, Held>,
    plan: &mut BatchPlan<'_>,
) -> Result<Applied, QuoteBookError> {
    if let Some(missing) = ids.iter().find(|id| !held.contains_key(id)) {
        return Err(QuoteBookError::UnknownQuote(*missing));
    }
    let mut newly_paid = 0;
    for id in ids {
        let quote = held.get_mut(id).expect("checked above: every id is held");
        let Some(amount) = quote.amount.filter(|&amount| amount > 0) else {
            continue;
        };
        let payment_id = payment_id(*id, None);
        if quote.payment_ids.insert(payment_id.clone()) {
            newly_paid += 1;
            plan.payments.push(NewPayment {
                quote_id: *id,
                payment_id,
                amount,
                message: index,
            });
        }
    }
    Ok(Applied::Paid(newly_paid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::{LockingPubkey, ReleasePolicy};

    fn create(work: u64, policy: ReleasePolicy) -> CreateQuote {
        let key: LockingPubkey =
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
                .parse()
                .unwrap();
        CreateQuote::for_share_under(policy, hashpool_testkit::accepted_share(key, work, 1))
    }

    #[test]
    fn a_quote_is_paid_once_across_messages_and_batches() {
        let a = create(5, ReleasePolicy::Ehash);
        let b = create(7, ReleasePolicy::Ehash);
        let ids = [a.quote_id, b.quote_id];
        let messages = [
            Batchable::Create(&a),
            Batchable::Pay(&ids[..1]),
            Batchable::Create(&b),
            // Names `a` again: already paid in this batch.
            Batchable::Pay(&ids),
        ];
        let plan = plan_batch(&messages, HashMap::new(), None);
        assert_eq!(plan.creates.len(), 2);
        let paid: Vec<(Uuid, u64)> = plan
            .payments
            .iter()
            .map(|payment| (payment.quote_id, payment.amount))
            .collect();
        assert_eq!(paid, [(a.quote_id, 5), (b.quote_id, 7)]);
        assert!(matches!(plan.results[3], Ok(Applied::Paid(1))));

        // The next batch sees both stored and paid: the same messages change nothing.
        let held = plan
            .payments
            .iter()
            .map(|payment| {
                let held = Held {
                    amount: Some(payment.amount),
                    payment_ids: HashSet::from([payment.payment_id.clone()]),
                };
                (payment.quote_id, held)
            })
            .collect();
        let again = plan_batch(&messages, held, None);
        assert!(again.creates.is_empty() && again.payments.is_empty());
        assert!(matches!(
            again.results[0],
            Ok(Applied::Created(Created::AlreadyStored))
        ));
    }

    #[test]
    fn an_update_before_its_create_records_nothing() {
        let a = create(5, ReleasePolicy::Ehash);
        let b = create(7, ReleasePolicy::Ehash);
        let ids = [a.quote_id, b.quote_id];
        let messages = [Batchable::Create(&a), Batchable::Pay(&ids)];
        let plan = plan_batch(&messages, HashMap::new(), None);
        assert!(plan.payments.is_empty());
        assert!(
            matches!(plan.results[1], Err(QuoteBookError::UnknownQuote(id)) if id == b.quote_id)
        );
    }

    #[test]
    fn an_epoch_quote_is_not_paid_by_an_ehash_update() {
        let sat = create(5, ReleasePolicy::PayoutEpoch);
        let ids = [sat.quote_id];
        let plan = plan_batch(
            &[Batchable::Create(&sat), Batchable::Pay(&ids)],
            HashMap::new(),
            None,
        );
        assert_eq!(plan.creates[0].unit, CurrencyUnit::Sat);
        assert!(plan.payments.is_empty());
        assert!(matches!(plan.results[1], Ok(Applied::Paid(0))));
    }

    #[test]
    fn a_wrong_unit_is_refused_and_planned_nowhere() {
        let wrong = CreateQuote {
            unit: "usd".into(),
            ..create(5, ReleasePolicy::Ehash)
        };
        let plan = plan_batch(&[Batchable::Create(&wrong)], HashMap::new(), None);
        assert!(plan.creates.is_empty());
        assert!(matches!(
            plan.results[0],
            Err(QuoteBookError::WrongUnit { .. })
        ));
    }

    #[test]
    fn a_create_past_the_retention_window_is_refused_unless_stored() {
        let old = create(5, ReleasePolicy::Ehash);
        let fresh = CreateQuote {
            created_at: old.created_at + 10,
            ..create(7, ReleasePolicy::Ehash)
        };
        let horizon = Some(old.created_at + 1);
        let messages = [Batchable::Create(&old), Batchable::Create(&fresh)];
        let plan = plan_batch(&messages, HashMap::new(), horizon);
        assert_eq!(plan.creates.len(), 1);
        assert_eq!(plan.creates[0].create.quote_id, fresh.quote_id);
        assert!(matches!(
            plan.results[0],
            Err(QuoteBookError::BeyondRetention { quote_id, .. }) if quote_id == old.quote_id
        ));

        // Still in the store: a redelivery is what it always was, nothing to do.
        let held = HashMap::from([(old.quote_id, Held::default())]);
        let again = plan_batch(&messages[..1], held, horizon);
        assert!(matches!(
            again.results[0],
            Ok(Applied::Created(Created::AlreadyStored))
        ));
    }
}
