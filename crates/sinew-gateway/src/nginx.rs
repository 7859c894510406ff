//! Importing an nginx configuration: the text of `nginx.conf` read as nginx
//! reads it, and written out as the `gateway.toml` that does the same, with
//! a note for everything that could not be carried over, or only nearly.
//!
//! ```text
//!  nginx                                         gateway.toml
//!  upstream NAME { server ..; least_conn; }  ──▶  [upstreams.NAME] servers, balance, keepalive
//!  server { listen ..; server_name ..; }     ──▶  [server] listen; each route's host
//!  location /p { proxy_pass http://NAME/; }  ──▶  [[routes]] path, upstream, rewrite_prefix
//!  proxy_next_upstream*, proxy_*_timeout     ──▶  retry, timeout, the group's connect_timeout
//!  proxy_set_header, add_header, ..hide..    ──▶  the route's header rewrites
//!  client_max_body_size, client_header_*     ──▶  [server] limits
//! ```
//!
//! nginx's inheritance is followed: a `proxy_*` directive of `http` holds
//! in every `server` and `location` inside that does not set it again, and
//! a `proxy_set_header` (or `add_header`, `proxy_hide_header`) at one level
//! replaces all of those of the levels around it. Routes come out in the
//! order nginx would choose among them (exact host names, then wildcards,
//! then any host; the longest prefix first), because the gateway takes the
//! first route that matches.
//!
//! Not here: following `include`s (the importer has the text, not the
//! files), regular-expression and exact locations, TLS, caching, rate
//! limits and the other directives the gateway has no counterpart for
//! yet: those become [`Imported::notes`], for a person to decide on. Text
//! that is not nginx at all is an [`ImportError`] naming its line.

use crate::config::Config;
use crate::vars::Template;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// An nginx configuration converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// A complete `gateway.toml`, which [`Config::from_toml`] accepts.
    pub toml: String,
    /// What was not converted, or converted only approximately, one item
    /// each, in the order of the nginx text: `line 12: proxy_cache: not
    /// converted (the gateway has no cache yet)`.
    pub notes: Vec<String>,
}

/// Text that is not nginx syntax (a brace never closed, a string never
/// ended, a directive without its `;`), with the line where it is.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ImportError {
    line: Option<usize>,
    message: String,
}

impl ImportError {
    fn at(line: usize, message: impl fmt::Display) -> ImportError {
        ImportError {
            line: Some(line),
            message: format!("line {line}: {message}"),
        }
    }

    /// The line of the nginx text the error is about (counted from 1), if
    /// it is about one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

/// Converts the text of an nginx configuration (a whole `nginx.conf`, or
/// the `upstream` and `server` blocks of one) into a `gateway.toml`.
///
/// ```
/// let imported = sinew_gateway::nginx::import(
///     "upstream app { server 127.0.0.1:9001; }
///      server { listen 8080; location / { proxy_pass http://app; } }",
/// )?;
/// let config = sinew_gateway::Config::from_toml(&imported.toml)?;
/// assert_eq!(config.routes[0].upstream, "app");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import(text: &str) -> Result<Imported, ImportError> {
    let directives = parse(text)?;
    let mut converter = Converter::default();
    // Upstream blocks and rate-limit zones may come after the locations
    // that name them: they are read first.
    converter.collect(&directives, Level::Main)?;
    converter.http_level(&directives, Level::Main, &Inherited::default())?;
    converter.finish()
}

// ---------------------------------------------------------------------------
// Syntax: tokens and directives, as nginx's ngx_conf_read_token reads them.
// ---------------------------------------------------------------------------

/// How deep blocks may nest: deeper is no configuration anyone writes, and
/// the parser recurses once per level.
const DEEPEST: usize = 64;

/// Directives that take a `{ }` block (`server` only outside `upstream`).
const BLOCK_DIRECTIVES: &[&str] = &[
    "http",
    "events",
    "server",
    "location",
    "upstream",
    "stream",
    "mail",
    "map",
    "geo",
    "if",
    "types",
    "limit_except",
    "split_clients",
];

/// Directives that end with `;` and never take a block.
const SIMPLE_DIRECTIVES: &[&str] = &[
    "listen",
    "server_name",
    "proxy_pass",
    "proxy_set_header",
    "proxy_hide_header",
    "add_header",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "proxy_http_version",
    "client_max_body_size",
    "client_header_timeout",
    "large_client_header_buffers",
    "limit_req",
    "limit_req_zone",
    "include",
    "keepalive",
    "keepalive_timeout",
    "keepalive_requests",
    "least_conn",
    "ip_hash",
    "random",
    "worker_processes",
    "worker_connections",
    "root",
    "return",
    "rewrite",
    "alias",
    "try_files",
    "access_log",
    "error_log",
];

/// Blocks whose entries are data rather than directives.
const DATA_BLOCKS: &[&str] = &["map", "geo", "types", "split_clients", "charset_map"];

#[derive(Debug)]
enum Token {
    Word { text: String, quoted: bool },
    Open,
    Close,
    End,
}

#[derive(Debug)]
struct Lexeme {
    token: Token,
    line: usize,
}

/// One directive: its name, arguments and block, if it has one.
#[derive(Debug)]
struct Directive {
    name: String,
    args: Vec<String>,
    line: usize,
    block: Option<Vec<Directive>>,
}

/// nginx's escapes, in quoted strings and words alike; any other escaped
/// character keeps its backslash, as nginx keeps it.
fn unescape(escaped: char, word: &mut String) {
    match escaped {
        '"' | '\'' | '\\' => word.push(escaped),
        't' => word.push('\t'),
        'r' => word.push('\r'),
        'n' => word.push('\n'),
        other => {
            word.push('\\');
            word.push(other);
        }
    }
}

fn tokens(text: &str) -> Result<Vec<Lexeme>, ImportError> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexemes = Vec::new();
    let mut line = 1;
    let mut index = 0;
    while let Some(&c) = chars.get(index) {
        match c {
            '\n' => {
                line += 1;
                index += 1;
            }
            c if c.is_whitespace() => index += 1,
            '#' => {
                while chars.get(index).is_some_and(|&c| c != '\n') {
                    index += 1;
                }
            }
            '{' | '}' | ';' => {
                let token = match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    _ => Token::End,
                };
                lexemes.push(Lexeme { token, line });
                index += 1;
            }
            '"' | '\'' => {
                let opened = line;
                index += 1;
                let mut word = String::new();
                loop {
                    let Some(&ch) = chars.get(index) else {
                        return Err(ImportError::at(
                            opened,
                            format!("the string opened with {c} here is never closed"),
                        ));
                    };
                    index += 1;
                    if ch == c {
                        break;
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    if ch == '\\' {
                        if let Some(&next) = chars.get(index) {
                            index += 1;
                            if next == '\n' {
                                line += 1;
                            }
                            unescape(next, &mut word);
                            continue;
                        }
                    }
                    word.push(ch);
                }
                // As nginx: a quoted string ends its token.
                if let Some(&next) = chars.get(index) {
                    if !(next.is_whitespace() || matches!(next, ';' | '{' | '}' | ')')) {
                        return Err(ImportError::at(
                            line,
                            format!("unexpected {next:?} right after a quoted string"),
                        ));
                    }
                }
                lexemes.push(Lexeme {
                    token: Token::Word {
                        text: word,
                        quoted: true,
                    },
                    line: opened,
                });
            }
            _ => {
                let start = line;
                let mut word = String::new();
                let mut after_dollar = false;
                while let Some(&ch) = chars.get(index) {
                    // `${name}` is a variable, not a block; and, as in
                    // nginx, a `}` inside a word is part of it.
                    if ch.is_whitespace() || ch == ';' || (ch == '{' && !after_dollar) {
                        break;
                    }
                    index += 1;
                    after_dollar = ch == '$';
                    if ch == '\\' {
                        if let Some(&next) = chars.get(index) {
                            index += 1;
                            if next == '\n' {
                                line += 1;
                            }
                            unescape(next, &mut word);
                            continue;
                        }
                    }
                    word.push(ch);
                }
                lexemes.push(Lexeme {
                    token: Token::Word {
                        text: word,
                        quoted: false,
                    },
                    line: start,
                });
            }
        }
    }
    Ok(lexemes)
}

fn parse(text: &str) -> Result<Vec<Directive>, ImportError> {
    let mut lexemes = tokens(text)?.into_iter();
    block(&mut lexemes, None, 0)
}

/// A word of a directive: its text, line, and whether it was quoted.
type Word = (String, usize, bool);

/// The directives up to the `}` that closes `opened` (name and line of the
/// block), or to the end of the text at the top.
fn block(
    lexemes: &mut std::vec::IntoIter<Lexeme>,
    opened: Option<(&str, usize)>,
    depth: usize,
) -> Result<Vec<Directive>, ImportError> {
    let mut directives = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    loop {
        let Some(Lexeme { token, line }) = lexemes.next() else {
            if let Some((name, start, _)) = words.first() {
                return Err(ImportError::at(
                    *start,
                    format!("{name}: no ; at the end of the directive"),
                ));
            }
            if let Some((name, start)) = opened {
                return Err(ImportError::at(
                    start,
                    format!("the {name} block opened here is never closed (a }} is missing)"),
                ));
            }
            return Ok(directives);
        };
        match token {
            Token::Word { text, quoted } => words.push((text, line, quoted)),
            Token::End => {
                let taken = std::mem::take(&mut words);
                directives.push(directive(taken, None, opened, line)?);
            }
            Token::Open => {
                let Some((name, start, _)) = words.first() else {
                    return Err(ImportError::at(line, "a { with no directive before it"));
                };
                if depth >= DEEPEST {
                    return Err(ImportError::at(line, "blocks nested too deep"));
                }
                let inner = block(lexemes, Some((name.as_str(), *start)), depth + 1)?;
                let taken = std::mem::take(&mut words);
                directives.push(directive(taken, Some(inner), opened, line)?);
            }
            Token::Close => {
                if let Some((name, start, _)) = words.first() {
                    return Err(ImportError::at(
                        *start,
                        format!(
                            "{name}: no ; at the end of the directive (before the }} of line {line})"
                        ),
                    ));
                }
                return match opened {
                    Some(_) => Ok(directives),
                    None => Err(ImportError::at(line, "a } that closes no block")),
                };
            }
        }
    }
}

/// A directive of `words`, refused when it cannot be one.
fn directive(
    words: Vec<Word>,
    block: Option<Vec<Directive>>,
    parent: Option<(&str, usize)>,
    line: usize,
) -> Result<Directive, ImportError> {
    let mut words = words.into_iter();
    let Some((name, start, _)) = words.next() else {
        let what = if block.is_some() { "{" } else { ";" };
        return Err(ImportError::at(
            line,
            format!("a {what} with no directive before it"),
        ));
    };
    // A directive name at the start of a line, among the arguments of the
    // directive above, is nearly always a `;` forgotten at the end of that
    // one (nginx would say "invalid parameter" or worse).
    let data = parent.is_some_and(|(parent, _)| DATA_BLOCKS.contains(&parent));
    let mut args = Vec::new();
    let mut previous_line = start;
    for (text, word_line, quoted) in words {
        if !data && !quoted && word_line > previous_line && starts_directive(&text) {
            return Err(ImportError::at(
                start,
                format!(
                    "{name}: no ; at the end of the directive ({text} on line {word_line} starts the next one)"
                ),
            ));
        }
        previous_line = word_line;
        args.push(text);
    }
    Ok(Directive {
        name,
        args,
        line: start,
        block,
    })
}

fn starts_directive(word: &str) -> bool {
    BLOCK_DIRECTIVES.contains(&word) || SIMPLE_DIRECTIVES.contains(&word)
}

