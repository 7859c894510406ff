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
//!  limit_req_zone + limit_req                ──▶  each route's rate_limit
//! ```
//!
//! nginx's inheritance is followed: a `proxy_*` directive of `http` holds
//! in every `server` and `location` inside that does not set it again, and
//! a `proxy_set_header` (or `add_header`, `proxy_hide_header`,
//! `limit_req`) at one level replaces all of those of the levels around
//! it. Routes come out in the order nginx would choose among them (exact
//! host names, then wildcards, then any host; the longest prefix first),
//! because the gateway takes the first route that matches.
//!
//! Not here: following `include`s (the importer has the text, not the
//! files), regular-expression and exact locations, TLS, caching, nginx's
//! queue of delayed requests and the other directives the gateway has no
//! counterpart for yet: those become [`Imported::notes`], for a person to
//! decide on. Text that is not nginx at all is an [`ImportError`] naming
//! its line.

mod convert;
mod emit;
mod parse;
#[cfg(test)]
mod tests;
mod units;

use self::convert::{Converter, Inherited, Level};
use crate::config::Config;
use std::fmt;

// What the tests check directly, besides `import`.
#[cfg(test)]
use {
    self::convert::UNLIMITED_BODY,
    self::emit::{toml_key, toml_string},
    self::units::{
        gateway_duration, may_expand_to_nothing, nginx_duration, nginx_rate, nginx_size,
    },
    std::{collections::BTreeMap, net::SocketAddr, time::Duration},
};

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
    let directives = parse::parse(text)?;
    let mut converter = Converter::default();
    // Upstream blocks and rate-limit zones may come after the locations
    // that name them: they are read first.
    converter.collect(&directives, Level::Main)?;
    converter.http_level(&directives, Level::Main, &Inherited::default())?;
    let imported = converter.finish()?;
    // The contract is a file the gateway takes: hold the importer to it.
    if let Err(error) = Config::from_toml(&imported.toml) {
        return Err(ImportError {
            line: None,
            message: format!(
                "the converted gateway.toml is refused, a bug of the importer: {error}"
            ),
        });
    }
    Ok(imported)
}
