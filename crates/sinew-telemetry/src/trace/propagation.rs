//! W3C Trace Context and Baggage in call metadata: reading the caller's
//! context on the server ([`extract`]) and writing ours on the client
//! ([`inject`]).
//!
//! The headers are the ones every OpenTelemetry SDK speaks (its default
//! propagators), so a trace crosses sinew, grpc-go, grpcio and any other
//! OpenTelemetry-instrumented peer, over sinew's protocol and gRPC alike:
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              ^  ^ trace id (16 bytes)            ^ parent span     ^ flags (01 = sampled)
//! tracestate:  vendor=opaque,other=value           (passed on as received)
//! baggage:     user=alice,tenant=acme%20corp       (passed on as received)
//! ```
//!
//! What a peer sends is checked as the specifications say, and what fails
//! is dropped, never passed on: a `traceparent` that is malformed, uses an
//! all-zero id, comes twice, or has version `ff` starts a new trace; a
//! `tracestate` with a malformed entry, more than 32 entries or more than
//! 512 bytes is dropped; so is `baggage` with a malformed entry, more than
//! 64 entries or more than 8,192 bytes.

use super::{SpanId, TraceContext, TraceId};
use sinew_wire::MetadataMap;
use std::sync::Arc;

/// The W3C Trace Context header with the trace id and the caller's span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C Trace Context header with vendors' entries.
pub const TRACESTATE: &str = "tracestate";
/// The W3C Baggage header.
pub const BAGGAGE: &str = "baggage";

/// Most `tracestate` entries passed on (W3C: 32).
const MAX_STATE_ENTRIES: usize = 32;
/// Longest `tracestate` passed on (W3C: propagate at least 512).
const MAX_STATE_BYTES: usize = 512;
/// Most baggage entries passed on (W3C Baggage: at least 64).
const MAX_BAGGAGE_ENTRIES: usize = 64;
/// Longest baggage header passed on (W3C Baggage: at least 8,192 bytes).
const MAX_BAGGAGE_BYTES: usize = 8192;

/// The caller's trace context from request metadata: the remote span
/// (its trace id, its span id as this side's parent, the sampled flag) and
/// the passengers; `None` when there is no valid `traceparent`. The
/// returned context's span is the caller's: make the local span with
/// [`TraceContext::child`].
pub fn extract(metadata: &MetadataMap) -> Option<TraceContext> {
    let mut parents = metadata.get_all(TRACEPARENT);
    let parent = parents.next()?;
    if parents.next().is_some() {
        // Two parents: which one is the caller's is anyone's guess.
        return None;
    }
    let (trace_id, span_id, sampled) = parse_traceparent(parent)?;
    let mut context = TraceContext::from_ids(trace_id, span_id, sampled);
    context.state = joined(metadata, TRACESTATE, MAX_STATE_BYTES)
        .filter(|state| check_state(state).is_ok())
        .map(Arc::from);
    context.baggage = joined(metadata, BAGGAGE, MAX_BAGGAGE_BYTES)
        .filter(|baggage| check_baggage(baggage).is_ok())
        .map(Arc::from);
    Some(context)
}

/// Writes `context` into request metadata as the parent of the next hop:
/// `traceparent` with its span id (replacing any there), and the
/// passengers it carries.
pub fn inject(context: &TraceContext, metadata: &mut MetadataMap) {
    let mut header = [0u8; 55];
    write_traceparent(context, &mut header);
    let header = std::str::from_utf8(&header).expect("hex digits and dashes");
    // What was there goes whatever follows: a stale entry never stays.
    metadata.remove(TRACEPARENT);
    metadata.remove(TRACESTATE);
    metadata.remove(BAGGAGE);
    // Valid by construction (ASCII keys, checked printable values): these
    // inserts do not fail.
    let _ = metadata.insert_static(TRACEPARENT, header);
    if let Some(state) = &context.state {
        let _ = metadata.insert_static(TRACESTATE, state);
    }
    if let Some(baggage) = &context.baggage {
        let _ = metadata.insert_static(BAGGAGE, baggage);
    }
}

