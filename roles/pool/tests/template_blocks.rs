//! Templates built from the pinned bitcoind's getblocktemplate carry real blocks: an SRI standard
//! channel fed with them makes a job, a share that meets the regtest target comes back from
//! `validate_share` as a found block, and bitcoind accepts the block assembled from it.

use bitcoincore_rpc::json::{GetBlockTemplateModes, GetBlockTemplateRules};
use bitcoincore_rpc::RpcApi;
use hashpool_pool::template::Template;
use hashpool_testkit::{regtest_address, Bitcoind};
use stratum_apps::stratum_core::bitcoin::blockdata::block::{Header, Version};
use stratum_apps::stratum_core::bitcoin::hashes::Hash;
use stratum_apps::stratum_core::bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use stratum_apps::stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_apps::stratum_core::channels_sv2::server::share_accounting::ShareValidationResult;
use stratum_apps::stratum_core::channels_sv2::server::standard::StandardChannel;
use stratum_apps::stratum_core::mining_sv2::SubmitSharesStandard;

fn block_from_template(node: &Bitcoind, template_id: u64) -> (BlockHash, usize) {
    let gbt = node
        .rpc()
        .get_block_template(
            GetBlockTemplateModes::Template,
            &[GetBlockTemplateRules::SegWit],
            &[],
        )
        .unwrap();
    let template =
        Template::from_gbt(&gbt, template_id, regtest_address().script_pubkey()).unwrap();

    let mut allocator = ExtranonceAllocator::new(vec![1], 16, 64).unwrap();
    let mut channel = StandardChannel::new_for_pool(
        1,
        "02aa".to_owned(),
        allocator.allocate_standard().unwrap(),
        Target::from_le_bytes([0xff; 32]),
        1.0,
        1,
        1.0,
        "hashpool".to_owned(),
        None,
    )
    .unwrap();
    channel
        .on_new_template(template.new_template(true), template.reward_outputs.clone())
        .unwrap();
    channel
        .on_set_new_prev_hash(template.set_new_prev_hash())
        .unwrap();
    let job = channel.get_active_job().unwrap().get_job_message().clone();

    // Regtest's target is met by about every other hash.
    let network_target = Target::from_le_bytes(template.network_target_le);
    let mut header = Header {
        version: Version::from_consensus(job.version as i32),
        prev_blockhash: template.prev_hash,
        merkle_root: TxMerkleNode::from_byte_array(job.merkle_root.to_array()),
        time: template.time,
        bits: CompactTarget::from_consensus(template.bits),
        nonce: 0,
    };
    while !network_target.is_met_by(header.block_hash()) {
        header.nonce += 1;
    }

    let share = SubmitSharesStandard {
        channel_id: 1,
        sequence_number: 0,
        job_id: job.job_id,
        nonce: header.nonce,
        ntime: header.time,
        version: job.version,
    };
    let ShareValidationResult::BlockFound(hash, Some(found_template), coinbase) =
        channel.validate_share(share).unwrap()
    else {
        panic!("a share meeting the network target is a block");
    };
    assert_eq!(found_template, template_id);
    assert_eq!(hash.to_byte_array(), header.block_hash().to_byte_array());

    let block = template
        .assemble_block(&coinbase, job.version, header.time, header.nonce)
        .unwrap();
    assert_eq!(block.block_hash(), header.block_hash());
    node.rpc()
        .submit_block(&block)
        .expect("bitcoind accepts the block");
    (block.block_hash(), block.txdata.len())
}

#[test]
fn blocks_from_templates_are_accepted_by_bitcoind() {
    let node = Bitcoind::start().unwrap();
    node.mine(110).unwrap();

    // A template with only the coinbase.
    let (hash, txs) = block_from_template(&node, 1);
    assert_eq!(txs, 1);
    assert_eq!(node.rpc().get_block_count().unwrap(), 111);
    assert_eq!(node.rpc().get_best_block_hash().unwrap(), hash);

    // A template with mempool transactions: the merkle path and witness commitment must be right.
    for height in 1..=5 {
        node.spend_coinbase(height).unwrap();
    }
    let (hash, txs) = block_from_template(&node, 2);
    assert_eq!(txs, 6);
    assert_eq!(node.rpc().get_block_count().unwrap(), 112);
    assert_eq!(node.rpc().get_best_block_hash().unwrap(), hash);
    assert!(node.rpc().get_raw_mempool().unwrap().is_empty());

    // The coinbase pays the configured address the whole block reward plus fees.
    let block = node.rpc().get_block(&hash).unwrap();
    let coinbase = &block.txdata[0];
    assert_eq!(
        coinbase.output[0].script_pubkey,
        regtest_address().script_pubkey()
    );
    node.stop().unwrap();
}
