//! Support for sinew's end-to-end tests and examples: the `sinew.testing.Testing`
//! service, built to exercise the edges of the RPC layer (slow, failing,
//! panicking, flooding and slow-reading handlers) with counters the tests read.
//! Nothing here is part of the product; see `crates/` for that.

#![forbid(unsafe_code)]

pub mod testing;
