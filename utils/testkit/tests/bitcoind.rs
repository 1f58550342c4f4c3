//! The pinned bitcoind really runs: regtest in a temporary data dir, blocks mined, a block
//! template served, and a clean stop.

use bitcoincore_rpc::json::{GetBlockTemplateModes, GetBlockTemplateRules};
use bitcoincore_rpc::RpcApi;
use hashpool_testkit::{regtest_address, Bitcoind};

#[test]
fn pinned_bitcoind_mines_serves_templates_and_stops() {
    let node = Bitcoind::start().expect("the pinned bitcoind starts on regtest");
    let rpc = node.rpc();

    let info = rpc.get_blockchain_info().unwrap();
    assert_eq!(info.chain, bitcoin::Network::Regtest);
    assert_eq!(info.blocks, 0);

    let hashes = node.mine(101).unwrap();
    assert_eq!(hashes.len(), 101);
    assert_eq!(rpc.get_block_count().unwrap(), 101);
    assert_eq!(rpc.get_best_block_hash().unwrap(), *hashes.last().unwrap());

    // The coinbase of the first mined block pays our address.
    let first = rpc.get_block(&hashes[0]).unwrap();
    let coinbase = &first.txdata[0];
    assert!(coinbase.is_coinbase());
    assert_eq!(
        coinbase.output[0].script_pubkey,
        regtest_address().script_pubkey()
    );

    let template = rpc
        .get_block_template(
            GetBlockTemplateModes::Template,
            &[GetBlockTemplateRules::SegWit],
            &[],
        )
        .expect("getblocktemplate with the segwit rule");
    assert_eq!(template.height, 102);
    assert_eq!(template.previous_block_hash, *hashes.last().unwrap());
    assert!(template.coinbase_value.to_sat() > 0);

    let status = node.stop().expect("bitcoind stops over RPC");
    assert!(status.success(), "bitcoind exited with {status}");
}
