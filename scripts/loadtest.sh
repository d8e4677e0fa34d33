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
#   hooks    no hooks vs auth+audit+wal(everysec)+rewrite, 50/50, and redis-server
#            with requirepass (AUTH on each connection) and appendfsync everysec
#                                                                     (baseline: no hooks)
#   wal      hset only: wal everysec vs wal always vs redis appendfsync always (baseline: everysec)
#   sled     hset only: sled with [storage] sync = no vs everysec vs always  (baseline: sync no)
#   plugins  no hooks vs key-guard + rate-limit plugins, 50/50        (baseline: no hooks)
#   reload   the full chain, with and without a SIGHUP reload every 100 ms (baseline: no reload)
#   tls      hookv and redis-server, each over TLS and in plaintext, 50/50; then new
#            connections a second: connect, one request, close (pipeline 1)
#            (baseline: each target's plaintext twin; certificates made with openssl)
#   cluster  hookv on a local Redis Cluster (3 masters, 3 replicas) vs hookv memory vs the
#            same load sent straight to the cluster by redis-benchmark --cluster, 50/50,
#            keys spread over 12 tables (4 per master)                (baseline: hookv memory)
#   scoped   no hooks vs auth+audit+rewrite+key-guard+rate-limit all scoped (`tables`) to a
#            table the load never names (the wal cannot be scoped), 50/50 (baseline: no hooks)
#   metrics  no hooks and the full chain, with [metrics] listen (scraped every second)
#            and without; with BASE_SERVER=path/to/an/older/hookv-server, the "off"
#            cells run that binary instead, to measure the counting itself (which
#            this build does with or without [metrics])     (baseline: no hooks, off)
#
# Every suite also measures `floor` (bench/loadgen's floor binary: it cuts the
# frames read and answers each with a canned 200 of an hget's size, nothing
# decoded or stored, one thread, one write per read), and prints each
# target's ratio to it: how close to the cost of the syscalls and framing
# alone a target gets. FLOOR=0 leaves it out.
#
# hookv runs with worker_threads = 1 (redis-server serves from one thread, and
# the load generator needs the machine's other core). With taskset (util-linux)
# and two CPUs or more, the servers (hookv, redis-server, the cluster's nodes)
# are pinned to CPU 0 and the load generator to CPU 1, so the two never share
# a core; PIN=0 turns that off. redis-server is Debian's package (`apt-get
# install redis-server`, built with OpenSSL, so it speaks TLS with
# --tls-port); without it redis and cluster cells are skipped.
#
# HOOKV_SERVER=path measures that hookv-server build instead of this tree's
# release build; BASE_SERVER=path adds, to the core, hooks, wal and plugins
# suites, a twin of each hookv cell run by that build (say, main's), named
# NAME-base, so two builds are compared within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${1:?usage: scripts/loadtest.sh core|hooks|wal|sled|plugins|reload|scoped|tls|cluster|metrics [ROUNDS] [SECONDS]}
ROUNDS=${2:-5}
SECS=${3:-5}
HOOKV_PORT=19527
METRICS_PORT=19100
REDIS_PORT=16379
CLUSTER_PORTS="17000 17001 17002 17003 17004 17005"
TOKEN=loadtest-token
work=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  "${REDIS_CLI[@]}" shutdown nosave >/dev/null 2>&1 || true
  for p in $CLUSTER_PORTS; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin hookv-server --bin hookv-cli
cargo build --release --quiet -p loadgen --bin loadgen --bin floor
SERVER=${HOOKV_SERVER:-target/release/hookv-server}
BASE_SERVER=${BASE_SERVER:-}
LOADGEN=target/release/loadgen
FLOOR_SERVER=target/release/floor
# Pinning: servers on CPU 0, the load generator on CPU 1.
ON_SERVER_CPU=() ON_CLIENT_CPU=()
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  ON_SERVER_CPU=(taskset -c 0) ON_CLIENT_CPU=(taskset -c 1)
fi
if [ "$SUITE" = plugins ] || [ "$SUITE" = scoped ]; then
  cargo build --release --quiet -p key-guard -p rate-limit
