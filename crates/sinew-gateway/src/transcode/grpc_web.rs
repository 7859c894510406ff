//! gRPC-Web: browsers' gRPC, over HTTP/1.1 or HTTP/2 without trailers,
//! to the same services a route transcodes JSON to.
//!
//! A request whose `Content-Type` is `application/grpc-web[+proto]` (or
//! `application/grpc-web-text[+proto]`, the same base64-encoded) is a call
//! of the method its path names (`POST /package.Service/Method`, one of
//! the services offered), whatever the rules say. Its body holds the
//! request messages in gRPC's framing; its headers are the call's metadata
//! (`-bin` ones base64-decoded) and `grpc-timeout` its deadline (a unary
//! call's is also bounded by the route's `timeout`). The answer is 200
//! with the response's metadata as headers, and a body of the response
//! messages in gRPC's framing followed by a trailer frame (flag `0x80`)
//! holding `grpc-status`, `grpc-message` and the trailing metadata, as
//! the gRPC-Web protocol has it; the text flavour base64-encodes each
//! frame as it goes. Messages are passed through as bytes: nothing is
//! decoded on the way.
//!
//! Errors of the request itself (no such method, a broken frame, bad
//! base64, a bad header) are answered the same way, with the status in
//! the trailer frame, so that every gRPC-Web client reads them.

use super::Transcoder;
use crate::body::{BoxError, ResponseBody};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use sinew_grpc::framing::{encode_message, Encoding, MessageDecoder};
use sinew_grpc::metadata::{from_headers, parse_timeout, status_trailers, to_headers};
use sinew_rpc::call::{CallRequest, Payload, RequestBody, ResponseFrame};
use sinew_rpc::Status;
use std::time::Duration;

/// The flavour of a gRPC-Web request, by its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// `application/grpc-web`, `application/grpc-web+proto`.
    Binary,
    /// `application/grpc-web-text`, `application/grpc-web-text+proto`.
    Text,
}

impl Flavour {
    /// The flavour of a request, `None` if it is not gRPC-Web.
    pub(crate) fn of(headers: &HeaderMap) -> Option<Flavour> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let value = value.split(';').next().unwrap_or("").trim();
        match value.to_ascii_lowercase().as_str() {
            "application/grpc-web" | "application/grpc-web+proto" => Some(Flavour::Binary),
            "application/grpc-web-text" | "application/grpc-web-text+proto" => Some(Flavour::Text),
            _ => None,
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Flavour::Binary => "application/grpc-web+proto",
            Flavour::Text => "application/grpc-web-text+proto",
        })
    }

    /// A frame as it goes on the wire.
    fn encode(self, frame: Bytes) -> Bytes {
        match self {
            Flavour::Binary => frame,
            Flavour::Text => base64::engine::general_purpose::STANDARD
                .encode(&frame)
                .into(),
        }
    }
}

/// Headers a browser sends that are not the call's metadata.
const NOT_METADATA: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "cookie",
    "keep-alive",
    "origin",
    "proxy-connection",
    "referer",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "upgrade",
    "x-api-key",
    "x-grpc-web",
    "x-user-agent",
    "transfer-encoding",
];

/// The trailer frame of a status: flag `0x80`, then the trailers as an
/// HTTP/1 header block.
fn trailer_frame(status: &Status) -> Bytes {
    let mut trailers = HeaderMap::new();
    status_trailers(status, &mut trailers);
    let mut block = BytesMut::new();
    for (name, value) in &trailers {
        block.put_slice(name.as_str().as_bytes());
        block.put_slice(b":");
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(0x80);
    frame.put_u32(block.len() as u32);
    frame.put_slice(&block);
    frame.freeze()
}

/// The answer of a call that ended (or never started) with `status`.
fn status_only(flavour: Flavour, status: &Status) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(flavour.encode(trailer_frame(status))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, flavour.content_type());
    response
}

