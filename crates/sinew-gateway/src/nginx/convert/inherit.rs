//! The directives nginx passes down from `http` to `server` to
//! `location` (`proxy_set_header`, `add_header`, `proxy_hide_header`,
//! `proxy_next_upstream*`, the `proxy_*_timeout`s, `limit_req*`), read
//! into [`Inherited`], with the few that may stand at any level
//! (`client_max_body_size`, the client header limits).
//!
//! Not here: how a level's settings become a route (`location`), what the
//! `limit_req*` directives mean (`limit`), or how the gateway's one
//! `[server]` limit is chosen among them (`merge`).

use super::{BodySize, Converter, Inherited, Level};
use crate::nginx::parse::Directive;
use crate::nginx::units::{header_name, nginx_size, variable_problem};

/// One `proxy_set_header`, as the gateway takes it.
#[derive(Clone, Debug)]
pub(super) enum RequestHeader {
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
pub(super) struct NextUpstream {
    pub(super) on: Vec<&'static str>,
    pub(super) off: bool,
    pub(super) non_idempotent: bool,
}

/// Which list directives a level has set already: the first of each
/// replaces what the level inherited, as nginx does.
#[derive(Default)]
pub(super) struct Replaced {
    request_headers: bool,
    response_headers: bool,
    hidden_headers: bool,
    pub(super) limit_reqs: bool,
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

impl Converter {
    /// The directives nginx passes down from `http` to `server` to
    /// `location`, and the few that may stand at any of them. False for a
    /// directive it does not handle.
    pub(super) fn inheritable(
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
                // nginx's 0 turns the limit off: the gateway's default.
                if let Some(timeout) = self.time(directive).filter(|timeout| !timeout.is_zero()) {
                    settings.retry_timeout = Some(timeout);
                }
            }
            "proxy_read_timeout" => {
                if let Some(timeout) = self.positive_time(directive) {
                    settings.read_timeout = Some(timeout);
                }
            }
            "proxy_connect_timeout" => {
                if let Some(timeout) = self.positive_time(directive) {
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
            "limit_req" => self.limit_req(directive, settings, replaced),
            "limit_req_status" => self.limit_req_status(directive, settings),
            "limit_req_dry_run" => self.limit_req_dry_run(directive, settings),
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

    pub(super) fn header_limits(&mut self, directive: &Directive) -> bool {
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
}
