//! `sinew describe`: a service, method or message of a server, in .proto syntax.

use crate::error::{CliError, ExitCode};
use crate::schema;
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor, MethodDescriptor, ServiceDescriptor};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Server address: tcp://HOST:PORT, unix:///PATH or shm:///PATH (sinew), or
    /// grpc://HOST:PORT, grpc+unix:///PATH (any gRPC server); over TLS,
    /// tls://HOST:PORT and grpcs://HOST:PORT.
    address: String,
    /// What to describe: package.Service, package.Service/Method or package.Message.
    /// Every service when omitted.
    symbol: Option<String>,
    /// Take the schema from this .proto file instead of asking the server.
    #[arg(long, value_name = "FILE")]
    proto: Option<PathBuf>,
    #[command(flatten)]
    security: super::security::ClientSecurity,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let channel = schema::connect(&args.address, &args.security).await?;
    let symbols = match &args.symbol {
        Some(symbol) => vec![symbol.replace('/', ".")],
        None => schema::list_services(&channel).await?,
    };
    let pool = schema::load(&channel, args.proto.as_deref(), &symbols).await?;
    let mut out = String::new();
    for symbol in &symbols {
        describe(&pool, symbol, &mut out)?;
    }
    print!("{out}");
    Ok(())
}

fn describe(pool: &DescriptorPool, symbol: &str, out: &mut String) -> Result<(), CliError> {
    if let Some(service) = pool.get_service_by_name(symbol) {
        service_text(&service, out);
        return Ok(());
    }
    if let Some(message) = pool.get_message_by_name(symbol) {
        message_text(&message, out);
        return Ok(());
    }
    if let Some((service, method)) = symbol.rsplit_once('.') {
        if let Some(method) = pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
        {
            let _ = writeln!(out, "{}", method_text(&method));
            message_text(&method.input(), out);
            message_text(&method.output(), out);
            return Ok(());
        }
    }
    Err(CliError::new(
        ExitCode::UnknownMethod,
        format!("unknown symbol {symbol}"),
    ))
}

fn method_text(method: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    format!(
        "rpc {}({}{}) returns ({}{});",
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    )
}

fn service_text(service: &ServiceDescriptor, out: &mut String) {
    let _ = writeln!(out, "service {} {{", service.full_name());
    for method in service.methods() {
        let _ = writeln!(out, "  {}", method_text(&method));
    }
    let _ = writeln!(out, "}}");
}

fn message_text(message: &MessageDescriptor, out: &mut String) {
    let _ = writeln!(out, "message {} {{", message.full_name());
    for field in message.fields() {
        let kind = match field.kind() {
            Kind::Message(m) => m.full_name().to_owned(),
            Kind::Enum(e) => e.full_name().to_owned(),
            other => format!("{other:?}").to_lowercase(),
        };
        let label = if field.is_list() {
            "repeated "
        } else if field.supports_presence() && !matches!(field.kind(), Kind::Message(_)) {
            "optional "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {label}{kind} {} = {};",
            field.name(),
            field.number()
        );
    }
    let _ = writeln!(out, "}}");
}
