//! nginx's values, read and written in the gateway's terms: times
//! (`30s`, `1h30m`), sizes (`512k`), upstream and `listen` addresses,
//! variables and header names.
//!
//! Not here: which directive a value belongs to, or the notes about it
//! (`convert`); TOML quoting (`emit`).

use crate::vars::Template;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The longest duration the gateway reads (see `config::parse_duration`).
const LONGEST_MILLISECONDS: u64 = 100_000_000_000;

/// An nginx time: `30` (seconds), `500ms`, `30s`, `2m`, `1h`, `1d`, `1w`,
/// `1M` (30 days), `1y` (365 days), or several of them (`1h30m`).
pub(super) fn nginx_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a time such as 30s, 500ms or 2m");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit, length) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.chars().next() {
                None => (1_000, 0),
                Some('s') => (1_000, 1),
                Some('m') => (60_000, 1),
                Some('h') => (3_600_000, 1),
                Some('d') => (86_400_000, 1),
                Some('w') => (7 * 86_400_000, 1),
                Some('M') => (30 * 86_400_000, 1),
                Some('y') => (365 * 86_400_000, 1),
                Some(_) => return Err(invalid()),
            }
        };
        rest = &rest[length..];
        total = value
            .checked_mul(unit)
            .and_then(|milliseconds| total.checked_add(milliseconds))
            .filter(|&total| total <= LONGEST_MILLISECONDS)
            .ok_or_else(|| format!("{text:?} is longer than the gateway takes"))?;
    }
    Ok(Duration::from_millis(total))
}

/// A duration in the gateway's units, the largest that writes it exactly.
pub(super) fn gateway_duration(duration: Duration) -> String {
    let milliseconds = duration.as_millis();
    if milliseconds == 0 {
        "0s".to_owned()
    } else if milliseconds.is_multiple_of(3_600_000) {
        format!("{}h", milliseconds / 3_600_000)
    } else if milliseconds.is_multiple_of(60_000) {
        format!("{}m", milliseconds / 60_000)
    } else if milliseconds.is_multiple_of(1_000) {
        format!("{}s", milliseconds / 1_000)
    } else {
        format!("{milliseconds}ms")
    }
}

/// An nginx size: bytes, or `k`, `m`, `g` (binary multiples).
pub(super) fn nginx_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a size such as 512k, 10m or 1g");
    let (number, multiplier) = if let Some(number) = text.strip_suffix(['k', 'K']) {
        (number, 1 << 10)
    } else if let Some(number) = text.strip_suffix(['m', 'M']) {
        (number, 1 << 20)
    } else if let Some(number) = text.strip_suffix(['g', 'G']) {
        (number, 1 << 30)
    } else {
        (text, 1)
    };
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        // TOML's integers are signed 64-bit.
        .filter(|&bytes| i64::try_from(bytes).is_ok())
        .ok_or_else(invalid)
}

/// An nginx rate, `10r/s`, `30r/m` or `10` (a second), in requests a
/// second; as nginx, a whole number above 0.
pub(super) fn nginx_rate(text: &str) -> Result<f64, String> {
    let (number, seconds) = if let Some(number) = text.strip_suffix("r/s") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix("r/m") {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    match number.parse::<u32>() {
        Ok(requests) if requests > 0 && number.bytes().all(|byte| byte.is_ascii_digit()) => {
            Ok(f64::from(requests) / seconds)
        }
        _ => Err(format!("rate={text} is not a rate such as 10r/s or 30r/m")),
    }
}

/// Where an upstream `server` (or a `proxy_pass`) points.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ServerAddress {
    Socket(SocketAddr),
    Name { host: String, port: u16 },
    Unix,
}

/// An upstream address: `IP:PORT`, `IP` (port 80), `[IPv6]:PORT`,
/// `NAME:PORT`, `NAME`, `unix:/path`.
pub(super) fn server_address(text: &str) -> Result<ServerAddress, String> {
    if text.starts_with("unix:") {
        return Ok(ServerAddress::Unix);
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(ServerAddress::Socket(address));
    }
    if let Some(inner) = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| ServerAddress::Socket(SocketAddr::new(IpAddr::V6(ip), 80)))
            .map_err(|_| format!("{text:?} is not an address"));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ServerAddress::Socket(SocketAddr::new(ip, 80)));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("{text:?}: {port:?} is not a port"))?,
        ),
        None => (text, 80),
    };
    let name_like = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_like {
        return Err(format!("{text:?} is not an address"));
    }
    Ok(ServerAddress::Name {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// A `listen` address: `80`, `127.0.0.1:8080`, `127.0.0.1`, `[::1]:8080`,
/// `*:80`, `*`, `localhost:8080`.
pub(super) fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let any = |port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    if text.starts_with("unix:") {
        return Err("a unix socket (the gateway listens on TCP)".to_owned());
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(any(port));
    }
    if text == "*" {
        return Ok(any(80));
    }
    if let Some(port) = text.strip_prefix("*:") {
        return port
            .parse::<u16>()
            .map(any)
            .map_err(|_| format!("{port:?} is not a port"));
    }
    match server_address(text)? {
        ServerAddress::Socket(address) => Ok(address),
        ServerAddress::Name { host, port } if host == "localhost" => {
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        }
        ServerAddress::Name { .. } => {
            Err("a host name (the gateway listens on IP addresses)".to_owned())
        }
        ServerAddress::Unix => Err("a unix socket (the gateway listens on TCP)".to_owned()),
    }
}

/// The variables of `value`, as `$name` or `${name}`, and whether any
/// text stands among them.
fn variables(value: &str) -> (Vec<&str>, bool) {
    let mut names = Vec::new();
    let mut text = false;
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        text |= dollar > 0;
        let after = &rest[dollar + 1..];
        let (name, remaining) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => (braced, ""),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        names.push(name);
        rest = remaining;
    }
    (names, text || !rest.is_empty())
}

/// Variables every request has a value for, where the gateway expands
/// them for a rate limit's key (`$request_id` is not one: it is made
/// after the limit).
const NEVER_EMPTY: &[&str] = &[
    "remote_addr",
    "binary_remote_addr",
    "host",
    "uri",
    "document_uri",
    "request_uri",
    "scheme",
    "request_method",
];

/// Whether the template `value` may expand to nothing: it has no text of
/// its own, only variables a request can lack (a header, an argument, a
/// cookie, ...).
pub(super) fn may_expand_to_nothing(value: &str) -> bool {
    let (names, text) = variables(value);
    !text && !names.iter().any(|name| NEVER_EMPTY.contains(name))
}

/// Why the gateway could not expand `value`, if it could not: a variable
/// it does not know.
pub(super) fn variable_problem(value: &str) -> Option<String> {
    let error = Template::parse(value).err()?;
    variables(value)
        .0
        .into_iter()
        .find(|name| Template::parse(&format!("${{{name}}}")).is_err())
        .map(|name| format!("${name} is not a variable the gateway knows"))
        .or(Some(error))
}

/// `name` as a header name, lowercase, if it is one.
pub(super) fn header_name(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    http::HeaderName::from_bytes(lower.as_bytes())
        .ok()
        .map(|_| lower)
}