fi
HASH=$(target/release/hookv-cli hash-token $TOKEN)

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
    plugins*) cat <<TOML
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
  local bin=$SERVER
  case $1 in *-base) bin=$BASE_SERVER ;; *metrics-off) bin=${BASE_SERVER:-$SERVER} ;; esac
  { cat <<TOML
[server]
listen = "127.0.0.1:$HOOKV_PORT"
worker_threads = 1
[storage]
backend = "$2"
path = "$work/sled"
sync = "$(case $1 in *sync-no) echo no ;; *sync-everysec) echo everysec ;; *) echo always ;; esac)"
TOML
    if [ "$2" = redis-cluster ]; then
      echo "nodes = [\"127.0.0.1:${CLUSTER_PORTS%% *}\"]"
    fi
    cat <<TOML
[log]
filter = "warn"
TOML
    case $1 in *tls*) printf '[server.tls]\ncert = "%s"\nkey = "%s"\n' "$CERTS/server.pem" "$CERTS/server.key" ;; esac
    case $1 in *metrics-on) printf '[metrics]\nlisten = "127.0.0.1:%s"\n' $METRICS_PORT ;; esac
    hooks_for "$1"; } > "$work/hookv.toml"
  "${ON_SERVER_CPU[@]}" "$bin" --config "$work/hookv.toml" & echo $! > "$work/pid"
  wait_port $HOOKV_PORT
}
stop_hookv() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true; }

REDIS_CLI=(redis-cli -p $REDIS_PORT)
start_redis() { # extra args...
  # A fresh data dir: an append-only file left by the last cell would be
  # loaded first, and redis answers LOADING meanwhile.
  rm -rf "$work/redis"; mkdir -p "$work/redis"
  "${ON_SERVER_CPU[@]}" redis-server --save '' --dir "$work/redis" "$@" --daemonize yes >/dev/null
  wait_port $REDIS_PORT
  for _ in $(seq 200); do [ "$("${REDIS_CLI[@]}" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.05; done
  echo "redis never became ready" >&2; return 1
}
stop_redis() { "${REDIS_CLI[@]}" shutdown nosave >/dev/null; }

# The cluster suite's cluster: 3 masters and their 3 replicas, started once
# (on the servers' CPU) and emptied before each cell.
start_cluster() {
  local p
  for p in $CLUSTER_PORTS; do
    if port_open "$p" || port_open $((p + 10000)); then echo "port $p or $((p + 10000)) is already in use" >&2; exit 1; fi
    mkdir -p "$work/cluster/$p"
    "${ON_SERVER_CPU[@]}" redis-server --port "$p" --cluster-enabled yes --cluster-node-timeout 2000 \
      --cluster-config-file "$work/cluster/$p/nodes.conf" --dir "$work/cluster/$p" \
      --save '' --appendonly no --daemonize yes --logfile "$work/cluster/$p/log" >/dev/null
  done
  for p in $CLUSTER_PORTS; do wait_port "$p"; done
  redis-cli --cluster create $(for p in $CLUSTER_PORTS; do echo "127.0.0.1:$p"; done) \
    --cluster-replicas 1 --cluster-yes >/dev/null
  for _ in $(seq 200); do
    local ok=0
    for p in $CLUSTER_PORTS; do redis-cli -p "$p" cluster info | grep -q cluster_state:ok && ok=$((ok + 1)); done
    [ $ok = 6 ] && return 0
    sleep 0.1
  done
  echo "the cluster never became ok" >&2; return 1
}
flush_cluster() {
  local p
  for p in $CLUSTER_PORTS; do redis-cli -p "$p" flushall >/dev/null 2>&1 || true; done
}
# 12 tables, 4 served by each master (by the slot of hookv's key for them).
cluster_tables() {
  local masters=() tables=() counts=(0 0 0) i=0
  read -r -a masters <<< "$CLUSTER_PORTS"
  while [ ${#tables[@]} -lt 12 ]; do
    local name="bench$i" slot m
    slot=$(redis-cli -p "${masters[0]}" cluster keyslot "hookv:$name")
    m=$(( slot * 3 / 16384 ))  # redis-cli --cluster create splits the slots evenly, in port order
    if [ "${counts[$m]}" -lt 4 ]; then tables+=("$name"); counts[$m]=$((counts[$m] + 1)); fi
    i=$((i + 1))
  done
  (IFS=,; echo "${tables[*]}")
}

have_redis=1
command -v redis-server >/dev/null || { have_redis=0; echo "note: redis-server not installed; redis cells skipped" >&2; }

measure() { # name protocol port pipeline set-ratio [loadgen args...]
  local name=$1 proto=$2 port=$3 p=$4 ratio=$5; shift 5
  "${ON_CLIENT_CPU[@]}" $LOADGEN --addr 127.0.0.1:$port --protocol "$proto" --conns 50 --pipeline "$p" \
    --duration "$SECS" --set-ratio "$ratio" "$@" \
    | tee -a "$work/raw" | grep "^protocol=" | sed "s/^/target=$name /" >> "$work/results" || { echo "loadgen failed for $name:" >&2; tail -5 "$work/raw" >&2; }
}

# Load generator flags a target's name asks for.
client_args() {
  case $1 in *tls*) printf '%s\n' --tls --ca "$CERTS/ca.pem" ;; esac
  case $1 in *reconnect*) echo --reconnect ;; esac
  case $1 in chain*|*auth*) printf '%s\n' --token $TOKEN ;; esac
  true
}