/// Refuses a directive in a shape nginx refuses: a block after one that
/// takes none (a `;` forgotten), none where one must be.
fn shape(directive: &Directive, in_upstream: bool) -> Result<(), ImportError> {
    let name = directive.name.as_str();
    let wants_block = if name == "server" {
        !in_upstream
    } else {
        BLOCK_DIRECTIVES.contains(&name)
    };
    let takes_no_block = (name == "server" && in_upstream) || SIMPLE_DIRECTIVES.contains(&name);
    match &directive.block {
        None if wants_block => Err(ImportError::at(
            directive.line,
            format!("{name}: no {{ }} block after it"),
        )),
        Some(_) if takes_no_block => Err(ImportError::at(
            directive.line,
            format!("{name}: no ; at the end of the directive (a {{ block follows it)"),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Values: times, sizes, addresses, variables.
// ---------------------------------------------------------------------------

/// The longest duration the gateway reads (see `config::parse_duration`).
const LONGEST_MILLISECONDS: u64 = 100_000_000_000;

/// An nginx time: `30` (seconds), `500ms`, `30s`, `2m`, `1h`, `1d`, `1w`,
/// `1M` (30 days), `1y` (365 days), or several of them (`1h30m`).
fn nginx_duration(text: &str) -> Result<Duration, String> {
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
fn gateway_duration(duration: Duration) -> String {
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
fn nginx_size(text: &str) -> Result<u64, String> {
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

/// Where an upstream `server` (or a `proxy_pass`) points.
#[derive(Debug, PartialEq, Eq)]
enum ServerAddress {
    Socket(SocketAddr),
    Name { host: String, port: u16 },
    Unix,
}

/// An upstream address: `IP:PORT`, `IP` (port 80), `[IPv6]:PORT`,
/// `NAME:PORT`, `NAME`, `unix:/path`.
fn server_address(text: &str) -> Result<ServerAddress, String> {
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
fn listen_address(text: &str) -> Result<SocketAddr, String> {
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

/// The variables of `value`, as `$name` or `${name}`.
fn variables(value: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
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
    names
}

/// Why the gateway could not expand `value`, if it could not: a variable
/// it does not know.
fn variable_problem(value: &str) -> Option<String> {
    let error = Template::parse(value).err()?;
    variables(value)
        .into_iter()
        .find(|name| Template::parse(&format!("${{{name}}}")).is_err())
        .map(|name| format!("${name} is not a variable the gateway knows"))
        .or(Some(error))
}

fn header_name(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    http::HeaderName::from_bytes(lower.as_bytes())
        .ok()
        .map(|_| lower)
}

/// Why a directive has no counterpart, where a few words say it.
fn reason(name: &str) -> &'static str {
    match name {
        _ if name.starts_with("proxy_cache") || name == "proxy_no_cache" => {
            " (the gateway has no cache yet)"
        }
        "proxy_buffering"
        | "proxy_buffers"
        | "proxy_buffer_size"
        | "proxy_busy_buffers_size"
        | "proxy_request_buffering"
        | "proxy_max_temp_file_size"
        | "proxy_temp_file_write_size"
        | "proxy_temp_path"
        | "client_body_buffer_size" => " (the gateway streams bodies through)",
        _ if name.starts_with("ssl") || name.starts_with("proxy_ssl") => " (TLS is not converted)",
        "access_log" | "error_log" | "log_format" => " (the gateway logs through tracing)",
        _ if name.starts_with("gzip") => " (the gateway does not compress)",
        "root" | "alias" | "index" | "try_files" | "autoindex" | "sendfile" | "tcp_nopush"
        | "default_type" | "types" | "expires" | "error_page" | "return" | "rewrite" => {
            " (the gateway only proxies)"
        }
        "allow"
        | "deny"
        | "auth_basic"
        | "auth_basic_user_file"
        | "auth_request"
        | "limit_conn"
        | "limit_conn_zone"
        | "limit_rate" => " (access rules and limits come with the gateway's middleware)",
        "proxy_redirect" => " (Location headers pass as the upstream wrote them)",
        "keepalive_timeout" | "keepalive_requests" => {
            " (the gateway closes idle client connections after [server] header_timeout)"
        }
        "fastcgi_pass" | "uwsgi_pass" | "scgi_pass" | "grpc_pass" | "memcached_pass" | "stream"
        | "mail" => " (the gateway proxies HTTP only)",
        "if" => " (the gateway has no conditions: what is inside is left out)",
        "map" | "geo" | "split_clients" => " (the gateway has no variables of its own)",
        "limit_except" => " (a route's methods can say which methods it takes)",
        "http" | "server" | "location" | "upstream" | "proxy_pass" | "listen" | "server_name" => {
            " (not in its place)"
        }
        _ => "",
    }
}

// ---------------------------------------------------------------------------
// Conversion.
// ---------------------------------------------------------------------------

/// The nesting level a directive is read at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// The top of the text: nginx's main context, and the `http` context
    /// too, for a text of `upstream` and `server` blocks alone.
    Main,
    Http,
    Server,
    Location,
}

/// One `proxy_set_header`, as the gateway takes it.
#[derive(Clone, Debug)]
enum RequestHeader {
    /// `Host $host` or `$http_host`: the client's Host goes on, the
    /// gateway's default.
    KeepHost,
    /// `Host $proxy_host`: the upstream's name, nginx's default.
    ProxyHost,
    Set {
        name: String,
        value: String,
    },
    /// An empty value: nginx sends no such header.
    Remove(String),
    /// Nothing to write: the gateway does it already, or it could not be
    /// converted (and a note says so).
    Nothing,
}

/// `proxy_next_upstream`, read.
#[derive(Clone, Debug)]
struct NextUpstream {
    on: Vec<&'static str>,
    off: bool,
    non_idempotent: bool,
}

/// What nginx passes down from `http` to `server` to `location`.
#[derive(Clone, Debug, Default)]
struct Inherited {
    request_headers: Vec<RequestHeader>,
    response_headers: Vec<(String, String)>,
    hidden_headers: Vec<String>,
    next_upstream: Option<NextUpstream>,
    /// `proxy_next_upstream_tries`, with its line.
    tries: Option<(usize, u32)>,
    /// `proxy_next_upstream_timeout`; zero is no limit.
    retry_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    /// `proxy_connect_timeout`, with its line.
    connect_timeout: Option<(usize, Duration)>,
}

/// Which list directives a level has set already: the first of each
/// replaces what the level inherited, as nginx does.
#[derive(Default)]
struct Replaced {
    request_headers: bool,
    response_headers: bool,
    hidden_headers: bool,
}

/// A `limit_req_zone`.
#[derive(Debug)]
struct Zone {
    key: String,
    rate: String,
}

/// One server of an upstream group.
#[derive(Clone, Debug)]
struct ServerDraft {
    address: SocketAddr,
    weight: Option<u32>,
    max_fails: Option<u32>,
    fail_timeout: Option<Duration>,
    backup: bool,
    down: bool,
    max_conns: Option<usize>,
}

/// An upstream group on its way to `[upstreams.NAME]`.
#[derive(Debug)]
struct UpstreamDraft {
    name: String,
    /// Made for a `proxy_pass` to an address, not written as a block.
    implicit: bool,
    /// Has servers or a name to resolve.
    usable: bool,
    servers: Vec<ServerDraft>,
    resolve: Option<String>,
    balance: Option<&'static str>,
    hash_key: Option<String>,
    consistent: bool,
    keepalive: Option<usize>,
    keepalive_timeout: Option<Duration>,
    keepalive_requests: Option<u32>,
    /// The `proxy_connect_timeout`s of the locations proxying to it.
    connect_timeouts: Vec<(usize, Duration)>,
}

impl UpstreamDraft {
    fn new(name: &str, implicit: bool) -> UpstreamDraft {
        UpstreamDraft {
            name: name.to_owned(),
            implicit,
            usable: true,
            servers: Vec::new(),
            resolve: None,
            balance: None,
            hash_key: None,
            consistent: false,
            keepalive: None,
            keepalive_timeout: None,
            keepalive_requests: None,
            connect_timeouts: Vec::new(),
        }
    }
}

/// A route on its way to `[[routes]]`.
#[derive(Clone, Debug)]
struct RouteDraft {
    /// The line of its `location`.
    line: usize,
    /// Its place among the routes as the locations come.
    order: usize,
    host: Option<String>,
    path: String,
    upstream: String,
    rewrite_prefix: Option<String>,
    timeout: Option<Duration>,
    tries: Option<u32>,
    retry_timeout: Option<Duration>,
    retry_on: Option<Vec<&'static str>>,
    non_idempotent: bool,
    preserve_host: bool,
    set_request_headers: BTreeMap<String, String>,
    remove_request_headers: Vec<String>,
    set_response_headers: BTreeMap<String, String>,
    remove_response_headers: Vec<String>,
}

/// What a `server` block's routes share.
struct ServerContext {
    hosts: Vec<Option<String>>,
}

/// A `server` block, for the notes about listeners and default servers.
#[derive(Debug, Default)]
struct ServerSummary {
    line: usize,
    listens: Vec<SocketAddr>,
    defaults: Vec<SocketAddr>,
    /// The line of its `server_name`, when it named hosts for routes.
    hosts_line: Option<usize>,
}

/// `client_max_body_size`, where it was set.
struct BodySize {
    line: usize,
    bytes: u64,
    in_location: bool,
}

/// A `location`'s match, by its modifier.
enum LocationMatch<'a> {
    Prefix(&'a str),
    /// `^~`: a prefix that regex locations do not override.
    PrefixNoRegex(&'a str),
    Exact,
    Regex,
    Named,
}

fn location_match(args: &[String]) -> Option<LocationMatch<'_>> {
    match args {
        [modifier, path] => match modifier.as_str() {
            "=" => Some(LocationMatch::Exact),
            "~" | "~*" => Some(LocationMatch::Regex),
            "^~" => Some(LocationMatch::PrefixNoRegex(path)),
            _ => None,
        },
        [path] => Some(if let Some(rest) = path.strip_prefix("^~") {
            LocationMatch::PrefixNoRegex(rest)
        } else if path.starts_with('=') {
            LocationMatch::Exact
        } else if path.starts_with('~') {
            LocationMatch::Regex
        } else if path.starts_with('@') {
            LocationMatch::Named
        } else {
            LocationMatch::Prefix(path)
        }),
        _ => None,
    }
}

/// `proxy_pass`, read.
enum ProxyPass<'a> {
    Http {
        authority: &'a str,
        uri: Option<&'a str>,
    },
    Https,
    Variables,
    Unix,
    Other,
}

fn proxy_pass(url: &str) -> ProxyPass<'_> {
    let scheme = url.get(..8).map(str::to_ascii_lowercase);
    if scheme.as_deref() == Some("https://") {
        return ProxyPass::Https;
    }
    let Some(rest) = url
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .and_then(|_| url.get(7..))
    else {
        return ProxyPass::Other;
    };
    if rest.contains('$') {
        return ProxyPass::Variables;
    }
    if rest.starts_with("unix:") {
        return ProxyPass::Unix;
    }
    let (authority, uri) = match rest.find('/') {
        Some(slash) => (&rest[..slash], Some(&rest[slash..])),
        None => (rest, None),
    };
    if authority.is_empty() {
        return ProxyPass::Other;
    }
    ProxyPass::Http { authority, uri }
}

/// The retry conditions of `proxy_next_upstream` the gateway has.
const RETRY_CONDITIONS: &[&str] = &[
    "error", "timeout", "http_500", "http_502", "http_503", "http_504", "http_429", "http_403",
    "http_404",
];

/// Headers between two hops, not for a route to set.
const HOP_BY_HOP: &[&str] = &[
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

/// A body limit for "no limit": 1 TiB.
const UNLIMITED_BODY: u64 = 1 << 40;

#[derive(Default)]
struct Converter {
    notes: Vec<(usize, String)>,
    zones: HashMap<String, Zone>,
    upstreams: Vec<UpstreamDraft>,
    listens: Vec<SocketAddr>,
    servers: Vec<ServerSummary>,
    routes: Vec<RouteDraft>,
    body_sizes: Vec<BodySize>,
    header_bytes: Vec<(usize, usize)>,
    header_timeouts: Vec<(usize, Duration)>,
    max_connections: Option<usize>,
}

impl Converter {
    fn note(&mut self, line: usize, text: impl Into<String>) {
        let text = text.into();
        // Inherited settings are looked at once per location: say it once.
        if !self
            .notes
            .iter()
            .any(|(at, said)| *at == line && *said == text)
        {
            self.notes.push((line, text));
        }
    }

    fn not_converted(&mut self, directive: &Directive) {
        let block = if directive.block.is_some() {
            " { }"
        } else {
            ""
        };
        let text = format!(
            "{}{block}: not converted{}",
            directive.name,
            reason(&directive.name)
        );
        self.note(directive.line, text);
    }

    /// The one argument of `directive`, or a note that it has not one.
    fn single<'a>(&mut self, directive: &'a Directive) -> Option<&'a str> {
        match directive.args.as_slice() {
            [value] => Some(value),
            _ => {
                let text = format!("{}: expects one value: not converted", directive.name);
                self.note(directive.line, text);
                None
            }
        }
    }

    fn time(&mut self, directive: &Directive) -> Option<Duration> {
        let value = self.single(directive)?;
        match nginx_duration(value) {
            Ok(duration) => Some(duration),
            Err(problem) => {
                let text = format!("{}: {problem}: not converted", directive.name);
                self.note(directive.line, text);
                None
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, directive: &Directive) -> Option<T> {
        let value = self.single(directive)?;
        match value.parse() {
            Ok(number) => Some(number),
            Err(_) => {
                let text = format!(
                    "{}: {value:?} is not a number the gateway takes: not converted",
                    directive.name
                );
                self.note(directive.line, text);
                None
            }
        }
    }

    // -- The first pass: what locations refer to. ---------------------------

    fn collect(&mut self, directives: &[Directive], level: Level) -> Result<(), ImportError> {
        for directive in directives {
            match (directive.name.as_str(), &directive.block) {
                ("http", Some(block)) if level == Level::Main => {
                    self.collect(block, Level::Http)?
                }
                ("upstream", Some(block)) => self.upstream(directive, block)?,
                ("limit_req_zone", None) => self.limit_req_zone(directive),
                _ => {}
            }
        }
        Ok(())
    }

    fn limit_req_zone(&mut self, directive: &Directive) {
        let mut key = String::new();
        let mut zone = None;
        let mut rate = String::from("?");
        for arg in &directive.args {
            if let Some(value) = arg.strip_prefix("zone=") {
                zone = Some(value.split(':').next().unwrap_or(value).to_owned());
            } else if let Some(value) = arg.strip_prefix("rate=") {
                value.clone_into(&mut rate);
            } else if key.is_empty() {
                arg.clone_into(&mut key);
            }
        }
        let Some(zone) = zone else {
            self.note(
                directive.line,
                "limit_req_zone: no zone=NAME: not converted",
            );
            return;
        };
        self.note(
            directive.line,
            format!(
                "limit_req_zone {zone} ({rate} per {key}): not converted yet: rate limiting comes with the gateway's middleware"
            ),
        );
        self.zones.insert(zone, Zone { key, rate });
    }

    fn upstream(&mut self, directive: &Directive, block: &[Directive]) -> Result<(), ImportError> {
        let line = directive.line;
        let [name] = directive.args.as_slice() else {
            self.note(line, "upstream: expects one name: not converted");
            return Ok(());
        };
        if self
            .upstreams
            .iter()
            .any(|upstream| upstream.name.eq_ignore_ascii_case(name))
        {
            self.note(
                line,
                format!("upstream {name}: a second upstream of that name: not converted"),
            );
            return Ok(());
        }
        let mut draft = UpstreamDraft::new(name, false);
        // Host names, which only a resolver can follow: (line, host, port).
        let mut names: Vec<(usize, String, u16)> = Vec::new();
        for child in block {
            shape(child, true)?;
            if child.block.is_some() {
                self.not_converted(child);
                continue;
            }
            let args = child.args.as_slice();
            match child.name.as_str() {
                "server" => self.upstream_server(child, &mut draft, &mut names),
                "keepalive" => draft.keepalive = self.number(child).or(draft.keepalive),
                "keepalive_timeout" => {
                    draft.keepalive_timeout = self.time(child).or(draft.keepalive_timeout)
                }
                "keepalive_requests" => {
                    draft.keepalive_requests = self.number(child).or(draft.keepalive_requests)
                }
                "least_conn" => draft.balance = Some("least_conn"),
                "ip_hash" => draft.balance = Some("ip_hash"),
                "hash" => {
                    let consistent = match args {
                        [_] => Some(false),
                        [_, word] if word == "consistent" => Some(true),
                        _ => None,
                    };
                    match (args.first(), consistent) {
                        (Some(key), Some(consistent)) => {
                            if let Some(problem) = variable_problem(key) {
                                self.note(
                                    child.line,
                                    format!("hash {key}: {problem}: not converted (round robin instead)"),
                                );
                            } else {
                                draft.balance = Some("hash");
                                draft.hash_key = Some(key.clone());
                                draft.consistent = consistent;
                            }
                        }
                        _ => self.note(
                            child.line,
                            "hash: expects a key and maybe consistent: not converted",
                        ),
                    }
                }
                "random" => {
                    draft.balance = Some("random_two");
                    match args {
                        [] => self.note(
                            child.line,
                            "random: converted to balance = \"random_two\" (nginx's plain random picks one server at random; random_two picks the less busy of two)",
                        ),
                        [two] | [two, _] if two == "two" => {
                            if let [_, method] = args {
                                if method != "least_conn" {
                                    self.note(
                                        child.line,
                                        format!("random two {method}: converted to random two least_conn ({method} is not converted)"),
                                    );
                                }
                            }
                        }
                        _ => self.note(
                            child.line,
                            format!("random {}: converted to balance = \"random_two\"", args.join(" ")),
                        ),
                    }
                }
                "zone" => self.note(
                    child.line,
                    "zone: not needed (the gateway's threads share one state per group)",
                ),
                "include" => self.include(child),
                _ => self.not_converted(child),
            }
        }
        if !draft.servers.is_empty() {
            for (line, host, port) in &names {
                self.note(
                    *line,
                    format!(
                        "server {host}:{port}: a host name cannot be a static server (the gateway needs an IP address; resolve = \"dns:///{host}:{port}\" follows a name, for a group of one name): not converted"
                    ),
                );
            }
        } else if let Some(((line, host, port), others)) = names.split_first() {
            draft.resolve = Some(format!("dns:///{host}:{port}"));
            self.note(
                *line,
                format!(
                    "server {host}:{port}: a host name: upstream {name} resolves it instead, resolve = \"dns:///{host}:{port}\" (the gateway follows the name's addresses as they change; the server's parameters do not carry over)"
                ),
            );
            for (line, host, port) in others {
                self.note(
                    *line,
                    format!("server {host}:{port}: a second host name: not converted (a group resolves one name)"),
                );
            }
        } else {
            draft.usable = false;
            self.note(
                line,
                format!("upstream {name}: no server the gateway can use: not converted, nor the locations that proxy to it"),
            );
        }
        self.upstreams.push(draft);
        Ok(())
    }

    fn upstream_server(
        &mut self,
        directive: &Directive,
        draft: &mut UpstreamDraft,
        names: &mut Vec<(usize, String, u16)>,
    ) {
        let line = directive.line;
        let Some((address, parameters)) = directive.args.split_first() else {
            self.note(line, "server: expects an address: not converted");
            return;
        };
        let mut server = ServerDraft {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            weight: None,
            max_fails: None,
            fail_timeout: None,
            backup: false,
            down: false,
            max_conns: None,
        };
        for parameter in parameters {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            let understood = match key {
                "weight" => value
                    .parse::<u32>()
                    .ok()
                    .filter(|&weight| weight > 0)
                    .map(|weight| server.weight = Some(weight)),
                "max_fails" => value
                    .parse::<u32>()
                    .ok()
                    .map(|fails| server.max_fails = Some(fails)),
                "fail_timeout" => nginx_duration(value)
                    .ok()
                    .map(|timeout| server.fail_timeout = Some(timeout)),
                "max_conns" => value
                    .parse::<usize>()
                    .ok()
                    .map(|conns| server.max_conns = Some(conns)),
                "backup" if value.is_empty() => {
                    server.backup = true;
                    Some(())
                }
                "down" if value.is_empty() => {
                    server.down = true;
                    Some(())
                }
                _ => None,
            };
            if understood.is_none() {
                self.note(line, format!("server {address} {parameter}: not converted"));
            }
        }
        match server_address(address) {
            Ok(ServerAddress::Socket(socket)) => {
                server.address = socket;
                draft.servers.push(server);
            }
            Ok(ServerAddress::Name { host, port }) => names.push((line, host, port)),
            Ok(ServerAddress::Unix) => self.note(
                line,
                format!("server {address}: a unix socket: not converted (the gateway's upstreams are TCP)"),
            ),
            Err(problem) => self.note(line, format!("server {address}: {problem}: not converted")),
        }
    }

    // -- The second pass: levels, servers, locations. -------------------------

    fn include(&mut self, directive: &Directive) {
        let text = format!(
            "include {}: not followed (convert that file too, or paste it in here)",
            directive.args.join(" ")
        );
        self.note(directive.line, text);
    }

    /// The directives nginx passes down from `http` to `server` to
    /// `location`, and the few that may stand at any of them. False for a
    /// directive it does not handle.
    fn inheritable(
        &mut self,
        directive: &Directive,
        level: Level,
        settings: &mut Inherited,
        replaced: &mut Replaced,
    ) -> bool {
        let line = directive.line;
        let args = directive.args.as_slice();
        match directive.name.as_str() {
            "proxy_set_header" => {
                if !std::mem::replace(&mut replaced.request_headers, true) {
                    settings.request_headers.clear();
                }
                let header = match args {
                    [name, value] => self.request_header(line, name, value),
                    _ => {
                        self.note(
                            line,
                            "proxy_set_header: expects a name and a value: not converted",
                        );
                        RequestHeader::Nothing
                    }
                };
                settings.request_headers.push(header);
            }
            "add_header" => {
                if !std::mem::replace(&mut replaced.response_headers, true) {
                    settings.response_headers.clear();
                }
                self.add_header(line, args, settings);
            }
            "proxy_hide_header" => {
                if !std::mem::replace(&mut replaced.hidden_headers, true) {
                    settings.hidden_headers.clear();
                }
                match args {
                    [name] => match header_name(name) {
                        Some(name) => settings.hidden_headers.push(name),
                        None => self.note(
                            line,
                            format!("proxy_hide_header {name}: not a header name: not converted"),
                        ),
                    },
                    _ => self.note(line, "proxy_hide_header: expects a name: not converted"),
                }
            }
            "proxy_next_upstream" => {
                settings.next_upstream = Some(self.next_upstream(line, args));
            }
            "proxy_next_upstream_tries" => {
                if let Some(tries) = self.number::<u32>(directive) {
                    settings.tries = Some((line, tries));
                }
            }
            "proxy_next_upstream_timeout" => {
                if let Some(timeout) = self.time(directive) {
                    settings.retry_timeout = Some(timeout);
                }
            }
            "proxy_read_timeout" => {
                if let Some(timeout) = self.time(directive) {
                    settings.read_timeout = Some(timeout);
                }
            }
            "proxy_connect_timeout" => {
                if let Some(timeout) = self.time(directive) {
                    settings.connect_timeout = Some((line, timeout));
                }
            }
            "proxy_send_timeout" => self.note(
                line,
                "proxy_send_timeout: not converted (a try is bounded by the route's timeout)",
            ),
            "proxy_http_version" => {
                if args != ["1.1"] {
                    self.note(
                        line,
                        format!(
                            "proxy_http_version {}: not converted (the gateway speaks HTTP/1.1 to upstreams, kept alive)",
                            args.join(" ")
                        ),
                    );
                }
            }
            "client_max_body_size" => {
                if let Some(value) = self.single(directive) {
                    match nginx_size(value) {
                        Ok(bytes) => self.body_sizes.push(BodySize {
                            line,
                            bytes,
                            in_location: level == Level::Location,
                        }),
                        Err(problem) => self.note(
                            line,
                            format!("client_max_body_size: {problem}: not converted"),
                        ),
                    }
                }
            }
            "limit_req" => self.limit_req(directive),
            "include" => self.include(directive),
            _ => return false,
        }
        true
    }

    fn request_header(&mut self, line: usize, name: &str, value: &str) -> RequestHeader {
        let shown = format!("proxy_set_header {name}");
        let Some(lower) = header_name(name) else {
            self.note(line, format!("{shown}: not a header name: not converted"));
            return RequestHeader::Nothing;
        };
        match lower.as_str() {
            "host" => match value {
                "$host" | "${host}" | "$http_host" | "${http_host}" => {
                    return RequestHeader::KeepHost
                }
                "$proxy_host" | "${proxy_host}" => return RequestHeader::ProxyHost,
                _ => {}
            },
            "connection" => {
                if !value.is_empty() {
                    self.note(
                        line,
                        format!("{shown} {value:?}: not converted (the gateway manages its upstream connections itself)"),
                    );
                }
                return RequestHeader::Nothing;
            }
            "x-forwarded-for" if value == "$proxy_add_x_forwarded_for" => {
                // The gateway appends the client's address itself.
                return RequestHeader::Nothing;
            }
            hop if HOP_BY_HOP.contains(&hop) => {
                self.note(
                    line,
                    format!("{shown}: not converted (a hop-by-hop header, which the gateway does not forward)"),
                );
                return RequestHeader::Nothing;
            }
            _ => {}
        }
        if value.is_empty() {
            return RequestHeader::Remove(lower);
        }
        if let Some(problem) = variable_problem(value) {
            self.note(line, format!("{shown} {value}: {problem}: not converted"));
            return RequestHeader::Nothing;
        }
        RequestHeader::Set {
            name: lower,
            value: value.to_owned(),
        }
    }

    fn add_header(&mut self, line: usize, args: &[String], settings: &mut Inherited) {
        let (name, value, always) = match args {
            [name, value] => (name, value, false),
            [name, value, always] if always == "always" => (name, value, true),
            _ => {
                self.note(
                    line,
                    "add_header: expects a name, a value and maybe always: not converted",
                );
                return;
            }
        };
        let Some(lower) = header_name(name) else {
            self.note(
                line,
                format!("add_header {name}: not a header name: not converted"),
            );
            return;
        };
        if value.is_empty() {
            // nginx adds no header with an empty value.
            return;
        }
        if let Some(problem) = variable_problem(value) {
            self.note(
                line,
                format!("add_header {name} {value}: {problem}: not converted"),
            );
            return;
        }
        if !always {
            self.note(
                line,
                format!("add_header {name}: set on every upstream response (nginx, without always: on 2xx and 3xx answers only)"),
            );
        }
        settings.response_headers.push((lower, value.clone()));
    }

    fn next_upstream(&mut self, line: usize, args: &[String]) -> NextUpstream {
        let mut next = NextUpstream {
            on: Vec::new(),
            off: false,
            non_idempotent: false,
        };
        for arg in args {
            let condition = arg.as_str();
            if let Some(&known) = RETRY_CONDITIONS.iter().find(|&&known| known == condition) {
                if !next.on.contains(&known) {
                    next.on.push(known);
                }
                continue;
            }
            match condition {
                "off" => next.off = true,
                "non_idempotent" => next.non_idempotent = true,
                "invalid_header" => self.note(
                    line,
                    "proxy_next_upstream invalid_header: not converted (the gateway does not retry on an invalid response head)",
                ),
                other => self.note(
                    line,
                    format!("proxy_next_upstream {other}: not converted"),
                ),
            }
        }
        next
    }

    fn limit_req(&mut self, directive: &Directive) {
        let mut zone = None;
        let mut burst = None;
        let mut delay = None;
        for arg in &directive.args {
            if let Some(value) = arg.strip_prefix("zone=") {
                zone = Some(value);
            } else if let Some(value) = arg.strip_prefix("burst=") {
                burst = Some(value);
            } else if arg == "nodelay" {
                delay = Some("nodelay".to_owned());
            } else if let Some(value) = arg.strip_prefix("delay=") {
                delay = Some(format!("delay {value}"));
            }
        }
        let Some(zone) = zone else {
            self.note(directive.line, "limit_req: no zone=NAME: not converted");
            return;
        };
        let mut detail = match self.zones.get(zone) {
            Some(defined) => format!("{} per {}", defined.rate, defined.key),
            None => "its limit_req_zone is not in this file".to_owned(),
        };
        if let Some(burst) = burst {
            detail.push_str(&format!(", burst {burst}"));
        }
        if let Some(delay) = delay {
            detail.push_str(&format!(", {delay}"));
        }
        self.note(
            directive.line,
            format!("limit_req zone {zone} ({detail}): not converted yet: rate limiting comes with the gateway's middleware"),
        );
    }

    fn header_limits(&mut self, directive: &Directive) -> bool {
        let line = directive.line;
        match directive.name.as_str() {
            "client_header_timeout" => {
                if let Some(timeout) = self.time(directive) {
                    self.header_timeouts.push((line, timeout));
                }
            }
            "large_client_header_buffers" => match directive.args.as_slice() {
                [count, size] => {
                    let total = count
                        .parse::<u64>()
                        .ok()
                        .zip(nginx_size(size).ok())
                        .and_then(|(count, size)| count.checked_mul(size))
                        .and_then(|total| usize::try_from(total).ok())
                        .filter(|&total| i64::try_from(total).is_ok());
                    match total {
                        Some(total) => {
                            self.header_bytes.push((line, total));
                            self.note(
                                line,
                                format!("large_client_header_buffers {count} {size}: max_header_bytes = {total}, the buffers together (nginx also holds each line of a request's head to one buffer, {size})"),
                            );
                        }
                        None => self.note(
                            line,
                            format!("large_client_header_buffers {count} {size}: not a number and a size: not converted"),
                        ),
                    }
                }
                _ => self.note(
                    line,
                    "large_client_header_buffers: expects a number and a size: not converted",
                ),
            },
            _ => return false,
        }
        true
    }

    /// The `http` level (or the top of the text): its directives, then its
    /// `server` blocks.
    fn http_level(
        &mut self,
        directives: &[Directive],
        level: Level,
        inherited: &Inherited,
    ) -> Result<(), ImportError> {
        let mut settings = inherited.clone();
        let mut replaced = Replaced::default();
        // nginx applies a level's directives wherever they stand in it,
        // before or after the blocks inside: the simple ones go first.
        for directive in directives.iter().filter(|d| d.block.is_none()) {
            shape(directive, false)?;
            if self.inheritable(directive, level, &mut settings, &mut replaced)
                || self.header_limits(directive)
            {
                continue;
            }
            match directive.name.as_str() {
                // Read in the first pass.
                "limit_req_zone" => {}
                "worker_processes" if level == Level::Main => {
                    let text = match directive.args.as_slice() {
                        [auto] if auto == "auto" => "worker_processes auto: not converted (sinew gateway runs one thread per core by default; --workers N sets it)".to_owned(),
                        args => format!(
                            "worker_processes {}: not converted (run sinew gateway --workers {})",
                            args.join(" "),
                            args.join(" ")
                        ),
                    };
                    self.note(directive.line, text);
                }
                _ => self.not_converted(directive),
            }
        }
        for directive in directives {
            let Some(block) = &directive.block else {
                continue;
            };
            shape(directive, false)?;
            match directive.name.as_str() {
                "http" if level == Level::Main => self.http_level(block, Level::Http, &settings)?,
                "events" if level == Level::Main => self.events(block)?,
                "server" => self.server(directive, block, &settings)?,
                // Read in the first pass.
                "upstream" => {}
                _ => self.not_converted(directive),
            }
        }
        Ok(())
    }

    fn events(&mut self, directives: &[Directive]) -> Result<(), ImportError> {
        for directive in directives {
            shape(directive, false)?;
            if directive.name == "worker_connections" && directive.block.is_none() {
                if let Some(connections) = self.number::<usize>(directive) {
                    self.max_connections = Some(connections);
                    self.note(
                        directive.line,
                        format!("worker_connections {connections}: [server] max_connections = {connections} (nginx counts it per worker process, upstream connections included; sinew gateway --workers sets the threads)"),
                    );
                }
            } else {
                self.not_converted(directive);
            }
        }
        Ok(())
    }

    fn server(
        &mut self,
        directive: &Directive,
        block: &[Directive],
        inherited: &Inherited,
    ) -> Result<(), ImportError> {
        let mut settings = inherited.clone();
        let mut replaced = Replaced::default();
        let mut summary = ServerSummary {
            line: directive.line,
            ..ServerSummary::default()
        };
        let mut listened = false;
        let mut names: Vec<(usize, String)> = Vec::new();
        for child in block.iter().filter(|d| d.block.is_none()) {
            shape(child, false)?;
            if self.inheritable(child, Level::Server, &mut settings, &mut replaced)
                || self.header_limits(child)
            {
                continue;
            }
            match child.name.as_str() {
                "listen" => {
                    listened = true;
                    self.listen(child, &mut summary);
                }
                "server_name" => {
                    names.extend(child.args.iter().map(|name| (child.line, name.clone())));
                }
                _ => self.not_converted(child),
            }
        }
        if !listened {
            let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
            self.note(
                directive.line,
                "server: no listen: listen = [\"0.0.0.0:80\"], nginx's default",
            );
            self.add_listen(address, &mut summary);
        }
        let hosts = self.hosts(&names);
        if hosts.iter().any(Option::is_some) {
            summary.hosts_line = names.first().map(|(line, _)| *line);
        }
        self.servers.push(summary);
        let context = ServerContext { hosts };
        for child in block {
            let Some(inner) = &child.block else {
                continue;
            };
            shape(child, false)?;
            match child.name.as_str() {
                "location" => self.location(child, inner, &settings, &context)?,
                _ => self.not_converted(child),
            }
        }
        Ok(())
    }

    fn add_listen(&mut self, address: SocketAddr, summary: &mut ServerSummary) {
        if !summary.listens.contains(&address) {
            summary.listens.push(address);
        }
        if !self.listens.contains(&address) {
            self.listens.push(address);
        }
    }

    fn listen(&mut self, directive: &Directive, summary: &mut ServerSummary) {
        let line = directive.line;
        let Some((address, parameters)) = directive.args.split_first() else {
            self.note(line, "listen: expects an address: not converted");
            return;
        };
        let mut left_out = None;
        let mut default = false;
        for parameter in parameters {
            let key = parameter.split('=').next().unwrap_or(parameter);
            match key {
                "ssl" => left_out = Some("TLS is not converted (terminate it in front of the gateway)"),
                "quic" => left_out = Some("HTTP/3 is not converted"),
                "default_server" | "default" => default = true,
                "proxy_protocol" => self.note(
                    line,
                    format!("listen {address} proxy_protocol: not converted (the gateway does not read the PROXY protocol header)"),
                ),
                // Socket tuning, or what the gateway does on every
                // listener anyway (HTTP/2 without TLS).
                "http2" | "reuseport" | "deferred" | "bind" | "backlog" | "rcvbuf"
                | "sndbuf" | "fastopen" | "ipv6only" | "so_keepalive" | "accept_filter"
                | "setfib" => {}
                _ => self.note(line, format!("listen {address} {parameter}: not converted")),
            }
        }
        if let Some(why) = left_out {
            let text = format!(
                "listen {}: {why}: this listener is left out",
                directive.args.join(" ")
            );
            self.note(line, text);
            return;
        }
        match listen_address(address) {
            Ok(socket) => {
                if address.starts_with("localhost") {
                    self.note(line, format!("listen {address}: listens on {socket}"));
                }
                self.add_listen(socket, summary);
                if default {
                    summary.defaults.push(socket);
                }
            }
            Err(problem) => self.note(line, format!("listen {address}: {problem}: not converted")),
        }
    }

    /// The hosts of a server's routes: `None` alone for any host.
    fn hosts(&mut self, names: &[(usize, String)]) -> Vec<Option<String>> {
        let mut hosts: Vec<String> = Vec::new();
        let mut push = |host: String| {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        };
        let mut left_out = None;
        for (line, name) in names {
            let name = name.to_ascii_lowercase();
            if name.is_empty() || name == "_" {
                continue;
            }
            if name.starts_with('~') {
                self.note(
                    *line,
                    format!("server_name {name}: a regular expression: not converted (routes match exact names and *.suffix)"),
                );
                left_out = Some(*line);
            } else if let Some(domain) = name.strip_prefix('.') {
                // nginx's `.example.com` is the name and all below it.
                push(domain.to_owned());
                push(format!("*.{domain}"));
            } else if name
                .strip_prefix("*.")
                .is_some_and(|domain| !domain.contains(['*', '$']))
            {
                push(name);
            } else if name.contains(['*', '$']) {
                self.note(
                    *line,
                    format!(
                        "server_name {name}: not converted (routes match exact names and *.suffix)"
                    ),
                );
                left_out = Some(*line);
            } else {
                push(name);
            }
        }
        if hosts.is_empty() {
            if let Some(line) = left_out {
                self.note(
                    line,
                    "server_name: no name could be converted: this server's routes take any host",
                );
            }
            return vec![None];
        }
        hosts.into_iter().map(Some).collect()
    }

    fn location(
        &mut self,
        directive: &Directive,
        block: &[Directive],
        inherited: &Inherited,
        server: &ServerContext,
    ) -> Result<(), ImportError> {
        let line = directive.line;
        let shown = format!("location {}", directive.args.join(" "));
        let path = match location_match(&directive.args) {
            None => {
                self.note(line, format!("{shown}: expects a path: not converted"));
                return Ok(());
            }
            Some(LocationMatch::Exact) => {
                self.note(
                    line,
                    format!("{shown}: an exact match: not converted (the gateway matches prefixes, and as a prefix it would take longer paths too)"),
                );
                return Ok(());
            }
            Some(LocationMatch::Regex) => {
                self.note(
                    line,
                    format!("{shown}: a regular expression: not converted (the gateway matches prefixes)"),
                );
                return Ok(());
            }
            Some(LocationMatch::Named) => {
                self.note(line, format!("{shown}: a named location: not converted"));
                return Ok(());
            }
            Some(LocationMatch::PrefixNoRegex(path)) => {
                self.note(
                    line,
                    format!("{shown}: converted as a plain prefix, {path} (no regular expression is converted to take precedence over it)"),
                );
                path
            }
            Some(LocationMatch::Prefix(path)) => path,
        };
        if !path.starts_with('/') {
            self.note(
                line,
                format!("{shown}: the path does not start with /: not converted"),
            );
            return Ok(());
        }
        let target = self.location_target(&shown, line, block);
        // A location the gateway leaves out is one note, not one per
        // directive in it; what it passes down to the locations inside is
        // still read.
        let left_out = target.is_none();
        let mut settings = inherited.clone();
        let mut replaced = Replaced::default();
        for child in block.iter().filter(|d| d.block.is_none()) {
            shape(child, false)?;
            if child.name == "proxy_pass"
                || self.inheritable(child, Level::Location, &mut settings, &mut replaced)
                || left_out
            {
                continue;
            }
            self.not_converted(child);
        }
        if let Some(target) = target {
            self.route(line, path, &target, &settings, server);
        }
        for child in block {
            let Some(inner) = &child.block else {
                continue;
            };
            shape(child, false)?;
            match child.name.as_str() {
                "location" => self.location(child, inner, &settings, server)?,
                _ if left_out => {}
                _ => self.not_converted(child),
            }
        }
        Ok(())
    }

    /// Where a location's `proxy_pass` goes, or a note why it is left out.
    fn location_target(&mut self, shown: &str, line: usize, block: &[Directive]) -> Option<Target> {
        let mut passes = block
            .iter()
            .filter(|child| child.name == "proxy_pass" && child.block.is_none());
        let Some(pass) = passes.next() else {
            self.note(
                line,
                format!("{shown}: no proxy_pass: not converted (the gateway only proxies; the location's directives are left out)"),
            );
            return None;
        };
        if let Some(second) = passes.next() {
            self.note(
                second.line,
                "proxy_pass: a second one in the location: not converted",
            );
        }
        let [url] = pass.args.as_slice() else {
            self.note(
                pass.line,
                format!("proxy_pass: expects a URL: {shown} is not converted"),
            );
            return None;
        };
        let why = match proxy_pass(url) {
            ProxyPass::Http { authority, uri } => match self.upstream_for(pass.line, authority) {
                Ok(upstream) => {
                    return Some(Target {
                        line: pass.line,
                        upstream,
                        authority: authority.to_owned(),
                        rewrite_prefix: uri.map(str::to_owned),
                    })
                }
                Err(why) => why,
            },
            ProxyPass::Https => "TLS to upstreams is not converted".to_owned(),
            ProxyPass::Variables => {
                "an address made of variables is not converted (a route names one upstream group)"
                    .to_owned()
            }
            ProxyPass::Unix => {
                "a unix socket is not converted (the gateway's upstreams are TCP)".to_owned()
            }
            ProxyPass::Other => "not an http:// URL".to_owned(),
        };
        self.note(
            pass.line,
            format!("proxy_pass {url}: {why}: {shown} is not converted"),
        );
        None
    }

    /// The upstream group a `proxy_pass http://AUTHORITY` goes to: its
    /// `upstream` block, or one made for the address; or why there is none.
    fn upstream_for(&mut self, line: usize, authority: &str) -> Result<String, String> {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port))
                if !host.starts_with('[') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (host, Some(port))
            }
            _ => (authority, None),
        };
        if let Some(upstream) = self
            .upstreams
            .iter()
            .find(|upstream| !upstream.implicit && upstream.name.eq_ignore_ascii_case(host))
        {
            if !upstream.usable {
                return Err(format!(
                    "upstream {} has no server the gateway can use",
                    upstream.name
                ));
            }
            let name = upstream.name.clone();
            if let Some(port) = port {
                self.note(
                    line,
                    format!("proxy_pass http://{authority}: the port {port} is left out (upstream {name} has its servers' ports)"),
                );
            }
            return Ok(name);
        }
        let (name, draft) = match server_address(authority)? {
            ServerAddress::Socket(address) => {
                let name = format!("{}_{}", address.ip(), address.port());
                let mut draft = UpstreamDraft::new(&name, true);
                draft.servers.push(ServerDraft {
                    address,
                    weight: None,
                    max_fails: None,
                    fail_timeout: None,
                    backup: false,
                    down: false,
                    max_conns: None,
                });
                (name, draft)
            }
            ServerAddress::Name { host, port } => {
                let name = format!("{host}_{port}");
                let resolve = format!("dns:///{host}:{port}");
                self.note(
                    line,
                    format!("proxy_pass http://{authority}: a host name: upstream \"{name}\" resolves it, resolve = \"{resolve}\" (nginx resolved it once, at start; the gateway follows its addresses)"),
                );
                let mut draft = UpstreamDraft::new(&name, true);
                draft.resolve = Some(resolve);
                (name, draft)
            }
            ServerAddress::Unix => {
                return Err(
                    "a unix socket is not converted (the gateway's upstreams are TCP)".to_owned(),
                )
            }
        };
        // One group per address, whichever locations proxy to it; a block
        // of the same name keeps its name.
        let mut unique = name.clone();
        while self
            .upstreams
            .iter()
            .any(|upstream| !upstream.implicit && upstream.name == unique)
        {
            unique.push_str("_direct");
        }
        if !self
            .upstreams
            .iter()
            .any(|upstream| upstream.name == unique)
        {
            let mut draft = draft;
            draft.name.clone_from(&unique);
            self.upstreams.push(draft);
        }
        Ok(unique)
    }

    fn route(
        &mut self,
        line: usize,
        path: &str,
        target: &Target,
        settings: &Inherited,
        server: &ServerContext,
    ) {
        let mut route = RouteDraft {
            line,
            order: 0,
            host: None,
            path: path.to_owned(),
            upstream: target.upstream.clone(),
            rewrite_prefix: target.rewrite_prefix.clone(),
            timeout: settings.read_timeout,
            tries: None,
            retry_timeout: settings.retry_timeout.filter(|timeout| !timeout.is_zero()),
            retry_on: None,
            non_idempotent: false,
            preserve_host: true,
            set_request_headers: BTreeMap::new(),
            remove_request_headers: Vec::new(),
            set_response_headers: settings.response_headers.iter().cloned().collect(),
            remove_response_headers: settings.hidden_headers.clone(),
        };
        if let Some((connect_line, timeout)) = settings.connect_timeout {
            if let Some(upstream) = self
                .upstreams
                .iter_mut()
                .find(|upstream| upstream.name == target.upstream)
            {
                if !upstream.connect_timeouts.contains(&(connect_line, timeout)) {
                    upstream.connect_timeouts.push((connect_line, timeout));
                }
            }
        }
        let off = settings.next_upstream.as_ref().is_some_and(|next| next.off);
        if let Some(next) = &settings.next_upstream {
            if !next.off {
                route.retry_on = Some(next.on.clone());
                route.non_idempotent = next.non_idempotent;
            }
        }
        if off {
            route.tries = Some(1);
        } else if let Some((tries_line, tries)) = settings.tries {
            route.tries = Some(if tries > 0 {
                tries
            } else {
                self.unlimited_tries(tries_line, &target.upstream)
            });
        }
        let mut host = None;
        for header in &settings.request_headers {
            match header {
                RequestHeader::KeepHost => host = Some(true),
                RequestHeader::ProxyHost => host = Some(false),
                RequestHeader::Set { name, value } => {
                    if name == "host" {
                        host = Some(true);
                    }
                    route
                        .set_request_headers
                        .insert(name.clone(), value.clone());
                }
                RequestHeader::Remove(name) => {
                    if !route.remove_request_headers.contains(name) {
                        route.remove_request_headers.push(name.clone());
                    }
                }
                RequestHeader::Nothing => {}
            }
        }
        if host != Some(true) {
            route.preserve_host = false;
            self.note(
                target.line,
                format!(
                    "proxy_pass: nginx sends Host: {} (the upstream's name, $proxy_host); the gateway sends the server's address instead: preserve_host = false (proxy_set_header Host $host keeps the client's)",
                    target.authority
                ),
            );
        }
        for host in &server.hosts {
            let mut route = route.clone();
            route.host.clone_from(host);
            route.order = self.routes.len();
            self.routes.push(route);
        }
    }

    /// nginx's `proxy_next_upstream_tries 0`: every server once.
    fn unlimited_tries(&mut self, line: usize, upstream: &str) -> u32 {
        let servers = self
            .upstreams
            .iter()
            .find(|draft| draft.name == upstream)
            .filter(|draft| draft.resolve.is_none())
            .map(|draft| draft.servers.iter().filter(|server| !server.down).count());
        match servers {
            Some(count) => {
                let tries = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
                self.note(
                    line,
                    format!("proxy_next_upstream_tries 0: nginx tries every server: retry.tries = {tries}, the servers of upstream {upstream}"),
                );
                tries
            }
            None => {
                let tries = crate::config::Retry::default().tries;
                self.note(
                    line,
                    format!("proxy_next_upstream_tries 0: nginx tries every server; upstream {upstream} is resolved, so retry.tries = {tries}"),
                );
                tries
            }
        }
    }

    // -- The end: checks across the file, and the TOML. ----------------------

    fn finish(mut self) -> Result<Imported, ImportError> {
        self.listener_notes();
        let server = self.server_settings();
        self.order_routes();
        let connect_timeouts = self.connect_timeouts();
        let toml = self
            .write(&server, &connect_timeouts)
            .map_err(|_| ImportError {
                line: None,
                message: "the gateway.toml could not be written".to_owned(),
            })?;
        // The contract is a file the gateway takes: hold the importer to it.
        if let Err(error) = Config::from_toml(&toml) {
            return Err(ImportError {
                line: None,
                message: format!(
                    "the converted gateway.toml is refused, a bug of the importer: {error}"
                ),
            });
        }
        self.notes.sort_by_key(|(line, _)| *line);
        let notes = self
            .notes
            .into_iter()
            .map(|(line, text)| format!("line {line}: {text}"))
            .collect();
        Ok(Imported { toml, notes })
    }

    fn listener_notes(&mut self) {
        if self.listens.is_empty() {
            let (line, text) = match self.servers.first() {
                None => (
                    1,
                    "server: the configuration has no server block: listen = [\"0.0.0.0:80\"], nginx's default",
                ),
                Some(first) => (
                    first.line,
                    "server: no listener could be converted: listen = [\"0.0.0.0:80\"]",
                ),
            };
            self.note(line, text);
            self.listens
                .push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80));
        }
        let mut sets: Vec<Vec<SocketAddr>> = self
            .servers
            .iter()
            .map(|server| {
                let mut set = server.listens.clone();
                set.sort();
                set
            })
            .collect();
        sets.sort();
        sets.dedup();
        let mut notes = Vec::new();
        if sets.len() > 1 {
            for server in &self.servers {
                notes.push((
                    server.line,
                    "server: its listeners serve every route of the gateway ([server] listen is one list), not only this server's locations".to_owned(),
                ));
            }
        }
        // nginx's default server for an address takes the requests for
        // names no server has; routes with hosts take only theirs.
        let mut defaults: Vec<usize> = Vec::new();
        for address in &self.listens {
            let chosen = self
                .servers
                .iter()
                .position(|server| server.defaults.contains(address))
                .or_else(|| {
                    self.servers
                        .iter()
                        .position(|server| server.listens.contains(address))
                });
            if let Some(index) = chosen {
                if !defaults.contains(&index) {
                    defaults.push(index);
                }
            }
        }
        for index in defaults {
            if let Some(line) = self.servers.get(index).and_then(|server| server.hosts_line) {
                notes.push((
                    line,
                    "server_name: this is nginx's default server of its listen, which also takes requests for other names; the gateway's routes take only the names listed (add a route without host for the rest)".to_owned(),
                ));
            }
        }
        for (line, text) in notes {
            self.note(line, text);
        }
    }

    fn server_settings(&mut self) -> ServerSettings {
        let mut settings = ServerSettings {
            max_connections: self.max_connections,
            ..ServerSettings::default()
        };
        if let Some(largest) = self.body_sizes.iter().max_by_key(|size| {
            if size.bytes == 0 {
                u64::MAX
            } else {
                size.bytes
            }
        }) {
            let line = largest.line;
            let unlimited = largest.bytes == 0;
            let bytes = if unlimited {
                UNLIMITED_BODY
            } else {
                largest.bytes
            };
            let mut distinct: Vec<u64> = self.body_sizes.iter().map(|size| size.bytes).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let in_location = self.body_sizes.iter().any(|size| size.in_location);
            settings.max_body_bytes = Some(bytes);
            if unlimited {
                self.note(
                    line,
                    format!("client_max_body_size 0: nginx does not limit bodies; max_body_bytes = {bytes} (1 TiB)"),
                );
            }
            if distinct.len() > 1 || in_location {
                let sizes: Vec<String> = distinct.iter().map(u64::to_string).collect();
                self.note(
                    line,
                    format!("client_max_body_size: set per server or location ({} bytes); the gateway has one limit for every route, the largest: max_body_bytes = {bytes}", sizes.join(", ")),
                );
            }
        }
        if let Some(&(line, bytes)) = self.header_bytes.iter().max_by_key(|(_, bytes)| *bytes) {
            settings.max_header_bytes = Some(bytes);
            if self.header_bytes.iter().any(|(_, other)| *other != bytes) {
                self.note(
                    line,
                    format!("large_client_header_buffers: differs per server; the gateway takes the largest, max_header_bytes = {bytes}"),
                );
            }
        }
        if let Some(&(line, timeout)) = self
            .header_timeouts
            .iter()
            .max_by_key(|(_, timeout)| *timeout)
        {
            settings.header_timeout = Some(timeout);
            if self
                .header_timeouts
                .iter()
                .any(|(_, other)| *other != timeout)
            {
                self.note(
                    line,
                    format!("client_header_timeout: differs per server; the gateway takes the largest, header_timeout = \"{}\"", gateway_duration(timeout)),
                );
            }
        }
        settings
    }

    /// Puts the routes in the order nginx chooses among locations, since
    /// the gateway takes the first that matches: exact hosts, wildcards
    /// (the longest first), any host; within a host the longest prefix
    /// first. A route that would never be taken is left out.
    fn order_routes(&mut self) {
        let mut first_seen: HashMap<Option<String>, usize> = HashMap::new();
        for route in &self.routes {
            let next = first_seen.len();
            first_seen.entry(route.host.clone()).or_insert(next);
        }
        let rank = |host: &Option<String>| match host {
            Some(host) if host.starts_with('*') => (1, Reverse(host.len())),
            Some(_) => (0, Reverse(0)),
            None => (2, Reverse(0)),
        };
        let mut routes = std::mem::take(&mut self.routes);
        routes.sort_by_key(|route| {
            (
                rank(&route.host),
                first_seen.get(&route.host).copied().unwrap_or(usize::MAX),
                Reverse(route.path.len()),
                route.order,
            )
        });
        let mut kept: Vec<RouteDraft> = Vec::with_capacity(routes.len());
        for route in routes {
            let earlier = kept
                .iter()
                .find(|other| other.host == route.host && other.path == route.path)
                .map(|other| other.line);
            match earlier {
                Some(earlier) => self.note(
                    route.line,
                    format!(
                        "location {}: the route of line {earlier} has the same host and path and would take all its requests: not converted",
                        route.path
                    ),
                ),
                None => kept.push(route),
            }
        }
        // A move is worth a note only where the order decides: routes that
        // can both take one request.
        for (position, route) in kept.iter().enumerate() {
            let passed = kept[position + 1..]
                .iter()
                .filter(|other| {
                    other.order < route.order && other.line != route.line && overlap(route, other)
                })
                .min_by_key(|other| other.order);
            if let Some(passed) = passed {
                let text = format!(
                    "location {}: its route comes before the one of line {} (location {}): the gateway takes the first route that matches, so routes are ordered as nginx chooses (exact hosts, wildcards, any host; the longest prefix first)",
                    route.path, passed.line, passed.path
                );
                self.note(route.line, text);
            }
        }
        self.routes = kept;
    }

    /// Each group's connect timeout: the largest its locations set.
    fn connect_timeouts(&mut self) -> HashMap<String, Duration> {
        let mut chosen = HashMap::new();
        let mut notes = Vec::new();
        for upstream in &self.upstreams {
            let Some(&(line, largest)) = upstream
                .connect_timeouts
                .iter()
                .max_by_key(|(_, timeout)| *timeout)
            else {
                continue;
            };
            let mut distinct: Vec<Duration> = upstream
                .connect_timeouts
                .iter()
                .map(|(_, timeout)| *timeout)
                .collect();
            distinct.sort();
            distinct.dedup();
            if distinct.len() > 1 {
                let shown: Vec<String> = distinct.iter().map(|d| gateway_duration(*d)).collect();
                notes.push((
                    line,
                    format!(
                        "proxy_connect_timeout: the locations proxying to upstream {} disagree ({}); the group has one connect_timeout, the largest: \"{}\"",
                        upstream.name,
                        shown.join(", "),
                        gateway_duration(largest)
                    ),
                ));
            }
            chosen.insert(upstream.name.clone(), largest);
        }
        for (line, text) in notes {
            self.note(line, text);
        }
        chosen
    }

    fn write(
        &self,
        server: &ServerSettings,
        connect_timeouts: &HashMap<String, Duration>,
    ) -> Result<String, fmt::Error> {
        let mut out = String::new();
        writeln!(
            out,
            "# Converted from nginx by sinew gateway import-nginx: see its notes."
        )?;
        writeln!(out, "[server]")?;
        let listens: Vec<String> = self
            .listens
            .iter()
            .map(|address| toml_string(&address.to_string()))
            .collect();
        writeln!(out, "listen = [{}]", listens.join(", "))?;
        if let Some(bytes) = server.max_body_bytes {
            writeln!(out, "max_body_bytes = {bytes}")?;
        }
        if let Some(bytes) = server.max_header_bytes {
            writeln!(out, "max_header_bytes = {bytes}")?;
        }
        if let Some(timeout) = server.header_timeout {
            writeln!(out, "header_timeout = \"{}\"", gateway_duration(timeout))?;
        }
        if let Some(connections) = server.max_connections {
            writeln!(out, "max_connections = {connections}")?;
        }
        for upstream in self.upstreams.iter().filter(|upstream| upstream.usable) {
            writeln!(out)?;
            writeln!(out, "[upstreams.{}]", toml_key(&upstream.name))?;
            if let Some(balance) = upstream.balance {
                writeln!(out, "balance = \"{balance}\"")?;
            }
            if let Some(key) = &upstream.hash_key {
                writeln!(out, "hash_key = {}", toml_string(key))?;
            }
            if upstream.consistent {
                writeln!(out, "consistent = true")?;
            }
            if let Some(resolve) = &upstream.resolve {
                writeln!(out, "resolve = {}", toml_string(resolve))?;
            } else {
                writeln!(out, "servers = [")?;
                for server in &upstream.servers {
                    writeln!(out, "  {},", server_entry(server)?)?;
                }
                writeln!(out, "]")?;
            }
            if let Some(keepalive) = upstream.keepalive {
                writeln!(out, "keepalive = {keepalive}")?;
            }
            if let Some(timeout) = upstream.keepalive_timeout {
                writeln!(out, "keepalive_timeout = \"{}\"", gateway_duration(timeout))?;
            }
            if let Some(requests) = upstream.keepalive_requests {
                writeln!(out, "keepalive_requests = {requests}")?;
            }
            if let Some(timeout) = connect_timeouts.get(&upstream.name) {
                writeln!(out, "connect_timeout = \"{}\"", gateway_duration(*timeout))?;
            }
        }
        for route in &self.routes {
            writeln!(out)?;
            writeln!(out, "[[routes]]")?;
            if let Some(host) = &route.host {
                writeln!(out, "host = {}", toml_string(host))?;
            }
            writeln!(out, "path = {}", toml_string(&route.path))?;
            if let Some(prefix) = &route.rewrite_prefix {
                writeln!(out, "rewrite_prefix = {}", toml_string(prefix))?;
            }
            writeln!(out, "upstream = {}", toml_string(&route.upstream))?;
            if let Some(timeout) = route.timeout {
                writeln!(out, "timeout = \"{}\"", gateway_duration(timeout))?;
            }
            if !route.preserve_host {
                writeln!(out, "preserve_host = false")?;
            }
            let mut retry = Vec::new();
            if let Some(tries) = route.tries {
                retry.push(format!("tries = {tries}"));
            }
            if let Some(timeout) = route.retry_timeout {
                retry.push(format!("timeout = \"{}\"", gateway_duration(timeout)));
            }
            if let Some(on) = &route.retry_on {
                let on: Vec<String> = on
                    .iter()
                    .map(|condition| format!("\"{condition}\""))
                    .collect();
                retry.push(format!("on = [{}]", on.join(", ")));
            }
            if route.non_idempotent {
                retry.push("non_idempotent = true".to_owned());
            }
            if !retry.is_empty() {
                writeln!(out, "retry = {{ {} }}", retry.join(", "))?;
            }
            if !route.set_request_headers.is_empty() {
                writeln!(
                    out,
                    "set_request_headers = {}",
                    toml_table(&route.set_request_headers)
                )?;
            }
            if !route.remove_request_headers.is_empty() {
                writeln!(
                    out,
                    "remove_request_headers = {}",
                    toml_array(&route.remove_request_headers)
                )?;
            }
            if !route.set_response_headers.is_empty() {
                writeln!(
                    out,
                    "set_response_headers = {}",
                    toml_table(&route.set_response_headers)
                )?;
            }
            if !route.remove_response_headers.is_empty() {
                writeln!(
                    out,
                    "remove_response_headers = {}",
                    toml_array(&route.remove_response_headers)
                )?;
            }
        }
        Ok(out)
    }
}

