//! sinew's gRPC path: the echo services of the sinew rows on a sinew server
//! with the gRPC bridge, called by tonic's client exactly as the `tonic` row
//! calls tonic's server: the two rows differ only in the server.

use super::RunningServer;
use crate::load::{drive, Cell, Plan, Runtimes, Stats};

pub(crate) fn run(runtimes: &Runtimes, plan: &Plan, cell: Cell) -> anyhow::Result<Stats> {
    let server = start(runtimes)?;
    let caller = super::tonic_peer::caller(runtimes, server.address, cell)?;
    let stats = drive(runtimes, plan, cell, caller);
    server.stop()?;
    Ok(stats)
}

/// The sinew server with the gRPC bridge, on the server runtime (for this
/// row, and for h2load).
pub(crate) fn start(runtimes: &Runtimes) -> anyhow::Result<RunningServer<'_>> {
    let builder = super::sinew_peer::echo_server()
        .add_protocol(sinew_grpc::GrpcProtocol::default().max_message_size(8 << 20));
    super::sinew_peer::serve_tcp(runtimes, builder)
}
