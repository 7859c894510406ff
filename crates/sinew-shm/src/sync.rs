//! Atomics, from `loom` when the ring protocol is model-checked (`--cfg loom`),
//! from `std` otherwise.

#[cfg(loom)]
pub(crate) use loom::sync::atomic;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic;
