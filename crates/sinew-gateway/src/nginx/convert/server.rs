//! `server` blocks: their `listen`s (the gateway's listeners), their
//! `server_name`s (the hosts of their routes), and the locations inside.
//!
//! Not here: the locations themselves (`location`); the notes about
//! listeners shared by servers and default servers, which only the whole
//! file shows (`merge`).

use super::inherit::Replaced;
use super::{Converter, Inherited, Level};
use crate::nginx::parse::{shape, Directive};
use crate::nginx::units::listen_address;
use crate::nginx::ImportError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// What a `server` block's routes share.
pub(super) struct ServerContext {
    pub(super) hosts: Vec<Option<String>>,
}

/// A `server` block, for the notes about listeners and default servers.
#[derive(Debug, Default)]
pub(super) struct ServerSummary {
    pub(super) line: usize,
    pub(super) listens: Vec<SocketAddr>,
    pub(super) defaults: Vec<SocketAddr>,
    /// The line of its `server_name`, when it named hosts for routes.
    pub(super) hosts_line: Option<usize>,
}

impl Converter {
    pub(super) fn server(
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
}