/// Whether one request could match both routes: hosts that can be the
/// same, and paths one a prefix of the other.
fn overlap(one: &RouteDraft, other: &RouteDraft) -> bool {
    let hosts = match (&one.host, &other.host) {
        (None, _) | (_, None) => true,
        (Some(one), Some(other)) => {
            let suffix = |host: &str| host.strip_prefix('*').map(str::to_owned);
            match (suffix(one), suffix(other)) {
                (None, None) => one == other,
                (Some(suffix), None) => other.ends_with(&suffix),
                (None, Some(suffix)) => one.ends_with(&suffix),
                (Some(first), Some(second)) => first.ends_with(&second) || second.ends_with(&first),
            }
        }
    };
    hosts && (one.path.starts_with(&other.path) || other.path.starts_with(&one.path))
}

/// Where a location's requests go.
struct Target {
    /// The line of its `proxy_pass`.
    line: usize,
    upstream: String,
    /// As written after `http://`, for notes about the Host nginx sends.
    authority: String,
    rewrite_prefix: Option<String>,
}

/// The `[server]` settings the nginx text sets.
#[derive(Default)]
struct ServerSettings {
    max_body_bytes: Option<u64>,
    max_header_bytes: Option<usize>,
    header_timeout: Option<Duration>,
    max_connections: Option<usize>,
}

