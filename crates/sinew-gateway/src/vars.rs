//! Request variables, as nginx writes them: `$remote_addr`, `$host`,
//! `$request_uri`, `$uri`, `$args`, `$scheme`, `$request_method`,
//! `$request_id`, `$auth_subject` (who a route's `auth` let in: the API
//! key or the token's subject), `$http_<header>`, `$arg_<name>`,
//! `$cookie_<name>`, and
//! text mixing them (`$host$uri`, `v=${arg_v}`).
//!
//! A [`Template`] is parsed once, at configuration load, and expanded per
//! request: for hash keys and header values set on requests and responses.
//! An unknown variable is refused at load; a variable the request lacks
//! expands to nothing, as in nginx.

use std::fmt::Write;
use std::net::SocketAddr;

/// What a template reads of a request.
pub(crate) struct RequestVars<'a> {
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) remote: SocketAddr,
    pub(crate) host: &'a str,
    pub(crate) request_id: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    RemoteAddr,
    Host,
    RequestUri,
    Uri,
    Args,
    Scheme,
    Method,
    RequestId,
    AuthSubject,
    Header(http::HeaderName),
    Arg(String),
    Cookie(String),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            if dollar > 0 {
                parts.push(Part::Text(rest[..dollar].to_owned()));
            }
            let after = &rest[dollar + 1..];
            let (name, remaining) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: an unclosed ${{"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            parts.push(Part::variable(name).map_err(|e| format!("{text:?}: {e}"))?);
            rest = remaining;
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    pub(crate) fn expand(&self, vars: &RequestVars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            part.append(vars, &mut out);
        }
        out
    }
}

impl Part {
    fn variable(name: &str) -> Result<Part, String> {
        Ok(match name {
            "" => return Err("a $ without a variable name".to_owned()),
            "remote_addr" | "binary_remote_addr" => Part::RemoteAddr,
            "host" => Part::Host,
            "request_uri" => Part::RequestUri,
            "uri" | "document_uri" => Part::Uri,
            "args" | "query_string" => Part::Args,
            "scheme" => Part::Scheme,
            "request_method" => Part::Method,
            "request_id" => Part::RequestId,
            "auth_subject" => Part::AuthSubject,
            _ => {
                if let Some(header) = name.strip_prefix("http_") {
                    let header = header.replace('_', "-").to_ascii_lowercase();
                    Part::Header(
                        http::HeaderName::from_bytes(header.as_bytes())
                            .map_err(|_| format!("${name} names no header"))?,
                    )
                } else if let Some(arg) = name.strip_prefix("arg_") {
                    Part::Arg(arg.to_owned())
                } else if let Some(cookie) = name.strip_prefix("cookie_") {
                    Part::Cookie(cookie.to_owned())
                } else {
                    return Err(format!(
                        "${name} is not a variable the gateway knows (remote_addr, host, request_uri, uri, args, scheme, request_method, request_id, auth_subject, http_*, arg_*, cookie_*)"
                    ));
                }
            }
        })
    }

    fn append(&self, vars: &RequestVars<'_>, out: &mut String) {
        let uri = &vars.parts.uri;
        match self {
            Part::Text(text) => out.push_str(text),
            Part::RemoteAddr => {
                let _ = write!(out, "{}", vars.remote.ip());
            }
            Part::Host => out.push_str(vars.host),
            Part::RequestUri => out.push_str(uri.path_and_query().map_or("/", |pq| pq.as_str())),
            Part::Uri => out.push_str(uri.path()),
            Part::Args => out.push_str(uri.query().unwrap_or("")),
            Part::Scheme => out.push_str(
                if vars
                    .parts
                    .extensions
                    .get::<crate::server::OverTls>()
                    .is_some()
                {
                    "https"
                } else {
                    "http"
                },
            ),
            Part::Method => out.push_str(vars.parts.method.as_str()),
            Part::RequestId => out.push_str(vars.request_id),
            Part::AuthSubject => {
                if let Some(who) = vars
                    .parts
                    .extensions
                    .get::<crate::middleware::Authenticated>()
                {
                    out.push_str(who.subject());
                }
            }
            Part::Header(name) => {
                let mut values = vars.parts.headers.get_all(name).iter();
                if let Some(first) = values.next() {
                    out.push_str(&String::from_utf8_lossy(first.as_bytes()));
                    for value in values {
                        out.push_str(", ");
                        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
                    }
                }
            }
            Part::Arg(name) => {
                if let Some(value) = uri.query().and_then(|query| {
                    query
                        .split('&')
                        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value)
                }) {
                    out.push_str(value);
                }
            }
            Part::Cookie(name) => {
                let found = vars
                    .parts
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .flat_map(|value| value.split(';'))
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(key, _)| key == name);
                if let Some((_, value)) = found {
                    out.push_str(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(template: &str, request: http::Request<()>) -> String {
        let (parts, ()) = request.into_parts();
        Template::parse(template).unwrap().expand(&RequestVars {
            parts: &parts,
            remote: "10.1.2.3:4567".parse().unwrap(),
            host: "api.example.com",
            request_id: "abc",
        })
    }

    #[test]
    fn variables_expand_as_nginx_does() {
        let request = || {
            http::Request::get("/v1/items?id=7&sort=asc")
                .header("x-user-id", "u1")
                .header("cookie", "session=s1; theme=dark")
                .body(())
                .unwrap()
        };
        assert_eq!(expand("$remote_addr", request()), "10.1.2.3");
        assert_eq!(expand("$host$uri", request()), "api.example.com/v1/items");
        assert_eq!(expand("$request_uri", request()), "/v1/items?id=7&sort=asc");
        assert_eq!(expand("id=${arg_id}!", request()), "id=7!");
        assert_eq!(expand("$http_x_user_id", request()), "u1");
        assert_eq!(expand("$cookie_theme", request()), "dark");
        assert_eq!(expand("$arg_missing|$request_id", request()), "|abc");
        assert_eq!(expand("$request_method $scheme", request()), "GET http");
    }

    #[test]
    fn unknown_or_broken_variables_are_refused() {
        assert!(Template::parse("$nope").unwrap_err().contains("$nope"));
        assert!(Template::parse("${host").is_err());
        assert!(Template::parse("a $ b").is_err());
        assert_eq!(
            Template::parse("plain").unwrap().parts,
            vec![Part::Text("plain".to_owned())]
        );
    }
}
