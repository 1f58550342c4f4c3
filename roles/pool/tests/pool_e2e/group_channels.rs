//! Standard channels of a device that takes extended jobs share one group channel.

use bitcoincore_rpc::RpcApi;
use stratum_apps::stratum_core::mining_sv2::{
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned, SubmitSharesStandard,
};
use stratum_apps::stratum_core::parsers_sv2::AnyMessageOwned;

use super::extended_work::ExtendedTracker;
use super::version_rolling::connect_with_flags;
use super::*;

/// Everything the pool sent that is not an answer we wait for.
#[derive(Default)]
struct Seen {
    messages: Vec<MiningOwned>,
}

impl Seen {
    async fn next(&mut self, connection: &mut PoolConnection) -> MiningOwned {
        let message = tokio::time::timeout(Duration::from_secs(20), connection.recv())
            .await
            .expect("the pool answers")
            .expect("the connection stays up");
        let AnyMessageOwned::Mining(mining) = message else {
            panic!("unexpected {message:?}");
        };
        self.messages.push(mining.clone());
        mining
    }
}

async fn open(
    connection: &mut PoolConnection,
    seen: &mut Seen,
    request_id: u32,
    identity: &str,
) -> OpenStandardMiningChannelSuccessOwned {
    connection
        .send_mining(MiningOwned::OpenStandardMiningChannel(
            OpenStandardMiningChannelOwned {
                request_id,
                user_identity: identity.to_owned().try_into().unwrap(),
                nominal_hash_rate: 0.01,
                max_target: [0xff; 32].into(),
            },
        ))
        .await
        .unwrap();
    loop {
        if let MiningOwned::OpenStandardMiningChannelSuccess(success) = seen.next(connection).await
        {
            assert_eq!(success.request_id, request_id);
            return success;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_standard_channels_mine_on_one_group_channel() {
    let stack = Stack::start_on_one_tip("pool-group").await;
    // No REQUIRES_STANDARD_JOBS: the device takes extended jobs for its standard channels.
    let (mut connection, _) = connect_with_flags(&stack, 0).await;
    let mut seen = Seen::default();
    let first = open(&mut connection, &mut seen, 1, &format!("{KEY}.a")).await;
    let second = open(&mut connection, &mut seen, 2, &format!("{KEY}.b")).await;
    let group_channel_id = first.group_channel_id;
    assert_ne!(group_channel_id, 0, "the channel is in a group");
    assert_eq!(second.group_channel_id, group_channel_id, "one group");
    assert_ne!(first.channel_id, second.channel_id);
    assert_ne!(first.extranonce_prefix, second.extranonce_prefix);

    // The second member restarts the group on the current template: a future job and its
    // prev hash, both addressed to the group.
    let mut tracker = ExtendedTracker::new(group_channel_id);
    for message in &seen.messages {
        tracker.on_message(message);
    }
    loop {
        let message = seen.next(&mut connection).await;
        if tracker.on_message(&message) && matches!(message, MiningOwned::SetNewPrevHash(_)) {
            break;
        }
    }
    assert!(
        !seen
            .messages
            .iter()
            .any(|message| matches!(message, MiningOwned::NewMiningJob(_))),
        "grouped channels get their work as extended jobs to the group"
    );
    let work = tracker.work().unwrap().clone();
    let network = work.network_target();

    let mut sequence = 0;
    // On regtest every share at these targets is also a block candidate.
    let mut submit = |success: &OpenStandardMiningChannelSuccessOwned| {
        let prefix = success.extranonce_prefix.as_bytes().to_vec();
        let target = Target::from_le_bytes(success.target.to_array());
        let nonce = find_nonce(|nonce| {
            target.is_met_by(work.header(&prefix, work.job.version, nonce).block_hash())
        });
        assert!(network.is_met_by(work.header(&prefix, work.job.version, nonce).block_hash()));
        sequence += 1;
        let share = SubmitSharesStandard {
            channel_id: success.channel_id,
            sequence_number: sequence,
            job_id: work.job.job_id,
            nonce,
            ntime: work.ntime,
            version: work.job.version,
        };
        (
            share,
            work.header(&prefix, work.job.version, nonce).block_hash(),
        )
    };
    // Sent at once, so all three are answered on this tip: the first, from the second channel,
    // is the block that reaches bitcoind; the other two are shares (and stale candidates).
    let (shares, hashes): (Vec<_>, Vec<_>) = [&second, &first, &second]
        .into_iter()
        .map(&mut submit)
        .unzip();
    for share in shares {
        connection
            .send_mining(MiningOwned::SubmitSharesStandard(share))
            .await
            .unwrap();
    }
    let mut answer = Vec::new();
    while answer.len() < hashes.len() {
        match seen.next(&mut connection).await {
            reply @ (MiningOwned::SubmitSharesSuccess(_) | MiningOwned::SubmitSharesError(_)) => {
                answer.push((reply, hashes[answer.len()]))
            }
            _ => continue,
        }
    }
    for (reply, _) in &answer {
        assert!(
            matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
            "{reply:?}"
        );
    }
    assert_eq!(stack.pool.metrics().shares_accepted.get(), 3);

    // The block from the second channel: the group's coinbase with that channel's prefix.
    let metrics = stack.wait_for_block_submitted().await;
    assert_eq!(metrics.blocks_found.get(), 1);
    assert_eq!(
        stack.node.rpc().get_best_block_hash().unwrap(),
        answer[0].1,
        "bitcoind's tip is the block mined on the second channel"
    );

    // Quotes credit each channel.
    let quotes = stack.pool.quote_metrics().clone();
    wait_for("quotes published", async || {
        quotes.published.load(Ordering::Relaxed) == 6
    })
    .await;
    let mut channels: Vec<u32> = stack
        .stream_messages()
        .await
        .into_iter()
        .filter_map(|message| match message {
            QuoteMessage::Create(create) => Some(create.channel_id),
            _ => None,
        })
        .collect();
    channels.sort();
    assert_eq!(
        channels,
        vec![first.channel_id, second.channel_id, second.channel_id]
    );
    stack.pool.shutdown().await;
}
