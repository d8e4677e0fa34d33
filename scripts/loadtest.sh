#!/usr/bin/env bash
# Server throughput over loopback, measured by the same load generator
# (bench/loadgen, which speaks hookv and Redis's RESP) in one run, with
# rounds interleaved so that machine noise hits every target alike. Prints the
# median of each cell and its ratio to the suite's baseline in the same run.
#
#   scripts/loadtest.sh SUITE [ROUNDS] [SECONDS]      (defaults: 5 rounds of 5 s)
#
# Suites (50 connections, pipeline 1 and 16, 100k keys, 16-byte values):
#   core     hookv memory and sled vs redis-server, 50/50 hset/hget   (baseline: redis)
#   hooks    no hooks vs auth+audit+wal(everysec)+rewrite, 50/50      (baseline: no hooks)
#   wal      hset only: wal everysec vs wal always vs redis appendfsync always (baseline: everysec)
#   sled     hset only: sled with [storage] sync = no vs everysec vs always  (baseline: sync no)
#   plugins  no hooks vs key-guard + rate-limit plugins, 50/50        (baseline: no hooks)
#   reload   the full chain, with and without a SIGHUP reload every 100 ms (baseline: no reload)
#   scoped   no hooks vs auth+audit+rewrite+key-guard+rate-limit all scoped (`tables`) to a
#            table the load never names (the wal cannot be scoped), 50/50 (baseline: no hooks)
#   metrics  no hooks and the full chain, with [metrics] listen (scraped every second)
#            and without; with BASE_SERVER=path/to/an/older/hookv-server, the "off"
#            cells run that binary instead, to measure the counting itself (which
#            this build does with or without [metrics])     (baseline: no hooks, off)
#
# hookv runs with worker_threads = 1 (redis-server serves from one thread, and
# the load generator needs the machine's other core). redis-server is Debian's
# package (`apt-get install redis-server`); without it redis cells are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${1:?usage: scripts/loadtest.sh core|hooks|wal|sled|plugins|reload|scoped|metrics [ROUNDS] [SECONDS]}
ROUNDS=${2:-5}
SECS=${3:-5}
HOOKV_PORT=19527
METRICS_PORT=19100
REDIS_PORT=16379
TOKEN=loadtest-token
work=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin hookv-server --bin hookv-cli
cargo build --release --quiet -p loadgen
SERVER=target/release/hookv-server
LOADGEN=target/release/loadgen
if [ "$SUITE" = plugins ] || [ "$SUITE" = scoped ]; then
  cargo build --release --quiet -p key-guard -p rate-limit
fi
HASH=$(target/release/hookv-cli hash-token $TOKEN)

port_open() { (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
wait_port() { for _ in $(seq 200); do port_open "$1" && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# hooks_for NAME: the [[hooks]] of a hookv target.
hooks_for() {
  local wal_policy=""
  case $1 in
    *wal-always*) wal_policy=always ;;
    *wal-everysec*|chain*) wal_policy=everysec ;;
  esac
  case $1 in
    chain*) cat <<TOML
[[hooks]]
kind = "auth"
users = [{ name = "bench", token_sha256 = "$HASH", read = ["*"], write = ["*"] }]
[[hooks]]
kind = "audit"
path = "$work/audit.jsonl"
TOML
    ;;
  esac
  if [ -n "$wal_policy" ]; then cat <<TOML
[[hooks]]
kind = "wal"
path = "$work/wal"
fsync = "$wal_policy"
TOML
  fi
  case $1 in
    chain*) cat <<TOML
[[hooks]]
kind = "rewrite"
rules = [{ status = 401, set_message = "log in first" }, { table = "secret*", redact = "***" }]
TOML
    ;;
    scoped) cat <<TOML
[[hooks]]
kind = "auth"
tables = ["untouched*"]
users = [{ name = "bench", token_sha256 = "$HASH", read = ["*"], write = ["*"] }]
[[hooks]]
kind = "audit"
tables = ["untouched*"]
path = "$work/audit.jsonl"
[[hooks]]
kind = "rewrite"
tables = ["untouched*"]
rules = [{ status = 401, set_message = "log in first" }, { table = "secret*", redact = "***" }]
[[hooks]]
plugin = "$PWD/target/release/libkey_guard.so"
tables = ["untouched*"]
max_key_len = 64
[[hooks]]
plugin = "$PWD/target/release/librate_limit.so"
tables = ["untouched*"]
per_second = 100000000
burst = 100000000
TOML
    ;;
    plugins) cat <<TOML
[[hooks]]
plugin = "$PWD/target/release/libkey_guard.so"
max_key_len = 64
[[hooks]]
plugin = "$PWD/target/release/librate_limit.so"
per_second = 100000000
burst = 100000000
TOML
    ;;
  esac
}

start_hookv() { # name backend
  rm -rf "$work/sled" "$work/wal" "$work/audit.jsonl"
  if port_open $HOOKV_PORT; then echo "port $HOOKV_PORT is already in use" >&2; exit 1; fi
  { cat <<TOML
[server]
listen = "127.0.0.1:$HOOKV_PORT"
worker_threads = 1
[storage]
backend = "$2"
path = "$work/sled"
sync = "$(case $1 in *sync-no) echo no ;; *sync-everysec) echo everysec ;; *) echo always ;; esac)"
[log]
filter = "warn"
TOML
    case $1 in *metrics-on) printf '[metrics]\nlisten = "127.0.0.1:%s"\n' $METRICS_PORT ;; esac
    hooks_for "$1"; } > "$work/hookv.toml"
  local server=$SERVER
  case $1 in *metrics-off) server=${BASE_SERVER:-$SERVER} ;; esac
  $server --config "$work/hookv.toml" & echo $! > "$work/pid"
  wait_port $HOOKV_PORT
}
stop_hookv() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true; }

