//! Writing the `gateway.toml`: the document from the drafts the
//! conversion made, and TOML's quoting of strings and keys.
//!
//! Not here: any decision about what goes in it, or in which order, or
//! the notes about it (`convert`).

use super::convert::{RouteDraft, ServerDraft, ServerSettings, UpstreamDraft};
use super::units::gateway_duration;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

/// The `gateway.toml` of the drafts: `[server]`, each usable
/// `[upstreams.NAME]`, then the `[[routes]]` in their order.
pub(super) fn document(
    listens: &[SocketAddr],
    server: &ServerSettings,
    upstreams: &[UpstreamDraft],
    routes: &[RouteDraft],
    connect_timeouts: &HashMap<String, Duration>,
) -> Result<String, fmt::Error> {
    let mut out = String::new();
    writeln!(
        out,
        "# Converted from nginx by sinew gateway import-nginx: see its notes."
    )?;
    writeln!(out, "[server]")?;
    let listens: Vec<String> = listens
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
    for upstream in upstreams.iter().filter(|upstream| upstream.usable) {
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
    for route in routes {
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
        if let Some(limit) = &route.rate_limit {
            // Debug, not Display: a float TOML reads as one (`10.0`).
            write!(
                out,
                "rate_limit = {{ rate = {:?}, burst = {}, key = {}",
                limit.rate,
                limit.burst,
                toml_string(&limit.key)
            )?;
            if let Some(keys) = limit.max_keys {
                write!(out, ", max_keys = {keys}")?;
            }
            writeln!(out, " }}")?;
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

/// One server of `servers = [...]`, as an inline table.
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
pub(super) fn toml_string(text: &str) -> String {
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
pub(super) fn toml_key(text: &str) -> String {
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
