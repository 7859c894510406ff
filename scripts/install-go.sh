#!/usr/bin/env bash
# Installs Debian's golang-go and golang-google-grpc-dev when missing: the Go
# toolchain and grpc-go sources that the Go interop test and sinew-bench's Go
# peers build from, offline, in GOPATH mode. Used by test.sh and interop-go.sh.
set -euo pipefail
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/google.golang.org/grpc/health ]; then
  echo "installing golang-go and golang-google-grpc-dev from Debian..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq golang-go golang-google-grpc-dev >/dev/null
fi
