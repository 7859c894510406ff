#!/usr/bin/env bash
# Installs, when missing, the Debian packages of the real peers that the tests
# and sinew-bench run: golang-go and golang-google-grpc-dev (the Go toolchain
# and grpc-go sources the Go interop test and the benchmark's Go peers build
# from, offline, in GOPATH mode) and nghttp2-client (h2load, the benchmark's
# independent gRPC load generator), and etcd-server (etcd 3.4, the registry
# and shared-state tests start their own members on free ports), and
# prometheus (the observability test starts one that scrapes a sinew
# server's admin endpoint), and chromium (the dashboard test drives it
# headless), and nats-server (NATS 2.9 with JetStream: the messaging tests
# and benchmark start their own on free ports), and nginx and wrk (the
# gateway's tests and benchmark run nginx as the proxy to compare against and
# wrk as the HTTP load generator), and curl (the gateway's CLI test calls
# through it). Used by
# test.sh and interop-go.sh.
set -euo pipefail
missing=()
command -v go >/dev/null || missing+=(golang-go)
[ -d /usr/share/gocode/src/google.golang.org/grpc/health ] || missing+=(golang-google-grpc-dev)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v prometheus >/dev/null || missing+=(prometheus)
[ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
command -v nats-server >/dev/null || missing+=(nats-server)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
