//! `GET /v1/hashpool/lightning`: what a payer needs to reach the node (its id, P2P address and
//! payout offer, an address to fund its anchor reserve) and what an operator watches (balances,
//! channels). All of it is public by nature: nothing here moves funds.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ldk_node::Node;
use serde::Serialize;

use super::ledger::PayoutLedger;

pub const PATH: &str = "/v1/hashpool/lightning";

#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub listen_address: String,
    /// The BOLT12 offer payouts are paid to; absent until the node has a channel peer.
    pub offer: Option<String>,
    /// An on-chain address of the node (ldk-node keeps on-chain funds to bump channel closes).
    pub funding_address: String,
    pub onchain_sat: u64,
    pub lightning_sat: u64,
    pub usable_channels: usize,
}

#[derive(Clone)]
struct InfoState {
    node: Arc<Node>,
    ledger: PayoutLedger,
    listen_address: SocketAddr,
}

pub fn route(node: Arc<Node>, ledger: PayoutLedger, listen_address: SocketAddr) -> Router {
    Router::new().route(PATH, get(info)).with_state(InfoState {
        node,
        ledger,
        listen_address,
    })
}

async fn info(State(state): State<InfoState>) -> Response {
    match node_info(&state).await {
        Ok(info) => Json(info).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot describe the Lightning node");
            let body =
                serde_json::json!({"code": 0, "detail": "the Lightning node cannot answer now"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn node_info(state: &InfoState) -> Result<NodeInfo, String> {
    let node = &state.node;
    let funding_address = match state
        .ledger
        .funding_address()
        .await
        .map_err(|e| e.to_string())?
    {
        Some(address) => address,
        None => {
            let address = node
                .onchain_payment()
                .new_address()
                .map_err(|e| e.to_string())?
                .to_string();
            state
                .ledger
                .set_funding_address(&address)
                .await
                .map_err(|e| e.to_string())?;
            address
        }
    };
    let balances = node.list_balances();
    Ok(NodeInfo {
        node_id: node.node_id().to_string(),
        listen_address: state.listen_address.to_string(),
        offer: state.ledger.offer().await.map_err(|e| e.to_string())?,
        funding_address,
        onchain_sat: balances.total_onchain_balance_sats,
        lightning_sat: balances.total_lightning_balance_sats,
        usable_channels: node
            .list_channels()
            .iter()
            .filter(|channel| channel.is_usable)
            .count(),
    })
}
