#!/usr/bin/env bash
# Model-checks the shared-memory ring's wake-up protocol with loom (every
# interleaving of a producer and a consumer on a ring smaller than the message),
# and the same with a slab between ring bytes (slab bytes at their place).
# Part of the test command (scripts/test.sh). Uses its own target directory:
# --cfg sinew_loom changes every crate's build. With SINEW_PRUNE_BUILDS=1
# (the test command sets it) that directory is removed once the model passes.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg sinew_loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}" \
  cargo test --locked --release -p sinew-shm --lib --target-dir target/loom -- loom_tests
if [ "${SINEW_PRUNE_BUILDS:-0}" = 1 ]; then rm -rf target/loom; fi
