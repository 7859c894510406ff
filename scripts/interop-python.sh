#!/usr/bin/env bash
# Interop with Python's grpcio: a real `sinew serve` process (sinew + gRPC on a
# TCP port and a Unix socket, both on this machine only) is called by
# tests/interop/python/interop_client.py, using grpcio from PyPI installed in a
# virtualenv this script creates. The server is stopped afterwards, whatever
# happens. Part of scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/target/interop/python-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import grpc, grpc_tools, grpc_health, grpc_reflection" 2>/dev/null; then
  echo "creating $venv with grpcio from PyPI..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
fi
cargo build --quiet --locked -p sinew-cli
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -INT "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
target/debug/sinew serve --listen tcp://127.0.0.1:0 --listen "unix://$work/sinew.sock" > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q "listening on tcp://" "$work/serve.log" 2>/dev/null && break
  sleep 0.1
done
port="$(grep -m1 -o 'listening on tcp://127.0.0.1:[0-9]*' "$work/serve.log" | sed 's/.*://')"
if [ -z "$port" ]; then
  echo "sinew serve did not start:"; cat "$work/serve.log"; exit 1
fi
timeout 300 "$venv/bin/python" tests/interop/python/interop_client.py --tcp "127.0.0.1:$port" --unix "$work/sinew.sock"
