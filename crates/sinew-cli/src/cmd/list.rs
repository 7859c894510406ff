//! `sinew list`: the services a server offers.

use crate::error::CliError;
use crate::schema;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Server address: tcp://HOST:PORT, unix:///PATH or shm:///PATH (sinew), or
    /// grpc://HOST:PORT, grpc+unix:///PATH (any gRPC server); over TLS,
    /// tls://HOST:PORT and grpcs://HOST:PORT.
    address: String,
    #[command(flatten)]
    security: super::security::ClientSecurity,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let channel = schema::connect(&args.address, &args.security).await?;
    for service in schema::list_services(&channel).await? {
        println!("{service}");
    }
    Ok(())
}
