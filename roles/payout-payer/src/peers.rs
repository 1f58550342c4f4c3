//! What the payer reads from the stack: the mint's node (`GET /v1/hashpool/lightning`) and the
//! pool's epochs (`GET /epochs`).

use serde::Deserialize;

use crate::PayerError;

#[derive(Debug, Clone, Deserialize)]
pub struct MintNode {
    pub node_id: String,
    pub listen_address: String,
    pub offer: Option<String>,
    pub funding_address: String,
    pub onchain_sat: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Epochs {
    pub open: u64,
    pub closed: Vec<ClosedEpoch>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClosedEpoch {
    pub epoch: u64,
    pub paid_by: Option<String>,
}

/// GETs `url` and decodes its JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> Result<T, PayerError> {
    let unreachable = |error: reqwest::Error| PayerError::Http {
        url: url.clone(),
        reason: error.to_string(),
    };
    let response = http.get(&url).send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(PayerError::Http {
            url,
            reason: format!("{status}: {body}"),
        });
    }
    serde_json::from_str(&body).map_err(|error| PayerError::Http {
        url,
        reason: format!("unreadable answer: {error}"),
    })
}
