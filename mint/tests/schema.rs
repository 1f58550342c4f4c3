//! The mint's HTTP API against its OpenAPI document (`mint/openapi.json`, served at
//! `/v1/hashpool/openapi.json`): schemathesis (PyPI; `bin/setup-schemathesis`) generates valid
//! and invalid requests for every route of a live mint holding PAID and UNPAID quotes, and checks
//! that no answer is a 5xx, that every status is one the document declares, that every body
//! (every error a cashu `{code, detail}`) matches its schema, and that every request the schema
//! does not allow is refused with a 4xx.

use std::path::PathBuf;
use std::process::Command;

use ehash::{QuoteMessage, UpdateQuote};

mod common;

use common::{miner_key, share, Harness};

/// `st` from `$SCHEMATHESIS`, else where bin/setup-schemathesis puts it.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let requirements = include_str!("../../tests/schemathesis/requirements.txt");
    let version = requirements
        .lines()
        .find_map(|line| line.strip_prefix("schemathesis=="))
        .expect("requirements.txt pins schemathesis");
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join(format!("hashpool/schemathesis-{version}/bin/st"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_what_the_openapi_document_declares_to_generated_requests() {
    let mut harness = Harness::start("mint-schema").await;
    let (_, key) = miner_key();
    let paid = share(key, 64);
    let unpaid = share(key, 32);
    harness.push(&QuoteMessage::Create(paid.clone())).await;
    harness.push(&QuoteMessage::Create(unpaid.clone())).await;
    harness
        .push(&QuoteMessage::Update(UpdateQuote::paid(vec![
            paid.quote_id,
        ])))
        .await;
    harness.wait_for_state(paid.quote_id, "PAID").await;

    let url = harness.server().url();
    let (status, document) = harness.http_get("/v1/hashpool/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["paths"]["/v1/mint/ehash/batch"].is_object());

    let st = schemathesis();
    let report = tempfile::tempdir().unwrap();
    let junit = report.path().join("junit.xml");
    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        let junit = junit.clone();
        move || {
            Command::new(&st)
                .arg("run")
                .arg(format!("{url}/v1/hashpool/openapi.json"))
                .args(["--url", &url])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
                ])
                // Bounded and reproducible: the same requests on every run.
                .args(["--max-examples", "40", "--seed", "20261130", "--workers", "1"])
                .args(["--report", "junit", "--report-junit-path"])
                .arg(&junit)
                .env("NO_COLOR", "1")
                // Its cache of crashes found goes with the report, not into the source tree.
                .current_dir(junit.parent().expect("the report directory"))
                .output()
                .unwrap_or_else(|error| {
                    panic!("schemathesis at {} runs (bin/setup-schemathesis): {error}", st.display())
                })
        }
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{text}"
    );
    // It did test the routes: one test case per operation in the report (and the stateful
    // phase's).
    let junit = std::fs::read_to_string(&junit).unwrap();
    let cases = junit.matches("<testcase name=\"GET /").count()
        + junit.matches("<testcase name=\"POST /").count();
    let operations = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|path| path.as_object().unwrap().len())
        .sum::<usize>();
    assert_eq!(cases, operations, "{junit}");

    // Generated quote ids are never the pool's: real quotes' answers are checked here.
    for create in [&paid, &unpaid] {
        let path = format!("/v1/mint/quote/ehash/{}", create.quote_id);
        let (status, body) = harness.http_get(&path).await;
        assert_eq!(status, 200, "{body}");
        let schema = serde_json::json!({
            "$ref": "#/components/schemas/MintQuote",
            "components": document["components"],
        });
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{path}: {errors:?}\n{body}");
    }

    // Nothing it sent broke the mint: no 5xx answered, and it still serves.
    let metrics = harness.server().metrics();
    for status in 500..600 {
        assert_eq!(
            metrics.http_responses(status),
            0,
            "{status} answered\n{text}"
        );
    }
    let (status, _) = harness.http_get("/health").await;
    assert_eq!(status, 200);
    harness.stop().await;
}
