//! Proxy mode over Stratum V2: a second pool mines on this one's jobs. Miners on the proxy are
//! credited there; the shares that meet the upstream's target are forwarded and credited
//! upstream to the proxy operator's key, with the very same block headers.

use std::collections::BTreeSet;

use hashpool_pool::config::{ProxyConfig, UpstreamBlocksConfig, UpstreamConfig};

use super::*;

/// The proxy operator's key: who the upstream credits.
const OPERATOR: &str = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";
const SECOND_MINER: &str = "02e493dbf1c10d80f3581e4904930b1404cc6c13900ee0758474fa94abe8c4cd13";

/// A proxy pool mining to `upstream`'s Sv2 port, on a stream of its own.
struct Proxy {
    pool: Pool,
    stream: String,
    _dir: TempDir,
}

/// An upstream entry for the hashpool pool at `address`, crediting [`OPERATOR`].
fn upstream_at(address: std::net::SocketAddr) -> UpstreamConfig {
    UpstreamConfig {
        url: format!("stratum2+tcp://{address}"),
        authority_public_key: Some(PoolConfig::default().authority.public_key),
        user_identity: format!("{OPERATOR}.proxy"),
        // The least a channel can be asked for: the upstream's minimum target, so every share
        // credited on the proxy is also worth forwarding.
        nominal_hashrate: 1.0,
        password: None,
        suggest_difficulty: None,
    }
}

impl Proxy {
    async fn start(upstream: &Stack, test: &str) -> Self {
        Self::start_on(
            &upstream.node,
            vec![upstream_at(upstream.pool.sv2_address())],
            test,
        )
        .await
    }

    /// A proxy of `upstreams`, in order, on `node`'s bitcoind.
    async fn start_on(node: &Bitcoind, upstreams: Vec<UpstreamConfig>, test: &str) -> Self {
        Self::start_configured(node, upstreams, test, |_| {}).await
    }

    async fn start_configured(
        node: &Bitcoind,
        upstreams: Vec<UpstreamConfig>,
        test: &str,
        configure: impl FnOnce(&mut PoolConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, stream) = test_pool_config(node, dir.path(), test);
        config.proxy = Some(ProxyConfig {
            reconnect_delay_ms: 20,
            max_reconnect_delay_ms: 200,
            attempts_per_upstream: 2,
            upstreams,
            ..ProxyConfig::default()
        });
        configure(&mut config);
        let pool = Pool::start(config).await.expect("the proxy starts");
        Self {
            pool,
            stream,
            _dir: dir,
        }
    }

    /// Waits until each of the `credited` shares was forwarded (and answered), dropped, or found
    /// below the upstream's target.
    async fn wait_for_every_share_decided(&self, credited: u64) {
        let metrics = self.pool.metrics().clone();
        wait_for("every share forwarded or not, and answered", async || {
            let upstream = &metrics.upstream;
            let forwarded = upstream.forwarded.get();
            forwarded + upstream.dropped.get() + upstream.below_target.get() == credited
                && upstream.accepted.get() + upstream.rejected.get() == forwarded
        })
        .await;
    }

    async fn wait_for_upstream_answers(&self, shares: u64) {
        let metrics = self.pool.metrics().clone();
        wait_for(format!("{shares} upstream answers"), async || {
            metrics.upstream.accepted.get() + metrics.upstream.rejected.get() >= shares
        })
        .await;
    }
}

/// The creates on a stream: (locking key, share hash).
async fn creates(redis_url: &str, stream: &str) -> Vec<(String, String)> {
    stream_messages(redis_url, stream)
        .await
        .into_iter()
        .filter_map(|message| match message {
            QuoteMessage::Create(create) => Some((
                create.locking_pubkey.to_string(),
                create.share_hash.to_string(),
            )),
            _ => None,
        })
        .collect()
}

/// The creates on `pool`'s `stream` once it has published `messages` quote messages.
async fn published_creates(pool: &Pool, stream: &str, messages: u64) -> Vec<(String, String)> {
    let quotes = pool.quote_metrics().clone();
    wait_for(format!("{messages} quote messages published"), async || {
        quotes.published.load(Ordering::Relaxed) == messages
    })
    .await;
    creates(SHARED_REDIS, stream).await
}

/// A device taking extended jobs, on `proxy`: an extended channel for [`KEY`] (4 bytes to roll
/// at least) and the tracker of its jobs, once it has work.
async fn extended_miner(
    proxy: &Proxy,
) -> (
    PoolConnection,
    stratum_apps::stratum_core::mining_sv2::OpenExtendedMiningChannelSuccessOwned,
    super::extended_work::ExtendedTracker,
) {
    let (mut connection, _) =
        super::version_rolling::connect_with_flags_at(proxy.pool.sv2_address(), 0).await;
    let opened = connection
        .open_extended(1, KEY, 1.0, 4)
        .await
        .unwrap()
        .expect("the channel opens");
    let mut tracker = super::extended_work::ExtendedTracker::new(opened.channel_id);
    while tracker.work().is_none() {
        if let AnyMessageOwned::Mining(message) = connection.recv().await.unwrap() {
            tracker.on_message(&message);
        }
    }
    (connection, opened, tracker)
}

