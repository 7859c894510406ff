#!/usr/bin/env bash
# Builds and runs every program in examples/, each bounded in time, and fails
# if one fails. The echo server is run in the background for the echo client,
# on a Unix socket in a temporary directory, and stopped with SIGINT (its
# graceful shutdown is part of what is run).
#
#   scripts/examples.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
work="$(mktemp -d)"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --examples --quiet
bin="$root/target/debug/examples"

run() {
    local name="$1"; shift
    echo "-- $name $*"
    if ! timeout 120 "$bin/$name" "$@" > "$work/$name.out" 2>&1; then
        cat "$work/$name.out"
        echo "example $name failed" >&2
        exit 1
    fi
    tail -n 3 "$work/$name.out" | sed 's/^/   /'
}

# The echo server and its client.
socket="$work/echo.sock"
"$bin/echo_server" "unix://$socket" > "$work/echo_server.out" 2>&1 &
server=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { cat "$work/echo_server.out"; echo "echo_server did not start" >&2; exit 1; }
run echo_client "unix://$socket"
kill -INT "$server"
if ! timeout 30 tail --pid="$server" -f /dev/null; then
    echo "echo_server did not shut down after SIGINT" >&2
    exit 1
fi
wait "$server" || { cat "$work/echo_server.out"; echo "echo_server failed" >&2; exit 1; }
server=""

# The self-contained ones.
for example in kv grpc_bridge shared_memory middleware messaging; do
    run "$example"
done
echo "every example ran"
