//! The client side of gRPC server reflection: which services a server offers,
//! and the encoded descriptors of their `.proto` files, from any server that
//! offers reflection (sinew's, grpc-go's, grpcio's, ...), over any
//! [`Channel`] (sinew's protocol, or gRPC through the bridge).
//!
//! Each function sends its queries on one stream to `grpc.reflection.v1` and,
//! if the server does not implement it, to `grpc.reflection.v1alpha` (which
//! older servers, grpcio's among them, offer alone), as grpcurl does. A server
//! that offers neither gives `UNIMPLEMENTED`.
//!
//! Files come back as the server encoded them, never decoded and encoded
//! again, so that their options survive, extensions such as
//! `(google.api.http)` included. Turning them into a descriptor pool is not
//! done here (this crate has no protobuf reflection): `sinew-schema`'s
//! `pool_from_files` does it, options kept.
//!
//! ```no_run
//! # async fn run() -> Result<(), sinew_rpc::Status> {
//! use sinew_rpc::server::reflection::client;
//! let channel = sinew_rpc::Channel::connect("tcp://127.0.0.1:7000").await?;
//! for service in client::list_services(&channel).await? {
//!     let files = client::file_descriptors(&channel, &[service.clone()]).await?;
//!     println!("{service}: {} files", files.len());
//! }
//! # Ok(())
//! # }
//! ```

use super::v1::server_reflection_client::ServerReflectionClient;
use super::v1::server_reflection_request::MessageRequest;
use super::v1::server_reflection_response::MessageResponse;
use super::v1::{ServerReflectionRequest, ServerReflectionResponse};
use super::{convert, v1alpha};
use crate::client::Channel;
use crate::status::Status;
use bytes::Bytes;
use prost::Message;
use sinew_wire::Code;
use std::collections::HashSet;