async fn mine_accepted(miner: &mut Miner, shares: usize) {
    for _ in 0..shares {
        let (reply, _) = miner.submit_valid_share().await;
        assert!(
            matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
            "{reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_credits_its_miners_and_the_upstream_credits_the_proxy_for_the_same_shares() {
    let upstream = Stack::start_on_one_tip("proxy-sv2-upstream").await;
    let proxy = Proxy::start(&upstream, "proxy-sv2").await;
    let address = proxy.pool.sv2_address();
    let mut first = Miner::open_at(address, &format!("{KEY}.rig"), 1.0).await;
    let mut second = Miner::open_at(address, SECOND_MINER, 1.0).await;
    let per_miner = 4;
    mine_accepted(&mut first, per_miner).await;
    mine_accepted(&mut second, per_miner).await;
    let total = 2 * per_miner as u64;
    proxy.wait_for_upstream_answers(total).await;

    let metrics = proxy.pool.metrics();
    assert_eq!(metrics.upstream.rejected.get(), 0, "no share collided");
    assert_eq!(metrics.upstream.accepted.get(), total);
    assert_eq!(metrics.upstream.dropped.get(), 0);
    assert_eq!(metrics.upstream.sessions.get(), 1);
    let stats = proxy.pool.stats();
    for key in [KEY, SECOND_MINER] {
        let miner = stats
            .miners
            .iter()
            .find(|miner| miner.locking_key == key)
            .expect("the miner's line");
        assert_eq!(
            (miner.shares, miner.upstream_accepted),
            (per_miner as u64, per_miner as u64)
        );
    }

    // Each share is credited once on the proxy, to its miner, and once upstream, to the
    // operator: the upstream hashed the very headers the miners did.
    let proxy_published = 2 * total;
    let upstream_published = 2 * total;
    let on_proxy = published_creates(&proxy.pool, &proxy.stream, proxy_published).await;
    let on_upstream = published_creates(&upstream.pool, &upstream.stream, upstream_published).await;
    assert_eq!(on_proxy.len() as u64, total);
    for key in [KEY, SECOND_MINER] {
        assert_eq!(
            on_proxy.iter().filter(|(owner, _)| owner == key).count(),
            per_miner
        );
    }
    assert_eq!(on_upstream.len() as u64, total);
    assert!(on_upstream.iter().all(|(owner, _)| owner == OPERATOR));
    let hashes = |creates: &[(String, String)]| -> BTreeSet<String> {
        creates.iter().map(|(_, hash)| hash.clone()).collect()
    };
    assert_eq!(hashes(&on_proxy).len() as u64, total, "no two shares alike");
    assert_eq!(hashes(&on_proxy), hashes(&on_upstream));

    proxy.pool.shutdown().await;
    upstream.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_on_a_lost_upstreams_jobs_earn_nothing_and_mining_resumes_on_its_return() {
    let upstream = Stack::start_configured("proxy-sv2-restart-upstream", |config| {
        config.bitcoind.template_poll_ms = 600_000;
    })
    .await;
    // The upstream comes back on the same port.
    let mut upstream = Stack {
        config: PoolConfig {
            listen_address: upstream.pool.sv2_address(),
            ..upstream.config.clone()
        },
        ..upstream
    };
    let proxy = Proxy::start(&upstream, "proxy-sv2-restart").await;
    let mut miner = Miner::open_at(proxy.pool.sv2_address(), KEY, 1.0).await;
    mine_accepted(&mut miner, 1).await;
    proxy.wait_for_upstream_answers(1).await;

    upstream.pool.shutdown().await;
    let metrics = proxy.pool.metrics().clone();
    wait_for("the proxy to see the upstream gone", async || {
        metrics.upstream.connected.get() == 0
    })
    .await;
    let credited = metrics.shares_accepted.get();
    let (reply, _) = miner.submit_valid_share().await;
    assert_eq!(error_code(&reply), "stale-share");
    assert_eq!(
        metrics.shares_accepted.get(),
        credited,
        "a share for a lost upstream is not credited"
    );

    upstream.pool = Pool::start(upstream.config.clone())
        .await
        .expect("the upstream starts again on its port");
    // A clean job from the new session, then shares count again.
    loop {
        if let MiningOwned::SetNewPrevHash(_) = miner.next_mining().await {
            break;
        }
    }
    mine_accepted(&mut miner, 2).await;
    proxy.wait_for_upstream_answers(3).await;
    assert_eq!(metrics.upstream.sessions.get(), 2);
    assert_eq!(metrics.upstream.accepted.get(), 3);
    assert_eq!(metrics.shares_accepted.get(), credited + 2);
    // A create and its PAID update per credited share.
    let on_proxy = published_creates(&proxy.pool, &proxy.stream, 6).await;
    assert_eq!(on_proxy.len(), 3);

    proxy.pool.shutdown().await;
    upstream.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_and_grouped_channels_on_a_proxy_roll_their_own_slice_of_the_upstream_extranonce()
{
    use super::extended_work::ExtendedTracker;
    use stratum_apps::stratum_core::mining_sv2::SubmitSharesExtendedOwned;

    let upstream = Stack::start_on_one_tip("proxy-sv2-extended-upstream").await;
    let proxy = Proxy::start(&upstream, "proxy-sv2-extended").await;
    // A device taking extended jobs: one extended channel, one standard channel (grouped).
    let (mut connection, opened, tracker) = extended_miner(&proxy).await;
    let work = tracker.work().unwrap().clone();
    let prefix = opened.extranonce_prefix.as_bytes().to_vec();
    let target = Target::from_le_bytes(opened.target.to_array());
    let shares: Vec<SubmitSharesExtendedOwned> = (0..3u8)
        .map(|share| {
            let rolled = vec![share; usize::from(opened.extranonce_size)];
            let extranonce = [prefix.as_slice(), &rolled].concat();
            let nonce = find_nonce(|nonce| {
                target.is_met_by(
                    work.header(&extranonce, work.job.version, nonce)
                        .block_hash(),
                )
            });
            SubmitSharesExtendedOwned {
                channel_id: opened.channel_id,
                sequence_number: u32::from(share),
                job_id: work.job.job_id,
                nonce,
                ntime: work.ntime,
                version: work.job.version,
                extranonce: rolled.try_into().unwrap(),
            }
        })
        .collect();
    let replies = super::version_rolling::submit_extended_all(&mut connection, shares).await;
    for reply in &replies {
        assert!(
            matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
            "{reply:?}"
        );
    }

    // A standard channel of the same device mines the group channel's job.
    let grouped = connection
        .open_standard(2, SECOND_MINER, 1.0)
        .await
        .unwrap()
        .expect("the channel opens");
    assert_ne!(grouped.group_channel_id, 0);
    let mut group = ExtendedTracker::new(grouped.group_channel_id);
    while group.work().is_none() {
        if let AnyMessageOwned::Mining(message) = connection.recv().await.unwrap() {
            group.on_message(&message);
        }
    }
    let group_work = group.work().unwrap().clone();
    let grouped_prefix = grouped.extranonce_prefix.as_bytes().to_vec();
    let grouped_target = Target::from_le_bytes(grouped.target.to_array());
    let nonce = find_nonce(|nonce| {
        grouped_target.is_met_by(
            group_work
                .header(&grouped_prefix, group_work.job.version, nonce)
                .block_hash(),
        )
    });
    connection
        .send_mining(MiningOwned::SubmitSharesStandard(
            stratum_apps::stratum_core::mining_sv2::SubmitSharesStandard {
                channel_id: grouped.channel_id,
                sequence_number: 0,
                job_id: group_work.job.job_id,
                nonce,
                ntime: group_work.ntime,
                version: group_work.job.version,
            },
        ))
        .await
        .unwrap();
    proxy.wait_for_upstream_answers(4).await;
    let metrics = proxy.pool.metrics();
    assert_eq!(
        (
            metrics.upstream.accepted.get(),
            metrics.upstream.rejected.get()
        ),
        (4, 0)
    );
    let upstream_published = 8;
    let on_upstream = published_creates(&upstream.pool, &upstream.stream, upstream_published).await;
    assert_eq!(on_upstream.len(), 4);
    assert!(on_upstream.iter().all(|(owner, _)| owner == OPERATOR));
    proxy.pool.shutdown().await;
    upstream.pool.shutdown().await;
}

/// A second solo pool on `stack`'s bitcoind, on a stream of its own.
async fn second_upstream(stack: &Stack, test: &str) -> (Pool, String) {
    let stream = format!("{}quotes", unique_redis_prefix(test));
    let mut config = stack.config.clone();
    config.redis.stream = stream.clone();
    config.redis.publisher_id = Some(test.to_owned());
    config.listen_address = "127.0.0.1:0".parse().unwrap();
    config.http_address = "127.0.0.1:0".parse().unwrap();
    (
        Pool::start(config)
            .await
            .expect("the second upstream starts"),
        stream,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_moves_to_the_next_upstream_when_the_first_is_gone() {
    let first = Stack::start_on_one_tip("proxy-failover-first").await;
    let (second, second_stream) = second_upstream(&first, "proxy-failover-second").await;
    let proxy = Proxy::start_on(
        &first.node,
        vec![
            upstream_at(first.pool.sv2_address()),
            upstream_at(second.sv2_address()),
        ],
        "proxy-failover",
    )
    .await;
    let mut miner = Miner::open_at(proxy.pool.sv2_address(), KEY, 1.0).await;
    mine_accepted(&mut miner, 1).await;
    proxy.wait_for_upstream_answers(1).await;
    assert_eq!(creates(&first.redis_url, &first.stream).await.len(), 1);

    first.pool.shutdown().await;
    // Two failed attempts at the first, then the second: a clean job from it.
    loop {
        if let MiningOwned::SetNewPrevHash(_) = miner.next_mining().await {
            break;
        }
    }
    mine_accepted(&mut miner, 2).await;
    proxy.wait_for_upstream_answers(3).await;
    let metrics = proxy.pool.metrics();
    assert_eq!(metrics.upstream.sessions.get(), 2);
    assert_eq!(metrics.upstream.accepted.get(), 3);
    let on_second = published_creates(&second, &second_stream, 4).await;
    assert_eq!(on_second.len(), 2);
    assert!(on_second.iter().all(|(owner, _)| owner == OPERATOR));
    let text = http_get(proxy.pool.http_address(), "/metrics").await;
    assert!(
        text.contains("hashpool_pool_upstream_failures_total{reason=\"connection\"}"),
        "{text}"
    );
    proxy.pool.shutdown().await;
    second.shutdown().await;
}

/// A fake upstream on a free port that serves each connection with `serve`, one after the
/// other, and counts the connections it took.
async fn counting_upstream<Serve, Served>(
    serve: Serve,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>)
where
    Serve: Fn(tokio::net::TcpStream) -> Served + Send + 'static,
    Served: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            serve(tcp).await;
        }
    });
    (address, accepted)
}

/// An Sv2 "upstream" that completes the Noise handshake, reads SetupConnection and answers
/// with an undecodable frame; counts the connections it took.
async fn garbage_upstream() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use super::oversize::AnnouncedFrame;
    counting_upstream(|tcp| async move {
        let authority = PoolConfig::default().authority;
        let (tcp_reader, tcp_writer) = tcp.into_split();
        let Ok((mut reader, mut writer)) = hashpool_pool::noise::accept(
            tcp_reader,
            tcp_writer,
            authority.public_key,
            authority.secret_key,
            Duration::from_secs(60),
            hashpool_pool::downstream::MAX_PAYLOAD,
        )
        .await
        else {
            return;
        };
        let _setup = reader.read_frame().await;
        // NewExtendedMiningJob (0x1f) with three bytes: no such message decodes.
        let _ = writer
            .write_frame(AnnouncedFrame {
                message_type: 0x1f,
                announced: 3,
                sent: vec![1, 2, 3],
            })
            .await;
    })
    .await
}

/// With an upstream that sends garbage: the proxy drops it (a protocol failure) and reconnects
/// again and again, while a miner's connection to the proxy keeps working.
async fn garbage_costs_only_the_upstream(proxy: Proxy, accepted: &std::sync::atomic::AtomicUsize) {
    let mut connection = miner_at(proxy.pool.sv2_address()).await;
    connection
        .open_standard(1, KEY, 1.0)
        .await
        .unwrap()
        .expect("the channel opens without work");
    wait_for("the proxy to reconnect after the garbage", async || {
        accepted.load(Ordering::SeqCst) >= 3
    })
    .await;
    let text = http_get(proxy.pool.http_address(), "/metrics").await;
    assert!(
        text.contains("hashpool_pool_upstream_failures_total{reason=\"protocol\"}"),
        "{text}"
    );
    // The miner never noticed: its connection still answers.
    connection
        .open_standard(2, KEY, 1.0)
        .await
        .unwrap()
        .expect("a second channel opens");
    proxy.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_upstream_closes_only_the_upstream_connection() {
    let node = Bitcoind::start().unwrap();
    let (address, accepted) = garbage_upstream().await;
    let proxy = Proxy::start_on(&node, vec![upstream_at(address)], "proxy-garbage").await;
    garbage_costs_only_the_upstream(proxy, &accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_block_closes_exactly_one_epoch_on_the_proxy() {
    let upstream = Stack::start_on_one_tip("proxy-epoch-upstream").await;
    let dir = tempfile::tempdir().unwrap();
    let epochs_file = dir.path().join("epochs.json");
    let proxy = Proxy::start_configured(
        &upstream.node,
        vec![upstream_at(upstream.pool.sv2_address())],
        "proxy-epoch",
        |config| {
            config.release_policy = ehash::ReleasePolicy::PayoutEpoch;
            config.payout.epochs_file = epochs_file.clone();
            let proxy = config.proxy.as_mut().unwrap();
            // The upstream's coinbase pays this address (so do the test's own blocks).
            proxy.blocks = UpstreamBlocksConfig {
                payout_addresses: vec![regtest_address().to_string()],
                poll_ms: 20,
                ..UpstreamBlocksConfig::default()
            };
        },
    )
    .await;
    let epochs = proxy.pool.epochs().unwrap().clone();
    let rpc = upstream.node.rpc();
    let scanned_to_tip = async || {
        let tip = rpc.get_best_block_hash().unwrap();
        epochs
            .scan_cursor()
            .is_some_and(|cursor| cursor.block_hash == tip)
    };
    wait_for("the proxy to look at the chain", scanned_to_tip).await;
    // Blocks from before the proxy ran closed nothing.
    assert!(epochs.closed().is_empty());

    // On regtest the share is also the upstream's block, accepted by bitcoind.
    let mut miner = Miner::open_at(proxy.pool.sv2_address(), KEY, 1.0).await;
    mine_accepted(&mut miner, 1).await;
    wait_for("the upstream's block to close epoch 1", async || {
        !epochs.closed().is_empty()
    })
    .await;
    let closed = epochs.closed();
    let tip = rpc.get_best_block_hash().unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].epoch, 1);
    assert_eq!(closed[0].block_hash, tip, "closed at the upstream's block");
    assert_eq!(closed[0].height, Some(rpc.get_block_count().unwrap()));
    assert_eq!(epochs.current(), 2);

    // A block of the upstream's while epoch 2 holds no share closes nothing.
    upstream.node.mine(1).unwrap();
    wait_for("the proxy to look at the block", scanned_to_tip).await;
    assert_eq!(epochs.closed().len(), 1);
    // Nor does a block that is not the upstream's, once epoch 2 has a share.
    mine_accepted(&mut miner, 1).await;
    let elsewhere = bitcoin::Address::from_str("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
        .unwrap()
        .assume_checked();
    rpc.generate_to_address(1, &elsewhere).unwrap();
    wait_for("the proxy to look at the block", scanned_to_tip).await;
    assert_eq!(epochs.closed().len(), 1);
    assert_eq!(epochs.current(), 2);

    // The shares were credited in the epochs they were mined in.
    let quotes = proxy.pool.quote_metrics().clone();
    wait_for("the proxy's creates published", async || {
        quotes.published.load(Ordering::Relaxed) == 2
    })
    .await;
    let epochs_of_creates: Vec<u64> = stream_messages(&upstream.redis_url, &proxy.stream)
        .await
        .into_iter()
        .filter_map(|message| match message {
            QuoteMessage::Create(create) => Some(create.epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs_of_creates, [1, 2]);
    proxy.pool.shutdown().await;
    upstream.pool.shutdown().await;
}

/// The Sv1 port of the upstream hashpool `upstream`: its translator, 4 bytes of extranonce1 and 4
/// to roll, at the pool's minimum.
async fn sv1_port_of(
    upstream: &Stack,
    log_dir: &std::path::Path,
) -> hashpool_translator::Translator {
    use hashpool_translator::config::{DownstreamConfig, UpstreamConfig as TranslatorUpstream};
    use hashpool_translator::{Translator, TranslatorConfig};
    Translator::start(TranslatorConfig {
        listen_address: "127.0.0.1:0".parse().unwrap(),
        metrics_address: "127.0.0.1:0".parse().unwrap(),
        log_dir: log_dir.to_owned(),
        upstream: TranslatorUpstream {
            address: upstream.pool.sv2_address().to_string(),
            ..TranslatorUpstream::default()
        },
        downstream: DownstreamConfig {
            initial_hashrate: 1.0,
            minimum_difficulty: ehash::ShareWork::MIN.difficulty(),
            ..DownstreamConfig::default()
        },
        ..TranslatorConfig::default()
    })
    .await
    .expect("the translator starts")
}

/// An upstream entry for an Sv1 port.
fn sv1_upstream_at(address: std::net::SocketAddr) -> UpstreamConfig {
    UpstreamConfig {
        url: format!("stratum+tcp://{address}"),
        authority_public_key: None,
        ..upstream_at(address)
    }
}

/// The translator's 4 bytes to roll: 1 for the channel index, 3 for miners.
fn four_byte_slices(config: &mut PoolConfig) {
    let proxy = config.proxy.as_mut().unwrap();
    proxy.extranonce_len = 4;
    proxy.max_channels = 256;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_mines_to_an_sv1_upstream_through_its_translator() {
    let upstream = Stack::start_on_one_tip("proxy-sv1-upstream").await;
    let dir = tempfile::tempdir().unwrap();
    let translator = sv1_port_of(&upstream, dir.path()).await;
    let proxy = Proxy::start_configured(
        &upstream.node,
        vec![sv1_upstream_at(translator.sv1_address())],
        "proxy-sv1",
        four_byte_slices,
    )
    .await;
    let address = proxy.pool.sv2_address();
    let mut first = Miner::open_at(address, &format!("{KEY}.rig"), 1.0).await;
    let mut second = Miner::open_at(address, SECOND_MINER, 1.0).await;
    let per_miner = 3;
    mine_accepted(&mut first, per_miner).await;
    mine_accepted(&mut second, per_miner).await;
    mine_accepted(&mut first, per_miner).await;
    let total = 3 * per_miner as u64;

    // Sv1 difficulty 1 is 0xffff·2^208, not 2^224: the upstream's target is a hair harder than
    // the proxy's power of two, so about one share in 65,536 is credited here and not forwarded.
    let metrics = proxy.pool.metrics().clone();
    proxy.wait_for_every_share_decided(total).await;
    assert!(metrics.upstream.below_target.get() <= 1);
    let forwarded = metrics.upstream.forwarded.get();
    assert_eq!(metrics.upstream.accepted.get(), forwarded);
    assert_eq!(metrics.upstream.rejected.get(), 0, "no share collided");
    assert_eq!(metrics.upstream.dropped.get(), 0);

    let proxy_published = 2 * total;
    let upstream_published = 2 * forwarded;
    let on_proxy = published_creates(&proxy.pool, &proxy.stream, proxy_published).await;
    let on_upstream = published_creates(&upstream.pool, &upstream.stream, upstream_published).await;
    assert_eq!(on_proxy.len() as u64, total);
    assert_eq!(
        on_proxy.iter().filter(|(owner, _)| owner == KEY).count(),
        2 * per_miner
    );
    assert_eq!(on_upstream.len() as u64, forwarded);
    assert!(on_upstream.iter().all(|(owner, _)| owner == OPERATOR));
    let proxy_hashes: BTreeSet<String> = on_proxy.iter().map(|(_, hash)| hash.clone()).collect();
    assert_eq!(proxy_hashes.len() as u64, total, "no two shares alike");
    assert!(
        on_upstream
            .iter()
            .all(|(_, hash)| proxy_hashes.contains(hash)),
        "the upstream credited the headers the proxy's miners hashed"
    );

    proxy.pool.shutdown().await;
    translator.shutdown().await;
    upstream.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_rolling_version_bits_the_upstream_does_not_take_earns_nothing() {
    use hashpool_sv2_client::REQUIRES_VERSION_ROLLING;

    let upstream = Stack::start_on_one_tip("proxy-version-upstream").await;
    let proxy = Proxy::start(&upstream, "proxy-version").await;
    let (mut connection, _) = super::version_rolling::connect_with_flags_at(
        proxy.pool.sv2_address(),
        REQUIRES_STANDARD_JOBS | REQUIRES_VERSION_ROLLING,
    )
    .await;
    let opened = connection
        .open_standard(1, KEY, 1.0)
        .await
        .unwrap()
        .expect("the channel opens");
    let mut miner = Miner::on_channel(connection, opened).await;
    // BIP323's bit 5: channels_sv2 lets it roll, an Sv2 upstream only takes BIP320's bits.
    let mut rolled = miner.jobs.work().unwrap().clone();
    rolled.version |= 1 << 5;
    let nonce = find_nonce(|nonce| rolled.meets_target(nonce));
    let (reply, _) = miner.submit(rolled.share(0, nonce)).await;
    assert_eq!(error_code(&reply), "invalid-non-rollable-version-bit");
    // BIP320's bits are fine.
    let mut rolled = miner.jobs.work().unwrap().clone();
    rolled.version |= 1 << 13;
    let nonce = find_nonce(|nonce| rolled.meets_target(nonce));
    let (reply, _) = miner.submit(rolled.share(1, nonce)).await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    proxy.wait_for_upstream_answers(1).await;
    assert_eq!(proxy.pool.metrics().shares_accepted.get(), 1);
    assert_eq!(proxy.pool.metrics().upstream.accepted.get(), 1);
    proxy.pool.shutdown().await;
    upstream.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_falls_over_from_an_sv1_port_to_the_sv2_port() {
    let upstream = Stack::start_on_one_tip("proxy-sv1-failover-upstream").await;
    let dir = tempfile::tempdir().unwrap();
    let translator = sv1_port_of(&upstream, dir.path()).await;
    let proxy = Proxy::start_configured(
        &upstream.node,
        vec![
            sv1_upstream_at(translator.sv1_address()),
            upstream_at(upstream.pool.sv2_address()),
        ],
        "proxy-sv1-failover",
        four_byte_slices,
    )
    .await;
    let mut miner = Miner::open_at(proxy.pool.sv2_address(), KEY, 1.0).await;
    mine_accepted(&mut miner, 2).await;
    let metrics = proxy.pool.metrics().clone();
    proxy.wait_for_every_share_decided(2).await;

    translator.shutdown().await;
    // The Sv1 port is gone: two failed attempts, then the Sv2 port and a clean job from it.
    loop {
        if let MiningOwned::SetNewPrevHash(_) = miner.next_mining().await {
            break;
        }
    }
    mine_accepted(&mut miner, 2).await;
    proxy.wait_for_every_share_decided(4).await;
    assert_eq!(metrics.upstream.sessions.get(), 2);
    assert_eq!(metrics.upstream.rejected.get(), 0);
    assert_eq!(metrics.shares_accepted.get(), 4);
    proxy.pool.shutdown().await;
    upstream.pool.shutdown().await;
}

/// An Sv1 "upstream" that answers every line with garbage; counts the connections it took.
async fn garbage_sv1_upstream() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    counting_upstream(|tcp| async move {
        let (reader, mut writer) = tcp.into_split();
        let mut lines = BufReader::new(reader).lines();
        if let Ok(Some(_)) = lines.next_line().await {
            let _ = writer.write_all(b"\x00 this is not JSON-RPC\n").await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_an_sv1_upstream_closes_only_that_connection() {
    let node = Bitcoind::start().unwrap();
    let (address, accepted) = garbage_sv1_upstream().await;
    let proxy = Proxy::start_on(&node, vec![sv1_upstream_at(address)], "proxy-sv1-garbage").await;
    garbage_costs_only_the_upstream(proxy, &accepted).await;
}

/// A coinbase split around `extranonce_len` bytes of extranonce, as an Sv1 pool sends it in
/// `mining.notify` (coinb1, coinb2).
fn sv1_coinbase_parts(height: i64, extranonce_len: usize) -> (Vec<u8>, Vec<u8>) {
    use stratum_apps::stratum_core::bitcoin::blockdata::script::Builder;
    use stratum_apps::stratum_core::bitcoin::{
        absolute::LockTime, consensus::serialize, transaction::Version, Amount, OutPoint,
        ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
    };
    let height_push = Builder::new().push_int(height).into_script().into_bytes();
    let mut script_sig = height_push.clone();
    script_sig.extend(vec![0u8; extranonce_len]);
    let coinbase = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(312_500_000),
            script_pubkey: regtest_address().script_pubkey(),
        }],
    };
    let bytes = serialize(&coinbase);
    let at = 4 + 1 + 36 + 1 + height_push.len();
    (bytes[..at].to_vec(), bytes[at + extranonce_len..].to_vec())
}

/// A scripted Sv1 pool speaking as OCEAN's stratum does (4-byte extranonce1, 8 to roll, the
/// BIP320 mask): it answers the handshake, sends one job, hands the test every line the proxy
/// sends after authorizing, and writes what the test gives it.
async fn scripted_sv1_pool() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<serde_json::Value>,
    tokio::sync::mpsc::Sender<String>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (seen_tx, seen) = tokio::sync::mpsc::channel(64);
    let (say, mut to_say) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (reader, mut writer) = tcp.into_split();
        let mut lines = BufReader::new(reader).lines();
        let mut next = async || -> serde_json::Value {
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap()
        };
        let configure = next().await;
        assert_eq!(configure["method"], "mining.configure");
        let subscribe = next().await;
        assert_eq!(subscribe["method"], "mining.subscribe");
        let (coinb1, coinb2) = sv1_coinbase_parts(840_000, 12);
        let answers = [
            r#"{"id":1,"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"error":null}"#.to_owned(),
            r#"{"id":2,"result":[[["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],"aabbccdd",8],"error":null}"#.to_owned(),
        ];
        for answer in answers {
            writer
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .unwrap();
        }
        let authorize = next().await;
        assert_eq!(authorize["method"], "mining.authorize");
        let id = authorize["id"].clone();
        let lines_out = [
            serde_json::json!({"id": id, "result": true, "error": null}),
            serde_json::json!({"id": null, "method": "mining.set_difficulty", "params": [ehash::ShareWork::MIN.difficulty()]}),
            serde_json::json!({"id": null, "method": "mining.notify", "params": [
                "job-a", "00000000".repeat(8), hex::encode(&coinb1), hex::encode(&coinb2),
                [], "20000000", "207fffff", format!("{:08x}", hashpool_service::unix_now()), true
            ]}),
        ];
        for line in lines_out {
            writer
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        let _ = seen_tx.send(serde_json::from_str(&line).unwrap()).await;
                    }
                    // The proxy went away: the script is over.
                    _ => return,
                },
                Some(line) = to_say.recv() => {
                    if writer.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    (address, seen, say)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocean_like_sv1_pool_gets_each_miners_slice_and_a_new_extranonce_restarts_them() {
    use stratum_apps::stratum_core::mining_sv2::SubmitSharesExtendedOwned;

    let node = Bitcoind::start().unwrap();
    let (address, mut seen, say) = scripted_sv1_pool().await;
    // T = 6 of the upstream's 8 bytes: 2 bytes of padding, then each channel's 6.
    let proxy = Proxy::start_configured(
        &node,
        vec![UpstreamConfig {
            user_identity: "bc1qoperator.hashpool".into(),
            ..sv1_upstream_at(address)
        }],
        "proxy-sv1-scripted",
        |config| config.proxy.as_mut().unwrap().extranonce_len = 6,
    )
    .await;
    let (mut connection, opened, mut tracker) = extended_miner(&proxy).await;
    let work = tracker.work().unwrap().clone();
    assert!(
        work.job
            .coinbase_tx_prefix
            .as_bytes()
            .ends_with(&[0xaa, 0xbb, 0xcc, 0xdd, 0, 0]),
        "the upstream's extranonce1, then the padding"
    );
    assert!(work.job.version_rolling_allowed);

    // A share meeting Sv1's difficulty (0xffff·2^208/d, a hair harder than the proxy's target).
    let prefix = opened.extranonce_prefix.as_bytes().to_vec();
    let rolled = vec![7u8; usize::from(opened.extranonce_size)];
    let extranonce = [prefix.as_slice(), &rolled].concat();
    let mut sv1_target = [0u8; 32];
    sv1_target[28] = 0xf0;
    sv1_target[29] = 0xff;
    sv1_target[30] = 0x0f;
    let sv1_target = Target::from_le_bytes(sv1_target);
    let version = work.job.version | 0x0000_e000;
    let nonce = find_nonce(|nonce| {
        sv1_target.is_met_by(work.header(&extranonce, version, nonce).block_hash())
    });
    let replies = super::version_rolling::submit_extended_all(
        &mut connection,
        vec![SubmitSharesExtendedOwned {
            channel_id: opened.channel_id,
            sequence_number: 0,
            job_id: work.job.job_id,
            nonce,
            ntime: work.ntime,
            version,
            extranonce: rolled.clone().try_into().unwrap(),
        }],
    )
    .await;
    assert!(matches!(replies[0], MiningOwned::SubmitSharesSuccess(_)));
    let submit = loop {
        let line = seen.recv().await.unwrap();
        if line["method"] == "mining.submit" {
            break line;
        }
    };
    let expected_extranonce2 = hex::encode([&[0u8, 0][..], &prefix, &rolled].concat());
    assert_eq!(
        submit["params"],
        serde_json::json!([
            "bc1qoperator.hashpool",
            "job-a",
            expected_extranonce2,
            format!("{:08x}", work.ntime),
            format!("{nonce:08x}"),
            "0000e000"
        ])
    );
    say.send(serde_json::json!({"id": submit["id"], "result": true, "error": null}).to_string())
        .await
        .unwrap();
    proxy.wait_for_upstream_answers(1).await;
    assert_eq!(proxy.pool.metrics().upstream.accepted.get(), 1);

    // A new extranonce1, then (as pools do) a clean job: every channel starts on a job carrying
    // it.
    let (coinb1, coinb2) = sv1_coinbase_parts(840_000, 12);
    for line in [
        serde_json::json!({"id": null, "method": "mining.set_extranonce", "params": ["11223344", 8]}),
        serde_json::json!({"id": null, "method": "mining.notify", "params": [
            "job-b", "00000000".repeat(8), hex::encode(&coinb1), hex::encode(&coinb2),
            [], "20000000", "207fffff", format!("{:08x}", work.ntime), true
        ]}),
    ] {
        say.send(line.to_string()).await.unwrap();
    }
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), connection.recv())
            .await
            .expect("the proxy relays the new job")
            .unwrap();
        let AnyMessageOwned::Mining(message) = message else {
            continue;
        };
        if tracker.on_message(&message) && matches!(message, MiningOwned::SetNewPrevHash(_)) {
            break;
        }
    }
    assert!(tracker
        .work()
        .unwrap()
        .job
        .coinbase_tx_prefix
        .as_bytes()
        .ends_with(&[0x11, 0x22, 0x33, 0x44, 0, 0]));
    proxy.pool.shutdown().await;
}
