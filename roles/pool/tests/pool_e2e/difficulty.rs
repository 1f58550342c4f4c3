//! Share targets are powers of two, never easier than the pool's minimum, whatever hashrate or
//! `max_target` a miner announces; a share is credited exactly the hashes its target proves.

use ehash::ShareWork;
use stratum_apps::stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenStandardMiningChannelOwned, UpdateChannelOwned,
};

use super::*;

/// log2 of the expected hashes of the minimum difficulty the tests set: 2^-8.
const MINIMUM_LOG2: u8 = 24;

fn minimum_target() -> Target {
    ShareWork::from_log2(MINIMUM_LOG2).unwrap().target()
}

/// A pool whose minimum share is `2^minimum_log2` expected hashes.
async fn stack_with_minimum(test: &str, minimum_log2: u8) -> Stack {
    let minimum = ShareWork::from_log2(minimum_log2).unwrap().difficulty();
    Stack::start_configured(test, |config| config.difficulty.minimum = Some(minimum)).await
}

async fn stack(test: &str) -> Stack {
    stack_with_minimum(test, MINIMUM_LOG2).await
}

fn open_standard(request_id: u32, nominal_hash_rate: f32, max_target: Target) -> MiningOwned {
    MiningOwned::OpenStandardMiningChannel(OpenStandardMiningChannelOwned {
        request_id,
        user_identity: KEY.to_owned().try_into().unwrap(),
        nominal_hash_rate,
        max_target: max_target.to_le_bytes().into(),
    })
}

/// The next channel-setup or target answer, skipping jobs.
async fn next_answer(connection: &mut PoolConnection) -> MiningOwned {
    loop {
        let AnyMessageOwned::Mining(message) = connection.recv().await.unwrap() else {
            continue;
        };
        match message {
            MiningOwned::NewMiningJob(_)
            | MiningOwned::NewExtendedMiningJob(_)
            | MiningOwned::SetNewPrevHash(_) => continue,
            answer => return answer,
        }
    }
}

fn opened_target(answer: &MiningOwned) -> (u32, Target) {
    match answer {
        MiningOwned::OpenStandardMiningChannelSuccess(success) => (
            success.channel_id,
            Target::from_le_bytes(success.target.to_array()),
        ),
        MiningOwned::OpenExtendedMiningChannelSuccess(success) => (
            success.channel_id,
            Target::from_le_bytes(success.target.to_array()),
        ),
        other => panic!("expected a channel, got {other:?}"),
    }
}

fn is_power_of_two(target: Target) -> bool {
    ShareWork::of_target(target).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_channel_gets_a_target_easier_than_the_minimum() {
    let stack = stack("pool-min-difficulty").await;
    let mut connection = stack.miner().await;
    let any = Target::from_le_bytes([0xff; 32]);

    // A miner claiming 1 H/s (or nothing sensible) with no max_target: the minimum.
    for (request_id, hashrate) in [(1, 1.0), (2, 0.0), (3, f32::NAN)] {
        connection
            .send_mining(open_standard(request_id, hashrate, any))
            .await
            .unwrap();
        let (_, target) = opened_target(&next_answer(&mut connection).await);
        assert_eq!(target, minimum_target(), "{hashrate} H/s");
    }

    // A fast miner: a power-of-two target, harder than the minimum.
    connection
        .send_mining(open_standard(4, 1.0e12, any))
        .await
        .unwrap();
    let (fast_channel, target) = opened_target(&next_answer(&mut connection).await);
    assert!(is_power_of_two(target));
    assert!(target < minimum_target());

    // A max_target between two powers of two: the next harder one, never easier than asked.
    let between = ShareWork::from_log2(30).unwrap().target();
    let between = Target::from_le_bytes({
        let mut bytes = between.to_le_bytes();
        bytes[0] = 0x00;
        bytes
    });
    connection
        .send_mining(open_standard(5, 1.0, between))
        .await
        .unwrap();
    let (_, target) = opened_target(&next_answer(&mut connection).await);
    assert_eq!(target, ShareWork::from_log2(31).unwrap().target());
    assert!(target <= between);

    // A max_target harder than any share the unit expresses: refused with the spec's code.
    let mut impossible = [0u8; 32];
    impossible[0] = 1;
    connection
        .send_mining(open_standard(6, 1.0, Target::from_le_bytes(impossible)))
        .await
        .unwrap();
    match next_answer(&mut connection).await {
        MiningOwned::OpenMiningChannelError(error) => {
            assert_eq!(error.error_code.as_utf8_or_hex(), "max-target-out-of-range")
        }
        other => panic!("expected OpenMiningChannel.Error, got {other:?}"),
    }

    // UpdateChannel to 1 H/s: clamped to the minimum.
    connection
        .send_mining(MiningOwned::UpdateChannel(UpdateChannelOwned {
            channel_id: fast_channel,
            nominal_hash_rate: 1.0,
            maximum_target: any.to_le_bytes().into(),
        }))
        .await
        .unwrap();
    match next_answer(&mut connection).await {
        MiningOwned::SetTarget(set) => {
            assert_eq!(set.channel_id, fast_channel);
            assert_eq!(
                Target::from_le_bytes(set.maximum_target.to_array()),
                minimum_target()
            );
        }
        other => panic!("expected SetTarget, got {other:?}"),
    }
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_channels_get_the_minimum_too() {
    let stack = stack("pool-min-difficulty-ext").await;
    let (mut connection, _) = super::version_rolling::connect_with_flags(&stack, 0).await;
    connection
        .send_mining(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id: 1,
                user_identity: KEY.to_owned().try_into().unwrap(),
                nominal_hash_rate: 1.0,
                max_target: [0xff; 32].into(),
                min_extranonce_size: 4,
            },
        ))
        .await
        .unwrap();
    let (_, target) = opened_target(&next_answer(&mut connection).await);
    assert_eq!(target, minimum_target());
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_credited_exactly_their_targets_expected_hashes() {
    // 2^16 hashes a share: quick to mine in a test build.
    let stack = stack_with_minimum("pool-exact-credit", 16).await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;
    assert_eq!(
        miner.jobs.target(),
        ShareWork::from_log2(16).unwrap().target()
    );
    let accepted = mine(&mut miner, 5).await;
    assert!(accepted > 0);
    let stats = stack.pool.stats();
    let miner_stats = stats
        .miners
        .iter()
        .find(|miner| miner.locking_key == KEY)
        .unwrap();
    assert_eq!(miner_stats.shares, accepted);
    assert_eq!(miner_stats.work, accepted << (16 - 12));
    assert_eq!(miner_stats.proven_hashes, u128::from(accepted) << 16);
    assert_eq!(miner_stats.credited_hashes, miner_stats.proven_hashes);
    let metrics = http_get(stack.pool.http_address(), "/metrics").await;
    assert!(metrics.contains(&format!(
        "hashpool_pool_miner_proven_hashes_total{{locking_key=\"{KEY}\"}} {}",
        u128::from(accepted) << 16
    )));
    assert!(metrics.contains(&format!(
        "hashpool_pool_miner_credited_hashes_total{{locking_key=\"{KEY}\"}} {}",
        u128::from(accepted) << 16
    )));
    stack.pool.shutdown().await;
}
