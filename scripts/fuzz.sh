#!/usr/bin/env bash
# Fuzzes, each for a bounded time: sinew-wire's preface and frame decoders,
# a whole server connection (a real in-process server fed arbitrary bytes;
# without leak detection: tasks of a connection may outlive an iteration in
# the shared runtime, which LeakSanitizer reports at exit),
# and the gRPC bridge's message framing.
#
#   scripts/fuzz.sh [SECONDS]     (per target; default 60)
#
# Installs cargo-fuzz if missing. cargo-fuzz needs nightly-only compiler flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain (the only one on our machines)
# accept them. Exits non-zero if the fuzzer finds a crash.
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz..."
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1

# A real preface followed by a unary call: a seed for both byte-stream targets.
seed='\x02\x89SINEW\r\n\x00\x01\x00\x00\x00\x00\x00\x2b\x01\x00\x00\x00\x00\x01\x00\x22/grpc.examples.echo.Echo/UnaryEcho\x00\x00\x00\x00\x04\x00\x01\x00\x00\x00\x01\x0a\x02hi'

cd "$root/crates/sinew-wire"
mkdir -p fuzz/corpus/frame_decoder
printf "$seed" > fuzz/corpus/frame_decoder/seed-unary-call
cargo fuzz run frame_decoder -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
echo "frame_decoder: ${seconds}s without a crash"
# With SINEW_PRUNE_BUILDS=1 (the test command sets it) each fuzz build is
# removed once its targets passed: the next one needs the room.
prune() { if [ "${SINEW_PRUNE_BUILDS:-0}" = 1 ]; then rm -rf "$1"; fi; }
prune "$root/crates/sinew-wire/fuzz/target"

cd "$root"
mkdir -p fuzz/corpus/server_connection fuzz/corpus/grpc_framing
# The same call without the preface byte and the preface (the target sends
# a valid preface itself), and a gRPC body with one message.
printf "$seed" | tail -c +14 > fuzz/corpus/server_connection/seed-unary-call
printf '\x00\x00\x00\x00\x00\x04\x0a\x02hi' > fuzz/corpus/grpc_framing/seed-one-message
# -detect_leaks=0 stops libFuzzer's per-input leak check; ASAN_OPTIONS stops
# LeakSanitizer's check at exit, which reports the tasks still alive then.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
  cargo fuzz run server_connection -- -detect_leaks=0 -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
echo "server_connection: ${seconds}s without a crash"
cargo fuzz run grpc_framing -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
echo "grpc_framing: ${seconds}s without a crash"
prune "$root/fuzz/target"