fn server_entry(server: &ServerDraft) -> Result<String, fmt::Error> {
    let mut entry = format!("{{ address = {}", toml_string(&server.address.to_string()));
    if let Some(weight) = server.weight {
        write!(entry, ", weight = {weight}")?;
    }
    if let Some(fails) = server.max_fails {
        write!(entry, ", max_fails = {fails}")?;
    }
    if let Some(timeout) = server.fail_timeout {
        write!(entry, ", fail_timeout = \"{}\"", gateway_duration(timeout))?;
    }
    if let Some(conns) = server.max_conns {
        write!(entry, ", max_conns = {conns}")?;
    }
    if server.backup {
        entry.push_str(", backup = true");
    }
    if server.down {
        entry.push_str(", down = true");
    }
    entry.push_str(" }");
    Ok(entry)
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(text: &str) -> String {
    let bare = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        text.to_owned()
    } else {
        toml_string(text)
    }
}

fn toml_table(map: &BTreeMap<String, String>) -> String {
    let entries: Vec<String> = map
        .iter()
        .map(|(key, value)| format!("{} = {}", toml_string(key), toml_string(value)))
        .collect();
    format!("{{ {} }}", entries.join(", "))
}

fn toml_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| toml_string(item)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, RetryOn, Route, Upstream};

    /// Imports `nginx`, and reads the result back as the gateway would.
    fn convert(nginx: &str) -> (Config, Vec<String>) {
        let imported = import(nginx).unwrap_or_else(|error| panic!("import: {error}"));
        let config = Config::from_toml(&imported.toml)
            .unwrap_or_else(|error| panic!("{error}\n{}", imported.toml));
        (config, imported.notes)
    }

    /// The note of `line` that says `says`.
    #[track_caller]
    fn note<'a>(notes: &'a [String], line: usize, says: &str) -> &'a str {
        let prefix = format!("line {line}: ");
        notes
            .iter()
            .find(|note| note.starts_with(&prefix) && note.contains(says))
            .unwrap_or_else(|| panic!("no note of line {line} saying {says:?} in {notes:#?}"))
    }

    #[track_caller]
    fn no_note(notes: &[String], line: usize) {
        let prefix = format!("line {line}: ");
        assert!(
            !notes.iter().any(|note| note.starts_with(&prefix)),
            "a note of line {line} in {notes:#?}"
        );
    }

    #[track_caller]
    fn route<'a>(config: &'a Config, host: Option<&str>, path: &str) -> &'a Route {
        config
            .routes
            .iter()
            .find(|route| route.host.as_deref() == host && route.path == path)
            .unwrap_or_else(|| panic!("no route {host:?} {path} in {:#?}", config.routes))
    }

    #[track_caller]
    fn upstream<'a>(config: &'a Config, name: &str) -> &'a Upstream {
        config
            .upstreams
            .get(name)
            .unwrap_or_else(|| panic!("no upstream {name} in {:?}", config.upstreams.keys()))
    }

    fn address(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn seconds(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// The README's "Migrating an nginx upstream block, step by step".
    const README: &str = r#"upstream shop {
    server 10.0.0.1:8080 weight=3;
    server 10.0.0.2:8080 max_fails=3 fail_timeout=30s;
    server 10.0.0.3:8080 backup;
    keepalive 32;
}
server {
    listen 80;
    location /api/ {
        proxy_pass http://shop/;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Real-IP $remote_addr;
        proxy_next_upstream error timeout http_503;
        proxy_next_upstream_tries 2;
        proxy_read_timeout 10s;
    }
}
"#;

    #[test]
    fn the_readme_example_converts() {
        let (config, notes) = convert(README);
        assert_eq!(config.server.listen, vec![address("0.0.0.0:80")]);
        let shop = upstream(&config, "shop");
        assert_eq!(shop.balance, Balance::RoundRobin);
        assert_eq!(shop.keepalive, 32);
        assert_eq!(shop.servers.len(), 3);
        assert_eq!(shop.servers[0].address, address("10.0.0.1:8080"));
        assert_eq!(shop.servers[0].weight, 3);
        assert_eq!(shop.servers[1].max_fails, Some(3));
        assert_eq!(shop.servers[1].fail_timeout, Some(seconds(30)));
        assert!(shop.servers[2].backup && !shop.servers[0].backup);
        assert_eq!(config.routes.len(), 1);
        let api = route(&config, None, "/api/");
        assert_eq!(api.upstream, "shop");
        assert_eq!(api.rewrite_prefix.as_deref(), Some("/"));
        assert_eq!(api.timeout, seconds(10));
        assert_eq!(api.retry.tries, 2);
        assert_eq!(
            api.retry.on,
            vec![RetryOn::Error, RetryOn::Timeout, RetryOn::Http503]
        );
        assert_eq!(
            api.set_request_headers,
            headers(&[("x-real-ip", "$remote_addr")])
        );
        // nginx sends the upstream's name as Host here: the one note.
        assert!(!api.preserve_host);
        assert_eq!(notes.len(), 1, "{notes:#?}");
        note(&notes, 10, "proxy_pass: nginx sends Host: shop");
    }

    #[test]
    fn servers_names_and_locations_become_ordered_routes() {
        let (config, notes) = convert(
            r#"http {
    upstream web { server 10.0.1.1:80; }
    upstream api { server 10.0.2.1:9000; }
    proxy_set_header Host $host;
    server {
        listen 80;
        server_name example.com www.example.com;
        location / { proxy_pass http://web; }
        location /api/ { proxy_pass http://api/; }
        location /api/v2/ { proxy_pass http://api/v2/; }
    }
    server {
        listen 80;
        server_name *.example.org .example.net ~^api\d+\.example\.com$;
        location / { proxy_pass http://web; }
    }
    server {
        listen 8080 default_server;
        server_name _;
        location / { proxy_pass http://web; }
    }
}
"#,
        );
        assert_eq!(
            config.server.listen,
            vec![address("0.0.0.0:80"), address("0.0.0.0:8080")]
        );
        let order: Vec<(Option<&str>, &str)> = config
            .routes
            .iter()
            .map(|route| (route.host.as_deref(), route.path.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                (Some("example.com"), "/api/v2/"),
                (Some("example.com"), "/api/"),
                (Some("example.com"), "/"),
                (Some("www.example.com"), "/api/v2/"),
                (Some("www.example.com"), "/api/"),
                (Some("www.example.com"), "/"),
                (Some("example.net"), "/"),
                (Some("*.example.org"), "/"),
                (Some("*.example.net"), "/"),
                (None, "/"),
            ]
        );
        let v2 = route(&config, Some("www.example.com"), "/api/v2/");
        assert_eq!(v2.upstream, "api");
        assert_eq!(v2.rewrite_prefix.as_deref(), Some("/v2/"));
        assert!(v2.preserve_host);
        assert_eq!(route(&config, None, "/").upstream, "web");
        note(
            &notes,
            9,
            "location /api/: its route comes before the one of line 8",
        );
        note(
            &notes,
            10,
            "location /api/v2/: its route comes before the one of line 8",
        );
        note(&notes, 7, "nginx's default server");
        note(
            &notes,
            14,
            "server_name ~^api\\d+\\.example\\.com$: a regular expression",
        );
        // The listeners differ per server: the gateway has one list.
        note(&notes, 5, "its listeners serve every route");
        note(&notes, 12, "its listeners serve every route");
        note(&notes, 17, "its listeners serve every route");
        no_note(&notes, 18);
        // Disjoint routes moved past each other need no note.
        no_note(&notes, 15);
    }

    #[test]
    fn proxy_set_header_is_inherited_unless_redefined() {
        let (config, notes) = convert(
            r#"http {
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_read_timeout 30s;
    upstream app { server 127.0.0.1:9001; }
    server {
        listen 8080;
        location /inherits/ { proxy_pass http://app; }
        location /replaces/ {
            proxy_pass http://app;
            proxy_set_header X-Tenant $http_x_tenant;
            proxy_read_timeout 5s;
        }
        location /outer/ {
            proxy_set_header Host $host;
            proxy_set_header X-Outer yes;
            root /srv;
            location /outer/inner/ { proxy_pass http://app; }
        }
    }
    server {
        listen 8080;
        server_name b.example.com;
        location /server-level/ { proxy_pass http://app; }
        location /server-level/inner/ { proxy_pass http://app; proxy_set_header Host $host; }
        # After the locations, and still theirs, as in nginx.
        proxy_set_header X-Server "one";
    }
}
"#,
        );
        let inherits = route(&config, None, "/inherits/");
        assert_eq!(
            inherits.set_request_headers,
            headers(&[("x-real-ip", "$remote_addr")])
        );
        assert!(inherits.preserve_host);
        assert_eq!(inherits.timeout, seconds(30));

        // One proxy_set_header replaces all of the level around it, Host too.
        let replaces = route(&config, None, "/replaces/");
        assert_eq!(
            replaces.set_request_headers,
            headers(&[("x-tenant", "$http_x_tenant")])
        );
        assert!(!replaces.preserve_host);
        assert_eq!(replaces.timeout, seconds(5));
        note(&notes, 10, "nginx sends Host: app");

        // A location without proxy_pass passes its settings down; its own
        // directives are one note.
        let inner = route(&config, None, "/outer/inner/");
        assert_eq!(inner.set_request_headers, headers(&[("x-outer", "yes")]));
        assert!(inner.preserve_host);
        note(&notes, 14, "location /outer/: no proxy_pass: not converted");
        no_note(&notes, 17);

        let server_level = route(&config, Some("b.example.com"), "/server-level/");
        assert_eq!(
            server_level.set_request_headers,
            headers(&[("x-server", "one")])
        );
        assert!(!server_level.preserve_host);
        let redefined = route(&config, Some("b.example.com"), "/server-level/inner/");
        assert!(redefined.set_request_headers.is_empty());
        assert!(redefined.preserve_host);
        assert_eq!(redefined.timeout, seconds(30));
    }

    #[test]
    fn every_balance_method() {
        let (config, notes) = convert(
            r#"upstream rr { server 10.0.0.1; }
upstream lc { least_conn; server 10.0.0.1:81; }
upstream iph { ip_hash; server 10.0.0.1:82; }
upstream h { hash $request_uri; server 10.0.0.1:83; }
upstream hc { hash $http_x_user consistent; server 10.0.0.1:84; }
upstream r2 { random two least_conn; server 10.0.0.1:85; }
upstream r2d { random two; server 10.0.0.1:86; }
upstream r1 { random; server 10.0.0.1:87; }
upstream hbad { hash $upstream_addr; server 10.0.0.1:88; }
upstream ka { server 10.0.0.1:89; keepalive 16; keepalive_timeout 75s; keepalive_requests 1000; zone ka 64k; }
"#,
        );
        let balance = |name: &str| upstream(&config, name).balance;
        assert_eq!(balance("rr"), Balance::RoundRobin);
        assert_eq!(
            upstream(&config, "rr").servers[0].address,
            address("10.0.0.1:80")
        );
        assert_eq!(balance("lc"), Balance::LeastConn);
        assert_eq!(balance("iph"), Balance::IpHash);
        assert_eq!(balance("h"), Balance::Hash);
        assert_eq!(
            upstream(&config, "h").hash_key.as_deref(),
            Some("$request_uri")
        );
        assert!(!upstream(&config, "h").consistent);
        assert_eq!(balance("hc"), Balance::Hash);
        assert_eq!(
            upstream(&config, "hc").hash_key.as_deref(),
            Some("$http_x_user")
        );
        assert!(upstream(&config, "hc").consistent);
        assert_eq!(balance("r2"), Balance::RandomTwo);
        assert_eq!(balance("r2d"), Balance::RandomTwo);
        assert_eq!(balance("r1"), Balance::RandomTwo);
        assert_eq!(balance("hbad"), Balance::RoundRobin);
        let ka = upstream(&config, "ka");
        assert_eq!(ka.keepalive, 16);
        assert_eq!(ka.keepalive_timeout, seconds(75));
        assert_eq!(ka.keepalive_requests, 1000);
        no_note(&notes, 6);
        no_note(&notes, 7);
        note(&notes, 8, "random: converted to balance = \"random_two\"");
        note(
            &notes,
            9,
            "$upstream_addr is not a variable the gateway knows",
        );
        note(&notes, 10, "zone: not needed");
        // No server block: nginx's default port.
        assert_eq!(config.server.listen, vec![address("0.0.0.0:80")]);
        note(&notes, 1, "no server block");
        assert!(config.routes.is_empty());
    }

    #[test]
    fn server_address_forms() {
        let (config, notes) = convert(
            r#"upstream v6 { server [::1]:8080; server [2001:db8::1]; server 10.0.0.1 weight=2 max_conns=100 down slow_start=30s; }
upstream named { server backend.internal:9000 weight=5; }
upstream mixed { server 10.0.0.5:80; server other.internal; server unix:/tmp/app.sock; }
upstream sockets { server unix:/tmp/a.sock; }
server {
    listen 8080;
    proxy_set_header Host $host;
    location /v6/ { proxy_pass http://v6; }
    location /named/ { proxy_pass http://named; }
    location /mixed/ { proxy_pass http://mixed; }
    location /sockets/ { proxy_pass http://sockets; }
    location /direct/ { proxy_pass http://10.0.0.9:8080/inner/; }
    location /direct-again/ { proxy_pass http://10.0.0.9:8080; }
    location /by-name/ { proxy_pass http://api.internal:7000; }
    location /no-port/ { proxy_pass http://10.0.0.10; }
}
"#,
        );
        let v6 = upstream(&config, "v6");
        let addresses: Vec<SocketAddr> = v6.servers.iter().map(|server| server.address).collect();
        assert_eq!(
            addresses,
            vec![
                address("[::1]:8080"),
                address("[2001:db8::1]:80"),
                address("10.0.0.1:80")
            ]
        );
        assert_eq!(v6.servers[2].weight, 2);
        assert_eq!(v6.servers[2].max_conns, 100);
        assert!(v6.servers[2].down);
        note(&notes, 1, "slow_start=30s: not converted");

        let named = upstream(&config, "named");
        assert!(named.servers.is_empty());
        assert_eq!(
            named.resolve.as_deref(),
            Some("dns:///backend.internal:9000")
        );
        note(&notes, 2, "upstream named resolves it instead");

        let mixed = upstream(&config, "mixed");
        assert_eq!(mixed.servers.len(), 1);
        assert_eq!(mixed.servers[0].address, address("10.0.0.5:80"));
        note(
            &notes,
            3,
            "server other.internal:80: a host name cannot be a static server",
        );
        note(&notes, 3, "server unix:/tmp/app.sock: a unix socket");

        assert!(!config.upstreams.contains_key("sockets"));
        note(&notes, 4, "upstream sockets: no server the gateway can use");
        note(
            &notes,
            11,
            "upstream sockets has no server the gateway can use",
        );
        assert!(!config.routes.iter().any(|route| route.path == "/sockets/"));

        let direct = upstream(&config, "10.0.0.9_8080");
        assert_eq!(direct.servers.len(), 1);
        assert_eq!(direct.servers[0].address, address("10.0.0.9:8080"));
        let inner = route(&config, None, "/direct/");
        assert_eq!(inner.upstream, "10.0.0.9_8080");
        assert_eq!(inner.rewrite_prefix.as_deref(), Some("/inner/"));
        let again = route(&config, None, "/direct-again/");
        assert_eq!(again.upstream, "10.0.0.9_8080");
        assert_eq!(again.rewrite_prefix, None);
        assert_eq!(
            upstream(&config, "10.0.0.10_80").servers[0].address,
            address("10.0.0.10:80")
        );

        let by_name = upstream(&config, "api.internal_7000");
        assert_eq!(by_name.resolve.as_deref(), Some("dns:///api.internal:7000"));
        assert_eq!(
            route(&config, None, "/by-name/").upstream,
            "api.internal_7000"
        );
        note(
            &notes,
            14,
            "a host name: upstream \"api.internal_7000\" resolves it",
        );
    }

    #[test]
    fn listen_forms() {
        let (config, notes) = convert(
            r#"server {
    listen 80;
    listen 127.0.0.1:8080;
    listen [::1]:8081 ipv6only=on;
    listen *:8082 reuseport backlog=512;
    listen 443 ssl http2;
    listen 10.0.0.1;
    listen 8083 proxy_protocol;
    listen 80;
    listen unix:/run/nginx.sock;
    server_name _;
    location / { proxy_pass http://127.0.0.1:9000; proxy_set_header Host $host; }
}
server {
    location / { proxy_pass http://127.0.0.1:9001; proxy_set_header Host $host; }
}
"#,
        );
        assert_eq!(
            config.server.listen,
            vec![
                address("0.0.0.0:80"),
                address("127.0.0.1:8080"),
                address("[::1]:8081"),
                address("0.0.0.0:8082"),
                address("10.0.0.1:80"),
                address("0.0.0.0:8083"),
            ]
        );
        for quiet in [2, 3, 4, 5, 7, 9] {
            no_note(&notes, quiet);
        }
        note(&notes, 6, "listen 443 ssl http2: TLS is not converted");
        note(&notes, 8, "proxy_protocol: not converted");
        note(&notes, 10, "a unix socket");
        note(&notes, 14, "server: no listen: listen = [\"0.0.0.0:80\"]");
        // Both servers take any host on port 80: the first route wins.
        assert_eq!(config.routes.len(), 1);
        assert_eq!(route(&config, None, "/").upstream, "127.0.0.1_9000");
        note(
            &notes,
            15,
            "the route of line 12 has the same host and path",
        );
    }

    #[test]
    fn a_server_with_only_tls_listeners_still_gets_a_listener() {
        let (config, notes) = convert(
            "server {\n    listen 443 ssl;\n    location / { proxy_pass http://10.0.0.1:80; proxy_set_header Host $host; }\n}\n",
        );
        assert_eq!(config.server.listen, vec![address("0.0.0.0:80")]);
        note(&notes, 1, "no listener could be converted");
        note(&notes, 2, "TLS is not converted");
    }

    #[test]
    fn time_and_size_units() {
        let (config, notes) = convert(
            r#"http {
    client_max_body_size 10m;
    client_header_timeout 1m;
    large_client_header_buffers 4 16k;
    upstream app {
        server 10.0.0.1:80 fail_timeout=1d;
        server 10.0.0.2:80 fail_timeout=1500ms;
        keepalive_timeout 90;
    }
    server {
        listen 80;
        proxy_set_header Host $host;
        location / {
            proxy_pass http://app;
            proxy_read_timeout 2m;
            proxy_connect_timeout 500ms;
            proxy_next_upstream_timeout 1h;
        }
        location /upload/ {
            proxy_pass http://app;
            client_max_body_size 1g;
            proxy_read_timeout 90;
        }
    }
}
"#,
        );
        assert_eq!(config.server.max_body_bytes, 1 << 30);
        note(&notes, 21, "the largest: max_body_bytes = 1073741824");
        assert_eq!(config.server.header_timeout, seconds(60));
        assert_eq!(config.server.max_header_bytes, 4 * 16 * 1024);
        note(&notes, 4, "max_header_bytes = 65536");
        let app = upstream(&config, "app");
        assert_eq!(app.servers[0].fail_timeout, Some(seconds(24 * 3600)));
        assert_eq!(
            app.servers[1].fail_timeout,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(app.keepalive_timeout, seconds(90));
        assert_eq!(app.connect_timeout, Duration::from_millis(500));
        let root = route(&config, None, "/");
        assert_eq!(root.timeout, seconds(120));
        assert_eq!(root.retry.timeout, Some(seconds(3600)));
        assert_eq!(route(&config, None, "/upload/").timeout, seconds(90));

        assert_eq!(nginx_duration("30"), Ok(seconds(30)));
        assert_eq!(nginx_duration("1h30m"), Ok(seconds(5400)));
        assert_eq!(nginx_duration("1w"), Ok(seconds(7 * 24 * 3600)));
        assert!(nginx_duration("").is_err());
        assert!(nginx_duration("fast").is_err());
        assert!(
            nginx_duration("10y").is_err(),
            "beyond what the gateway takes"
        );
        assert_eq!(gateway_duration(seconds(0)), "0s");
        assert_eq!(gateway_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(gateway_duration(seconds(5400)), "90m");
        assert_eq!(gateway_duration(seconds(2 * 86400)), "48h");
        assert_eq!(nginx_size("512"), Ok(512));
        assert_eq!(nginx_size("8k"), Ok(8192));
        assert_eq!(nginx_size("10M"), Ok(10 << 20));
        assert!(nginx_size("k").is_err() && nginx_size("-1").is_err());
        assert!(nginx_size("99999999999g").is_err());
    }

    #[test]
    fn an_unlimited_body_size_is_a_large_one() {
        let (config, notes) = convert(
            "upstream app { server 10.0.0.1:80; }\nserver {\n    listen 80;\n    client_max_body_size 0;\n    location / { proxy_pass http://app; proxy_set_header Host $host; }\n}\n",
        );
        assert_eq!(config.server.max_body_bytes, UNLIMITED_BODY);
        note(
            &notes,
            4,
            "client_max_body_size 0: nginx does not limit bodies",
        );
    }

    #[test]
    fn limit_req_is_reported_with_zone_rate_and_burst() {
        let (config, notes) = convert(
            r#"http {
    limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;
    limit_req_zone $binary_remote_addr zone=login:1m rate=1r/m;
    limit_req zone=login burst=5;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        location /api/ { limit_req zone=api burst=20 nodelay; proxy_pass http://app; proxy_set_header Host $host; }
        location /other/ { limit_req zone=missing; proxy_pass http://app; proxy_set_header Host $host; }
    }
}
"#,
        );
        assert_eq!(config.routes.len(), 2);
        note(
            &notes,
            2,
            "limit_req_zone api (10r/s per $binary_remote_addr): not converted yet",
        );
        note(
            &notes,
            4,
            "limit_req zone login (1r/m per $binary_remote_addr, burst 5)",
        );
        assert_eq!(
            note(&notes, 8, "limit_req"),
            "line 8: limit_req zone api (10r/s per $binary_remote_addr, burst 20, nodelay): not converted yet: rate limiting comes with the gateway's middleware"
        );
        note(
            &notes,
            9,
            "limit_req zone missing (its limit_req_zone is not in this file)",
        );
    }

    #[test]
    fn https_and_other_proxy_pass_targets_are_left_out() {
        let (config, notes) = convert(
            r#"upstream app { server 10.0.0.1:80; }
server {
    listen 80;
    location /secure/ { proxy_pass https://app; proxy_ssl_verify on; }
    location /vars/ { proxy_pass http://$backend; }
    location /socket/ { proxy_pass http://unix:/tmp/app.sock:/; }
    location / { proxy_pass http://app; proxy_set_header Host $host; }
}
"#,
        );
        assert_eq!(config.routes.len(), 1);
        assert_eq!(route(&config, None, "/").upstream, "app");
        note(
            &notes,
            4,
            "proxy_pass https://app: TLS to upstreams is not converted: location /secure/ is not converted",
        );
        assert!(!notes.iter().any(|note| note.contains("proxy_ssl_verify")));
        note(&notes, 5, "an address made of variables");
        note(&notes, 6, "a unix socket");
    }

    #[test]
    fn regex_exact_and_named_locations_are_reported() {
        let (config, notes) = convert(
            r#"upstream app { server 10.0.0.1:80; }
server {
    listen 80;
    location = /healthz { proxy_pass http://app; }
    location ~ \.php$ { proxy_pass http://app; }
    location ~* \.(png|jpg)$ { root /var/www; }
    location ^~ /static/ { proxy_pass http://app; proxy_set_header Host $host; }
    location @fallback { proxy_pass http://app; }
    location /files { root /srv; expires 30d; }
    location / { proxy_pass http://app; proxy_set_header Host $host; }
}
"#,
        );
        let paths: Vec<&str> = config
            .routes
            .iter()
            .map(|route| route.path.as_str())
            .collect();
        assert_eq!(paths, vec!["/static/", "/"]);
        note(
            &notes,
            4,
            "location = /healthz: an exact match: not converted",
        );
        note(
            &notes,
            5,
            "location ~ \\.php$: a regular expression: not converted",
        );
        note(&notes, 6, "location ~* \\.(png|jpg)$: a regular expression");
        note(
            &notes,
            7,
            "location ^~ /static/: converted as a plain prefix",
        );
        note(&notes, 8, "location @fallback: a named location");
        note(&notes, 9, "location /files: no proxy_pass");
        // One note for the location, none for what is inside it.
        assert_eq!(
            notes
                .iter()
                .filter(|note| note.starts_with("line 9:"))
                .count(),
            1
        );
    }

    #[test]
    fn includes_are_reported_as_not_followed() {
        let (config, notes) = convert(
            r#"include /etc/nginx/modules/*.conf;
http {
    include mime.types;
    upstream app { server 10.0.0.1:80; include upstream-extra.conf; }
    server {
        listen 80;
        include snippets/ssl.conf;
        location / { include proxy_params; proxy_pass http://app; proxy_set_header Host $host; }
    }
}
"#,
        );
        assert_eq!(route(&config, None, "/").upstream, "app");
        note(&notes, 1, "include /etc/nginx/modules/*.conf: not followed");
        note(&notes, 3, "include mime.types: not followed");
        note(&notes, 4, "include upstream-extra.conf: not followed");
        note(&notes, 7, "include snippets/ssl.conf: not followed");
        note(&notes, 8, "include proxy_params: not followed");
    }

    #[test]
    fn syntax_errors_name_their_line() {
        for (text, line, says) in [
            (
                "http {\n  upstream a {\n    server 10.0.0.1;\n",
                2,
                "never closed",
            ),
            ("server {\n    listen 80;\n}\n}\n", 4, "closes no block"),
            ("server {\n    listen 80\n}\n", 2, "listen: no ; at the end"),
            (
                "server {\n    listen 80\n    server_name a.example.com;\n}\n",
                2,
                "server_name on line 3 starts the next one",
            ),
            (
                "server {\n    listen 80 location / {\n    }\n}\n",
                2,
                "a { block follows it",
            ),
            ("worker_processes 4", 1, "no ; at the end"),
            (
                "server {\n    add_header X-A \"abc;\n}\n",
                2,
                "never closed",
            ),
            ("server {\n    add_header X-A 'abc;\n}\n", 2, "never closed"),
            ("add_header X-A \"a\"b;\n", 1, "right after a quoted string"),
            ("server;\n", 1, "server: no { } block"),
            ("\n\n;\n", 3, "a ; with no directive"),
            ("\n{ }\n", 2, "a { with no directive"),
        ] {
            let error = import(text).expect_err(text);
            assert_eq!(error.line(), Some(line), "{text:?}: {error}");
            let message = error.to_string();
            assert!(message.starts_with(&format!("line {line}: ")), "{message}");
            assert!(message.contains(says), "{text:?}: {message}");
        }
    }

    #[test]
    fn retry_directives() {
        let (config, notes) = convert(
            r#"upstream app { server 10.0.0.1:80; server 10.0.0.2:80; server 10.0.0.3:80 down; server 10.0.0.4:80 backup; }
server {
    listen 80;
    proxy_set_header Host $host;
    proxy_next_upstream error timeout http_502 http_504 http_429 non_idempotent invalid_header;
    location /a/ { proxy_pass http://app; proxy_next_upstream_tries 0; proxy_next_upstream_timeout 0; }
    location /b/ { proxy_pass http://app; proxy_next_upstream off; proxy_next_upstream_tries 5; }
    location /c/ {
        proxy_pass http://app;
        proxy_next_upstream http_500 http_503 http_403 http_404;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 15s;
    }
}
"#,
        );
        let a = route(&config, None, "/a/");
        assert_eq!(a.retry.tries, 3, "every server but the one down");
        assert_eq!(
            a.retry.on,
            vec![
                RetryOn::Error,
                RetryOn::Timeout,
                RetryOn::Http502,
                RetryOn::Http504,
                RetryOn::Http429
            ]
        );
        assert!(a.retry.non_idempotent);
        assert_eq!(a.retry.timeout, None);
        note(
            &notes,
            6,
            "proxy_next_upstream_tries 0: nginx tries every server: retry.tries = 3",
        );
        note(&notes, 5, "invalid_header: not converted");
        assert_eq!(route(&config, None, "/b/").retry.tries, 1);
        let c = route(&config, None, "/c/");
        assert_eq!(
            c.retry.on,
            vec![
                RetryOn::Http500,
                RetryOn::Http503,
                RetryOn::Http403,
                RetryOn::Http404
            ]
        );
        assert_eq!(c.retry.tries, 3);
        assert_eq!(c.retry.timeout, Some(seconds(15)));
        assert!(!c.retry.non_idempotent);
    }

    #[test]
    fn connect_timeouts_that_disagree_take_the_largest() {
        let (config, notes) = convert(
            r#"upstream app { server 10.0.0.1:80; }
upstream other { server 10.0.0.2:80; }
server {
    listen 80;
    proxy_set_header Host $host;
    proxy_connect_timeout 2s;
    location /a/ { proxy_pass http://app; }
    location /b/ { proxy_pass http://app; proxy_connect_timeout 10s; }
    location /c/ { proxy_pass http://other; proxy_send_timeout 5s; }
}
"#,
        );
        assert_eq!(upstream(&config, "app").connect_timeout, seconds(10));
        assert_eq!(upstream(&config, "other").connect_timeout, seconds(2));
        note(&notes, 8, "upstream app disagree (2s, 10s)");
        note(&notes, 9, "proxy_send_timeout: not converted");
        no_note(&notes, 6);
    }

    #[test]
    fn request_and_response_headers() {
        let (config, notes) = convert(
            r#"upstream app { server 10.0.0.1:80; }
server {
    listen 80;
    add_header X-Frame-Options DENY always;
    add_header X-Served-By gateway;
    proxy_hide_header X-Powered-By;
    location /a/ {
        proxy_pass http://app;
        proxy_set_header Host $proxy_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header Accept-Encoding "";
        proxy_set_header X-Server $server_name;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header X-Request $request_id;
        proxy_set_header Connection "";
    }
    location /b/ {
        proxy_pass http://app;
        proxy_set_header Host backend.example.com;
        add_header Cache-Control no-store always;
        proxy_hide_header Server;
    }
}
"#,
        );
        let a = route(&config, None, "/a/");
        assert!(!a.preserve_host);
        note(&notes, 8, "nginx sends Host: app");
        assert_eq!(
            a.set_request_headers,
            headers(&[("x-real-ip", "$remote_addr"), ("x-request", "$request_id")])
        );
        assert_eq!(a.remove_request_headers, vec!["accept-encoding"]);
        note(
            &notes,
            13,
            "$server_name is not a variable the gateway knows",
        );
        note(&notes, 14, "a hop-by-hop header");
        for quiet in [4, 6, 10, 11, 12, 15, 16] {
            no_note(&notes, quiet);
        }
        assert_eq!(
            a.set_response_headers,
            headers(&[("x-frame-options", "DENY"), ("x-served-by", "gateway")])
        );
        note(
            &notes,
            5,
            "add_header X-Served-By: set on every upstream response",
        );
        assert_eq!(a.remove_response_headers, vec!["x-powered-by"]);

        let b = route(&config, None, "/b/");
        assert!(b.preserve_host);
        assert_eq!(
            b.set_request_headers,
            headers(&[("host", "backend.example.com")])
        );
        assert_eq!(
            b.set_response_headers,
            headers(&[("cache-control", "no-store")])
        );
        assert_eq!(b.remove_response_headers, vec!["server"]);
    }

    #[test]
    fn quotes_escapes_and_comments() {
        let (config, notes) = convert(
            r#"# a comment { with braces } and ; semicolons
upstream "app" { server 10.0.0.1:80; }   # a quoted name
upstream my.app { server 10.0.0.2:80; }
server {
    listen 80; # trailing
    location /q/ {
        proxy_pass http://app;
        proxy_set_header Host $host;
        proxy_set_header 'X-Quote' "say \"hi\" \\ back";
        proxy_set_header X-Tab "a\tb";
        proxy_set_header X-Braced v=${arg_v};
        add_header X-Hash a#b always;
    }
    location /dotted/ { proxy_pass http://my.app; proxy_set_header Host $host; }
}
"#,
        );
        let q = route(&config, None, "/q/");
        assert_eq!(q.upstream, "app");
        assert_eq!(
            q.set_request_headers,
            headers(&[
                ("x-quote", r#"say "hi" \ back"#),
                ("x-tab", "a\tb"),
                ("x-braced", "v=${arg_v}"),
            ])
        );
        assert_eq!(q.set_response_headers, headers(&[("x-hash", "a#b")]));
        assert_eq!(route(&config, None, "/dotted/").upstream, "my.app");
        assert_eq!(
            upstream(&config, "my.app").servers[0].address,
            address("10.0.0.2:80")
        );
        assert!(notes.is_empty(), "{notes:#?}");
        assert_eq!(toml_string("a\"b\\c\u{1}"), r#""a\"b\\c\u0001""#);
        assert_eq!(toml_key("my.app"), r#""my.app""#);
        assert_eq!(toml_key("my-app_2"), "my-app_2");
    }

    #[test]
    fn other_directives_and_blocks_are_reported() {
        let (config, notes) = convert(
            r#"user nginx;
worker_processes 4;
events { worker_connections 2048; use epoll; }
stream { server { listen 12345; proxy_pass 10.0.0.1:12345; } }
http {
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    proxy_cache_path /var/cache levels=1:2 keys_zone=c:10m;
    upstream app { server 10.0.0.1:80; }
    server {
        listen 80;
        if ($request_method = POST) { return 405; }
        location / {
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_cache c;
            proxy_buffering off;
            if ($args) { set $x 1; }
        }
    }
}
"#,
        );
        assert_eq!(config.server.max_connections, 2048);
        assert_eq!(route(&config, None, "/").upstream, "app");
        note(&notes, 1, "user: not converted");
        note(
            &notes,
            2,
            "worker_processes 4: not converted (run sinew gateway --workers 4)",
        );
        note(
            &notes,
            3,
            "worker_connections 2048: [server] max_connections = 2048",
        );
        note(&notes, 3, "use: not converted");
        note(
            &notes,
            4,
            "stream { }: not converted (the gateway proxies HTTP only)",
        );
        note(&notes, 6, "map { }: not converted");
        note(
            &notes,
            7,
            "proxy_cache_path: not converted (the gateway has no cache yet)",
        );
        note(&notes, 11, "if { }: not converted");
        assert_eq!(
            note(&notes, 15, "proxy_cache"),
            "line 15: proxy_cache: not converted (the gateway has no cache yet)"
        );
        note(
            &notes,
            16,
            "proxy_buffering: not converted (the gateway streams bodies through)",
        );
        note(&notes, 17, "if { }: not converted");
        // In the order of the text.
        let lines: Vec<usize> = notes
            .iter()
            .filter_map(|note| note.strip_prefix("line ")?.split(':').next()?.parse().ok())
            .collect();
        assert!(
            lines.windows(2).all(|pair| pair[0] <= pair[1]),
            "{notes:#?}"
        );
    }

    #[test]
    fn mangled_text_is_an_error_with_a_line_or_a_file_the_gateway_takes() {
        let text = format!(
            "{README}http {{ map $a $b {{ default 1; }} server {{ listen 8080; server_name a.example.com; location / {{ proxy_pass http://10.0.0.1:80/x/; add_header 'X' \"v\\\"w\"; }} }} }}\n"
        );
        let chars: Vec<char> = text.chars().collect();
        for index in 0..chars.len() {
            for change in [
                None,
                Some('{'),
                Some('}'),
                Some(';'),
                Some('"'),
                Some('#'),
                Some('$'),
            ] {
                let mut mangled = chars.clone();
                match change {
                    None => {
                        mangled.remove(index);
                    }
                    Some(c) => mangled.insert(index, c),
                }
                let mangled: String = mangled.into_iter().collect();
                match import(&mangled) {
                    // import checks its output with Config::from_toml
                    // and fails without a line if the check refuses it.
                    Ok(imported) => assert!(Config::from_toml(&imported.toml).is_ok()),
                    Err(error) => assert!(error.line().is_some(), "{mangled}\n{error}"),
                }
            }
        }
    }
}
