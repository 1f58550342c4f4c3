//! The mint's signed quote lookup, read page by page so a backlog of any size never sits in
//! memory at once.

use ehash::{lookup_message, QuoteLookupRequest, QuoteLookupResponse, QuoteState, QuoteSummary};

use crate::{MinerWallet, WalletError};

/// Reads a key's quotes in the wallet's unit one page at a time (each page a fresh signed
/// lookup).
pub struct QuotePages<'a> {
    wallet: &'a MinerWallet,
    after: Option<String>,
    done: bool,
}

impl QuotePages<'_> {
    /// The next page, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<QuoteSummary>>, WalletError> {
        if self.done {
            return Ok(None);
        }
        let answer = self.wallet.lookup_page(self.after.take()).await?;
        self.after = answer.next;
        self.done = self.after.is_none();
        // The lookup lists the key's quotes in both units; this wallet holds one.
        let unit = self.wallet.unit.name();
        Ok(Some(
            answer
                .quotes
                .into_iter()
                .filter(|quote| quote.unit == unit)
                .collect(),
        ))
    }
}

/// What is waiting at the mint for this key, summed over every page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// PAID quotes not yet minted, and what they will mint.
    pub paid_quotes: usize,
    pub paid_amount: u64,
    /// Quotes whose shares are not yet released.
    pub unpaid_quotes: usize,
}

impl Waiting {
    pub fn add(&mut self, quotes: &[QuoteSummary]) {
        for quote in quotes {
            if quote.mintable() > 0 {
                self.paid_quotes += 1;
                self.paid_amount += quote.mintable();
            } else if quote.state == QuoteState::Unpaid {
                self.unpaid_quotes += 1;
            }
        }
    }
}

impl MinerWallet {
    /// This key's quotes at the mint, page by page.
    pub fn quote_pages(&self) -> QuotePages<'_> {
        QuotePages {
            wallet: self,
            after: None,
            done: false,
        }
    }

    /// Every quote of this key (all pages; for small wallets and tests).
    pub async fn quotes(&self) -> Result<Vec<QuoteSummary>, WalletError> {
        let mut pages = self.quote_pages();
        let mut quotes = Vec::new();
        while let Some(page) = pages.next_page().await? {
            quotes.extend(page);
        }
        Ok(quotes)
    }

    /// What is waiting at the mint, read page by page.
    pub async fn waiting(&self) -> Result<Waiting, WalletError> {
        let mut pages = self.quote_pages();
        let mut waiting = Waiting::default();
        while let Some(page) = pages.next_page().await? {
            waiting.add(&page);
        }
        Ok(waiting)
    }

    /// One page of the lookup, proven with a fresh signature.
    async fn lookup_page(&self, after: Option<String>) -> Result<QuoteLookupResponse, WalletError> {
        let pubkey = self.pubkey();
        let timestamp = hashpool_service::unix_now();
        let signature = self
            .keys
            .locking_key
            .sign(lookup_message(&pubkey, timestamp).as_bytes())
            .map_err(|error| WalletError::Store(error.to_string()))?;
        let request = QuoteLookupRequest {
            pubkey: pubkey.to_string(),
            timestamp,
            signature: signature.to_string(),
            after,
            limit: None,
        };
        let url = self
            .mint_url
            .join_paths(&["v1", "ehash", "quotes"])
            .map_err(|error| WalletError::BadMintUrl {
                url: self.mint_url.to_string(),
                reason: error.to_string(),
            })?;
        let response = self
            .http
            .post(url.as_str())
            .json(&request)
            .send()
            .await
            .map_err(|error| WalletError::MintUnreachable {
                url: self.mint_url.to_string(),
                reason: error.to_string(),
            })?;
        let body = response.body_lossy();
        if !response.is_success() {
            return Err(WalletError::MintRefused(refusal(response.status(), &body)));
        }
        serde_json::from_str(&body).map_err(|error| WalletError::BadMintAnswer(error.to_string()))
    }
}

/// A mint's error answer as one line: its cashu code and detail when it sent them.
pub(crate) fn refusal(status: u16, body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct CashuError {
        code: u32,
        detail: Option<String>,
    }
    match serde_json::from_str::<CashuError>(body) {
        Ok(error) => format!(
            "{} (code {}, HTTP {status})",
            error.detail.unwrap_or_default(),
            error.code
        ),
        Err(_) => format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_cashu_code() {
        assert_eq!(
            refusal(400, r#"{"code":20008,"detail":"stale"}"#),
            "stale (code 20008, HTTP 400)"
        );
        assert_eq!(refusal(502, "<html>"), "HTTP 502: <html>");
    }
}
