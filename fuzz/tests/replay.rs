//! Every seed and every input that once failed, through its target's harness: the fuzz
//! targets' checks (no panic; one quote per accepted share; no 5xx from the mint; messages that
//! decode re-encode to themselves) hold for them in every test run, not only when fuzzing.

use std::path::Path;

use hashpool_fuzz::TARGETS;

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind);
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let input = std::fs::read(&path).expect("a readable input");
            eprintln!("{target}: {}", path.display());
            run(&input);
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn every_seed_passes_its_targets_checks() {
    let replayed = replay("seeds");
    assert!(replayed >= TARGETS.len(), "only {replayed} seeds");
}

#[test]
fn every_input_a_fuzzer_once_failed_on_now_passes() {
    replay("regressions");
}

/// The recorded CPU miner's session replays as it ran: its shares are valid again, so the
/// `sv2_frames` target starts from inputs that reach share validation and block assembly.
#[test]
fn the_recorded_miner_session_earns_its_quotes_again() {
    let seed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/sv2_frames/cpu-miner-standard-channel");
    let input = std::fs::read(seed).expect("the recorded session");
    let published = hashpool_pool::fuzzing::PoolHarness::get().frames(&input);
    let created = published
        .iter()
        .filter(|message| matches!(message, ehash::QuoteMessage::Create(_)))
        .count();
    assert!(created >= 6, "{created} quotes from the recorded shares");
}

/// The wallet's recorded NUT-29 batch mint is signed for quotes the mint holds: on a fresh mint
/// it mints them (all they were paid is issued after), and sent again it gets the same signatures back
/// (NUT-19), never more ecash. So the `mint_http` target starts from bodies that reach the quote
/// and signature checks.
#[test]
fn the_recorded_batch_mint_mints_once() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/mint_http");
    let batch = std::fs::read(seeds.join("batch")).expect("the recorded batch");
    let check = std::fs::read(seeds.join("check")).expect("the recorded quote check");
    let mint = hashpool_fuzz::mint_http::MintHttpHarness::new();

    let (status, minted) = mint.post(&batch).expect("a request");
    assert_eq!(status, 200, "{minted}");
    assert_eq!(
        minted["signatures"].as_array().map(Vec::len),
        Some(4),
        "{minted}"
    );
    let (status, states) = mint.post(&check).expect("a request");
    assert_eq!(status, 200, "{states}");
    let quotes = states.as_array().expect("one answer per quote");
    assert_eq!(quotes.len(), 4, "{states}");
    for quote in quotes {
        let paid = quote["amount_paid"].as_u64().unwrap_or_default();
        assert!(
            paid > 0 && quote["amount_issued"].as_u64() == Some(paid),
            "{quote}"
        );
    }

    let (status, again) = mint.post(&batch).expect("a request");
    assert_eq!((status, again), (200.try_into().unwrap(), minted));
}