start_redis() { # extra args...
  # A fresh data dir: an append-only file left by the last cell would be
  # loaded first, and redis answers LOADING meanwhile.
  rm -rf "$work/redis"; mkdir -p "$work/redis"
  redis-server --port $REDIS_PORT --save '' --dir "$work/redis" "$@" --daemonize yes >/dev/null
  wait_port $REDIS_PORT
  for _ in $(seq 200); do [ "$(redis-cli -p $REDIS_PORT ping 2>/dev/null)" = PONG ] && return 0; sleep 0.05; done
  echo "redis never became ready" >&2; return 1
}
stop_redis() { redis-cli -p $REDIS_PORT shutdown nosave >/dev/null; }

have_redis=1
command -v redis-server >/dev/null || { have_redis=0; echo "note: redis-server not installed; redis cells skipped" >&2; }

measure() { # name protocol port pipeline set-ratio [loadgen args...]
  local name=$1 proto=$2 port=$3 p=$4 ratio=$5; shift 5
  $LOADGEN --addr 127.0.0.1:$port --protocol "$proto" --conns 50 --pipeline "$p" \
    --duration "$SECS" --set-ratio "$ratio" "$@" \
    | tee -a "$work/raw" | grep "^protocol=" | sed "s/^/target=$name /" >> "$work/results" || { echo "loadgen failed for $name:" >&2; tail -5 "$work/raw" >&2; }
}

hookv_cell() { # name backend pipeline set-ratio [reload]
  start_hookv "$1" "$2"
  local args=()
  case $1 in chain*) args=(--token $TOKEN) ;; esac
  local reloader=""
  if [ "${5:-}" = reload ]; then
    # Each reload changes the rewrite hook's message, so a new rewrite hook is
    # built and swapped in every time (auth, audit and wal are kept).
    ( n=0; while sleep 0.1; do
        n=$((n + 1))
        sed -i "s/log in first[^\"]*/log in first $n/" "$work/hookv.toml"
        kill -HUP "$(cat "$work/pid")" 2>/dev/null || exit 0
      done ) & reloader=$!
  fi
  local scraper=""
  case $1 in *metrics-on)
    # A Prometheus scraping every second (they usually scrape every 15 s or more).
    ( while sleep 1; do
        (exec 3<>/dev/tcp/127.0.0.1/$METRICS_PORT && printf 'GET /metrics HTTP/1.1\r\n\r\n' >&3 && cat <&3 >/dev/null) 2>/dev/null || exit 0
      done ) & scraper=$!
  esac
  measure "$1" hookv $HOOKV_PORT "$3" "$4" "${args[@]}"
  [ -n "$reloader" ] && kill $reloader 2>/dev/null
  [ -n "$scraper" ] && kill $scraper 2>/dev/null
  stop_hookv
}

redis_cell() { # name pipeline set-ratio [redis args...]
  [ $have_redis = 1 ] || return 0
  local name=$1 p=$2 ratio=$3; shift 3
  start_redis "$@"; measure "$name" resp $REDIS_PORT "$p" "$ratio"; stop_redis
}

baseline=""
for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    case $SUITE in
      core) baseline=redis
        hookv_cell hookv-memory memory $p 0.5
        hookv_cell hookv-sled sled $p 0.5
        redis_cell redis $p 0.5 --appendonly no ;;
      hooks) baseline=no-hooks
        hookv_cell no-hooks memory $p 0.5
        hookv_cell chain memory $p 0.5 ;;
      wal) baseline=wal-everysec
        hookv_cell wal-everysec memory $p 1.0
        hookv_cell wal-always memory $p 1.0
        redis_cell redis-appendfsync-always $p 1.0 --appendonly yes --appendfsync always ;;
      sled) baseline=sled-sync-no
        hookv_cell sled-sync-no sled $p 1.0
        hookv_cell sled-sync-everysec sled $p 1.0
        hookv_cell sled-sync-always sled $p 1.0 ;;
      plugins) baseline=no-hooks
        hookv_cell no-hooks memory $p 0.5
        hookv_cell plugins memory $p 0.5 ;;
      scoped) baseline=no-hooks
        hookv_cell no-hooks memory $p 0.5
        hookv_cell scoped memory $p 0.5 ;;
      reload) baseline=chain
        hookv_cell chain memory $p 0.5
        hookv_cell chain-reload-every-100ms memory $p 0.5 reload ;;
      metrics) baseline=no-hooks-metrics-off
        hookv_cell no-hooks-metrics-off memory $p 0.5
        hookv_cell no-hooks-metrics-on memory $p 0.5
        hookv_cell chain-metrics-off memory $p 0.5
        hookv_cell chain-metrics-on memory $p 0.5 ;;
      *) echo "unknown suite $SUITE" >&2; exit 2 ;;
    esac
  done
  echo "round $round/$ROUNDS done" >&2
done

python3 - "$work/results" "$baseline" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split())
    rows[(kv["target"], int(kv["pipeline"]))].append(kv)
base_name = sys.argv[2]
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
print(f"| target | pipeline | ops/s (median) | p50 µs | p99 µs | errors | runs | vs {base_name} |")
print("|---|---|---|---|---|---|---|---|")
for (t, p), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    base = rows.get((base_name, p))
    ratio = f"{med(rs,'ops_per_sec')/med(base,'ops_per_sec'):.2f}" if base else "-"
    errors = sum(int(r["errors"]) for r in rs)
    print(f"| {t} | {p} | {med(rs,'ops_per_sec'):,.0f} | {med(rs,'p50_us'):.0f} | {med(rs,'p99_us'):.0f} | {errors} | {len(rs)} | {ratio} |")
PY