/// `00-<trace id>-<span id>-<flags>` into 55 bytes.
fn write_traceparent(context: &TraceContext, out: &mut [u8; 55]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn hex(bytes: &[u8], out: &mut [u8]) {
        for (index, byte) in bytes.iter().enumerate() {
            out[2 * index] = HEX[usize::from(byte >> 4)];
            out[2 * index + 1] = HEX[usize::from(byte & 0xf)];
        }
    }
    out[..3].copy_from_slice(b"00-");
    hex(&context.trace_id.to_bytes(), &mut out[3..35]);
    out[35] = b'-';
    hex(&context.span_id.to_bytes(), &mut out[36..52]);
    out[52] = b'-';
    hex(&[u8::from(context.sampled)], &mut out[53..55]);
}

/// A `traceparent` value: the trace id, the parent's span id and the
/// sampled flag, or `None` if it is not valid W3C Trace Context.
pub fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, bool)> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_value(&value[0..2])?;
    match version {
        // Version 255 is forbidden.
        0xff => return None,
        // Version 00 is exactly this long.
        0x00 if value.len() != 55 => return None,
        // A later version may append fields after a dash; we read the ones
        // version 00 defines.
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_u128(hex_value(&value[3..35])?)?;
    let span_id = SpanId::from_u64(u64::try_from(hex_value(&value[36..52])?).ok()?)?;
    let flags = hex_value(&value[53..55])?;
    Some((trace_id, span_id, flags & 1 == 1))
}

/// Lowercase hex digits (W3C allows no uppercase) as a number; at most 32.
/// Sixteen digits at a time, by table: every server call reads 50.
fn hex_value(digits: &[u8]) -> Option<u128> {
    let mut value = 0u128;
    for chunk in digits.chunks(16) {
        let mut part = 0u64;
        let mut invalid = 0u8;
        for &digit in chunk {
            let nibble = HEX_DIGITS[usize::from(digit)];
            invalid |= nibble;
            part = part << 4 | u64::from(nibble & 0xf);
        }
        if invalid & 0x80 != 0 {
            return None;
        }
        value = value << (4 * chunk.len()) | u128::from(part);
    }
    Some(value)
}

/// The value of each lowercase hex digit; 0x80 for every other byte.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut digit = 0;
    while digit < 10 {
        table[b'0' as usize + digit] = digit as u8;
        digit += 1;
    }
    let mut letter = 0;
    while letter < 6 {
        table[b'a' as usize + letter] = 10 + letter as u8;
        letter += 1;
    }
    table
};

/// Every value of `key`, joined with commas as HTTP joins list headers;
/// `None` if there is none, one is not text, or the whole is longer than
/// `limit`.
fn joined(metadata: &MetadataMap, key: &str, limit: usize) -> Option<String> {
    let mut joined = String::new();
    for value in metadata.get_all(key) {
        let value = std::str::from_utf8(value).ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
        if joined.len() > limit {
            return None;
        }
    }
    (!joined.is_empty()).then_some(joined)
}

/// Checks a `tracestate` value as W3C Trace Context's grammar has it: at
/// most 32 entries of `key=value`, no key twice; a key is `vendor` (a
/// lowercase letter, then up to 255 of `[a-z0-9_*/-]`) or `tenant@vendor`
/// (a tenant of up to 241, starting with a letter or digit, and a vendor of
/// up to 14 starting with a letter); a value is up to 256 printable ASCII
/// characters without `,` and `=`, not ending with a space.
pub(crate) fn check_state(state: &str) -> Result<(), &'static str> {
    fn key_char(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b)
    }
    fn key_ok(key: &str) -> bool {
        match key.split_once('@') {
            None => {
                key.len() <= 256
                    && key.starts_with(|c: char| c.is_ascii_lowercase())
                    && key.bytes().all(key_char)
            }
            Some((tenant, system)) => {
                (1..=241).contains(&tenant.len())
                    && tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && tenant.bytes().all(key_char)
                    && (1..=14).contains(&system.len())
                    && system.starts_with(|c: char| c.is_ascii_lowercase())
                    && system.bytes().all(key_char)
            }
        }
    }
    if state.len() > MAX_STATE_BYTES {
        return Err("tracestate is longer than 512 bytes");
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in state.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        if keys.len() == MAX_STATE_ENTRIES {
            return Err("tracestate has more than 32 entries");
        }
        let (key, value) = member
            .split_once('=')
            .ok_or("a tracestate entry has no '='")?;
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && !value.ends_with(' ')
            && value
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
        if !key_ok(key) || !value_ok {
            return Err("a tracestate entry is malformed");
        }
        if keys.contains(&key) {
            return Err("a tracestate key comes twice");
        }
        keys.push(key);
    }
    Ok(())
}

