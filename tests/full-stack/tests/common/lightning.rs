//! Lightning on the test's regtest chain: a payer's ldk-node (the upstream pool, or any payer of
//! payouts), funded from coinbase outputs, with a channel to the mint's node.

use std::time::Duration;

use bitcoincore_rpc::RpcApi;
use hashpool_testkit::{free_port, wait_for_within, Bitcoind};
use ldk_node::bitcoin::Network;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::Node;

/// How long a node may take to see new blocks (ldk-node polls bitcoind every few seconds).
pub const CHAIN_SYNC: Duration = Duration::from_secs(120);

/// A started ldk-node on `chain`, its state under `dir`, listening on a free loopback port.
pub fn start_node(chain: &Bitcoind, dir: &std::path::Path) -> Node {
    let (user, password) = hashpool_service::read_cookie(&chain.cookie_file()).unwrap();
    let mut builder = ldk_node::Builder::new();
    builder
        .set_network(Network::Regtest)
        .set_storage_dir_path(dir.display().to_string())
        .set_chain_source_bitcoind_rpc("127.0.0.1".to_owned(), chain.rpc_port(), user, password)
        .set_gossip_source_p2p();
    builder
        .set_listening_addresses(vec![listen_address()])
        .unwrap();
    let node = builder.build().unwrap();
    node.start().unwrap();
    node
}

pub fn listen_address() -> SocketAddress {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port())).into()
}

/// Mines one coinbase to each node's on-chain wallet, matures them, and waits until each node
/// can spend its coins.
pub async fn fund(chain: &Bitcoind, nodes: &[&Node]) {
    for node in nodes {
        let address = node.onchain_payment().new_address().unwrap();
        chain.rpc().generate_to_address(1, &address).unwrap();
    }
    chain.mine(100).unwrap();
    for node in nodes {
        wait_for_within("a node's coinbase is spendable", CHAIN_SYNC, async || {
            node.list_balances().spendable_onchain_balance_sats > 0
        })
        .await;
    }
}

/// Opens a `capacity` sat channel from `payer` to `payee`, confirms it, and waits until both
/// sides can use it.
pub async fn open_channel(
    chain: &Bitcoind,
    payer: &Node,
    payee: &Node,
    payee_address: SocketAddress,
    capacity: u64,
) {
    payer
        .open_channel(payee.node_id(), payee_address, capacity, None, None)
        .unwrap();
    wait_for_within(
        "the funding transaction is broadcast",
        CHAIN_SYNC,
        async || chain.rpc().get_raw_mempool().unwrap().len() == 1,
    )
    .await;
    chain.mine(6).unwrap();
    for node in [payer, payee] {
        wait_for_within("the channel is usable", CHAIN_SYNC, async || {
            node.list_channels().iter().any(|channel| channel.is_usable)
        })
        .await;
    }
}
