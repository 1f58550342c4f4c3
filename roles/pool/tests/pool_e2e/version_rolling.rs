//! Version rolling: BIP320 general-purpose bits (and BIP323's, which channels_sv2 allows too) on
//! standard and extended channels; any other version bit is refused.

use bitcoincore_rpc::RpcApi;
use hashpool_sv2_client::{
    Device, PoolConnection, REQUIRES_FIXED_VERSION, REQUIRES_STANDARD_JOBS,
    REQUIRES_VERSION_ROLLING, VERSION_ROLLING_MASK,
};
use stratum_apps::stratum_core::bitcoin::{CompactTarget, Target};
use stratum_apps::stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    SubmitSharesExtendedOwned,
};
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

use super::extended_work::ExtendedTracker;
use super::*;

const TEST_DEVICE: Device = Device {
    vendor: "test",
    hardware_version: "",
    firmware: "",
};

/// A connection set up with `flags`; returns the pool's SetupConnection.Success flags.
pub(super) async fn connect_with_flags(stack: &Stack, flags: u32) -> (PoolConnection, u32) {
    connect_with_flags_at(stack.pool.sv2_address(), flags).await
}

pub(super) async fn connect_with_flags_at(
    address: std::net::SocketAddr,
    flags: u32,
) -> (PoolConnection, u32) {
    let authority = PoolConfig::default().authority.public_key;
    let mut connection = PoolConnection::connect(&address.to_string(), Some(authority))
        .await
        .unwrap();
    let flags = connection
        .setup(flags, &TEST_DEVICE)
        .await
        .expect("SetupConnection.Success");
    (connection, flags)
}

/// Sends an extended share; returns the pool's answer to it (skipping job updates).
/// Sends `shares` at once (so they are all answered on the current tip, though the first may be
/// a block) and returns the pool's answers in order.
pub(super) async fn submit_extended_all(
    connection: &mut PoolConnection,
    shares: Vec<SubmitSharesExtendedOwned>,
) -> Vec<MiningOwned> {
    let count = shares.len();
    for share in shares {
        connection
            .send_mining(MiningOwned::SubmitSharesExtended(share))
            .await
            .unwrap();
    }
    let mut replies = Vec::new();
    while replies.len() < count {
        if let AnyMessageOwned::Mining(
            reply @ (MiningOwned::SubmitSharesSuccess(_) | MiningOwned::SubmitSharesError(_)),
        ) = connection.recv().await.unwrap()
        {
            replies.push(reply);
        }
    }
    replies
}

