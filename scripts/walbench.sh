#!/usr/bin/env bash
# What the write-ahead log costs: hookv on memory without a log, with
# `wal` fsync=everysec and fsync=always, and redis-server with
# appendonly/appendfsync everysec and always, all measured by the same load
# generator (examples/loadgen.rs), rounds interleaved so machine noise hits
# every target alike. Prints the median of each cell.
#
#   scripts/walbench.sh [ROUNDS] [SECONDS]        (defaults: 3 rounds of 4 s)
#
# Cells: 50 connections, pipeline 1 and 16, --set-ratio 1.0 (all hset) and
# 0.5 (the default mix). hookv runs with HOOKV_WORKERS worker threads
# (default 1, like redis-server's one thread; the load generator needs the
# machine's other core). The logs live in a temp dir on the same disk as
# TMPDIR. redis-server is skipped with a note if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-4}
HOOKV_PORT=19537
REDIS_PORT=16389
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin hookv-server --example loadgen
SERVER=$target_dir/release/hookv-server
LOADGEN=$target_dir/release/examples/loadgen

wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

start_hookv() { # fsync policy, or "none" for no log
  rm -rf "$work/wal"
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nworker_threads = %s\n[log]\nfilter = "warn"\n' \
      $HOOKV_PORT "${HOOKV_WORKERS:-1}"
    if [ "$1" != none ]; then
      printf '[[hooks]]\nkind = "wal"\npath = "%s/wal"\nfsync = "%s"\n' "$work" "$1"
    fi
  } > "$work/hookv.toml"
  if (exec 3<>/dev/tcp/127.0.0.1/$HOOKV_PORT) 2>/dev/null; then echo "port $HOOKV_PORT is already in use" >&2; exit 1; fi
  $SERVER --config "$work/hookv.toml" & echo $! > "$work/pid"
  wait_port $HOOKV_PORT
}
stop_hookv() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true; }

start_redis() { # appendfsync policy
  rm -rf "$work/redis"; mkdir -p "$work/redis"
  redis-server --port $REDIS_PORT --save '' --appendonly yes --appendfsync "$1" \
    --dir "$work/redis" --daemonize yes >/dev/null
  wait_port $REDIS_PORT
}
stop_redis() { redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; sleep 0.2; }

have_redis=1
command -v redis-server >/dev/null || { have_redis=0; echo "note: redis-server not installed; measuring hookv only" >&2; }

run() { # name protocol port pipeline set-ratio
  $LOADGEN --addr 127.0.0.1:$3 --protocol "$2" --conns 50 --pipeline "$4" --set-ratio "$5" \
    --duration "$SECS" | grep '^protocol=' | sed "s/^/target=$1 /" >> "$work/results" || true
}

for round in $(seq "$ROUNDS"); do
  for ratio in 1.0 0.5; do
    for p in 1 16; do
      for policy in none everysec always; do
        start_hookv $policy; run "hookv-wal-$policy" hookv $HOOKV_PORT $p $ratio; stop_hookv
      done
      if [ $have_redis = 1 ]; then
        for policy in everysec always; do
          start_redis $policy; run "redis-aof-$policy" resp $REDIS_PORT $p $ratio; stop_redis
        done
      fi
    done
  done
  echo "round $round/$ROUNDS done" >&2
done

python3 - "$work/results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split())
    rows[(float(kv["set_ratio"]), int(kv["pipeline"]), kv["target"])].append(kv)
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
print("| set ratio | pipeline | target | ops/s (median) | p50 µs | p99 µs | errors | runs |")
print("|---|---|---|---|---|---|---|---|")
for (ratio, p, t), rs in sorted(rows.items(), key=lambda x: (-x[0][0], x[0][1], x[0][2])):
    errs = sum(int(r["errors"]) for r in rs)
    print(f"| {ratio} | {p} | {t} | {med(rs,'ops_per_sec'):,.0f} | {med(rs,'p50_us'):.0f} | {med(rs,'p99_us'):.0f} | {errs} | {len(rs)} |")
PY
