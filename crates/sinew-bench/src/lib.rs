//! What the side-by-side binaries share (`sinew-bench`,
//! `sinew-bench-messaging`, `sinew-bench-gateway`, `sinew-bench-transcode`):
//! CPU time of a process ([`cpu`]), the child processes the peers run in
//! and the loopback ports they listen on ([`process`]), and wrk, the HTTP/1.1
//! client of the gateway benchmarks ([`wrk`]).
//!
//! Not here: the cells, the load generators and the reports, which are
//! each binary's own.

pub mod cpu;
pub mod process;
pub mod wrk;
