#!/usr/bin/env bash
# Fuzzes sinew-wire's preface and frame decoders for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]     (default 60)
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
cd "$root/crates/sinew-wire"
mkdir -p fuzz/corpus/frame_decoder
# Seed the corpus with a real preface followed by a unary call.
printf '\x02\x89SINEW\r\n\x00\x01\x00\x00\x00\x00\x00\x2b\x01\x00\x00\x00\x00\x01\x00\x22/grpc.examples.echo.Echo/UnaryEcho\x00\x00\x00\x00\x04\x00\x01\x00\x00\x00\x01\x0a\x02hi' \
  > fuzz/corpus/frame_decoder/seed-unary-call
export RUSTC_BOOTSTRAP=1
cargo fuzz run frame_decoder -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
echo "fuzzing: ${seconds}s without a crash"
