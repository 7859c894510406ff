//! `location` blocks and the routes they become: the match (a prefix,
//! the only kind the gateway has), the `proxy_pass` target, and the
//! settings the location inherited or set, for each host of its server.
//!
//! Not here: the directives that make those settings (`inherit`), the
//! upstream groups a `proxy_pass` names (`upstream`), the order of the
//! routes across the file (`merge`).

use super::inherit::{Replaced, RequestHeader};
use super::server::ServerContext;
use super::{Converter, Inherited, Level, RouteDraft};
use crate::nginx::parse::{shape, Directive};
use crate::nginx::ImportError;
use std::collections::BTreeMap;

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

/// Where a location's requests go.
struct Target {
    /// The line of its `proxy_pass`.
    line: usize,
    upstream: String,
    /// As written after `http://`, for notes about the Host nginx sends.
    authority: String,
    rewrite_prefix: Option<String>,
}

impl Converter {
    pub(super) fn location(
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
            rate_limit: self.rate_limit(settings),
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
}