/// Checks a `baggage` value (W3C Baggage): at most 64 entries, at most
/// 8,192 bytes, printable ASCII (so that it can travel in any metadata);
/// each `key=value` with optional `;key[=value]` properties, keys tokens,
/// values of the characters the specification allows (others
/// percent-encoded).
pub(crate) fn check_baggage(baggage: &str) -> Result<(), &'static str> {
    fn value_ok(value: &str) -> bool {
        value.bytes().all(|b| {
            b == 0x21
                || (0x23..=0x2b).contains(&b)
                || (0x2d..=0x3a).contains(&b)
                || (0x3c..=0x5b).contains(&b)
                || (0x5d..=0x7e).contains(&b)
        })
    }
    if baggage.len() > MAX_BAGGAGE_BYTES {
        return Err("baggage is longer than 8192 bytes");
    }
    if !baggage.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("baggage is not printable ASCII");
    }
    let mut entries = 0;
    for member in baggage.split(',') {
        let member = member.trim_matches(' ');
        if member.is_empty() {
            continue;
        }
        entries += 1;
        if entries > MAX_BAGGAGE_ENTRIES {
            return Err("baggage has more than 64 entries");
        }
        let mut parts = member.split(';');
        let entry = parts.next().unwrap_or_default();
        let (key, value) = entry.split_once('=').ok_or("a baggage entry has no '='")?;
        let key = key.trim_matches(' ');
        if key.is_empty() || !key.bytes().all(is_token) || !value_ok(value.trim_matches(' ')) {
            return Err("a baggage entry is malformed");
        }
        for property in parts {
            let (key, value) = match property.split_once('=') {
                Some((key, value)) => (key.trim_matches(' '), Some(value.trim_matches(' '))),
                None => (property.trim_matches(' '), None),
            };
            if key.is_empty() || !key.bytes().all(is_token) || !value.is_none_or(value_ok) {
                return Err("a baggage property is malformed");
            }
        }
    }
    Ok(())
}