/// A base64 body decoded: padded chunks one after another are allowed (a
/// client may encode each frame on its own), whitespace is not counted.
fn decode_text(body: &[u8]) -> Result<Vec<u8>, Status> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut rest = &text[..];
    while !rest.is_empty() {
        // A chunk ends after its padding (or at the end).
        let end = match rest.iter().position(|&byte| byte == b'=') {
            Some(at) => {
                let pad = rest[at..].iter().take_while(|&&byte| byte == b'=').count();
                at + pad
            }
            None => rest.len(),
        };
        let engine = &base64::engine::general_purpose::STANDARD;
        let chunk = &rest[..end];
        let decoded = if chunk.ends_with(b"=") || chunk.len().is_multiple_of(4) {
            engine.decode(chunk)
        } else {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(chunk)
        };
        out.extend(decoded.map_err(|e| {
            Status::invalid_argument(format!("the gRPC-Web text body is not base64: {e}"))
        })?);
        rest = &rest[end..];
    }
    Ok(out)
}

impl Transcoder {
    /// Answers one gRPC-Web request; `path` is its path after the route's
    /// rewrite, without the query; `bounds` the route's timeout and body
    /// limit, `client` its address and the request id.
    pub(crate) async fn grpc_web(
        &self,
        flavour: Flavour,
        parts: &http::request::Parts,
        path: &str,
        body: Bytes,
        bounds: (Duration, u64),
        client: (std::net::SocketAddr, &HeaderValue, &crate::route::Route),
    ) -> Response<ResponseBody> {
        if parts.method != http::Method::POST {
            let mut response = status_only(
                flavour,
                &Status::unimplemented(format!("gRPC-Web calls are POSTs, not {}", parts.method)),
            );
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        match self
            .grpc_web_call(flavour, parts, path, body, bounds, client)
            .await
        {
            Ok(response) => response,
            Err(status) => status_only(flavour, &status),
        }
    }

    async fn grpc_web_call(
        &self,
        flavour: Flavour,
        parts: &http::request::Parts,
        path: &str,
        body: Bytes,
        (timeout, limit): (Duration, u64),
        (remote, request_id, route): (std::net::SocketAddr, &HeaderValue, &crate::route::Route),
    ) -> Result<Response<ResponseBody>, Status> {
        let Some(binding) = self.rules.call(path) else {
            return Err(Status::unimplemented(format!(
                "no method {path} among the services offered here"
            )));
        };
        let body = match flavour {
            Flavour::Binary => body,
            Flavour::Text => Bytes::from(decode_text(&body)?),
        };
        let encoding = parts
            .headers
            .get("grpc-encoding")
            .and_then(|value| value.to_str().ok());
        let encoding = Encoding::from_header(encoding).ok_or_else(|| {
            Status::unimplemented("the request's grpc-encoding is not identity or gzip")
        })?;
        let mut decoder =
            MessageDecoder::new(encoding, usize::try_from(limit).unwrap_or(usize::MAX));
        decoder.push(&body);
        let method = &binding.method;
        // The messages together are held to the body limit once
        // decompressed too (a gzip bomb of many small frames), and a
        // unary method's second message is refused as it is found.
        let mut messages = Vec::new();
        let mut total = 0u64;
        while let Some(message) = decoder.next_message()? {
            total += message.len() as u64;
            if total > limit {
                return Err(Status::resource_exhausted(format!(
                    "the request's messages are larger than the limit of {limit} bytes"
                )));
            }
            if !method.is_client_streaming() && !messages.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "{path} takes one request message; the body holds more"
                )));
            }
            messages.push(Payload::from_bytes(message));
        }
        if decoder.has_partial() {
            return Err(Status::invalid_argument(
                "the request body ends inside a gRPC message",
            ));
        }
        let call_body = if !method.is_client_streaming() && messages.len() == 1 {
            RequestBody::single(messages.remove(0))
        } else if !method.is_client_streaming() {
            return Err(Status::invalid_argument(format!(
                "{path} takes one request message; the body holds none"
            )));
        } else {
            RequestBody::stream(futures_util::stream::iter(messages.into_iter().map(Ok)))
        };
        let mut headers = parts.headers.clone();
        for name in NOT_METADATA {
            headers.remove(*name);
        }
        // What the client says of forwarding is replaced by what the
        // gateway saw, as on the JSON path.
        for name in ["x-forwarded-for", "x-forwarded-host", "x-request-id"] {
            headers.remove(name);
        }
        let mut metadata = from_headers(&headers)?;
        self.forwarding(route, parts, remote, request_id, &mut metadata);
        let mut request = CallRequest::new(binding.call_path.clone(), call_body);
        *request.metadata_mut() = metadata;
        let asked = match parts.headers.get("grpc-timeout") {
            Some(value) => Some(parse_timeout(value.to_str().unwrap_or(""))?),
            None => None,
        };
        let deadline = match (
            asked,
            method.is_server_streaming() || method.is_client_streaming(),
        ) {
            (Some(asked), true) => Some(asked),
            (None, true) => None,
            (asked, false) => Some(asked.map_or(timeout, |asked| asked.min(timeout))),
        };
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        let client = self.client(timeout).await?;
        // The wait for the response to begin is bounded, streams too.
        let slot = match method.is_server_streaming() {
            true => Some(self.streams.slot()?),
            false => None,
        };
        let response = super::bounded(timeout, client.call(request)).await?;
        let (metadata, frames, _) = response.into_parts();
        let chunks = frames.map(move |frame| -> Result<Bytes, BoxError> {
            Ok(flavour.encode(match frame {
                ResponseFrame::Message(message) => encode_message(&message, Encoding::Identity),
                ResponseFrame::Status(status) => trailer_frame(&status),
            }))
        });
        let body = match slot {
            Some(slot) => self.streams.body(chunks, slot, None),
            None => ResponseBody::stream(chunks),
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        to_headers(&metadata, headers);
        headers.insert(header::CONTENT_TYPE, flavour.content_type());
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_pick_the_flavour() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(
            Flavour::of(&headers("application/grpc-web")),
            Some(Flavour::Binary)
        );
        assert_eq!(
            Flavour::of(&headers("application/grpc-web+proto; charset=x")),
            Some(Flavour::Binary)
        );
        assert_eq!(
            Flavour::of(&headers("Application/gRPC-Web-Text")),
            Some(Flavour::Text)
        );
        assert_eq!(Flavour::of(&headers("application/grpc")), None);
        assert_eq!(Flavour::of(&headers("application/json")), None);
        assert_eq!(Flavour::of(&HeaderMap::new()), None);
    }

    #[test]
    fn the_trailer_frame_holds_the_status_as_a_header_block() {
        let frame = trailer_frame(&Status::not_found("no book \"é\""));
        assert_eq!(frame[0], 0x80);
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len, frame.len() - 5);
        let block = std::str::from_utf8(&frame[5..]).unwrap();
        assert!(block.contains("grpc-status:5\r\n"), "{block}");
        assert!(
            block.contains("grpc-message:no book \"%C3%A9\"\r\n"),
            "{block}"
        );
    }

    #[test]
    fn text_bodies_decode_in_padded_chunks_and_bad_ones_are_refused() {
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut body = engine.encode(b"\x00\x00\x00\x00\x01a");
        body.push_str(&engine.encode(b"xy"));
        body.push('\n');
        assert_eq!(
            decode_text(body.as_bytes()).unwrap(),
            b"\x00\x00\x00\x00\x01axy"
        );
        assert_eq!(decode_text(b"").unwrap(), b"");
        assert_eq!(decode_text(b"YWJj").unwrap(), b"abc");
        let error = decode_text(b"!!!!").unwrap_err();
        assert_eq!(error.code(), sinew_rpc::Code::InvalidArgument);
        assert!(decode_text(b"YQ=x").is_err());
    }
}
