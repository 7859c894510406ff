#!/usr/bin/env bash
# Interop with Python's grpcio: a real `sinew serve` process (sinew + gRPC on a
# TCP port and a Unix socket, both on this machine only) is called by
# tests/interop/python/interop_client.py, using grpcio from PyPI installed in a
# virtualenv this script creates; then tests/interop/python/tls_client.py calls
# sinew servers over TLS and mutual TLS (scripts/tls-fixtures.sh); then
# tests/interop/python/otel_trace.py follows one trace from a grpcio client
# instrumented with OpenTelemetry through `sinew serve --forward` to an
# instrumented grpcio server (sinew's spans reach the script over OTLP).
# Servers are stopped afterwards, whatever happens. Part of scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/target/interop/python-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import grpc, grpc_tools, grpc_health, grpc_reflection, opentelemetry.instrumentation.grpc, opentelemetry.proto" 2>/dev/null; then
  echo "creating $venv with grpcio and OpenTelemetry from PyPI..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 \
    opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2 \
    opentelemetry-instrumentation-grpc==0.66b2
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
kill -INT "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=""

# The other direction: a grpcio server, called by the sinew CLI (sinew's client
# over grpc://). Schemas come from grpcio's own reflection service.
python_pid=""
stop_python() {
  if [ -n "$python_pid" ] && kill -0 "$python_pid" 2>/dev/null; then
    kill -TERM "$python_pid" 2>/dev/null || true
    wait "$python_pid" 2>/dev/null || true
  fi
}
trap 'stop_python; cleanup' EXIT
"$venv/bin/python" tests/interop/python/interop_server.py --port-file "$work/python.port" > "$work/python.log" 2>&1 &
python_pid=$!
for _ in $(seq 1 200); do
  [ -s "$work/python.port" ] && break
  sleep 0.1
done
if [ ! -s "$work/python.port" ]; then
  echo "the Python gRPC server did not start:"; cat "$work/python.log"; exit 1
fi
python_target="grpc://127.0.0.1:$(cat "$work/python.port")"
sinew=target/debug/sinew
passed=0; failed=0
expect() {  # expect NAME EXPECTED-SUBSTRING COMMAND...
  local name="$1" expected="$2"; shift 2
  local output
  if output="$("$@" 2>&1)" && [[ "$output" == *"$expected"* ]]; then
    passed=$((passed + 1)); echo "ok    $name"
  else
    failed=$((failed + 1)); echo "FAIL  $name"; echo "$output" | sed 's/^/      /'
  fi
}
expect_failure() {  # expect_failure NAME EXIT-CODE EXPECTED-SUBSTRING COMMAND...
  local name="$1" code="$2" expected="$3"; shift 3
  local output status=0
  output="$("$@" 2>&1)" || status=$?
  if [ "$status" = "$code" ] && [[ "$output" == *"$expected"* ]]; then
    passed=$((passed + 1)); echo "ok    $name"
  else
    failed=$((failed + 1)); echo "FAIL  $name (exit $status)"; echo "$output" | sed 's/^/      /'
  fi
}
echo_method=grpc.examples.echo.Echo
expect "sinew list on a grpcio server (its reflection)" "grpc.examples.echo.Echo" $sinew list "$python_target"
expect "sinew describe on a grpcio server" "rpc ServerStreamingEcho" $sinew describe "$python_target" $echo_method
expect "sinew call unary" '"message": "hi"' $sinew call "$python_target" $echo_method/UnaryEcho '{"message":"hi"}'
expect "sinew call server streaming" '{"message":"tick 2"}' $sinew call "$python_target" $echo_method/ServerStreamingEcho '{"message":"tick"}'
expect "sinew call client streaming (stdin)" '"message": "a+b"' bash -c "printf '{\"message\":\"a\"}\n{\"message\":\"b\"}\n' | $sinew call $python_target $echo_method/ClientStreamingEcho"
expect "sinew call bidirectional (stdin)" '{"message":"Y"}' bash -c "printf '{\"message\":\"x\"}\n{\"message\":\"y\"}\n' | $sinew call $python_target $echo_method/BidirectionalStreamingEcho"
expect "sinew call health Check" '"status": "SERVING"' $sinew call "$python_target" grpc.health.v1.Health/Check '{"service":"grpc.examples.echo.Echo"}'
expect_failure "error status from grpcio reaches sinew" 8 "PERMISSION_DENIED: python says no" $sinew call "$python_target" $echo_method/UnaryEcho '{"message":"fail"}'
expect "sinew bench against grpcio" "(100 ok, 0 failed)" $sinew bench "$python_target" $echo_method/UnaryEcho '{"message":"b"}' -n 100 -c 4
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

echo "-- grpcio over TLS and mutual TLS"
pids=()
stop_tls_servers() {
  for pid in "${pids[@]}"; do
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap 'stop_tls_servers; stop_python; cleanup' EXIT
. scripts/tls-fixtures.sh
timeout 120 "$venv/bin/python" tests/interop/python/tls_client.py --pki "$pki" --other-pki "$other_pki" --tls "127.0.0.1:$tls_port" --mtls "127.0.0.1:$mtls_port"

echo "-- one trace: grpcio + OpenTelemetry -> sinew serve --forward -> grpcio + OpenTelemetry"
timeout 120 "$venv/bin/python" tests/interop/python/otel_trace.py --sinew target/debug/sinew
