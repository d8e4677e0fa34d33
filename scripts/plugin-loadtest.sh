#!/usr/bin/env bash
# Server throughput with both example plugins loaded (key-guard, then
# rate-limit with a limit never reached) against no hooks, measured by
# examples/loadgen.rs: 50 connections, pipeline 1 and 16, one server worker
# thread, rounds interleaved so machine noise hits both alike. Prints the
# median of each cell and the plugins/no-hooks ratio.
#
#   scripts/plugin-loadtest.sh [ROUNDS] [SECONDS]     (defaults: 3 rounds of 5 s)
#
# Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
PORT=19528
TARGET=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet --workspace
cargo build --release --quiet --bin hookv-server --example loadgen
SERVER=$TARGET/release/hookv-server
LOADGEN=$TARGET/release/examples/loadgen
LIB=$(cd "$TARGET/release" && pwd)

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0; sleep 0.05; done; echo "port $PORT never opened" >&2; return 1; }

start() { # none|plugins
  cat > "$work/hookv.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
worker_threads = 1
[log]
filter = "warn"
TOML
  if [ "$1" = plugins ]; then
    cat >> "$work/hookv.toml" <<TOML
[[hooks]]
plugin = "$LIB/libkey_guard.so"
max_key_len = 64
[[hooks]]
plugin = "$LIB/librate_limit.so"
per_second = 1e12
burst = 1000000000
TOML
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then echo "port $PORT is already in use" >&2; exit 1; fi
  $SERVER --config "$work/hookv.toml" & echo $! > "$work/pid"
  wait_port
}
stop() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true; }

for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    for hooks in none plugins; do
      start $hooks
      $LOADGEN --addr 127.0.0.1:$PORT --conns 50 --pipeline "$p" --duration "$SECS" \
        | grep '^protocol=' | sed "s/^/hooks=$hooks /" >> "$work/results"
      stop
    done
  done
  echo "round $round/$ROUNDS done" >&2
done

python3 - "$work/results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split())
    rows[(kv["hooks"], int(kv["pipeline"]))].append(kv)
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
print("| hooks | pipeline | ops/s (median) | runs (ops/s) | p50 µs | p99 µs | vs no hooks |")
print("|---|---|---|---|---|---|---|")
for (h, p), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    base = rows[("none", p)]
    runs = " / ".join(f"{float(r['ops_per_sec']):,.0f}" for r in rs)
    ratio = med(rs, 'ops_per_sec') / med(base, 'ops_per_sec')
    print(f"| {h} | {p} | {med(rs,'ops_per_sec'):,.0f} | {runs} | {med(rs,'p50_us'):.0f} | {med(rs,'p99_us'):.0f} | {ratio:.3f} |")
PY
