//! The conversion of nginx's directives into what the gateway takes: the
//! `Converter` and its passes, the levels nginx passes settings down
//! through (`http`, `server`, `location`), and the drafts of upstream
//! groups and routes that `emit` writes out. Each concern of the passes
//! has its submodule: `inherit` (the directives passed down, such as
//! `proxy_set_header` and the timeouts), `upstream` (upstream blocks and
//! the groups `proxy_pass` names), `server` (`listen`, `server_name`),
//! `location` (locations and the routes they become), `limit` (the
//! `limit_req*` directives and the routes' rate limits) and `merge` (what
//! only the whole file decides: one listener list, one `[server]` limit,
//! the order of routes).
//!
//! Not here: reading the text (`parse`), the values in arguments
//! (`units`), writing TOML (`emit`).

mod inherit;
mod limit;
mod location;
mod merge;
mod server;
mod upstream;

use self::inherit::{NextUpstream, Replaced, RequestHeader};
use self::limit::{LimitReq, Zone};
use self::server::ServerSummary;
use super::emit;
use super::parse::{shape, Directive};
use super::units::nginx_duration;
use super::{ImportError, Imported};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

/// The nesting level a directive is read at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    /// The top of the text: nginx's main context, and the `http` context
    /// too, for a text of `upstream` and `server` blocks alone.
    Main,
    Http,
    Server,
    Location,
}

/// What nginx passes down from `http` to `server` to `location`.
#[derive(Clone, Debug, Default)]
pub(super) struct Inherited {
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
    /// The `limit_req`s in force, those of the zones the gateway can take.
    limit_reqs: Vec<LimitReq>,
    /// `limit_req_status`, with its line.
    limit_req_status: Option<(usize, u16)>,
    /// `limit_req_dry_run on`: nginx refuses nothing.
    limit_req_dry_run: bool,
}

/// One server of an upstream group.
#[derive(Clone, Debug)]
pub(super) struct ServerDraft {
    pub(super) address: SocketAddr,
    pub(super) weight: Option<u32>,
    pub(super) max_fails: Option<u32>,
    pub(super) fail_timeout: Option<Duration>,
    pub(super) backup: bool,
    pub(super) down: bool,
    pub(super) max_conns: Option<usize>,
}

/// An upstream group on its way to `[upstreams.NAME]`.
#[derive(Debug)]
pub(super) struct UpstreamDraft {
    pub(super) name: String,
    /// Made for a `proxy_pass` to an address, not written as a block.
    implicit: bool,
    /// Has servers or a name to resolve.
    pub(super) usable: bool,
    pub(super) servers: Vec<ServerDraft>,
    pub(super) resolve: Option<String>,
    pub(super) balance: Option<&'static str>,
    pub(super) hash_key: Option<String>,
    pub(super) consistent: bool,
    pub(super) keepalive: Option<usize>,
    pub(super) keepalive_timeout: Option<Duration>,
    pub(super) keepalive_requests: Option<u32>,
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
pub(super) struct RouteDraft {
    /// The line of its `location`.
    line: usize,
    /// Its place among the routes as the locations come.
    order: usize,
    pub(super) host: Option<String>,
    pub(super) path: String,
    pub(super) upstream: String,
    pub(super) rewrite_prefix: Option<String>,
    pub(super) timeout: Option<Duration>,
    pub(super) tries: Option<u32>,
    pub(super) retry_timeout: Option<Duration>,
    pub(super) retry_on: Option<Vec<&'static str>>,
    pub(super) non_idempotent: bool,
    pub(super) preserve_host: bool,
    pub(super) set_request_headers: BTreeMap<String, String>,
    pub(super) remove_request_headers: Vec<String>,
    pub(super) set_response_headers: BTreeMap<String, String>,
    pub(super) remove_response_headers: Vec<String>,
    pub(super) rate_limit: Option<RateLimitDraft>,
}

/// A route's `rate_limit`, from its `limit_req` and the zone it names.
#[derive(Clone, Debug)]
pub(super) struct RateLimitDraft {
    /// Requests a second.
    pub(super) rate: f64,
    /// Requests at once: nginx's `burst` + 1.
    pub(super) burst: u32,
    pub(super) key: String,
    /// From the zone's size; the gateway's default without one.
    pub(super) max_keys: Option<usize>,
}

/// `client_max_body_size`, where it was set.
struct BodySize {
    line: usize,
    bytes: u64,
    in_location: bool,
}

/// The `[server]` settings the nginx text sets.
#[derive(Default)]
pub(super) struct ServerSettings {
    pub(super) max_body_bytes: Option<u64>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) header_timeout: Option<Duration>,
    pub(super) max_connections: Option<usize>,
}

/// A body limit for "no limit": 1 TiB.
pub(super) const UNLIMITED_BODY: u64 = 1 << 40;

/// The conversion under way: what the passes over the directives found,
/// and the notes.
#[derive(Default)]
pub(super) struct Converter {
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
    /// Whether nginx's default 503 for requests over a rate limit has had
    /// its note: it is said once.
    limit_status_noted: bool,
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
        "access_log" | "error_log" | "log_format" | "limit_req_log_level" => {
            " (the gateway logs through tracing)"
        }
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
        "http" | "server" | "location" | "upstream" | "proxy_pass" | "listen" | "server_name"
        | "limit_req_zone" => " (not in its place)",
        _ => "",
    }
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

    /// [`time`](Converter::time), refusing 0 (with a note): a timeout of
    /// nothing is one the gateway does not take.
    fn positive_time(&mut self, directive: &Directive) -> Option<Duration> {
        let timeout = self.time(directive)?;
        if timeout.is_zero() {
            let text = format!(
                "{} 0: not converted (a timeout must be more than 0; the gateway's default stays)",
                directive.name
            );
            self.note(directive.line, text);
            return None;
        }
        Some(timeout)
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

    fn include(&mut self, directive: &Directive) {
        let text = format!(
            "include {}: not followed (convert that file too, or paste it in here)",
            directive.args.join(" ")
        );
        self.note(directive.line, text);
    }

    // -- The first pass: what locations refer to. ---------------------------

    pub(super) fn collect(
        &mut self,
        directives: &[Directive],
        level: Level,
    ) -> Result<(), ImportError> {
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

    // -- The second pass: levels, servers, locations. -------------------------

    /// The `http` level (or the top of the text): its directives, then its
    /// `server` blocks.
    pub(super) fn http_level(
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

    // -- The end: checks across the file, and the TOML. ----------------------

    pub(super) fn finish(mut self) -> Result<Imported, ImportError> {
        self.listener_notes();
        let server = self.server_settings();
        self.order_routes();
        let connect_timeouts = self.connect_timeouts();
        let toml = emit::document(
            &self.listens,
            &server,
            &self.upstreams,
            &self.routes,
            &connect_timeouts,
        )
        .map_err(|_| ImportError {
            line: None,
            message: "the gateway.toml could not be written".to_owned(),
        })?;
        self.notes.sort_by_key(|(line, _)| *line);
        let notes = self
            .notes
            .into_iter()
            .map(|(line, text)| format!("line {line}: {text}"))
            .collect();
        Ok(Imported { toml, notes })
    }
}
