//! The prost-build `ServiceGenerator` that writes sinew servers and clients.

use prost_build::{Method, Service};
use std::fmt::Write;
use std::path::PathBuf;

pub(crate) struct ServiceGenerator {
    pub(crate) runtime: String,
    pub(crate) descriptor_path: PathBuf,
    pub(crate) server: bool,
    pub(crate) client: bool,
}

/// Converts `UnaryEcho` to `unary_echo`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let after_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let before_lower = i > 0
                && chars.get(i + 1).is_some_and(|n| n.is_lowercase())
                && chars[i - 1].is_uppercase();
            if after_lower || before_lower {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

/// A message type as seen from inside the generated `*_server` / `*_client` module.
fn type_path(rust_type: &str) -> String {
    if rust_type.starts_with("::") || rust_type == "()" || rust_type.starts_with("crate::") {
        rust_type.to_owned()
    } else {
        format!("super::{rust_type}")
    }
}

fn doc_comments(comments: &prost_build::Comments, indent: u8, buf: &mut String) {
    comments.append_with_indent(indent, buf);
}

fn stream_type_name(method: &Method) -> String {
    format!("{}Stream", method.proto_name)
}

fn method_kind(method: &Method) -> &'static str {
    match (method.client_streaming, method.server_streaming) {
        (false, false) => "Unary",
        (false, true) => "ServerStreaming",
        (true, false) => "ClientStreaming",
        (true, true) => "Bidirectional",
    }
}

fn full_service_name(service: &Service) -> String {
    if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    }
}

impl prost_build::ServiceGenerator for ServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        if self.server {
            self.generate_server(&service, buf);
        }
        if self.client {
            self.generate_client(&service, buf);
        }
    }
}

