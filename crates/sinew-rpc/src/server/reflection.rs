//! gRPC server reflection (`grpc.reflection.v1.ServerReflection`), offered by every
//! sinew server unless turned off with
//! [`ServerBuilder::reflection`](super::ServerBuilder::reflection).
//!
//! It answers from the encoded `FileDescriptorSet` each generated service carries in
//! its [`ServiceDescriptor`]: no `.proto` file is needed at
//! run time, by the server or by the client (`sinew list`, `sinew call`, grpcurl).
//! File answers include every transitive dependency, so a client can build a
//! complete descriptor pool from one answer.

use super::ServiceDescriptor;
use crate::request::{Request, Response};
use crate::status::Status;
use crate::streaming::Streaming;
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

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
            // hand-written Service with an empty set simply adds no files.
            let Ok(set) = FileDescriptorSet::decode(service.file_descriptor_set) else {
                continue;
            };
            for file in set.file {
                index.add_file(file);
            }
        }
        index
    }

    fn add_file(&mut self, file: prost_types::FileDescriptorProto) {
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
        let encoded = Bytes::from(file.encode_to_vec());
        self.files.insert(name, (encoded, file.dependency));
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
