//! gRPC server reflection (`grpc.reflection.v1.ServerReflection`), offered by every
//! sinew server unless turned off with
//! [`ServerBuilder::reflection`](super::ServerBuilder::reflection).
//!
//! It answers from the encoded `FileDescriptorSet` each generated service carries in
//! its [`ServiceDescriptor`]: no `.proto` file is needed at
//! run time, by the server or by the client (`sinew list`, `sinew call`, grpcurl).
//! File answers include every transitive dependency, so a client can build a
//! complete descriptor pool from one answer. Each file is served as the bytes
//! it was embedded as, so its options reach the client whole, extensions such
//! as `(google.api.http)` included (decoding into `prost_types` and encoding
//! again would drop them).
//!
//! [`client`] is the other side: listing a server's services and fetching
//! their files, from sinew servers and others.

use super::ServiceDescriptor;
use crate::request::{Request, Response};
use crate::status::Status;
use crate::streaming::Streaming;
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

pub mod client;

/// Code generated from `proto/grpc/reflection/v1/reflection.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1.rs"));
}

/// Code generated from `proto/grpc/reflection/v1alpha/reflection.proto`: the same
/// messages as [`v1`] under the package older tools still ask for.
#[allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]
pub mod v1alpha {
    include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1alpha.rs"));
}

use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;
use v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};

/// A `FileDescriptorSet` with its files left encoded: the set's field 1, as
/// bytes. Decoding the set this way keeps every file exactly as it was
/// embedded, unknown fields (extension options) included.
#[derive(Clone, PartialEq, Message)]
struct EncodedFileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// What reflection knows: files by name, and which file defines each symbol.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// File name -> (encoded FileDescriptorProto, names of the files it imports).
    files: FxHashMap<String, (Bytes, Vec<String>)>,
    /// Fully-qualified symbol (no leading dot) -> file name.
    symbols: FxHashMap<String, String>,
    /// (extended message, field number) -> file name.
    extensions: FxHashMap<(String, i32), String>,
    /// Services the server serves, sorted.
    services: BTreeSet<String>,
}

