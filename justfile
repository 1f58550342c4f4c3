# hashpool operator recipes. `bin/up` and `devenv up` both run the `run-*` recipes below.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The processes of the stack, in start order. devenv.nix declares the same set.
processes := "redis bitcoind pool mint translator wallet mining-device"

# List the recipes.
default:
    @just --list

# Build everything and run the stack on regtest until Ctrl-C.
up: build
    bin/banner
    bin/stack {{processes}}

# The stack in payout-epoch mode: shares earn sats per epoch, the mint runs a Lightning node, and a
# regtest payer stands in for the upstream pool that pays each closed epoch.
up-payout: build
    bin/payout-secret
    bin/banner --payout-epoch
    HASHPOOL_POOL_CONFIG=config/payout/pool.toml HASHPOOL_MINT_CONFIG=config/payout/mint.toml HASHPOOL_WALLET_UNIT=sat bin/stack {{processes}} payer

# The stack as a proxy pool: the pool mines on the jobs of an upstream hashpool (solo on regtest,
# standing in for OCEAN) through that upstream's Sv1 translator, and fails over to its Sv2 port.
up-proxy: build
    bin/banner --proxy
    HASHPOOL_POOL_CONFIG=config/proxy/pool.toml HASHPOOL_TRANSLATOR_CONFIG=config/proxy/translator.toml bin/stack redis bitcoind upstream-pool upstream-translator pool mint translator wallet mining-device

# Build the workspace.
build:
    cargo build --workspace --bins

# Read the mint's NUT-06 info.
mint-info:
    curl -s http://127.0.0.1:3338/v1/info

# Run the whole test suite (installs prerequisites first).
test *ARGS:
    bin/test {{ARGS}}

# Refresh docs/screenshots: the dashboard in headless Chromium while a CPU miner mines (the browser test).
screenshots:
    bin/setup-browser
    BITCOIND="$(bin/build-bitcoind)/bitcoind" HASHPOOL_SCREENSHOTS="$PWD/docs/screenshots" cargo nextest run -p hashpool-full-stack-tests --test dashboard_browser

# Formatting and clippy, as CI expects them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Fuzz every target for SECONDS each (default 60), or only the TARGETs named: cargo fuzz on stable,
# from the seeds in fuzz/seeds; prints executions per target (docs/fuzzing.md).
fuzz SECONDS="60" *TARGETS:
    bin/fuzz {{SECONDS}} {{TARGETS}}

# Record fuzz/seeds again from real traffic (the CPU miner on the fuzzed pool, the wallet's bodies).
fuzz-seeds:
    cargo run -p hashpool-fuzz --example record_seeds -- fuzz/seeds

# Pool load benchmark: 10, 100 and 1000 Sv2 channels against the release pool (results: docs/benchmarks.md).
bench-pool:
    benches/pool-load

# Whole-stack benchmark: pool + Redis + mint under full load; does the mint keep up? (docs/benchmarks.md)
bench-stack:
    benches/stack-load

# Side by side: hashpool's pool and SRI's pool_sv2 under the same load, same node, same run (docs/benchmarks.md).
bench-vs-sri:
    benches/vs-sri

# Side by side: HTTP mints/s of hashpool's mint and cdk-mintd on SQLite, same wallet code (docs/benchmarks.md).
bench-vs-cdk-mintd:
    benches/vs-cdk-mintd

# Soak benchmark: the stack for 10 minutes with new templates and tips; pool RSS, Redis memory, stream and store over time.
bench-soak:
    benches/soak

# Flood benchmark: the honest miner's share latency with and without 10,000 idle, slow-loris and half-handshake connections against the pool, the translator and the mint (docs/benchmarks.md).
bench-flood:
    benches/flood

# Mint benchmark: quotes/s from the stream, HTTP mints/s (results: docs/benchmarks.md).
bench-mint:
    benches/mint-load

# Build the pinned bitcoind once into the cache; print its bin dir.
bitcoind:
    bin/build-bitcoind

# Move the bitcoind pin to another libbitcoinkernel-sys VERSION and build it.
update-bitcoind VERSION:
    sed -i -E 's/^libbitcoinkernel-sys=.*/libbitcoinkernel-sys={{VERSION}}/' config/bitcoind.pin
    bin/build-bitcoind

# Each process up or down, the pool's share rate, the mint's quotes.
status:
    bin/status

# Follow every process's log.
logs:
    tail -n 20 -F logs/*.log

# Process: Redis (the running one on 6379, else our own).
run-redis:
    bin/run-redis

# Process: the pinned bitcoind on regtest (101 blocks on first start).
run-bitcoind:
    bin/run-bitcoind

# Process: the cdk mint (consumes the quote stream, serves the cashu API on 127.0.0.1:3338).
run-mint:
    "${CARGO_TARGET_DIR:-target}/debug/mint" --config "${HASHPOOL_MINT_CONFIG:-config/mint.toml}"

# Process: the Stratum V2 pool (miners on 0.0.0.0:34254, metrics on 127.0.0.1:9091).
run-pool:
    "${CARGO_TARGET_DIR:-target}/debug/pool" --config "${HASHPOOL_POOL_CONFIG:-config/pool.toml}"

# Process: the Sv1 -> Sv2 translator (Bitaxe: stratum+tcp://<host>:34255, user = your pubkey).
run-translator:
    "${CARGO_TARGET_DIR:-target}/debug/translator" --config "${HASHPOOL_TRANSLATOR_CONFIG:-config/translator.toml}"

# Process (proxy mode): the upstream pool the proxy mines to (Sv2 127.0.0.1:34264, log logs/upstream/pool.log).
run-upstream-pool:
    "${CARGO_TARGET_DIR:-target}/debug/pool" --config config/proxy/upstream-pool.toml

# Process (proxy mode): the upstream's Sv1 port, 127.0.0.1:34265 (log logs/upstream/translator.log).
run-upstream-translator:
    "${CARGO_TARGET_DIR:-target}/debug/translator" --config config/proxy/upstream-translator.toml

# Process: the miner's wallet (made on first run in .data/wallet), minting quotes as they become PAID.
run-wallet:
    "${CARGO_TARGET_DIR:-target}/debug/wallet" init --if-missing >/dev/null; exec "${CARGO_TARGET_DIR:-target}/debug/wallet" --unit "${HASHPOOL_WALLET_UNIT:-hash}" watch

# Process: a CPU Sv2 miner whose shares are credited to the wallet's key.
run-mining-device:
    key="$("${CARGO_TARGET_DIR:-target}/debug/wallet" init --if-missing)"; exec "${CARGO_TARGET_DIR:-target}/debug/mining-device" --identity "$key.cpu0"

# Process (payout-epoch mode): the regtest payer, paying the mint's payout offer once per closed epoch.
run-payer:
    "${CARGO_TARGET_DIR:-target}/debug/payout-payer" --config config/payer.toml

# The stack wallet (.data/wallet): `just wallet balance`, `just wallet quotes`, `just wallet send 100`...
wallet *ARGS:
    @"${CARGO_TARGET_DIR:-target}/debug/wallet" {{ARGS}}

# Print a new Noise authority keypair for config/pool.toml.
pool-keygen:
    cargo run --quiet -p hashpool-pool --bin pool -- keygen
