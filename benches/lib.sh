# Shared by the benchmark scripts (sourced, not run): a whole hashpool stack in a temporary
# directory on free ports, stopped on exit.
#
# The chain is a signet of the pinned bitcoind's own, whose challenge is OP_TRUE (blocks need
# no signature), at signet's least difficulty: about 2^22 hashes a block. On regtest every share
# the pool takes (at least 2^12 hashes) would also be a block; here load can send shares that
# are not, and blocks only when it means to.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# HASHPOOL_BIN_DIR: binaries already built (the test suite's smoke runs use its debug ones);
# unset: release binaries, built here.
target="${HASHPOOL_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}"
build="$([[ -n "${HASHPOOL_BIN_DIR:-}" ]] && echo "binaries of $HASHPOOL_BIN_DIR" || echo "release build")"
# The test key's P2WPKH address (config/pool.toml's) on signet.
signet_address="tb1qqrzrwrmesnkhpauet05m8klt37d6aruj4kv0eg"
work="$(mktemp -d)"
pids=()

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap bench_cleanup EXIT

# Builds the release binaries named (`package:bin` pairs) and raises the open-file limit.
bench_build() {
  "$root/bin/setup" >/dev/null
  bitcoind_bin="$("$root/bin/build-bitcoind")"
  local args=()
  for pair in "$@"; do args+=(-p "${pair%%:*}" --bin "${pair##*:}"); done
  [[ -n "${HASHPOOL_BIN_DIR:-}" ]] || cargo build --release --quiet "${args[@]}"
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to 30 s for a TCP listener on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# Our own Redis with the shipped production settings (config/redis.conf: append-only file, fsync
# always), so its memory is the stack's alone. Sets redis_port and redis_url.
start_redis() {
  redis_port="$(free_port)"
  mkdir -p "$work/redis"
  redis-server "$root/config/redis.conf" --port "$redis_port" --dir "$work/redis" \
    --logfile "$work/redis.log" --daemonize no &
  pids+=($!)
  wait_port "$redis_port"
  redis_url="redis://127.0.0.1:$redis_port"
}

redis() { redis-cli -p "$redis_port" "$@"; }

# The pinned bitcoind on the load signet. Sets rpc_port and cookie. Its genesis block is from
# 2020: -maxtipage keeps the node out of initial block download, where Bitcoin Core's IPC mining
# interface (pool_sv2's template source) hands out no templates. $1: another node binary (the
# IPC build's bitcoin-node, beside its bitcoin-cli); further arguments: extra flags.
start_bitcoind() {
  local node="${1:-$bitcoind_bin/bitcoind}"
  shift || true
  local chain=(-signet -signetchallenge=51 -datadir="$work/bitcoind")
  rpc_port="$(free_port)"
  mkdir -p "$work/bitcoind"
  "$node" "${chain[@]}" "$@" -rpcport="$rpc_port" -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 \
    -listen=0 -dnsseed=0 -fixedseeds=0 -printtoconsole=0 -maxtipage=2000000000 &
  pids+=($!)
  cookie="$work/bitcoind/signet/.cookie"
  "$(dirname "$node")/bitcoin-cli" "${chain[@]}" -rpcport="$rpc_port" -rpcwait getblockcount >/dev/null
}

# Where reference binaries are built once, outside the repo (as bin/build-bitcoind's cache).
cache_dir="${HASHPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hashpool}"

# Installs crate $1 at version $2 from crates.io once into the cache, with any further
# `cargo install` flags, and prints the directory holding its binaries.
install_once() {
  local crate="$1" version="$2"
  shift 2
  local install_root="$cache_dir/$crate-$version"
  if [[ ! -d "$install_root/bin" ]]; then
    echo "building $crate $version from crates.io into $install_root (once)" >&2
    cargo install --quiet --locked "$crate" --version "$version" --root "$install_root" "$@" >&2
  fi
  echo "$install_root/bin"
}

# The release pool on the signet, Redis and the stream `stream`, at the easiest share target
# (2^12 hashes) for every channel. Extra TOML for the [bitcoind] table in $1. Sets pool_pid,
# sv2_port, pool_http.
start_pool() {
  sv2_port="$(free_port)"
  pool_http="127.0.0.1:$(free_port)"
  cat >"$work/pool.toml" <<TOML
listen_address = "127.0.0.1:$sv2_port"
http_address = "$pool_http"
log_dir = "$work/logs"
[bitcoind]
rpc_url = "http://127.0.0.1:$rpc_port"
cookie_file = "$cookie"
coinbase_address = "$signet_address"
${1:-}
[redis]
url = "$redis_url"
stream = "$stream"
journal_path = "$work/journal.jsonl"
publisher_id = "bench"
[difficulty]
minimum = 9.5367431640625e-7
[vardiff]
# Keep every channel at the easiest target: the benchmark measures the pool, not the miners.
shares_per_minute = 1000000000.0
TOML
  RUST_LOG=warn "$target/pool" --config "$work/pool.toml" >"$work/pool.out" 2>&1 &
  pool_pid=$!
  pids+=($pool_pid)
  wait_port "${pool_http##*:}"
  wait_port "$sv2_port"
}

# The release mint consuming `stream`, on SQLite in the work dir. Sets mint_pid and mint_http.
start_mint() {
  mint_http="127.0.0.1:$(free_port)"
  cat >"$work/mint.toml" <<TOML
listen_address = "$mint_http"
log_dir = "$work/logs"
seed_file = "$work/mint/seed"
[database]
sqlite_path = "$work/mint/mint.sqlite"
[redis]
url = "$redis_url"
stream = "$stream"
TOML
  RUST_LOG=warn "$target/mint" --config "$work/mint.toml" >"$work/mint.out" 2>&1 &
  mint_pid=$!
  pids+=($mint_pid)
  wait_port "${mint_http##*:}"
}

# The release translator in front of the pool (start_pool first), offering Sv1 miners the pool's
# least share work (2^12 hashes): a miner that suggests no difficulty is given the minimum. Sets
# translator_pid and sv1_port.
start_translator() {
  sv1_port="$(free_port)"
  cat >"$work/translator.toml" <<TOML
listen_address = "127.0.0.1:$sv1_port"
metrics_address = "127.0.0.1:$(free_port)"
log_dir = "$work/logs"
[upstream]
address = "127.0.0.1:$sv2_port"
[downstream]
initial_hashrate = 1.0
minimum_difficulty = 9.5367431640625e-7
TOML
  RUST_LOG=warn "$target/translator" --config "$work/translator.toml" >"$work/translator.out" 2>&1 &
  translator_pid=$!
  pids+=($translator_pid)
  wait_port "$sv1_port"
}

# CPU seconds (user + system) process $1 has used.
cpu_seconds() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

# The value of the Prometheus sample `$2` (name and labels exactly) at http://$1/metrics.
# Asked up to 10 times: a process busy under load may not answer at once.
metric() {
  local value
  for _ in $(seq 10); do
    value="$(curl -s --max-time 5 "http://$1/metrics" | awk -v name="$2" '$1 == name { print $2; exit }')"
    [[ "$value" =~ ^[0-9.]+$ ]] && { echo "$value"; return 0; }
    sleep 0.5
  done
  echo "no $2 at http://$1/metrics" >&2
  return 1
}

# Field `$1` of the mint's consumer group on the stream (XINFO GROUPS): `lag` (entries not yet
# delivered to it), `pending` (delivered, not yet acknowledged).
group_field() {
  redis xinfo groups "$stream" | awk -v field="$1" 'previous == field { print; exit } { previous = $0 }'
}

# The arithmetic expression $1, with $2 decimals (0 by default).
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }

rss_mib() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# Bytes of the mint's SQLite store (database and write-ahead log).
mint_store_bytes() { cat "$work"/mint/mint.sqlite* 2>/dev/null | wc -c; }

stream="bench:$(date +%s):$$:quotes"