hookv_cell() { # name backend pipeline set-ratio [reload]
  start_hookv "$1" "$2"
  local args=()
  mapfile -t args < <(client_args "$1")
  if [ "$SUITE" = cluster ]; then args+=(--tables "$TABLES"); fi
  if [ "$2" = redis-cluster ]; then flush_cluster; fi
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

# The same load straight to the cluster, by redis-benchmark --cluster (a
# cluster-aware client in C): hset and hget measured apart, over 100k random
# fields of one hash per master, 16-byte values; their 50/50 mix is reported
# as the harmonic mean of the two rates (each op taking its own time), and
# the latencies as their mean. `{tag}` in a key is where redis-benchmark
# --cluster puts a hash tag of a slot that the client's node serves.
redis_cluster_cell() { # name pipeline
  [ $have_redis = 1 ] || return 0
  local name=$1 p=$2 out rates=() p50s=() p99s=() per_op
  flush_cluster
  # Requests per op: about SECS seconds of it at a rate this machine gives.
  per_op=$(( SECS * (p == 1 ? 100000 : 400000) ))
  for op in hset hget; do
    if [ $op = hset ]; then
      out=$("${ON_CLIENT_CPU[@]}" redis-benchmark --cluster -p "${CLUSTER_PORTS%% *}" -c 50 -P "$p" -n "$per_op" \
        -r 100000 -d 16 -t hset --csv -q 2>/dev/null | tail -1)
    else
      out=$("${ON_CLIENT_CPU[@]}" redis-benchmark --cluster -p "${CLUSTER_PORTS%% *}" -c 50 -P "$p" -n "$per_op" \
        -r 100000 --csv -q hget 'myhash{tag}' 'element:__rand_int__' 2>/dev/null | tail -1)
    fi
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<< "$(echo "$out" | tr -d '"')"
    rates+=("$rps") p50s+=("$p50") p99s+=("$p99")
  done
  python3 - "$name" "$p" "${rates[@]}" "${p50s[@]}" "${p99s[@]}" >> "$work/results" <<'PY'
import sys
name, p, (a, b, p50a, p50b, p99a, p99b) = sys.argv[1], sys.argv[2], map(float, sys.argv[3:9])
mix = 2 / (1 / a + 1 / b)
print(f"target={name} protocol=resp pipeline={p} ops_per_sec={mix:.0f} errors=0 "
      f"p50_us={(p50a + p50b) / 2 * 1000:.0f} p99_us={(p99a + p99b) / 2 * 1000:.0f} hset_per_sec={a:.0f} hget_per_sec={b:.0f}")
PY
}

floor_cell() { # pipeline set-ratio
  [ "${FLOOR:-1}" = 1 ] || return 0
  if port_open $HOOKV_PORT; then echo "port $HOOKV_PORT is already in use" >&2; exit 1; fi
  "${ON_SERVER_CPU[@]}" $FLOOR_SERVER --listen 127.0.0.1:$HOOKV_PORT & echo $! > "$work/pid"
  wait_port $HOOKV_PORT
  measure floor hookv $HOOKV_PORT "$1" "$2"
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
  case $name in *auth*)
    REDIS_CLI+=(-a $TOKEN --no-auth-warning); set -- "$@" --requirepass $TOKEN ;;
  esac
  start_redis "$@"; measure "$name" resp $REDIS_PORT "$p" "$ratio" "${args[@]}"; stop_redis
}

