//! Upstream groups: the `upstream` blocks (their servers, balancing and
//! keep-alive), and the groups made for a `proxy_pass` straight to an
//! address or a host name.
//!
//! Not here: the locations that proxy to them (`location`); writing
//! `[upstreams.NAME]` (`emit`).

use super::{Converter, ServerDraft, UpstreamDraft};
use crate::nginx::parse::{shape, Directive};
use crate::nginx::units::{nginx_duration, server_address, variable_problem, ServerAddress};
use crate::nginx::ImportError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

impl Converter {
    pub(super) fn upstream(
        &mut self,
        directive: &Directive,
        block: &[Directive],
    ) -> Result<(), ImportError> {
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

    /// The upstream group a `proxy_pass http://AUTHORITY` goes to: its
    /// `upstream` block, or one made for the address; or why there is none.
    pub(super) fn upstream_for(&mut self, line: usize, authority: &str) -> Result<String, String> {
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
}
