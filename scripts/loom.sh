#!/usr/bin/env bash
# Model-checks the shared-memory ring's wake-up protocol with loom (every
# interleaving of a producer and a consumer on a ring smaller than the message),
# and the same with a slab between ring bytes (slab bytes at their place).
# Part of the test command (scripts/test.sh). Uses its own target directory:
# --cfg sinew_loom changes every crate's build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg sinew_loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}" \
  cargo test --locked --release -p sinew-shm --lib --target-dir target/loom -- loom_tests