baseline=""
if [ "$SUITE" = cluster ]; then
  [ $have_redis = 1 ] || { echo "the cluster suite needs redis-server" >&2; exit 1; }
  start_cluster
  TABLES=$(cluster_tables)
fi
for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    case $SUITE in
      wal|sled) floor_cell $p 1.0 ;;
      *) floor_cell $p 0.5 ;;
    esac
    case $SUITE in
      core) baseline=redis
        hookv_cell hookv-memory memory $p 0.5
        hookv_cell hookv-sled sled $p 0.5
        if [ -n "$BASE_SERVER" ]; then
          hookv_cell hookv-memory-base memory $p 0.5
          hookv_cell hookv-sled-base sled $p 0.5
        fi
        redis_cell redis $p 0.5 --appendonly no ;;
      hooks) baseline=no-hooks
        hookv_cell no-hooks memory $p 0.5
        hookv_cell chain memory $p 0.5
        if [ -n "$BASE_SERVER" ]; then
          hookv_cell no-hooks-base memory $p 0.5
          hookv_cell chain-base memory $p 0.5
        fi
        redis_cell redis-auth-appendfsync-everysec $p 0.5 --appendonly yes --appendfsync everysec ;;
      wal) baseline=wal-everysec
        hookv_cell wal-everysec memory $p 1.0
        hookv_cell wal-always memory $p 1.0
        if [ -n "$BASE_SERVER" ]; then
          hookv_cell wal-everysec-base memory $p 1.0
          hookv_cell wal-always-base memory $p 1.0
        fi
        redis_cell redis-appendfsync-always $p 1.0 --appendonly yes --appendfsync always ;;
      sled) baseline=sled-sync-no
        hookv_cell sled-sync-no sled $p 1.0
        hookv_cell sled-sync-everysec sled $p 1.0
        hookv_cell sled-sync-always sled $p 1.0 ;;
      plugins) baseline=no-hooks
        hookv_cell no-hooks memory $p 0.5
        hookv_cell plugins memory $p 0.5
        if [ -n "$BASE_SERVER" ]; then
          hookv_cell no-hooks-base memory $p 0.5
          hookv_cell plugins-base memory $p 0.5
        fi ;;
      scoped) baseline=no-hooks
        hookv_cell no-hooks memory $p 0.5
        hookv_cell scoped memory $p 0.5 ;;
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
      cluster) baseline=hookv-memory
        hookv_cell hookv-memory memory $p 0.5
        hookv_cell hookv-cluster redis-cluster $p 0.5
        redis_cluster_cell redis-benchmark-cluster $p ;;
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
# "twin": each target against its plaintext twin (hookv-tls against hookv).
def base_of(t): return t.replace("-tls", "") if base_name == "twin" else base_name
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
label = "plaintext twin" if base_name == "twin" else base_name
def ratio(rs, base): return f"{med(rs,'ops_per_sec')/med(base,'ops_per_sec'):.2f}" if base else "-"
print(f"| target | pipeline | ops/s (median) | p50 µs | p99 µs | errors | runs | vs {label} | vs floor |")
print("|---|---|---|---|---|---|---|---|---|")
for (t, p), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    base = rows.get((base_of(t), p))
    errors = sum(int(r["errors"]) for r in rs)
    print(f"| {t} | {p} | {med(rs,'ops_per_sec'):,.0f} | {med(rs,'p50_us'):.0f} | {med(rs,'p99_us'):.0f} | {errors} | {len(rs)} "
          f"| {ratio(rs, base)} | {ratio(rs, rows.get(('floor', p)))} |")
PY
