//! gRPC headers <-> sinew metadata, `grpc-timeout`, and `grpc-message` encoding.

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use sinew_rpc::{MetadataMap, Status};
use std::time::Duration;

/// Headers that belong to HTTP/2 or gRPC itself, never passed as metadata.
fn is_reserved(name: &str) -> bool {
    // gRPC's own headers of the call and its status. Other `grpc-` entries
    // gRPC defines are metadata the peers act on and pass on
    // (`grpc-retry-pushback-ms`, `grpc-previous-rpc-attempts`).
    matches!(
        name,
        "grpc-status"
            | "grpc-message"
            | "grpc-status-details-bin"
            | "grpc-timeout"
            | "grpc-encoding"
            | "grpc-accept-encoding"
            | "content-type"
            | "te"
            | "user-agent"
            | "content-length"
            | "host"
            | "connection"
    )
}

/// Parses `grpc-timeout`: 1 to 8 ASCII digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &str) -> Result<Duration, Status> {
    let bad = || {
        Status::invalid_argument(format!(
        "malformed grpc-timeout header {value:?}: expected 1 to 8 digits and a unit H, M, S, m, u or n"
    ))
    };
    if value.len() < 2 || value.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    })
}

/// Request headers to metadata: reserved headers skipped, `-bin` values
/// base64-decoded (padded or not). A header that is not valid metadata is an
/// `INVALID_ARGUMENT`, naming it.
pub fn from_headers(headers: &HeaderMap) -> Result<MetadataMap, Status> {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let key = name.as_str();
        if is_reserved(key) {
            continue;
        }
        let result = if key.ends_with("-bin") {
            let text = value.as_bytes();
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(
                    text.strip_suffix(b"==")
                        .or_else(|| text.strip_suffix(b"="))
                        .unwrap_or(text),
                )
                .map_err(|e| {
                    Status::invalid_argument(format!("header {key} is not valid base64: {e}"))
                })?;
            metadata.insert_bin(key, decoded)
        } else {
            let text = value.to_str().map_err(|_| {
                Status::invalid_argument(format!("header {key} is not printable ASCII"))
            })?;
            metadata.append(key, text)
        };
        result.map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(metadata)
}

/// Metadata to headers or trailers (`-bin` values base64-encoded);
/// reserved headers are gRPC's to set, never the metadata's.
pub fn to_headers(metadata: &MetadataMap, headers: &mut HeaderMap) {
    for (key, value) in metadata.iter() {
        if is_reserved(key) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            continue;
        };
        let value = if key.ends_with("-bin") {
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(value))
        } else {
            HeaderValue::from_bytes(value)
        };
        if let Ok(value) = value {
            headers.append(name, value);
        }
    }
}

/// The characters gRPC's `grpc-message` must percent-encode: everything outside
/// printable ASCII, and `%` itself.
const MESSAGE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// A status as trailers: `grpc-status`, `grpc-message`, `grpc-status-details-bin`
/// and the status's metadata.
pub fn status_trailers(status: &Status, trailers: &mut HeaderMap) {
    trailers.insert("grpc-status", HeaderValue::from(status.code().as_u32()));
    if !status.message().is_empty() {
        let encoded =
            percent_encoding::utf8_percent_encode(status.message(), MESSAGE_ESCAPES).to_string();
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            trailers.insert("grpc-message", value);
        }
    }
    if !status.details().is_empty() {
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.details());
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            trailers.insert("grpc-status-details-bin", value);
        }
    }
    to_headers(status.metadata(), trailers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit_and_malformed_ones_are_refused() {
        assert_eq!(parse_timeout("1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_timeout("2M").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_timeout("3S").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_timeout("250m").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_timeout("99999999u").unwrap(),
            Duration::from_micros(99_999_999)
        );
        assert_eq!(parse_timeout("7n").unwrap(), Duration::from_nanos(7));
        for bad in ["", "S", "10", "123456789S", "1.5S", "-1S", "10x", "1 S"] {
            let status = parse_timeout(bad).unwrap_err();
            assert_eq!(status.code(), sinew_rpc::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn headers_become_metadata_and_back_with_binary_values() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        headers.insert("x-user", HeaderValue::from_static("ada"));
        headers.insert("x-trace-bin", HeaderValue::from_static("AAH/"));
        let metadata = from_headers(&headers).unwrap();
        assert_eq!(metadata.len(), 2, "{metadata:?}");
        assert_eq!(metadata.get("x-user"), Some("ada"));
        assert_eq!(metadata.get_bin("x-trace-bin"), Some(&[0u8, 1, 255][..]));
        let mut back = HeaderMap::new();
        to_headers(&metadata, &mut back);
        assert_eq!(back["x-trace-bin"], "AAH/");

        headers.insert("x-broken-bin", HeaderValue::from_static("!!!"));
        assert_eq!(
            from_headers(&headers).unwrap_err().code(),
            sinew_rpc::Code::InvalidArgument
        );
    }

    #[test]
    fn grpcs_own_headers_are_not_metadata_but_its_retry_entries_are() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("grpc-status", "14"),
            ("grpc-message", "down"),
            ("grpc-encoding", "gzip"),
            ("grpc-retry-pushback-ms", "250"),
            ("grpc-previous-rpc-attempts", "1"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let metadata = from_headers(&headers).unwrap();
        assert_eq!(metadata.len(), 2, "{metadata:?}");
        assert_eq!(metadata.get("grpc-retry-pushback-ms"), Some("250"));
        assert_eq!(metadata.get("grpc-previous-rpc-attempts"), Some("1"));
        // Metadata cannot set gRPC's own headers.
        let mut forged = MetadataMap::new();
        forged.insert("grpc-status", "0").unwrap();
        forged.insert("grpc-retry-pushback-ms", "10").unwrap();
        let mut back = HeaderMap::new();
        to_headers(&forged, &mut back);
        assert!(back.get("grpc-status").is_none());
        assert_eq!(back["grpc-retry-pushback-ms"], "10");
    }

    #[test]
    fn status_messages_are_percent_encoded() {
        let mut trailers = HeaderMap::new();
        status_trailers(&Status::not_found("no key \"é\" 100%\n"), &mut trailers);
        assert_eq!(trailers["grpc-status"], "5");
        assert_eq!(trailers["grpc-message"], "no key \"%C3%A9\" 100%25%0A");
    }
}