/// The services the server offers, sorted (reflection itself among them).
///
/// An error the server answers the query with is returned as a status of
/// its code and message.
pub async fn list_services(channel: &Channel) -> Result<Vec<String>, Status> {
    let answers = reflect(channel, vec![MessageRequest::ListServices(String::new())]).await?;
    let mut names = Vec::new();
    for answer in answers {
        match answer {
            MessageResponse::ListServicesResponse(list) => {
                names.extend(list.service.into_iter().map(|service| service.name));
            }
            MessageResponse::ErrorResponse(error) => {
                // An error answer that says OK (or a negative code) is still
                // an error.
                let code = match u32::try_from(error.error_code).map(Code::from_u32) {
                    Ok(Code::Ok) | Err(_) => Code::Unknown,
                    Ok(code) => code,
                };
                return Err(Status::new(code, error.error_message));
            }
            _ => {}
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The encoded `google.protobuf.FileDescriptorProto`s the server returns for
/// the files defining `symbols` (fully-qualified names of services, methods,
/// messages, enums: `grpc.examples.echo.Echo`), with every file they import as
/// the server sends them; each file once, in the order first received.
///
/// A symbol the server does not know adds nothing (its error answer is
/// skipped), so that the caller can report it by name when it looks it up.
/// A file whose name does not decode is `INTERNAL`, as a malformed answer
/// is.
pub async fn file_descriptors(channel: &Channel, symbols: &[String]) -> Result<Vec<Bytes>, Status> {
    let queries = symbols
        .iter()
        .map(|symbol| MessageRequest::FileContainingSymbol(symbol.clone()))
        .collect();
    let mut names = HashSet::new();
    let mut files = Vec::new();
    for answer in reflect(channel, queries).await? {
        let MessageResponse::FileDescriptorResponse(response) = answer else {
            continue;
        };
        for file in response.file_descriptor_proto {
            let name = FileName::decode(file.as_slice())
                .map_err(|error| {
                    Status::internal(format!(
                        "the server sent an invalid file descriptor: {error}"
                    ))
                })?
                .name;
            if names.insert(name) {
                files.push(Bytes::from(file));
            }
        }
    }
    Ok(files)
}

/// Just the name of a `FileDescriptorProto`, decoded without the rest.
#[derive(Clone, PartialEq, Message)]
struct FileName {
    #[prost(string, tag = "1")]
    name: String,
}

/// Sends `queries` on one stream, v1 first then v1alpha, and returns the
/// answers in order.
async fn reflect(
    channel: &Channel,
    queries: Vec<MessageRequest>,
) -> Result<Vec<MessageResponse>, Status> {
    let requests: Vec<ServerReflectionRequest> = queries
        .into_iter()
        .map(|query| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(query),
        })
        .collect();
    match reflect_v1(channel, requests.clone()).await {
        Err(status) if status.code() == Code::Unimplemented => {}
        answered => return answered,
    }
    reflect_v1alpha(channel, requests).await
}

async fn reflect_v1(
    channel: &Channel,
    requests: Vec<ServerReflectionRequest>,
) -> Result<Vec<MessageResponse>, Status> {
    let client = ServerReflectionClient::new(channel.clone());
    let mut answers = client
        .server_reflection_info(futures_util::stream::iter(requests))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(answer) = answers.message().await? {
        out.extend(answer.message_response);
    }
    Ok(out)
}

async fn reflect_v1alpha(
    channel: &Channel,
    requests: Vec<ServerReflectionRequest>,
) -> Result<Vec<MessageResponse>, Status> {
    let client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let requests: Vec<v1alpha::ServerReflectionRequest> = requests.iter().map(convert).collect();
    let mut answers = client
        .server_reflection_info(futures_util::stream::iter(requests))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(answer) = answers.message().await? {
        // The two versions' messages are the same on the wire.
        let answer: ServerReflectionResponse = convert(&answer);
        out.extend(answer.message_response);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{compiled_library, leaked, library_rule_path};
    use super::super::v1::server_reflection_server::{ServerReflection, ServerReflectionServer};
    use super::super::v1::ErrorResponse;
    use super::super::{v1, Reflection};
    use super::*;
    use crate::request::{Request, Response};
    use crate::server::{Server, ServerBuilder, ServerCall, Service, ServiceDescriptor};
    use crate::streaming::Streaming;
    use crate::BoxStream;
    use futures_util::future::BoxFuture;
    use futures_util::StreamExt;

    /// A service that is only a schema: reflection describes it, nothing
    /// calls it.
    struct Schema(&'static ServiceDescriptor);

    impl Service for Schema {
        fn descriptor(&self) -> &'static ServiceDescriptor {
            self.0
        }

        fn call(&self, _method: usize, _call: ServerCall) -> BoxFuture<'static, Status> {
            Box::pin(async { Status::unimplemented("a schema, not a service") })
        }
    }

    /// A v1 reflection service that answers every query with `answer`.
    struct Scripted(MessageResponse);

    impl ServerReflection for Scripted {
        type ServerReflectionInfoStream = BoxStream<ServerReflectionResponse>;

        async fn server_reflection_info(
            &self,
            request: Request<Streaming<ServerReflectionRequest>>,
        ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
            let answer = self.0.clone();
            let answers = request.into_inner().map(move |request| {
                request.map(|_| ServerReflectionResponse {
                    valid_host: String::new(),
                    original_request: None,
                    message_response: Some(answer.clone()),
                })
            });
            Ok(Response::new(Box::pin(answers)))
        }
    }

    /// A channel to `server`, in process.
    fn in_process(server: ServerBuilder) -> Channel {
        Channel::builder_with_connector(server.into_local_connector()).lazy()
    }

    #[tokio::test]
    async fn a_sinew_server_lists_its_services_and_sends_its_files_whole() {
        let embedded = compiled_library();
        let descriptor = leaked("test.library.Library", embedded.clone());
        let channel = in_process(Server::builder().add_service(Schema(descriptor)));

        assert_eq!(
            list_services(&channel).await.unwrap(),
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "test.library.Library",
            ]
        );

        // Asked twice and alongside an unknown symbol: each file once, the
        // unknown symbol adding nothing.
        let symbols = [
            "test.library.Library".to_owned(),
            "no.Such".to_owned(),
            "test.library.Library.GetBook".to_owned(),
        ];
        let files = file_descriptors(&channel, &symbols).await.unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|file| FileName::decode(file.clone()).unwrap().name)
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(names[0], "library.proto");
        // The bytes are the embedded ones: nothing decoded and re-encoded.
        let embedded: HashSet<Bytes> = super::super::EncodedFileSet::decode(embedded.as_slice())
            .unwrap()
            .file
            .into_iter()
            .collect();
        assert_eq!(files.iter().cloned().collect::<HashSet<_>>(), embedded);
        assert_eq!(library_rule_path(&files), "/v1/{name=shelves/*/books/*}");

        assert!(file_descriptors(&channel, &["no.Such".to_owned()])
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_server_with_v1alpha_alone_is_asked_in_v1alpha() {
        let descriptor = leaked("test.library.Library", compiled_library());
        let alpha =
            v1alpha::server_reflection_server::ServerReflectionServer::new(Reflection::new([
                descriptor,
            ]));
        let channel = in_process(Server::builder().reflection(false).add_service(alpha));
        // v1 is not served (the index lists it all the same: it describes
        // both versions) ...
        let v1 = reflect_v1(&channel, Vec::new()).await.unwrap_err();
        assert_eq!(v1.code(), Code::Unimplemented, "{v1}");
        // ... so the answers come from v1alpha.
        let services = list_services(&channel).await.unwrap();
        assert!(
            services.contains(&"test.library.Library".to_owned()),
            "{services:?}"
        );
        let files = file_descriptors(&channel, &["test.library.Library".to_owned()])
            .await
            .unwrap();
        assert_eq!(library_rule_path(&files), "/v1/{name=shelves/*/books/*}");
    }

    #[tokio::test]
    async fn a_server_without_reflection_is_unimplemented() {
        let channel = in_process(Server::builder().reflection(false));
        let listed = list_services(&channel).await.unwrap_err();
        assert_eq!(listed.code(), Code::Unimplemented, "{listed}");
        let fetched = file_descriptors(&channel, &["a.B".to_owned()])
            .await
            .unwrap_err();
        assert_eq!(fetched.code(), Code::Unimplemented, "{fetched}");
    }

    #[tokio::test]
    async fn a_malformed_file_is_internal_and_an_error_answer_a_status() {
        // A file whose name field says 255 bytes follow, and none do.
        let truncated = MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse {
            file_descriptor_proto: vec![b"\x0a\xff\x01".to_vec()],
        });
        let channel = in_process(
            Server::builder()
                .reflection(false)
                .add_service(ServerReflectionServer::new(Scripted(truncated))),
        );
        let error = file_descriptors(&channel, &["a.B".to_owned()])
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Internal, "{error}");
        assert!(
            error.message().contains("invalid file descriptor"),
            "{error}"
        );

        let refusal = |code| {
            MessageResponse::ErrorResponse(ErrorResponse {
                error_code: code,
                error_message: "not today".to_owned(),
            })
        };
        for (code, expected) in [
            (Code::PermissionDenied as i32, Code::PermissionDenied),
            (0, Code::Unknown),
            (-3, Code::Unknown),
        ] {
            let channel = in_process(
                Server::builder()
                    .reflection(false)
                    .add_service(ServerReflectionServer::new(Scripted(refusal(code)))),
            );
            let error = list_services(&channel).await.unwrap_err();
            assert_eq!((error.code(), error.message()), (expected, "not today"));
        }
    }
}
