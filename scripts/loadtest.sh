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
#   tls      hookv and redis-server, each over TLS and in plaintext, 50/50; then new
#            connections a second: connect, one request, close (pipeline 1)
#            (baseline: each target's plaintext twin; certificates made with openssl)
#
# hookv runs with worker_threads = 1 (redis-server serves from one thread, and
# the load generator needs the machine's other core). Servers are pinned to
# core 0 and the load generator to core 1 (taskset, when there are two cores
# or more). redis-server is Debian's package (`apt-get install redis-server`,
# built with OpenSSL, so it speaks TLS with --tls-port); without it redis
# cells are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${1:?usage: scripts/loadtest.sh core|hooks|wal|sled|plugins|reload|tls [ROUNDS] [SECONDS]}
ROUNDS=${2:-5}
SECS=${3:-5}
HOOKV_PORT=19527
REDIS_PORT=16379
TOKEN=loadtest-token
work=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  "${REDIS_CLI[@]}" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin hookv-server --bin hookv-cli
cargo build --release --quiet -p loadgen
SERVER=target/release/hookv-server
LOADGEN=target/release/loadgen
if [ "$SUITE" = plugins ]; then
  cargo build --release --quiet -p key-guard -p rate-limit
fi
HASH=$(target/release/hookv-cli hash-token $TOKEN)

# The server on one core, the load generator on another.
SERVER_ON=() LOADGEN_ON=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  SERVER_ON=(taskset -c 0) LOADGEN_ON=(taskset -c 1)
fi

# tls: a CA and a server certificate for 127.0.0.1 (README, "TLS": the same
# openssl commands).
CERTS=$work/certs
if [ "$SUITE" = tls ]; then
  mkdir -p "$CERTS"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -days 1 \
    -subj "/CN=loadtest CA" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" 2>/dev/null
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -days 1 \
    -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
    -keyout "$CERTS/server.key" -out "$CERTS/server.pem" 2>/dev/null
fi

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
    case $1 in *tls*) printf '[server.tls]\ncert = "%s"\nkey = "%s"\n' "$CERTS/server.pem" "$CERTS/server.key" ;; esac
    hooks_for "$1"; } > "$work/hookv.toml"
  "${SERVER_ON[@]}" $SERVER --config "$work/hookv.toml" & echo $! > "$work/pid"
  wait_port $HOOKV_PORT
}
stop_hookv() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true; }

REDIS_CLI=(redis-cli -p $REDIS_PORT)
start_redis() { # extra args...
  # A fresh data dir: an append-only file left by the last cell would be
  # loaded first, and redis answers LOADING meanwhile.
  rm -rf "$work/redis"; mkdir -p "$work/redis"
  "${SERVER_ON[@]}" redis-server --save '' --dir "$work/redis" "$@" --daemonize yes >/dev/null
  wait_port $REDIS_PORT
  for _ in $(seq 200); do [ "$("${REDIS_CLI[@]}" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.05; done
  echo "redis never became ready" >&2; return 1
}
stop_redis() { "${REDIS_CLI[@]}" shutdown nosave >/dev/null; }

have_redis=1
command -v redis-server >/dev/null || { have_redis=0; echo "note: redis-server not installed; redis cells skipped" >&2; }

measure() { # name protocol port pipeline set-ratio [loadgen args...]
  local name=$1 proto=$2 port=$3 p=$4 ratio=$5; shift 5
  "${LOADGEN_ON[@]}" $LOADGEN --addr 127.0.0.1:$port --protocol "$proto" --conns 50 --pipeline "$p" \
    --duration "$SECS" --set-ratio "$ratio" "$@" \
    | tee -a "$work/raw" | grep "^protocol=" | sed "s/^/target=$name /" >> "$work/results" || { echo "loadgen failed for $name:" >&2; tail -5 "$work/raw" >&2; }
}

# Load generator flags a target's name asks for.
client_args() {
  case $1 in *tls*) printf '%s\n' --tls --ca "$CERTS/ca.pem" ;; esac
  case $1 in *reconnect*) echo --reconnect ;; esac
  case $1 in chain*) printf '%s\n' --token $TOKEN ;; esac
  true
}

hookv_cell() { # name backend pipeline set-ratio [reload]
  start_hookv "$1" "$2"
  local args=()
  mapfile -t args < <(client_args "$1")
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
  measure "$1" hookv $HOOKV_PORT "$3" "$4" "${args[@]}"
  [ -n "$reloader" ] && kill $reloader 2>/dev/null
  stop_hookv
}

redis_cell() { # name pipeline set-ratio [redis args...]
  [ $have_redis = 1 ] || return 0
  local name=$1 p=$2 ratio=$3; shift 3
  local args=()
  mapfile -t args < <(client_args "$name")
  case $name in
    *tls*) REDIS_CLI=(redis-cli -p $REDIS_PORT --tls --cacert "$CERTS/ca.pem")
      set -- --port 0 --tls-port $REDIS_PORT --tls-cert-file "$CERTS/server.pem" \
        --tls-key-file "$CERTS/server.key" --tls-ca-cert-file "$CERTS/ca.pem" --tls-auth-clients no "$@" ;;
    *) REDIS_CLI=(redis-cli -p $REDIS_PORT); set -- --port $REDIS_PORT "$@" ;;
  esac
  start_redis "$@"; measure "$name" resp $REDIS_PORT "$p" "$ratio" "${args[@]}"; stop_redis
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
      reload) baseline=chain
        hookv_cell chain memory $p 0.5
        hookv_cell chain-reload-every-100ms memory $p 0.5 reload ;;
      tls) baseline=twin
        hookv_cell hookv memory $p 0.5
        hookv_cell hookv-tls memory $p 0.5
        redis_cell redis $p 0.5 --appendonly no
        redis_cell redis-tls $p 0.5 --appendonly no
        if [ $p = 1 ]; then
          hookv_cell hookv-reconnect memory 1 0.5
          hookv_cell hookv-tls-reconnect memory 1 0.5
          redis_cell redis-reconnect 1 0.5 --appendonly no
          redis_cell redis-tls-reconnect 1 0.5 --appendonly no
        fi ;;
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
# "twin": each target against its plaintext twin (hookv-tls against hookv).
def base_of(t): return t.replace("-tls", "") if base_name == "twin" else base_name
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
label = "plaintext twin" if base_name == "twin" else base_name
print(f"| target | pipeline | ops/s (median) | p50 µs | p99 µs | errors | runs | vs {label} |")
print("|---|---|---|---|---|---|---|---|")
for (t, p), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    base = rows.get((base_of(t), p))
    ratio = f"{med(rs,'ops_per_sec')/med(base,'ops_per_sec'):.2f}" if base else "-"
    errors = sum(int(r["errors"]) for r in rs)
    print(f"| {t} | {p} | {med(rs,'ops_per_sec'):,.0f} | {med(rs,'p50_us'):.0f} | {med(rs,'p99_us'):.0f} | {errors} | {len(rs)} | {ratio} |")
PY