/// An HTTP token character (RFC 9110).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The percent-decoded value of entry `key` of a checked baggage header.
pub(crate) fn baggage_value(baggage: &str, key: &str) -> Option<String> {
    baggage.split(',').find_map(|member| {
        let entry = member.split(';').next()?;
        let (name, value) = entry.split_once('=')?;
        (name.trim_matches([' ', '\t']) == key)
            .then(|| percent_decode(value.trim_matches([' ', '\t'])))
            .flatten()
    })
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 3 <= bytes.len() {
            let digits = bytes[index + 1..index + 3].to_ascii_lowercase();
            // Two hex digits: at most 0xff.
            let byte = hex_value(&digits)? as u8;
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn metadata(entries: &[(&str, &str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in entries {
            metadata.append(key, value).unwrap();
        }
        metadata
    }

    #[test]
    fn reads_the_callers_context_and_writes_a_child() {
        let incoming = metadata(&[
            (TRACEPARENT, PARENT),
            (
                TRACESTATE,
                "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,t0@sys=x",
            ),
            (BAGGAGE, "user=alice, tenant=acme%20corp;ttl=60"),
        ]);
        let caller = extract(&incoming).unwrap();
        assert_eq!(
            caller.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(caller.span_id().to_string(), "00f067aa0ba902b7");
        assert!(caller.is_sampled());
        assert_eq!(caller.baggage("tenant").as_deref(), Some("acme corp"));
        assert_eq!(caller.baggage("user").as_deref(), Some("alice"));
        assert_eq!(caller.baggage("nobody"), None);

        let ours = caller.child();
        let mut outgoing = metadata(&[(TRACEPARENT, "stale")]);
        inject(&ours, &mut outgoing);
        assert_eq!(
            outgoing.get(TRACEPARENT).unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", ours.span_id())
        );
        assert_eq!(
            outgoing.get(TRACESTATE),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,t0@sys=x")
        );
        assert_eq!(
            outgoing.get(BAGGAGE),
            Some("user=alice, tenant=acme%20corp;ttl=60")
        );
        assert_eq!(outgoing.get_all(TRACEPARENT).count(), 1);
        let next = extract(&outgoing).unwrap();
        assert_eq!(next.span_id(), ours.span_id());
    }

    #[test]
    fn an_unsampled_parent_stays_unsampled() {
        let parent = PARENT.replace("-01", "-00");
        let caller = extract(&metadata(&[(TRACEPARENT, &parent)])).unwrap();
        assert!(!caller.is_sampled());
        let mut outgoing = MetadataMap::new();
        inject(&caller.child(), &mut outgoing);
        assert!(outgoing.get(TRACEPARENT).unwrap().ends_with("-00"));
        assert_eq!(outgoing.get(TRACESTATE), None);
    }

    #[test]
    fn bad_traceparents_start_a_new_trace() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in bad {
            assert!(
                extract(&metadata(&[(TRACEPARENT, value)])).is_none(),
                "{value:?} was accepted"
            );
        }
        assert!(
            extract(&metadata(&[(TRACEPARENT, PARENT), (TRACEPARENT, PARENT)])).is_none(),
            "two parents"
        );
        assert!(extract(&MetadataMap::new()).is_none());
    }

    #[test]
    fn a_later_version_is_read_as_far_as_version_00_goes() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let caller = extract(&metadata(&[(TRACEPARENT, later)])).unwrap();
        assert_eq!(caller.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn bad_passengers_are_dropped_and_the_trace_kept() {
        let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let long_baggage = format!("k={}", "v".repeat(8200));
        let cases = [
            (TRACESTATE, "Upper=case".to_string()),
            (TRACESTATE, "novalue".to_string()),
            (TRACESTATE, "k=a,b".to_string()),
            (TRACESTATE, "1abc=v".to_string()),
            (TRACESTATE, "a@=v".to_string()),
            (TRACESTATE, "a@1x=v".to_string()),
            (TRACESTATE, "a@abcdefghijklmno=v".to_string()),
            (TRACESTATE, "a=1,a=2".to_string()),
            (BAGGAGE, "a=1;p=\"quoted\"".to_string()),
            (BAGGAGE, "a=1;=v".to_string()),
            (TRACESTATE, too_many.join(",")),
            (TRACESTATE, format!("k={}", "v".repeat(600))),
            (BAGGAGE, "no value".to_string()),
            (BAGGAGE, "k=quoted\"value".to_string()),
            (BAGGAGE, "=v".to_string()),
            (BAGGAGE, long_baggage),
        ];
        for (key, value) in cases {
            let caller = extract(&metadata(&[(TRACEPARENT, PARENT), (key, &value)]))
                .expect("the traceparent is fine");
            assert_eq!(caller.trace_state(), None, "{key}: {value:.40}");
            assert_eq!(caller.baggage_header(), None, "{key}: {value:.40}");
        }
    }

    #[test]
    fn list_headers_sent_twice_are_joined() {
        let caller = extract(&metadata(&[
            (TRACEPARENT, PARENT),
            (TRACESTATE, "a=1"),
            (TRACESTATE, "b=2"),
            (BAGGAGE, "x=1"),
            (BAGGAGE, "y=2"),
        ]))
        .unwrap();
        assert_eq!(caller.trace_state(), Some("a=1,b=2"));
        assert_eq!(caller.baggage("y").as_deref(), Some("2"));
    }

    #[test]
    fn baggage_set_in_code_is_checked() {
        let root = TraceContext::new_root(false);
        assert!(root.clone().with_baggage("a=1,b=2").is_ok());
        assert!(root.clone().with_baggage("a b=1").is_err());
        assert!(root.clone().with_baggage("a=1,\tb=2").is_err());
        assert!(root.clone().with_baggage("a=1;ttl=60;secret").is_ok());
        // A bad baggage never leaves a stale one behind in the metadata.
        let mut metadata = MetadataMap::new();
        metadata.insert("baggage", "stale=1").unwrap();
        inject(&root, &mut metadata);
        assert_eq!(metadata.get(BAGGAGE), None);
        assert!(
            root.with_baggage("a=%E2%9C%93")
                .unwrap()
                .baggage("a")
                .as_deref()
                == Some("✓")
        );
    }
}
