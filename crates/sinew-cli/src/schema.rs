//! Schemas at run time: connecting, fetching descriptors from the server (gRPC
//! server reflection) or a `.proto` file, finding methods, and JSON <-> messages.
//!
//! The reflection protocol is `sinew::rpc::server::reflection::client`'s and
//! the descriptor pools are `sinew-schema`'s; this module puts them together
//! and says what went wrong in the command line's words.

use crate::cmd::security::ClientSecurity;
use crate::error::{CliError, ExitCode};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use sinew::rpc::server::reflection::client as reflection;
use sinew::transport::Address;
use sinew::Channel;
use std::path::Path;

/// Parses an address (a malformed one is a usage error).
pub(crate) fn parse_address(text: &str) -> Result<Address, CliError> {
    text.parse::<Address>()
        .map_err(|error| CliError::usage(error.to_string()))
}

/// Connects, so that an unreachable server is reported before anything else.
/// Every scheme of `sinew::connect`: `tcp://`, `unix://` and `shm://` speak
/// sinew's protocol, `grpc://`, `http://` and `grpc+unix://` reach any gRPC
/// server, and names (`dns:///`, `gossip://`) balance over many. A malformed
/// address or an unknown scheme is a usage error.
pub(crate) async fn connect(address: &str, security: &ClientSecurity) -> Result<Channel, CliError> {
    connect_for(address, None, security).await
}

/// [`connect`], for calls to `service`: a name that does not give the
/// service itself (`gossip://SEED`, `dns:///host:port`) is resolved for it.
pub(crate) async fn connect_for(
    address: &str,
    service: Option<&str>,
    security: &ClientSecurity,
) -> Result<Channel, CliError> {
    let mut options = security.connect_options()?;
    if let Some(service) = service {
        options = options.service(service);
    }
    let connected = options.connect(address).await;
    let channel = connected.map_err(|status| match status.code() {
        sinew::Code::InvalidArgument => CliError::usage(status.message().to_owned()),
        _ => CliError::new(
            ExitCode::Unreachable,
            format!("cannot reach {address}: {}", status.message()),
        ),
    })?;
    security.with_token(channel)
}

/// What a reflection failure means on the command line: a server that
/// offers no reflection (`UNIMPLEMENTED` from both versions) needs `--proto`.
fn reflection_error(status: sinew::Status) -> CliError {
    if status.code() == sinew::Code::Unimplemented {
        CliError::new(
            ExitCode::ErrorStatus,
            "the server does not offer gRPC server reflection; pass --proto FILE",
        )
    } else {
        CliError::from(status)
    }
}

/// The services a server offers, sorted.
pub(crate) async fn list_services(channel: &Channel) -> Result<Vec<String>, CliError> {
    reflection::list_services(channel)
        .await
        .map_err(reflection_error)
}

/// A descriptor pool holding `symbols` (and everything they use), from `--proto`
/// when given, otherwise from the server's reflection service. Symbols the server
/// does not know are simply absent from the pool. Either way the descriptors
/// keep their options, `(google.api.http)` rules included, and a `--proto`
/// file may import `google/api/annotations.proto` without a copy of it.
pub(crate) async fn load(
    channel: &Channel,
    proto: Option<&Path>,
    symbols: &[String],
) -> Result<DescriptorPool, CliError> {
    if let Some(proto) = proto {
        return sinew_schema::compile_pool([proto], [sinew_schema::include_of(proto)]).map_err(
            |error| CliError::usage(format!("cannot compile {}: {error}", proto.display())),
        );
    }
    let files = reflection::file_descriptors(channel, symbols)
        .await
        .map_err(reflection_error)?;
    sinew_schema::pool_from_files(&files).map_err(|error| {
        CliError::failure(format!(
            "the server's descriptors do not fit together: {error}"
        ))
    })
}

