//! Atomics, from `loom` when the ring protocol is model-checked (`--cfg sinew_loom`),
//! from `std` otherwise.

#[cfg(sinew_loom)]
pub(crate) use loom::sync::atomic;
#[cfg(not(sinew_loom))]
pub(crate) use std::sync::atomic;
