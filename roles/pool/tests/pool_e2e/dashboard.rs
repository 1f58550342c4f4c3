//! The dashboard's API on a pool with a real miner: every route answers what the OpenAPI
//! document declares, with the miner's real numbers, and the history survives a restart.

use super::*;
use hashpool_testkit::{get_json, http_request};
use serde_json::{json, Value};

/// A key no test mines with (the generator point).
const STRANGER: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

/// Errors of `body` against the schema the document declares for `path`'s `status` answer.
fn schema_errors(document: &Value, path: &str, status: u16, body: &Value) -> Vec<String> {
    let schema = &document["paths"][path]["get"]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{path} declares no JSON answer for {status}"
    );
    // The schema with the document's components beside it, so its `$ref`s resolve.
    let root = json!({"allOf": [schema], "components": document["components"]});
    let validator = jsonschema::validator_for(&root).expect("the declared schema compiles");
    validator
        .iter_errors(body)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

async fn mine_shares(miner: &mut Miner, count: usize) {
    for _ in 0..count {
        let (reply, _) = miner.submit_valid_share().await;
        assert!(
            matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
            "{reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_answers_what_the_openapi_document_declares() {
    let stack = Stack::start_on_one_tip("pool-dashboard-api").await;
    let http = stack.pool.http_address();
    let mut miner = Miner::open(&stack, &format!("{KEY}.rig1"), 1.0).await;
    mine_shares(&mut miner, 3).await;

    let (status, document) = get_json(http, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let paths: Vec<String> = document["paths"]
        .as_object()
        .expect("the document lists paths")
        .keys()
        .cloned()
        .collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
    for path in &paths {
        let (status, body) = get_json(http, &path.replace("{pubkey}", KEY)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let errors = schema_errors(&document, path, 200, &body);
        assert!(errors.is_empty(), "{path}: {errors:?}\n{body:#}");
        if path.contains("{pubkey}") {
            for (key, status) in [("not-a-key", 400), (STRANGER, 404)] {
                let (answered, body) = get_json(http, &path.replace("{pubkey}", key)).await;
                assert_eq!(answered, status, "{path} for {key}: {body}");
                let errors = schema_errors(&document, path, status, &body);
                assert!(errors.is_empty(), "{path} {status}: {errors:?}");
            }
        }
    }

    // The numbers are the miner's: three shares from worker rig1, on an open channel.
    let (_, miner_detail) = get_json(http, &format!("/api/v1/miners/{KEY}")).await;
    assert_eq!(miner_detail["shares"], 3);
    let work = stack.pool.metrics().work_credited.get();
    assert_eq!(miner_detail["work_credited"], work);
    assert_eq!(miner_detail["quotes"]["released"]["count"], 3);
    assert_eq!(miner_detail["quotes"]["released"]["work"], work);
    let worker = &miner_detail["workers"][0];
    assert_eq!(worker["name"], "rig1");
    assert_eq!(worker["connected"], true);
    assert_eq!(worker["shares"], 3);
    assert!(worker["best_share_difficulty"].as_f64().unwrap() > 0.0);
    assert!(miner_detail["hashrate"]["m10"].as_f64().unwrap() > 0.0);

    let (_, pool) = get_json(http, "/api/v1/pool").await;
    assert_eq!(pool["miners"], 1);
    assert_eq!(pool["workers"], 1);
    assert_eq!(pool["shares"]["accepted"], 3);
    assert_eq!(
        pool["connect"]["sv2_address"],
        stack.pool.sv2_address().to_string()
    );
    // On regtest the first share is a block: the one bitcoind accepted is listed.
    stack.wait_for_block_submitted().await;
    let (_, pool) = get_json(http, "/api/v1/pool").await;
    let hash: bitcoin::BlockHash = pool["blocks"][0]["hash"]
        .as_str()
        .expect("a block listed")
        .parse()
        .unwrap();
    stack
        .node
        .rpc()
        .get_block_header(&hash)
        .expect("the listed block is bitcoind's");

    // The page that shows all this is served beside the API.
    let (status, page) = http_request(http, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(page.contains("/static/app.js"), "{page}");
    let (status, page) = http_request(http, "GET", &format!("/miner/{KEY}"), &[], "").await;
    assert_eq!(status, 200);
    assert!(page.contains("/static/app.js"));
    for asset in ["app.js", "style.css", "uplot.iife.min.js", "uplot.min.css"] {
        let (status, _) = http_request(http, "GET", &format!("/static/{asset}"), &[], "").await;
        assert_eq!(status, 200, "{asset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miners_history_and_totals_survive_a_pool_restart() {
    let stack = Stack::start_on_one_tip("pool-dashboard-history").await;
    let mut miner = Miner::open(&stack, &format!("{KEY}.rig1"), 1.0).await;
    mine_shares(&mut miner, 2).await;
    let path = format!("/api/v1/miners/{KEY}");
    let (_, before) = get_json(stack.pool.http_address(), &path).await;
    let (_, series_before) = get_json(stack.pool.http_address(), &format!("{path}/hashrate")).await;
    assert_eq!(before["shares"], 2);
    drop(miner);

    let stack = stack.restart_pool().await;
    let http = stack.pool.http_address();
    let (status, after) = get_json(http, &path).await;
    assert_eq!(status, 200, "{after}");
    for field in [
        "shares",
        "work_credited",
        "proven_hashes",
        "best_share_difficulty",
        "last_share",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(after["workers"][0]["name"], "rig1");
    assert_eq!(
        after["workers"][0]["connected"], false,
        "its connection ended with the old pool"
    );
    let (_, series_after) = get_json(http, &format!("{path}/hashrate")).await;
    let times = |series: &Value| -> Vec<Value> {
        series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|point| point["time"].clone())
            .collect()
    };
    assert!(!times(&series_before).is_empty());
    assert_eq!(
        times(&series_after),
        times(&series_before),
        "the buckets came back"
    );
    assert_eq!(
        series_after["workers"]["rig1"].as_array().map(Vec::len),
        series_before["workers"]["rig1"].as_array().map(Vec::len)
    );

    // In Redis: each scope's totals and series expire a week after its last write; the
    // indexes and the block list are trimmed instead.
    let mut redis = redis::Client::open(SHARED_REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = format!("{}:dashboard:pool-dashboard-history", stack.stream);
    let keys: Vec<String> = redis.keys(format!("{prefix}:*")).await.unwrap();
    let scoped: Vec<&String> = keys
        .iter()
        .filter(|key| key.contains(":totals:") || key.contains(":series:"))
        .collect();
    assert_eq!(
        scoped.len(),
        6,
        "pool, key and worker, totals and series: {keys:?}"
    );
    for key in scoped {
        let ttl: i64 = redis.ttl(key).await.unwrap();
        assert!(
            ttl > 6 * 24 * 3600 && ttl <= 7 * 24 * 3600,
            "{key}: ttl {ttl}"
        );
    }

    // And the restored totals go on counting.
    let mut miner = Miner::open(&stack, &format!("{KEY}.rig1"), 1.0).await;
    mine_shares(&mut miner, 1).await;
    let (_, later) = get_json(http, &path).await;
    assert_eq!(later["shares"], 3);
    assert_eq!(later["workers"][0]["connected"], true);
}
