#!/usr/bin/env bash
# Runs the shared-memory ring's and slabs' unsafe code (their unit tests on heap memory)
# under Miri. Miri needs the nightly toolchain's `miri` component; a machine
# without it says so and skips (the region and stream code make system calls
# Miri cannot run anyway; those run in the ordinary tests).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "SKIPPED: Miri is not installed (rustup component add miri --toolchain nightly)"
  exit 0
fi
cargo +nightly miri test -p sinew-shm --lib --target-dir target/miri -- ring::tests slab::tests
# With SINEW_PRUNE_BUILDS=1 (the test command sets it) the build goes once it passed.
if [ "${SINEW_PRUNE_BUILDS:-0}" = 1 ]; then rm -rf target/miri; fi
