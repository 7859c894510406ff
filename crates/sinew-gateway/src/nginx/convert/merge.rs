//! What only the whole file decides, at the end of the conversion: the
//! one list of listeners every server shares (and nginx's default
//! servers), the one `[server]` limit among the servers' and locations'
//! own, one connect timeout per upstream group, and the order of the
//! routes, which the gateway tries first to last.
//!
//! Not here: reading each level (`inherit`, `server`, `location`);
//! writing the result (`emit`).

use super::{Converter, RouteDraft, ServerSettings, UNLIMITED_BODY};
use crate::nginx::units::gateway_duration;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

impl Converter {
    pub(super) fn listener_notes(&mut self) {
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

    pub(super) fn server_settings(&mut self) -> ServerSettings {
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
    pub(super) fn order_routes(&mut self) {
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
    pub(super) fn connect_timeouts(&mut self) -> HashMap<String, Duration> {
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
