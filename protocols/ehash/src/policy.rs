//! When the mint may release a quote's tokens, and for how much.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// How the pool releases quotes. Both policies use the same `create` and `update` messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleasePolicy {
    /// Each quote is PAID for its credited work (unit `hash`) as soon as the pool has validated
    /// the share and its template.
    #[default]
    Ehash,
    /// Quotes stay UNPAID until their epoch's block reward lands; one update then releases the
    /// epoch, its payout split pro-rata to work with [`split_payout`].
    PayoutEpoch,
}

impl ReleasePolicy {
    /// The unit of the quotes created under this policy.
    pub fn quote_unit(self) -> &'static str {
        match self {
            ReleasePolicy::Ehash => crate::UNIT,
            ReleasePolicy::PayoutEpoch => crate::EPOCH_UNIT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayoutError {
    #[error("the epoch has no work to pay")]
    NoWork,
    #[error("quote {0} appears twice in the epoch")]
    DuplicateQuote(Uuid),
}

/// Splits `payout` over quotes pro-rata to their work.
///
/// Rounding rule (largest remainder): each quote first gets `floor(payout * work / total_work)`;
/// the units left over, fewer than the number of quotes, go one each to the quotes with the
/// largest remainders `payout * work mod total_work`, ties broken by smaller quote id. The result
/// is deterministic, adds up to exactly `payout` (never more), and no quote is off its exact
/// share by a whole unit or more. Quotes with zero work get nothing.
pub fn split_payout(payout: u64, work: &[(Uuid, u64)]) -> Result<BTreeMap<Uuid, u64>, PayoutError> {
    let total_work: u128 = work.iter().map(|&(_, w)| u128::from(w)).sum();
    if total_work == 0 {
        return Err(PayoutError::NoWork);
    }

    let mut amounts = BTreeMap::new();
    let mut remainders = Vec::with_capacity(work.len());
    let mut assigned: u128 = 0;
    for &(quote_id, quote_work) in work {
        let exact = u128::from(payout) * u128::from(quote_work);
        let floor = exact / total_work;
        assigned += floor;
        let floor = u64::try_from(floor).expect("a share of the payout fits in u64");
        if amounts.insert(quote_id, floor).is_some() {
            return Err(PayoutError::DuplicateQuote(quote_id));
        }
        remainders.push((exact % total_work, quote_id));
    }

    let leftover = u128::from(payout) - assigned;
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, quote_id) in remainders.iter().take(leftover as usize) {
        *amounts
            .get_mut(&quote_id)
            .expect("every quote has an amount") += 1;
    }
    Ok(amounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn ids(work: &[u64]) -> Vec<(Uuid, u64)> {
        work.iter()
            .enumerate()
            .map(|(i, &w)| (Uuid::from_u128(i as u128 + 1), w))
            .collect()
    }

    #[test]
    fn even_split() {
        let amounts = split_payout(1000, &ids(&[1, 1, 2])).unwrap();
        assert_eq!(
            amounts.values().copied().collect::<Vec<_>>(),
            [250, 250, 500]
        );
    }

    #[test]
    fn leftover_goes_to_largest_remainders_then_smallest_id() {
        // 10 over three equal quotes: 3 each, the one leftover unit to the smallest id.
        let amounts = split_payout(10, &ids(&[5, 5, 5])).unwrap();
        assert_eq!(amounts.values().copied().collect::<Vec<_>>(), [4, 3, 3]);
        // 100 over work 1, 2: exact 33.3 and 66.6 -> 33 and 67.
        let amounts = split_payout(100, &ids(&[1, 2])).unwrap();
        assert_eq!(amounts.values().copied().collect::<Vec<_>>(), [33, 67]);
    }

    #[test]
    fn zero_work_quotes_get_nothing() {
        let amounts = split_payout(7, &ids(&[0, 3])).unwrap();
        assert_eq!(amounts.values().copied().collect::<Vec<_>>(), [0, 7]);
    }

    #[test]
    fn errors() {
        assert_eq!(split_payout(5, &[]), Err(PayoutError::NoWork));
        assert_eq!(split_payout(5, &ids(&[0, 0])), Err(PayoutError::NoWork));
        let twice = [(Uuid::from_u128(1), 1), (Uuid::from_u128(1), 2)];
        assert_eq!(
            split_payout(5, &twice),
            Err(PayoutError::DuplicateQuote(Uuid::from_u128(1)))
        );
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let amounts = split_payout(u64::MAX, &ids(&[u64::MAX, u64::MAX, 1])).unwrap();
        let total: u128 = amounts.values().map(|&a| u128::from(a)).sum();
        assert_eq!(total, u128::from(u64::MAX));
    }

    #[test]
    fn policy_config_names() {
        let parse = |name: &str| serde_json::from_str::<ReleasePolicy>(&format!("\"{name}\""));
        assert_eq!(parse("payout-epoch").unwrap(), ReleasePolicy::PayoutEpoch);
        assert_eq!(parse("ehash").unwrap(), ReleasePolicy::Ehash);
        assert!(parse("pplns").is_err());
        assert_eq!(ReleasePolicy::default(), ReleasePolicy::Ehash);
    }

    proptest! {
        #[test]
        fn split_pays_exactly_the_payout_and_is_fair(
            payout in any::<u64>(),
            work in vec(any::<u64>(), 1..50),
        ) {
            let work = ids(&work);
            let total_work: u128 = work.iter().map(|&(_, w)| u128::from(w)).sum();
            prop_assume!(total_work > 0);
            let amounts = split_payout(payout, &work).unwrap();

            let paid: u128 = amounts.values().map(|&a| u128::from(a)).sum();
            prop_assert_eq!(paid, u128::from(payout));
            for (id, w) in &work {
                // |amount - payout*w/W| < 1, i.e. amount is floor or floor+1 of the exact share.
                let floor = u128::from(payout) * u128::from(*w) / total_work;
                let amount = u128::from(amounts[id]);
                prop_assert!(amount == floor || amount == floor + 1);
            }
        }

        #[test]
        fn more_work_never_earns_less(payout in any::<u64>(), work in vec(1..u64::MAX / 64, 2..20)) {
            let work = ids(&work);
            let amounts = split_payout(payout, &work).unwrap();
            for (a_id, a_work) in &work {
                for (b_id, b_work) in &work {
                    if a_work > b_work {
                        prop_assert!(amounts[a_id] >= amounts[b_id]);
                    }
                }
            }
        }

        #[test]
        fn split_is_deterministic_whatever_the_order(payout in any::<u64>(), work in vec(1..1_000_000u64, 1..20)) {
            let forward = ids(&work);
            let mut backward = forward.clone();
            backward.reverse();
            prop_assert_eq!(split_payout(payout, &forward).unwrap(), split_payout(payout, &backward).unwrap());
        }
    }
}
