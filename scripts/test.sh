#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
#   scripts/test.sh
#
# On a fresh machine it installs what the tests need (grpcio from PyPI in a
# virtualenv under target/, golang-go, golang-google-grpc-dev,
# nghttp2-client, etcd-server, prometheus and chromium from Debian,
# cargo-fuzz from crates.io), runs format and lint
# checks, every unit, integration and doc test, every example, the README's
# from-scratch crate, the interop tests against real
# gRPC peers, the loom model of the shared-memory ring (and Miri, where the
# nightly toolchain has it), and bounded fuzzing runs. The tests include the
# hardening suite and a one-minute soak (crates/sinew-cli/tests/hardening.rs,
# soak.rs): attacks on a real server, with their bounds. Everything the
# tests start (servers on 127.0.0.1 with free ports, Unix sockets in a temporary
# directory) is started and stopped by the tests themselves.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# Each section says how much disk is left: CI's disk is small, and a build
# that runs out of it fails far from the cause.
section() {
  printf '\n== %s\n' "$*"
  df -h "$root" | awk 'NR == 2 { print "   (disk: " $4 " free)" }'
}

# One clean build, not an edit loop: incremental caches would only add
# gigabytes to the disk CI runs on, and so would full debug info (line
# tables are enough for a test's backtrace). The loom, Miri and fuzz stages
# build in directories of their own, removed once they pass (scripts/loom.sh,
# miri.sh, fuzz.sh), so that the last stage still has room.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
export SINEW_PRUNE_BUILDS="${SINEW_PRUNE_BUILDS:-1}"

section "toolchain"
cargo --version
rustc --version

section "set-up: Debian packages the tests use (the benchmark's and interop's Go peers, h2load, etcd, prometheus, chromium, nats-server)"
scripts/install-peers.sh
go version
# (`sed -n 1p` reads all of the output: `head -1` would close the pipe
# early, and a writer killed by SIGPIPE fails the script under pipefail.)
h2load --version | sed -n 1p
etcd --version | sed -n 1p
prometheus --version 2>&1 | sed -n 1p
/usr/lib/chromium/chromium --version
nats-server --version

section "format"
cargo fmt --all -- --check

section "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

section "docs (every intra-doc link resolves)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

section "tests"
cargo test --workspace --locked

section "every example runs"
scripts/examples.sh

section "README's from-scratch crate builds, runs and prints what the README says"
scripts/getting-started.sh

section "interop: Python grpcio <-> sinew"
scripts/interop-python.sh

section "interop: Go grpc-go <-> sinew"
scripts/interop-go.sh

section "model-check the shared-memory ring (loom)"
scripts/loom.sh

section "the shared-memory ring's and slabs' unsafe code under Miri"
scripts/miri.sh

section "fuzz: the frame decoder, a whole server connection, the gRPC framing (bounded)"
scripts/fuzz.sh "${SINEW_FUZZ_SECONDS:-20}"

section "done"
