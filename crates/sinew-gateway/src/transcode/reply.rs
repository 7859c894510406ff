//! The HTTP response of a call: its message as proto3 JSON (or one field
//! of it, by the rule's `response_body`), its metadata as
//! `Grpc-Metadata-NAME` headers, a failure as grpc-gateway answers one,
//! and a server stream as newline-delimited JSON or server-sent events.
//!
//! A failure's HTTP status is grpc-gateway's for its code (`NOT_FOUND`
//! 404, `INVALID_ARGUMENT` 400, `UNAVAILABLE` 503, ...; [`http_status`])
//! and its body `{"code": 5, "message": "...", "details": []}`.
//!
//! A stream is sent as its responses come: `application/x-ndjson` lines
//! of `{"result": MESSAGE}`, and a last `{"error": STATUS}` line if it
//! fails after it started (its status line was sent with the first
//! message); or, when the client accepts `text/event-stream`, one
//! `data: MESSAGE` event per response and an `event: error` at a failure.

use crate::body::{BoxError, ResponseBody};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, SerializeOptions};
use sinew_rpc::{Code, MetadataMap, Status};

/// The HTTP status of a call's code, as grpc-gateway maps them.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A status as grpc-gateway's JSON error body.
fn status_json(status: &Status) -> serde_json::Value {
    serde_json::json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": [],
    })
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The response to a failed call (or a request that never made one).
pub(crate) fn failure(status: &Status) -> Response<ResponseBody> {
    let body = serde_json::to_vec(&status_json(status)).unwrap_or_default();
    let mut response = json_response(http_status(status.code()), body);
    metadata_headers(response.headers_mut(), status.metadata());
    response
}

/// A request the gateway refuses before any call: `code`'s HTTP status
/// (or `http` when given) with the JSON error body.
pub(crate) fn refuse(
    code: Code,
    http: Option<StatusCode>,
    message: impl Into<String>,
) -> Response<ResponseBody> {
    let mut response = failure(&Status::new(code, message));
    if let Some(http) = http {
        *response.status_mut() = http;
    }
    response
}

/// Sets `Grpc-Metadata-NAME` for every text entry of `metadata` (binary
/// ones and the protocol's own, `grpc-*`, are left out).
pub(crate) fn metadata_headers(headers: &mut HeaderMap, metadata: &MetadataMap) {
    for (key, value) in metadata.iter() {
        if key.ends_with("-bin") || key.starts_with("grpc-") || key.starts_with(':') {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(format!("grpc-metadata-{key}").as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
}

/// How messages are written as JSON.
#[derive(Clone)]
pub(crate) struct Json {
    pub(crate) options: SerializeOptions,
    /// Whether `options` names fields by their proto names.
    pub(crate) proto_names: bool,
}

impl Json {
    /// `message` as JSON: the whole of it, or the `field` the rule names.
    pub(crate) fn encode(
        &self,
        message: &DynamicMessage,
        field: Option<&FieldDescriptor>,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(128);
        let mut serializer = serde_json::Serializer::new(&mut out);
        let result = match field {
            None => message.serialize_with_options(&mut serializer, &self.options),
            Some(field) => match (field.kind(), field.is_list() || field.is_map()) {
                (Kind::Message(_), false) => match message.get_field(field).as_message() {
                    Some(inner) => inner.serialize_with_options(&mut serializer, &self.options),
                    None => Ok(()),
                },
                _ => {
                    // A scalar, list or map: its JSON as the message has
                    // it, default values included (the body cannot be
                    // left out).
                    let options = self.options.clone().skip_default_fields(false);
                    let whole = message
                        .serialize_with_options(serde_json::value::Serializer, &options)
                        .map_err(|e| e.to_string())?;
                    let key = if self.proto_names {
                        field.name()
                    } else {
                        field.json_name()
                    };
                    let value = whole.get(key).cloned().unwrap_or(serde_json::Value::Null);
                    return serde_json::to_vec(&value).map_err(|e| e.to_string());
                }
            },
        };
        result.map_err(|e| e.to_string())?;
        Ok(out)
    }
}

/// A unary call's response.
pub(crate) fn message(
    json: &Json,
    metadata: &MetadataMap,
    message: &DynamicMessage,
    field: Option<&FieldDescriptor>,
) -> Response<ResponseBody> {
    match json.encode(message, field) {
        Ok(body) => {
            let mut response = json_response(StatusCode::OK, body);
            metadata_headers(response.headers_mut(), metadata);
            response
        }
        Err(error) => failure(&Status::internal(format!(
            "the response cannot be written as JSON: {error}"
        ))),
    }
}

/// How a server stream is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamFormat {
    /// `application/x-ndjson`: `{"result": ...}` per line.
    Ndjson,
    /// `text/event-stream`: a `data:` event per message.
    Sse,
}

impl StreamFormat {
    /// Server-sent events if the client accepts them, otherwise NDJSON.
    pub(crate) fn for_accept(headers: &HeaderMap) -> StreamFormat {
        let accepts_events = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.to_ascii_lowercase().contains("text/event-stream"));
        if accepts_events {
            StreamFormat::Sse
        } else {
            StreamFormat::Ndjson
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Ndjson => "application/x-ndjson",
            StreamFormat::Sse => "text/event-stream",
        }
    }

    fn frame(self, json: &[u8], error: bool) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 24);
        match (self, error) {
            (StreamFormat::Ndjson, false) => out.extend_from_slice(b"{\"result\":"),
            (StreamFormat::Ndjson, true) => out.extend_from_slice(b"{\"error\":"),
            (StreamFormat::Sse, false) => out.extend_from_slice(b"data: "),
            (StreamFormat::Sse, true) => out.extend_from_slice(b"event: error\ndata: "),
        }
        out.extend_from_slice(json);
        match self {
            StreamFormat::Ndjson => out.extend_from_slice(b"}\n"),
            StreamFormat::Sse => out.extend_from_slice(b"\n\n"),
        }
        Bytes::from(out)
    }
}

/// The comment server-sent events get when quiet.
pub(crate) const SSE_KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// A server stream's messages as the chunks of its body, in `format`.
pub(crate) fn stream_chunks<S>(
    json: Json,
    format: StreamFormat,
    responses: S,
    field: Option<FieldDescriptor>,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static
where
    S: Stream<Item = Result<DynamicMessage, Status>> + Send + 'static,
{
    responses
        // Each response written, or the failure that ends the stream (the
        // call's, or a response that cannot be written as JSON).
        .map(move |item| match item {
            Ok(message) => json.encode(&message, field.as_ref()).map_err(|error| {
                Status::internal(format!("a response cannot be written as JSON: {error}"))
            }),
            Err(status) => Err(status),
        })
        // Nothing after a failure.
        .scan(false, |failed, item| {
            let next = (!*failed).then(|| {
                *failed = item.is_err();
                item
            });
            std::future::ready(next)
        })
        .map(move |item| -> Result<Bytes, BoxError> {
            Ok(match item {
                Ok(body) => format.frame(&body, false),
                Err(status) => format.frame(&serde_json::to_vec(&status_json(&status))?, true),
            })
        })
}

/// A server stream's response: headers now, `body` as it comes.
pub(crate) fn stream_response(
    format: StreamFormat,
    metadata: &MetadataMap,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if format == StreamFormat::Sse {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    metadata_headers(response.headers_mut(), metadata);
    response
}