impl Index {
    /// Indexes the descriptor sets of `services`.
    pub(crate) fn new<'a>(services: impl IntoIterator<Item = &'a ServiceDescriptor>) -> Index {
        let mut index = Index::default();
        for service in services {
            index.services.insert(service.name.to_owned());
            // Generated code embeds a set that protox produced: it decodes. A
            // hand-written Service with an empty set simply adds no files, and
            // one with a malformed set or file adds what decodes.
            let embedded = Bytes::from_static(service.file_descriptor_set);
            let Ok(set) = EncodedFileSet::decode(embedded) else {
                continue;
            };
            for encoded in set.file {
                if let Ok(file) = FileDescriptorProto::decode(encoded.clone()) {
                    index.add_file(&file, encoded);
                }
            }
        }
        index
    }

    /// Indexes `file`, which is `encoded` decoded (to learn its name,
    /// imports and symbols only: the answers carry `encoded`).
    fn add_file(&mut self, file: &FileDescriptorProto, encoded: Bytes) {
        let name = file.name().to_owned();
        if self.files.contains_key(&name) {
            return;
        }
        let package = file.package();
        let prefix = if package.is_empty() {
            String::new()
        } else {
            format!("{package}.")
        };
        for message in &file.message_type {
            self.add_message(&prefix, message, &name);
        }
        for enumeration in &file.enum_type {
            self.symbols
                .insert(format!("{prefix}{}", enumeration.name()), name.clone());
        }
        for service in &file.service {
            let service_name = format!("{prefix}{}", service.name());
            for method in &service.method {
                self.symbols
                    .insert(format!("{service_name}.{}", method.name()), name.clone());
            }
            self.symbols.insert(service_name, name.clone());
        }
        for extension in &file.extension {
            self.add_extension(&prefix, extension, &name);
        }
        self.files.insert(name, (encoded, file.dependency.clone()));
    }

    fn add_message(&mut self, prefix: &str, message: &DescriptorProto, file: &str) {
        let full = format!("{prefix}{}", message.name());
        let nested_prefix = format!("{full}.");
        for nested in &message.nested_type {
            self.add_message(&nested_prefix, nested, file);
        }
        for enumeration in &message.enum_type {
            self.symbols.insert(
                format!("{nested_prefix}{}", enumeration.name()),
                file.to_owned(),
            );
        }
        for extension in &message.extension {
            self.add_extension(&nested_prefix, extension, file);
        }
        self.symbols.insert(full, file.to_owned());
    }

    fn add_extension(&mut self, prefix: &str, extension: &FieldDescriptorProto, file: &str) {
        self.symbols
            .insert(format!("{prefix}{}", extension.name()), file.to_owned());
        let extendee = extension.extendee().trim_start_matches('.').to_owned();
        self.extensions
            .insert((extendee, extension.number()), file.to_owned());
    }

    /// The file and every file it imports, transitively; the file itself first.
    fn file_with_dependencies(&self, name: &str) -> Option<Vec<Bytes>> {
        self.files.get(name)?;
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut pending = vec![name.to_owned()];
        while let Some(next) = pending.pop() {
            if !seen.insert(next.clone()) {
                continue;
            }
            if let Some((encoded, dependencies)) = self.files.get(&next) {
                order.push(encoded.clone());
                pending.extend(dependencies.iter().cloned());
            }
        }
        Some(order)
    }

    fn answer(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let not_found = |what: String| {
            MessageResponse::ErrorResponse(ErrorResponse {
                error_code: sinew_wire::Code::NotFound as i32,
                error_message: what,
            })
        };
        let files = |found: Option<Vec<Bytes>>, what: String| match found {
            Some(files) => MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: files.into_iter().map(|b| b.to_vec()).collect(),
            }),
            None => not_found(what),
        };
        let response = match &request.message_request {
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => files(
                self.file_with_dependencies(name),
                format!("no file named {name:?}"),
            ),
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                let symbol = symbol.trim_start_matches('.');
                files(
                    self.symbols
                        .get(symbol)
                        .and_then(|file| self.file_with_dependencies(file)),
                    format!("no symbol {symbol:?}"),
                )
            }
            Some(MessageRequest::FileContainingExtension(extension)) => {
                let key = (
                    extension.containing_type.trim_start_matches('.').to_owned(),
                    extension.extension_number,
                );
                files(
                    self.extensions
                        .get(&key)
                        .and_then(|file| self.file_with_dependencies(file)),
                    format!("no extension {} of {}", key.1, key.0),
                )
            }
            Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                let name = name.trim_start_matches('.');
                if self.symbols.contains_key(name) {
                    MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                        base_type_name: name.to_owned(),
                        extension_number: self
                            .extensions
                            .keys()
                            .filter(|(extendee, _)| extendee == name)
                            .map(|(_, number)| *number)
                            .collect(),
                    })
                } else {
                    not_found(format!("no type {name:?}"))
                }
            }
            None => MessageResponse::ErrorResponse(ErrorResponse {
                error_code: sinew_wire::Code::InvalidArgument as i32,
                error_message: "the request names no query".to_owned(),
            }),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(response),
        }
    }
}

/// The reflection service over an [`Index`].
#[derive(Debug)]
pub(crate) struct Reflection {
    index: Arc<Index>,
}

impl Reflection {
    /// Reflection over `services` plus itself (both versions).
    pub(crate) fn new<'a>(services: impl IntoIterator<Item = &'a ServiceDescriptor>) -> Reflection {
        let own = [
            &v1::server_reflection_server::SERVICE_DESCRIPTOR,
            &v1alpha::server_reflection_server::SERVICE_DESCRIPTOR,
        ];
        Reflection {
            index: Arc::new(Index::new(services.into_iter().chain(own))),
        }
    }

    /// The same reflection, shared by the v1 and v1alpha services.
    pub(crate) fn share(&self) -> Reflection {
        Reflection {
            index: self.index.clone(),
        }
    }
}

/// Converts between the [`v1`] and [`v1alpha`] messages, which are the same on
/// the wire (for clients that must speak either version).
pub fn convert<A: Message, B: Message + Default>(message: &A) -> B {
    B::decode(message.encode_to_vec().as_slice()).unwrap_or_default()
}