impl ServiceGenerator {
    fn generate_server(&self, service: &Service, buf: &mut String) {
        let rt = &self.runtime;
        let module = format!("{}_server", snake_case(&service.name));
        let trait_name = &service.name;
        let server_name = format!("{}Server", service.name);
        let full_name = full_service_name(service);
        let _ = writeln!(buf, "/// Server side of `{full_name}`: implement [`{module}::{trait_name}`] and serve [`{module}::{server_name}`].");
        let _ = writeln!(buf, "pub mod {module} {{");
        let _ = writeln!(buf, "#![allow(unused_imports, dead_code, clippy::all)]");
        let _ = writeln!(buf, "use {rt}::codegen::*;");
        doc_comments(&service.comments, 0, buf);
        let _ = writeln!(buf, "pub trait {trait_name}: Send + Sync + 'static {{");
        for method in &service.methods {
            let input = type_path(&method.input_type);
            let output = type_path(&method.output_type);
            let request = if method.client_streaming {
                format!("Request<Streaming<{input}>>")
            } else {
                format!("Request<{input}>")
            };
            let response = if method.server_streaming {
                let stream = stream_type_name(method);
                let _ = writeln!(
                    buf,
                    "/// The response stream of [`{trait_name}::{}`].",
                    method.name
                );
                let _ = writeln!(
                    buf,
                    "type {stream}: Stream<Item = Result<{output}, Status>> + Send + 'static;"
                );
                format!("Response<Self::{stream}>")
            } else {
                format!("Response<{output}>")
            };
            doc_comments(&method.comments, 0, buf);
            let _ = writeln!(
                buf,
                "fn {}(&self, request: {request}) -> impl Future<Output = Result<{response}, Status>> + Send;",
                method.name
            );
        }
        let _ = writeln!(buf, "}}");

        // Descriptor.
        let _ = writeln!(
            buf,
            "/// Methods of `{full_name}`, in the order [`Service::call`] indexes them."
        );
        let _ = writeln!(buf, "pub static METHODS: &[MethodDescriptor] = &[");
        for method in &service.methods {
            let _ = writeln!(
                buf,
                "MethodDescriptor {{ name: {name:?}, path: {path:?}, kind: MethodKind::{kind}, input_type: {input:?}, output_type: {output:?} }},",
                name = method.proto_name,
                path = format!("/{full_name}/{}", method.proto_name),
                kind = method_kind(method),
                input = method.input_proto_type.trim_start_matches('.'),
                output = method.output_proto_type.trim_start_matches('.'),
            );
        }
        let _ = writeln!(buf, "];");
        let _ = writeln!(buf, "/// Descriptor of `{full_name}`.");
        let _ = writeln!(
            buf,
            "pub static SERVICE_DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {{ name: {full_name:?}, methods: METHODS, file_descriptor_set: include_bytes!({path:?}) }};",
            path = self.descriptor_path.display().to_string(),
        );

        // The Service wrapper.
        let _ = writeln!(
            buf,
            "/// Serves an implementation of [`{trait_name}`] on a sinew server."
        );
        let _ = writeln!(buf, "#[derive(Debug)]");
        let _ = writeln!(buf, "pub struct {server_name}<T> {{ inner: Arc<T> }}");
        let _ = writeln!(buf, "impl<T> Clone for {server_name}<T> {{ fn clone(&self) -> Self {{ Self {{ inner: self.inner.clone() }} }} }}");
        let _ = writeln!(buf, "impl<T: {trait_name}> {server_name}<T> {{");
        let _ = writeln!(buf, "/// Wraps an implementation.");
        let _ = writeln!(
            buf,
            "pub fn new(inner: T) -> Self {{ Self {{ inner: Arc::new(inner) }} }}"
        );
        let _ = writeln!(buf, "/// Wraps an implementation shared with other code.");
        let _ = writeln!(
            buf,
            "pub fn from_arc(inner: Arc<T>) -> Self {{ Self {{ inner }} }}"
        );
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "impl<T: {trait_name}> Service for {server_name}<T> {{");
        let _ = writeln!(
            buf,
            "fn descriptor(&self) -> &'static ServiceDescriptor {{ &SERVICE_DESCRIPTOR }}"
        );
        let _ = writeln!(
            buf,
            "fn call(&self, method: usize, call: ServerCall) -> BoxFuture<'static, Status> {{"
        );
        let _ = writeln!(buf, "let inner = self.inner.clone();");
        let _ = writeln!(buf, "match method {{");
        for (index, method) in service.methods.iter().enumerate() {
            let driver = match (method.client_streaming, method.server_streaming) {
                (false, false) => "unary",
                (false, true) => "server_streaming",
                (true, false) => "client_streaming",
                (true, true) => "bidirectional",
            };
            let _ = writeln!(
                buf,
                "{index} => Box::pin(server_call::{driver}(call, move |request| async move {{ inner.{}(request).await }})),",
                method.name
            );
        }
        let _ = writeln!(buf, "_ => Box::pin(server_call::unimplemented(call)),");
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "}}");
    }

    fn generate_client(&self, service: &Service, buf: &mut String) {
        let rt = &self.runtime;
        let module = format!("{}_client", snake_case(&service.name));
        let client_name = format!("{}Client", service.name);
        let full_name = full_service_name(service);
        let _ = writeln!(
            buf,
            "/// Client side of `{full_name}`: [`{module}::{client_name}`]."
        );
        let _ = writeln!(buf, "pub mod {module} {{");
        let _ = writeln!(buf, "#![allow(unused_imports, dead_code, clippy::all)]");
        let _ = writeln!(buf, "use {rt}::codegen::*;");
        doc_comments(&service.comments, 0, buf);
        let _ = writeln!(buf, "///");
        let _ = writeln!(
            buf,
            "/// Calls go through `T`: a [`Channel`] by default, or any stack of tower layers around one (anything that is a [`CallService`])."
        );
        let _ = writeln!(buf, "#[derive(Debug, Clone)]");
        let _ = writeln!(
            buf,
            "pub struct {client_name}<T = Channel> {{ inner: Client<T> }}"
        );
        let _ = writeln!(buf, "impl {client_name}<Channel> {{");
        let _ = writeln!(
            buf,
            "/// Connects to `address` (`tcp://host:port`, `unix:///path`, `shm:///path`, and with the `sinew` facade `grpc://host:port`); an unreachable server is `UNAVAILABLE`."
        );
        let _ = writeln!(
            buf,
            "pub async fn connect(address: &str) -> Result<Self, Status> {{ Ok(Self::new(connect(address).await?)) }}"
        );
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "impl<T> {client_name}<T> {{");
        let _ = writeln!(
            buf,
            "/// A client calling through `service` (a [`Channel`], cheap to clone, or a stack of layers around one)."
        );
        let _ = writeln!(
            buf,
            "pub fn new(service: T) -> Self {{ Self {{ inner: Client::new(service) }} }}"
        );
        let _ = writeln!(buf, "/// The service this client calls through.");
        let _ = writeln!(
            buf,
            "pub fn service(&self) -> &T {{ self.inner.service() }}"
        );
        let _ = writeln!(buf, "/// Takes the service back.");
        let _ = writeln!(
            buf,
            "pub fn into_service(self) -> T {{ self.inner.into_service() }}"
        );
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "impl<T: CallService> {client_name}<T> {{");
        for method in &service.methods {
            let input = type_path(&method.input_type);
            let output = type_path(&method.output_type);
            let path = format!("/{full_name}/{}", method.proto_name);
            doc_comments(&method.comments, 0, buf);
            let (argument, into, response, call) =
                match (method.client_streaming, method.server_streaming) {
                    (false, false) => (
                        format!("impl IntoRequest<{input}>"),
                        "into_request",
                        format!("Response<{output}>"),
                        "unary",
                    ),
                    (false, true) => (
                        format!("impl IntoRequest<{input}>"),
                        "into_request",
                        format!("Response<Streaming<{output}>>"),
                        "server_streaming",
                    ),
                    (true, false) => (
                        format!("impl IntoStreamingRequest<Message = {input}>"),
                        "into_streaming_request",
                        format!("Response<{output}>"),
                        "client_streaming",
                    ),
                    (true, true) => (
                        format!("impl IntoStreamingRequest<Message = {input}>"),
                        "into_streaming_request",
                        format!("Response<Streaming<{output}>>"),
                        "bidirectional",
                    ),
                };
            // The method's declared idempotency travels with its path, for
            // resilience policies (retry and hedge by default).
            let path = match method.options.idempotency_level {
                Some(1) => format!(
                    "MethodPath::from({path:?}).with_idempotency(Idempotency::NoSideEffects)"
                ),
                Some(2) => {
                    format!("MethodPath::from({path:?}).with_idempotency(Idempotency::Idempotent)")
                }
                _ => format!("{path:?}"),
            };
            let _ = writeln!(
                buf,
                "pub async fn {}(&self, request: {argument}) -> Result<{response}, Status> {{ self.inner.{call}({path}, request.{into}()).await }}",
                method.name
            );
        }
        let _ = writeln!(buf, "}}");
        let _ = writeln!(buf, "}}");
    }
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn method_names_become_snake_case() {
        assert_eq!(snake_case("UnaryEcho"), "unary_echo");
        assert_eq!(
            snake_case("BidirectionalStreamingEcho"),
            "bidirectional_streaming_echo"
        );
        assert_eq!(snake_case("Get"), "get");
        assert_eq!(snake_case("GetHTTPThing"), "get_http_thing");
        assert_eq!(snake_case("Echo2Me"), "echo2_me");
    }
}
