#!/usr/bin/env bash
# Interop with grpc-go, from Debian's golang-go and golang-google-grpc-dev,
# built offline in GOPATH mode (GO111MODULE=off GOPATH=...:/usr/share/gocode):
#   1. tests/interop/go/.../client calls a real `sinew serve` (every call kind,
#      metadata, deadline, status, health);
#   2. tests/interop/go/.../server (grpc-go's own health service and reflection)
#      is called by the sinew CLI over grpc://;
#   3. over TLS: tests/interop/go/.../tlsclient calls sinew servers over TLS and
#      mutual TLS (with a policy), and the sinew CLI calls the Go server over
#      grpcs:// with and without a client certificate; certificates from
#      `sinew certs`.
# Installs the Debian packages when missing (scripts/install-peers.sh). Servers listen on 127.0.0.1 only and
# are stopped afterwards, whatever happens. Part of scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-peers.sh
export GO111MODULE=off GOFLAGS= GOPATH="$root/tests/interop/go:/usr/share/gocode" GOCACHE="$root/target/interop/go-cache"
mkdir -p target/interop
go build -o target/interop/go-client sinewinterop/client
go build -o target/interop/go-server sinewinterop/server
go build -o target/interop/go-tlsclient sinewinterop/tlsclient
cargo build --quiet --locked -p sinew-cli
sinew=target/debug/sinew

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- grpc-go client -> sinew server"
# Fault rules for the retry checks: first attempts asked to fail fail with a
# 50 ms pushback; others fail with a pushback that forbids retrying.
$sinew serve --listen tcp://127.0.0.1:0 \
  --fault 'metadata=x-fault=retry-me,first-attempt,abort=UNAVAILABLE,pushback=50ms' \
  --fault 'metadata=x-fault=never,abort=UNAVAILABLE,pushback=never' > "$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening on tcp://" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
port="$(grep -m1 -o 'listening on tcp://127.0.0.1:[0-9]*' "$work/serve.log" | sed 's/.*://')"
[ -n "$port" ] || { echo "sinew serve did not start:"; cat "$work/serve.log"; exit 1; }
GRPC_GO_RETRY=on timeout 120 target/interop/go-client -address "127.0.0.1:$port"

echo "-- sinew client -> grpc-go server"
target/interop/go-server -port-file "$work/go.port" > "$work/go.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/go.port" ] && break; sleep 0.1; done
[ -s "$work/go.port" ] || { echo "the Go server did not start:"; cat "$work/go.log"; exit 1; }
target="grpc://127.0.0.1:$(cat "$work/go.port")"
passed=0; failed=0
expect() {  # expect NAME EXIT-CODE EXPECTED-SUBSTRING COMMAND...
  local name="$1" code="$2" expected="$3"; shift 3
  local output status=0
  output="$("$@" 2>&1)" || status=$?
  if [ "$status" = "$code" ] && [[ "$output" == *"$expected"* ]]; then
    passed=$((passed + 1)); echo "ok    $name"
  else
    failed=$((failed + 1)); echo "FAIL  $name (exit $status)"; echo "$output" | sed 's/^/      /'
  fi
}
expect "sinew list (grpc-go's reflection)" 0 "grpc.health.v1.Health" $sinew list "$target"
expect "sinew describe" 0 "rpc Check(grpc.health.v1.HealthCheckRequest)" $sinew describe "$target" grpc.health.v1.Health
expect "sinew call health Check: SERVING" 0 '"status": "SERVING"' $sinew call "$target" grpc.health.v1.Health/Check '{"service":"sinew.interop.Go"}'
expect "sinew call health Check: NOT_SERVING" 0 '"status": "NOT_SERVING"' $sinew call "$target" grpc.health.v1.Health/Check '{"service":"sinew.interop.Down"}'
expect "unknown service: NOT_FOUND from grpc-go" 8 "NOT_FOUND" $sinew call "$target" grpc.health.v1.Health/Check '{"service":"nope"}'
expect "health Watch streams, ended by the deadline" 7 '{"status":"SERVING"}' $sinew call "$target" grpc.health.v1.Health/Watch '{"service":"sinew.interop.Go"}' --deadline 500ms
expect "sinew bench against grpc-go" 0 "(200 ok, 0 failed)" $sinew bench "$target" grpc.health.v1.Health/Check '{"service":"sinew.interop.Go"}' -n 200 -c 4
# grpc-go fails first attempts asked to fail, with a 50 ms pushback: sinew's
# retry policy (backoff of minutes) comes back after the pushback.
cat > "$work/retry.json" <<'JSON'
{"methodConfig": [{"name": [{"service": "grpc.health.v1.Health"}],
  "retryPolicy": {"maxAttempts": 3, "initialBackoff": "300s", "maxBackoff": "300s",
                  "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]}
JSON
expect "a first attempt refused by grpc-go fails without a retry policy" 3 "refused on purpose" $sinew call "$target" grpc.health.v1.Health/Check '{"service":"sinew.interop.Go"}' -H x-fail-first=yes
expect "sinew's retry policy retries grpc-go after its pushback" 0 '"status": "SERVING"' $sinew call "$target" grpc.health.v1.Health/Check '{"service":"sinew.interop.Go"}' -H x-fail-first=yes --service-config "$work/retry.json" --deadline 5s
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

echo "-- grpc-go over TLS and mutual TLS"
. scripts/tls-fixtures.sh
timeout 120 target/interop/go-tlsclient -pki "$pki" -other-pki "$other_pki" -tls "127.0.0.1:$tls_port" -mtls "127.0.0.1:$mtls_port"
target/interop/go-server -port-file "$work/go-tls.port" -tls-cert "$pki/server.crt" -tls-key "$pki/server.key" > "$work/go-tls.log" 2>&1 &
pids+=($!)
target/interop/go-server -port-file "$work/go-mtls.port" -tls-cert "$pki/server.crt" -tls-key "$pki/server.key" -client-ca "$pki/ca.crt" > "$work/go-mtls.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/go-tls.port" ] && [ -s "$work/go-mtls.port" ] && break; sleep 0.1; done
go_tls="grpcs://127.0.0.1:$(cat "$work/go-tls.port")"
go_mtls="grpcs://127.0.0.1:$(cat "$work/go-mtls.port")"
passed=0; failed=0
health='{"service":"sinew.interop.Go"}'
expect "sinew grpcs:// -> grpc-go over TLS" 0 '"status": "SERVING"' $sinew call "$go_tls" grpc.health.v1.Health/Check "$health" --ca "$pki/ca.crt"
expect "sinew list over TLS (grpc-go's reflection)" 0 "grpc.health.v1.Health" $sinew list "$go_tls" --ca "$pki/ca.crt"
expect "grpc-go over TLS from an untrusted CA is refused" 3 "invalid peer certificate" $sinew call "$go_tls" grpc.health.v1.Health/Check "$health" --ca "$other_pki/ca.crt"
expect "sinew grpcs:// -> grpc-go with mutual TLS" 0 '"status": "SERVING"' $sinew call "$go_mtls" grpc.health.v1.Health/Check "$health" --ca "$pki/ca.crt" --cert "$pki/teller.crt" --key "$pki/teller.key"
expect "grpc-go refuses sinew without a client certificate" 3 "" $sinew call "$go_mtls" grpc.health.v1.Health/Check "$health" --ca "$pki/ca.crt"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
