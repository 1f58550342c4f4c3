//! Sats out over Lightning: a NUT-05 melt of the wallet's proofs to a BOLT11 invoice or a BOLT12
//! offer. The mint reserves a routing fee; what the payment did not spend comes back as change
//! (NUT-08).

use std::collections::HashMap;

use cdk::nuts::nut00::KnownMethod;
use cdk::nuts::{MeltQuoteState, PaymentMethod};

use crate::{MinerWallet, WalletError, WalletUnit};

/// What a withdrawal paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// The amount the invoice asked for, in sats.
    pub amount: u64,
    /// The fee the mint reserved before paying.
    pub fee_reserved: u64,
    /// The routing fee actually paid; the rest of the reserve came back as change.
    pub fee_paid: u64,
    /// The payment's preimage: proof that the payee was paid.
    pub preimage: Option<String>,
}

/// BOLT12 offers start `lno`; anything else is taken for a BOLT11 invoice.
fn method_of(request: &str) -> KnownMethod {
    if request
        .get(..3)
        .is_some_and(|hrp| hrp.eq_ignore_ascii_case("lno"))
    {
        KnownMethod::Bolt12
    } else {
        KnownMethod::Bolt11
    }
}

impl MinerWallet {
    /// Pays `request` (a BOLT11 invoice or a BOLT12 offer with an amount) from this wallet's
    /// sats.
    pub async fn withdraw(&self, request: &str) -> Result<Withdrawal, WalletError> {
        if self.unit != WalletUnit::Sat {
            return Err(WalletError::NotSats);
        }
        let method = PaymentMethod::Known(method_of(request.trim()));
        let quote = self
            .wallet
            .melt_quote(method, request.trim(), None, None)
            .await?;
        self.ensure_balance(u64::from(quote.amount) + u64::from(quote.fee_reserve))
            .await?;
        let melted = self
            .wallet
            .prepare_melt(&quote.id, HashMap::new())
            .await?
            .confirm()
            .await?;
        if melted.state() != MeltQuoteState::Paid {
            return Err(WalletError::NotPaid {
                quote: quote.id,
                state: melted.state().to_string(),
            });
        }
        Ok(Withdrawal {
            amount: u64::from(melted.amount()),
            fee_reserved: u64::from(quote.fee_reserve),
            fee_paid: u64::from(melted.fee_paid()),
            preimage: melted.payment_proof().map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_and_invoices_are_told_apart_by_prefix() {
        assert_eq!(method_of("lno1qgsq..."), KnownMethod::Bolt12);
        assert_eq!(method_of("LNO1QGSQ..."), KnownMethod::Bolt12);
        assert_eq!(method_of("lnbcrt10u1p..."), KnownMethod::Bolt11);
        assert_eq!(method_of("ln"), KnownMethod::Bolt11);
    }
}