/// A method named on the command line, found in the server's schema (or
/// `--proto`), with the channel to call it on.
pub(crate) struct ResolvedMethod {
    pub(crate) channel: Channel,
    pub(crate) method: MethodDescriptor,
    /// `/package.Service/Method`, the path to call.
    pub(crate) path: String,
}

/// Connects to `address` and finds the method `name` (`package.Service/Method`)
/// in its schema: what `call` and `bench` start with.
pub(crate) async fn resolve_method(
    address: &str,
    name: &str,
    proto: Option<&Path>,
    security: &ClientSecurity,
) -> Result<ResolvedMethod, CliError> {
    let (service, method) = split_method(name)?;
    let channel = connect_for(address, Some(&service), security).await?;
    let pool = load(&channel, proto, std::slice::from_ref(&service)).await?;
    let method = find_method(&pool, &service, &method)?;
    let path = format!("/{}/{}", service, method.name());
    Ok(ResolvedMethod {
        channel,
        method,
        path,
    })
}

/// Splits `package.Service/Method` (or `package.Service.Method`) in two.
pub(crate) fn split_method(name: &str) -> Result<(String, String), CliError> {
    let name = name.trim_start_matches('/');
    let split = name.rfind('/').or_else(|| name.rfind('.'));
    match split {
        Some(at) if at > 0 && at + 1 < name.len() => {
            Ok((name[..at].to_owned(), name[at + 1..].to_owned()))
        }
        _ => Err(CliError::usage(format!(
            "{name:?} is not a method name like grpc.examples.echo.Echo/UnaryEcho"
        ))),
    }
}

/// Finds a method in the pool.
pub(crate) fn find_method(
    pool: &DescriptorPool,
    service: &str,
    method: &str,
) -> Result<MethodDescriptor, CliError> {
    let service_descriptor = pool.get_service_by_name(service).ok_or_else(|| {
        CliError::new(
            ExitCode::UnknownMethod,
            format!("unknown service {service}"),
        )
    })?;
    let found = service_descriptor.methods().find(|m| m.name() == method);
    found.ok_or_else(|| {
        CliError::new(
            ExitCode::UnknownMethod,
            format!("unknown method {method} of service {service}"),
        )
    })
}

/// Parses one JSON message: a syntax error says where; a value that does not fit
/// the message says which field.
pub(crate) fn parse_message(
    descriptor: &MessageDescriptor,
    json: &str,
) -> Result<DynamicMessage, CliError> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|error| {
        CliError::new(
            ExitCode::BadJson,
            format!("the JSON input does not parse: {error}"),
        )
    })?;
    DynamicMessage::deserialize(descriptor.clone(), value).map_err(|error| {
        CliError::new(
            ExitCode::JsonDoesNotFit,
            format!(
                "the JSON input does not fit {}: {error}",
                descriptor.full_name()
            ),
        )
    })
}

/// A message as JSON (protobuf's canonical JSON mapping).
pub(crate) fn to_json(message: &DynamicMessage, pretty: bool) -> String {
    let result = if pretty {
        serde_json::to_string_pretty(message)
    } else {
        serde_json::to_string(message)
    };
    result.unwrap_or_else(|error| format!("{{\"error\": \"cannot print the message: {error}\"}}"))
}

/// A decoder that builds dynamic messages of `descriptor`.
pub(crate) fn decoder(descriptor: MessageDescriptor) -> sinew::rpc::Decoder<DynamicMessage> {
    sinew::rpc::Decoder::new(move |bytes| DynamicMessage::decode(descriptor.clone(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_split_on_slash_or_dot() {
        assert_eq!(
            split_method("grpc.examples.echo.Echo/UnaryEcho").unwrap(),
            ("grpc.examples.echo.Echo".to_owned(), "UnaryEcho".to_owned())
        );
        assert_eq!(
            split_method("grpc.examples.echo.Echo.UnaryEcho").unwrap(),
            ("grpc.examples.echo.Echo".to_owned(), "UnaryEcho".to_owned())
        );
        assert!(split_method("nomethod").is_err());
        assert!(split_method("svc/").is_err());
    }
}
