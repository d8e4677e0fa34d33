#!/usr/bin/env bash
# The test command (README "Two commands", and what .ci/run runs after fmt
# and clippy). The Redis Cluster tests start a real cluster from Debian's
# redis-server, so this installs it when it is missing, then runs every
# test. Extra arguments go to cargo test (e.g. scripts/test.sh --test redis_cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "== redis-server is missing: installing it (apt-get install redis-server)"
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "scripts/test.sh: redis-server (Debian package redis-server, 7.x) is not installed," >&2
        echo "and this user is neither root nor has sudo to install it." >&2
        echo "Install it (apt-get install redis-server) and run this again." >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: no apt-get here: install redis-server 7.x (with redis-cli) yourself and run this again." >&2
        exit 1
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    redis-server --version
fi

echo "== cargo test --workspace $*"
exec cargo test --workspace "$@"
