#!/usr/bin/env bash
# Server throughput over loopback, hookv vs redis-server, measured by the same
# load generator (examples/loadgen.rs) in one run, rounds interleaved so that
# machine noise hits every target alike. Prints the median of each cell.
#
#   scripts/loadtest.sh [ROUNDS] [SECONDS]        (defaults: 5 rounds of 5 s)
#
# Targets: hookv on memory, hookv on sled, and redis-server (Debian's package:
# `apt-get install redis-server`; skipped with a note if absent), all with 50
# connections, pipeline 1 and 16, a 50/50 hset/hget mix on 100k keys.
# hookv runs with HOOKV_WORKERS worker threads (default 1: redis-server serves
# from one thread, and the load generator needs the machine's other core).
# HOOKV_EXTRA_CONFIG may hold extra TOML appended to hookv's config.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-5}
HOOKV_PORT=19527
REDIS_PORT=16379
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

cargo build --release --quiet --bin hookv-server --example loadgen
SERVER=target/release/hookv-server
LOADGEN=target/release/examples/loadgen

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

start_hookv() { # backend
  rm -rf "$work/sled"
  cat > "$work/hookv.toml" <<TOML
[server]
listen = "127.0.0.1:$HOOKV_PORT"
worker_threads = ${HOOKV_WORKERS:-1}
[storage]
backend = "$1"
path = "$work/sled"
[log]
filter = "warn"
${HOOKV_EXTRA_CONFIG:-}
TOML
  if (exec 3<>/dev/tcp/127.0.0.1/$HOOKV_PORT) 2>/dev/null; then echo "port $HOOKV_PORT is already in use" >&2; exit 1; fi
  $SERVER --config "$work/hookv.toml" & echo $! > "$work/pid"
  wait_port $HOOKV_PORT
}
stop_hookv() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true; }

have_redis=1
command -v redis-server >/dev/null || { have_redis=0; echo "note: redis-server not installed; measuring hookv only" >&2; }

run() { # name protocol port pipeline
  $LOADGEN --addr 127.0.0.1:$3 --protocol "$2" --conns 50 --pipeline "$4" --duration "$SECS" \
    | grep '^protocol=' | sed "s/^/target=$1 /" >> "$work/results"
}

for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    start_hookv memory; run hookv-memory hookv $HOOKV_PORT $p; stop_hookv
    start_hookv sled;   run hookv-sled   hookv $HOOKV_PORT $p; stop_hookv
    if [ $have_redis = 1 ]; then
      redis-server --port $REDIS_PORT --save '' --appendonly no --daemonize yes >/dev/null
      wait_port $REDIS_PORT
      run redis resp $REDIS_PORT $p
      redis-cli -p $REDIS_PORT shutdown nosave >/dev/null
    fi
  done
  echo "round $round/$ROUNDS done" >&2
done

python3 - "$work/results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split())
    rows[(kv["target"], int(kv["pipeline"]))].append(kv)
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
print("| target | pipeline | ops/s (median) | p50 µs | p99 µs | runs | vs redis |")
print("|---|---|---|---|---|---|---|")
for (t, p), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    base = rows.get(("redis", p))
    ratio = f"{med(rs,'ops_per_sec')/med(base,'ops_per_sec'):.2f}" if base else "-"
    print(f"| {t} | {p} | {med(rs,'ops_per_sec'):,.0f} | {med(rs,'p50_us'):.0f} | {med(rs,'p99_us'):.0f} | {len(rs)} | {ratio} |")
PY
