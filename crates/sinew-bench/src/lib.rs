//! What the side-by-side binaries share (`sinew-bench`,
//! `sinew-bench-messaging`, `sinew-bench-gateway`):
//! CPU time of a process ([`cpu`]), and the child processes the peers run
//! in and the loopback ports they listen on ([`process`]).
//!
//! Not here: the cells, the load generators and the reports, which are
//! each binary's own.

pub mod cpu;
pub mod process;
