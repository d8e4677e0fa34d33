#!/usr/bin/env bash
# Server CPU per request, by thread: where a hook's cost goes (the worker
# thread, an audit or wal writer thread) at a given pipeline depth.
#
#   scripts/cpu-per-request.sh CONFIG PIPELINE [SECONDS] [TOKEN]
#
# Starts target/release/hookv-server on CONFIG (its [server] listen must be a
# fixed 127.0.0.1 port), drives it with bench/loadgen (50 connections,
# the 50/50 hset/hget mix; TOKEN authenticates first, for a config with auth),
# and prints ops/s and, for each server thread, the CPU time it used (user +
# system, from /proc/PID/task/*/stat) divided by the requests answered.
# Compare two configs (or, with HOOKV_SERVER=path, two builds) run back to
# back; the machine is noisy, so run each more than once. CPU time per
# request leaves out the time the VM's other tenants took from the server,
# so it scatters less than ops/s. As in scripts/loadtest.sh, with taskset and
# two CPUs or more the server is pinned to CPU 0 and the load generator to
# CPU 1 (PIN=0 turns that off).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: scripts/cpu-per-request.sh CONFIG PIPELINE [SECONDS] [TOKEN]}
PIPELINE=${2:?usage: scripts/cpu-per-request.sh CONFIG PIPELINE [SECONDS] [TOKEN]}
SECS=${3:-3}
TOKEN=${4:-}
ADDR=$(sed -n 's/^listen *= *"\(127\.0\.0\.1:[0-9][0-9]*\)".*/\1/p' "$CONFIG" | head -1)
[ -n "$ADDR" ] || { echo "$CONFIG: no 'listen = \"127.0.0.1:PORT\"' line" >&2; exit 2; }

SERVER=${HOOKV_SERVER:-target/release/hookv-server}
[ -n "${HOOKV_SERVER:-}" ] || cargo build --release --quiet --bin hookv-server
cargo build --release --quiet -p loadgen
ON_SERVER_CPU=() ON_CLIENT_CPU=()
if [ "${PIN:-1}" != 0 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  ON_SERVER_CPU=(taskset -c 0) ON_CLIENT_CPU=(taskset -c 1)
fi
"${ON_SERVER_CPU[@]}" "$SERVER" --config "$CONFIG" & server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && break; sleep 0.05; done

# Clock ticks used by the threads of each name: "name ticks" lines (a
# multi-threaded runtime's workers share a name and are summed).
ticks() {
  for t in /proc/$server/task/*; do
    echo "$(tr ' ' '_' < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{ sum[$1] += $2 } END { for (n in sum) print n, sum[n] }' | sort
}
before=$(ticks)
out=$("${ON_CLIENT_CPU[@]}" target/release/loadgen --addr "$ADDR" --conns 50 --pipeline "$PIPELINE" \
  --duration "$SECS" --warmup 0 ${TOKEN:+--token "$TOKEN"})
after=$(ticks)
ops=$(grep -o ' ops=[0-9]*' <<<"$out" | cut -d= -f2)
echo "$(basename "$CONFIG") pipeline=$PIPELINE $(grep -o 'ops_per_sec=[0-9]*' <<<"$out")"
hz=$(getconf CLK_TCK)
join <(echo "$before") <(echo "$after") | awk -v ops="$ops" -v hz="$hz" \
  '{ d = $3 - $2; if (d > 0) printf "  %-18s %.3f us/request\n", $1, d / hz * 1e6 / ops }'