type AlphaResponseStream = Pin<
    Box<dyn futures_core::Stream<Item = Result<v1alpha::ServerReflectionResponse, Status>> + Send>,
>;

impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = AlphaResponseStream;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<AlphaResponseStream>, Status> {
        let index = self.index.clone();
        let answers = request
            .into_inner()
            .map(move |request| request.map(|request| convert(&index.answer(convert(&request)))));
        Ok(Response::new(Box::pin(answers)))
    }
}

type ResponseStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<ServerReflectionResponse, Status>> + Send>>;

impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = ResponseStream;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<ServerReflectionRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let index = self.index.clone();
        let answers = request
            .into_inner()
            .map(move |request| request.map(|request| index.answer(request)));
        Ok(Response::new(Box::pin(answers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Field `tag` of a message, length-delimited, holding `value`.
    fn field(tag: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    /// A set of the files, encoded.
    fn set_of(files: &[&[u8]]) -> Vec<u8> {
        files.iter().flat_map(|file| field(1, file)).collect()
    }

    /// A descriptor of service `name` embedding `set`, leaked as generated
    /// descriptors are static.
    pub(super) fn leaked(name: &str, set: Vec<u8>) -> &'static ServiceDescriptor {
        Box::leak(Box::new(ServiceDescriptor {
            name: Box::leak(name.to_owned().into_boxed_str()),
            methods: &[],
            file_descriptor_set: Box::leak(set.into_boxed_slice()),
        }))
    }

    /// `t.proto`, encoded by hand: service `t.S` whose method `Get` has
    /// options holding field 72295728 (`(google.api.http)`'s number, a
    /// `get` rule in it), which prost_types does not know.
    fn file_with_method_extension() -> Vec<u8> {
        let rule = field(2, b"/v1/{name=books/*}"); // HttpRule.get
        let options = field(72295728, &rule);
        let mut method = prost_types::MethodDescriptorProto {
            name: Some("Get".into()),
            input_type: Some(".t.M".into()),
            output_type: Some(".t.M".into()),
            ..Default::default()
        }
        .encode_to_vec();
        method.extend(field(4, &options)); // MethodDescriptorProto.options
        let mut service = prost_types::ServiceDescriptorProto {
            name: Some("S".into()),
            ..Default::default()
        }
        .encode_to_vec();
        service.extend(field(2, &method)); // ServiceDescriptorProto.method
        let mut file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            message_type: vec![DescriptorProto {
                name: Some("M".into()),
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        }
        .encode_to_vec();
        file.extend(field(6, &service)); // FileDescriptorProto.service
        file
    }

    /// The encoded set sinew-build would embed for `library.proto`: service
    /// `test.library.Library`, whose `GetBook` has a `(google.api.http)`
    /// rule, with its imports (google/api/*, descriptor.proto).
    pub(super) fn compiled_library() -> Vec<u8> {
        static DIRECTORIES: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sinew-rpc-reflection-{}-{}",
            std::process::id(),
            DIRECTORIES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("library.proto"),
            r#"syntax = "proto3";
               package test.library;
               import "google/api/annotations.proto";
               service Library {
                 rpc GetBook(Book) returns (Book) {
                   option (google.api.http) = { get: "/v1/{name=shelves/*/books/*}" };
                 }
               }
               message Book { string name = 1; }"#,
        )
        .unwrap();
        let set = sinew_schema::compile(["library.proto"], [&dir]);
        std::fs::remove_dir_all(&dir).unwrap();
        set.unwrap()
    }

    /// The `(google.api.http)` path of `test.library.Library/GetBook` in a
    /// pool built from `files`, as a client builds it.
    pub(super) fn library_rule_path(files: &[impl AsRef<[u8]>]) -> String {
        let pool = sinew_schema::pool_from_files(files).unwrap();
        let method = pool
            .get_service_by_name("test.library.Library")
            .and_then(|service| service.methods().find(|m| m.name() == "GetBook"))
            .unwrap();
        sinew_schema::http::rule(&method)
            .expect("the rule survives")
            .path
    }

    fn served_files(index: &Index, request: MessageRequest) -> Vec<Vec<u8>> {
        match answer(index, request) {
            MessageResponse::FileDescriptorResponse(files) => files.file_descriptor_proto,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_method_options_extension_is_served_byte_for_byte() {
        let file = file_with_method_extension();
        // What serving through prost_types did: the option is lost.
        let through_prost_types = FileDescriptorProto::decode(file.as_slice())
            .unwrap()
            .encode_to_vec();
        assert!(through_prost_types.len() < file.len());

        let index = Index::new([leaked("t.S", set_of(&[&file]))]);
        for request in [
            MessageRequest::FileContainingSymbol("t.S.Get".into()),
            MessageRequest::FileContainingSymbol("t.M".into()),
            MessageRequest::FileByFilename("t.proto".into()),
        ] {
            assert_eq!(served_files(&index, request), std::slice::from_ref(&file));
        }
    }

    #[test]
    fn http_rules_of_a_compiled_schema_reach_a_client_pool() {
        let index = Index::new([leaked("test.library.Library", compiled_library())]);
        let files = served_files(
            &index,
            MessageRequest::FileContainingSymbol("test.library.Library".into()),
        );
        let names: Vec<String> = files
            .iter()
            .map(|file| {
                FileDescriptorProto::decode(file.as_slice())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect();
        assert_eq!(names[0], "library.proto");
        assert!(
            names.iter().any(|name| name == "google/api/http.proto"),
            "{names:?}"
        );
        assert_eq!(library_rule_path(&files), "/v1/{name=shelves/*/books/*}");
    }

    #[test]
    fn a_malformed_set_or_file_is_skipped_and_the_rest_served() {
        let file = file_with_method_extension();
        // A truncated file: field 1 (its name) says 255 bytes follow, none do.
        let truncated: &[u8] = b"\x0a\xff\x01";
        let index = Index::new([
            leaked("bad.Set", b"\xff\xff\xff".to_vec()),
            leaked("t.S", set_of(&[truncated, &file])),
        ]);
        match answer(&index, MessageRequest::ListServices(String::new())) {
            MessageResponse::ListServicesResponse(list) => {
                let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, ["bad.Set", "t.S"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            served_files(&index, MessageRequest::FileByFilename("t.proto".into())),
            [file]
        );
        match answer(
            &index,
            MessageRequest::FileContainingSymbol("bad.Set".into()),
        ) {
            MessageResponse::ErrorResponse(error) => assert_eq!(error.error_code, 5),
            other => panic!("{other:?}"),
        }
    }

    fn answer(index: &Index, request: MessageRequest) -> MessageResponse {
        index
            .answer(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            })
            .message_response
            .expect("an answer")
    }

    #[test]
    fn reflection_describes_itself_with_dependencies_and_reports_unknown_symbols() {
        let index = Index::new([&v1::server_reflection_server::SERVICE_DESCRIPTOR]);
        match answer(&index, MessageRequest::ListServices(String::new())) {
            MessageResponse::ListServicesResponse(list) => {
                assert_eq!(list.service[0].name, "grpc.reflection.v1.ServerReflection")
            }
            other => panic!("{other:?}"),
        }
        for symbol in [
            "grpc.reflection.v1.ServerReflection",
            ".grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
            "grpc.reflection.v1.ExtensionRequest",
        ] {
            match answer(&index, MessageRequest::FileContainingSymbol(symbol.into())) {
                MessageResponse::FileDescriptorResponse(files) => {
                    let file = prost_types::FileDescriptorProto::decode(
                        files.file_descriptor_proto[0].as_slice(),
                    )
                    .unwrap();
                    assert_eq!(file.name(), "grpc/reflection/v1/reflection.proto");
                }
                other => panic!("{symbol}: {other:?}"),
            }
        }
        match answer(
            &index,
            MessageRequest::FileContainingSymbol("no.Such".into()),
        ) {
            MessageResponse::ErrorResponse(error) => assert_eq!(error.error_code, 5),
            other => panic!("{other:?}"),
        }
    }
}