/// Waits until bitcoind's tip is a block the pool submitted, and returns its header version.
async fn tip_version_after(stack: &Stack, height: u64) -> u32 {
    wait_for("the block at bitcoind", async || {
        stack.node.rpc().get_block_count().unwrap() > height
    })
    .await;
    let tip = stack.node.rpc().get_best_block_hash().unwrap();
    stack
        .node
        .rpc()
        .get_block_header(&tip)
        .unwrap()
        .version
        .to_consensus() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_channels_roll_bip320_bits_and_nothing_else() {
    let stack = Stack::start_on_one_tip("pool-vr-standard").await;
    let (mut connection, flags) =
        connect_with_flags(&stack, REQUIRES_STANDARD_JOBS | REQUIRES_VERSION_ROLLING).await;
    assert_eq!(
        flags & REQUIRES_FIXED_VERSION,
        0,
        "a pool that allows version rolling must not answer REQUIRES_FIXED_VERSION"
    );
    let opened = connection
        .open_standard(1, KEY, 0.01)
        .await
        .unwrap()
        .expect("the channel opens");
    let mut miner = Miner::on_channel(connection, opened).await;
    let mut rolled = miner.jobs.work().unwrap().clone();
    rolled.version |= VERSION_ROLLING_MASK;
    assert_ne!(rolled.version, miner.jobs.work().unwrap().version);
    let network = Target::from_compact(CompactTarget::from_consensus(rolled.nbits));

    // A share with every BIP320 bit rolled is a share like any other; on regtest it is also a
    // block, which carries the rolled bits: bitcoind accepts the header as mined.
    let nonce = find_nonce(|nonce| rolled.meets_target(nonce));
    assert!(network.is_met_by(rolled.header(nonce).block_hash()));
    // The pool uses channels_sv2's mask, 0x1fffffe0: BIP320's bits 13-28 plus BIP323's 5-12,
    // also general purpose. A share rolling bit 5 is accepted as well.
    let mut bip323 = rolled.clone();
    bip323.version |= 1 << 5;
    let bip323_nonce = find_nonce(|nonce| bip323.meets_target(nonce));
    // A version bit outside the rollable mask (bit 0, then the top version bit 29) is refused
    // before its hash is even considered.
    let bad = |outside: u32| {
        let mut bad = rolled.clone();
        bad.version ^= outside;
        bad
    };
    let height = stack.node.rpc().get_block_count().unwrap();
    let replies = miner
        .submit_all(vec![
            rolled.share(0, nonce),
            bip323.share(1, bip323_nonce),
            bad(1).share(2, nonce),
            bad(1 << 29).share(3, nonce),
        ])
        .await;
    assert!(
        matches!(replies[0], MiningOwned::SubmitSharesSuccess(_)),
        "{replies:?}"
    );
    assert!(
        matches!(replies[1], MiningOwned::SubmitSharesSuccess(_)),
        "{replies:?}"
    );
    for reply in &replies[2..] {
        assert_eq!(error_code(reply), "invalid-non-rollable-version-bit");
    }
    assert_eq!(tip_version_after(&stack, height).await, rolled.version);
    let metrics = stack.wait_for_block_submitted().await;
    assert_eq!(metrics.blocks_found.get(), 1);
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_channels_roll_bip320_bits_and_nothing_else() {
    let stack = Stack::start_on_one_tip("pool-vr-extended").await;
    let (mut connection, flags) = connect_with_flags(&stack, REQUIRES_VERSION_ROLLING).await;
    assert_eq!(flags & REQUIRES_FIXED_VERSION, 0);
    connection
        .send_mining(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id: 1,
                user_identity: KEY.to_owned().try_into().unwrap(),
                nominal_hash_rate: 0.01,
                max_target: [0xff; 32].into(),
                min_extranonce_size: 4,
            },
        ))
        .await
        .unwrap();
    let opened: OpenExtendedMiningChannelSuccessOwned = match connection.recv().await.unwrap() {
        AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(success)) => success,
        other => panic!("expected OpenExtendedMiningChannel.Success, got {other:?}"),
    };
    let channel_id = opened.channel_id;
    let target = Target::from_le_bytes(opened.target.to_array());
    let extranonce: Vec<u8> = vec![7; opened.extranonce_size as usize];
    let full_extranonce = [opened.extranonce_prefix.as_bytes(), &extranonce[..]].concat();
    let mut tracker = ExtendedTracker::new(channel_id);
    while tracker.work().is_none() {
        let AnyMessageOwned::Mining(message) = connection.recv().await.unwrap() else {
            panic!("a mining message");
        };
        tracker.on_message(&message);
    }
    let work = tracker.work().unwrap().clone();
    assert!(
        work.job.version_rolling_allowed,
        "extended jobs allow version rolling"
    );
    let version = work.job.version | VERSION_ROLLING_MASK;
    let network = work.network_target();
    let header = |version: u32, nonce: u32| work.header(&full_extranonce, version, nonce);
    let share = |sequence_number: u32, version: u32, nonce: u32| SubmitSharesExtendedOwned {
        channel_id,
        sequence_number,
        job_id: work.job.job_id,
        nonce,
        ntime: work.ntime,
        version,
        extranonce: extranonce.clone().try_into().unwrap(),
    };
    // On regtest the share is also a block, carrying the rolled bits.
    let nonce = find_nonce(|nonce| target.is_met_by(header(version, nonce).block_hash()));
    assert!(network.is_met_by(header(version, nonce).block_hash()));
    let height = stack.node.rpc().get_block_count().unwrap();
    let replies = submit_extended_all(
        &mut connection,
        vec![
            share(0, version, nonce),
            share(1, version ^ 1, nonce),
            share(2, version ^ (1 << 29), nonce),
        ],
    )
    .await;
    assert!(
        matches!(replies[0], MiningOwned::SubmitSharesSuccess(_)),
        "{replies:?}"
    );
    for reply in &replies[1..] {
        assert_eq!(error_code(reply), "invalid-non-rollable-version-bit");
    }
    assert_eq!(tip_version_after(&stack, height).await, version);
    stack.pool.shutdown().await;
}
