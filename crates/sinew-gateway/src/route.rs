//! Routes: which upstream group a request goes to, by host, path prefix,
//! method and headers; the first route that matches takes it.
//!
//! Matching is by the request as it came, before any rewrite. A host is
//! compared without its port and case-insensitively; `*.example.com`
//! matches every name under `example.com` (not `example.com` itself). A
//! path prefix ending in `/` matches the paths under it; one that does not
//! matches as text (`/api` takes `/api`, `/api/x` and `/apis`), as nginx's
//! `location /prefix` does. The path is compared in its normal form (see
//! `path.rs`: dot segments resolved, unreserved escapes decoded, slashes
//! merged), and that form is what the upstream gets: what was matched is
//! what is sent.

use crate::config::{self, ConfigError};
use crate::middleware::Stack;
use crate::stats::{Registry, RouteStats};
use crate::transcode::Transcoder;
use crate::upstream::Group;
use crate::vars::Template;
use http::{HeaderName, HeaderValue, Method};
use std::collections::HashMap;
use std::sync::Arc;

/// A route, ready to match.
pub(crate) struct Route {
    host: Option<HostMatch>,
    pub(crate) prefix: String,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub(crate) target: Target,
    pub(crate) rewrite_prefix: Option<String>,
    pub(crate) settings: config::Route,
    pub(crate) set_request_headers: Vec<(HeaderName, Template)>,
    pub(crate) remove_request_headers: Vec<HeaderName>,
    pub(crate) set_response_headers: Vec<(HeaderName, Template)>,
    pub(crate) remove_response_headers: Vec<HeaderName>,
    /// Statuses that send the request on to the next server.
    pub(crate) retry_statuses: Vec<u16>,
    /// The largest request body taken (the server's `max_body_bytes`).
    pub(crate) max_body_bytes: u64,
    /// Its middleware (CORS, auth, rate limit, cache), if it has any.
    pub(crate) middleware: Option<Stack>,
    /// Its layers with state, for the same route after a reload.
    pub(crate) kept: crate::middleware::Kept,
    /// Its request counts.
    pub(crate) stats: Arc<RouteStats>,
}

/// Where a route's requests go.
pub(crate) enum Target {
    /// Proxied to a server of an upstream group.
    Upstream(Arc<Group>),
    /// Transcoded into calls of RPC services.
    Service(Arc<Transcoder>),
}

enum HostMatch {
    Exact(String),
    /// `.example.com` for `*.example.com`.
    Suffix(String),
}

fn headers_of(
    which: &str,
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, Template)>, ConfigError> {
    map.iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::new(format!("{which}: {name:?} is not a header name")))?;
            let template = Template::parse(value)
                .map_err(|e| ConfigError::new(format!("{which}: header {name}: {e}")))?;
            Ok((name, template))
        })
        .collect()
}

fn names_of(which: &str, names: &[String]) -> Result<Vec<HeaderName>, ConfigError> {
    names
        .iter()
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::new(format!("{which}: {name:?} is not a header name")))
        })
        .collect()
}

/// A route's name in metrics: its `name`, or its host and path.
pub(crate) fn name_of(settings: &config::Route) -> String {
    match &settings.name {
        Some(name) => name.clone(),
        None => format!(
            "{}{}",
            settings.host.as_deref().unwrap_or(""),
            settings.path
        ),
    }
}

impl Route {
    pub(crate) fn new(
        index: usize,
        settings: &config::Route,
        groups: &HashMap<String, Arc<Group>>,
        services: &HashMap<String, Arc<Transcoder>>,
        max_body_bytes: u64,
        registry: &Registry,
        previous: Option<&Route>,
    ) -> Result<Route, ConfigError> {
        let which = format!("route {} (path {:?})", index + 1, settings.path);
        let target = match &settings.service {
            Some(service) => Target::Service(services.get(service).cloned().ok_or_else(|| {
                ConfigError::new(format!(
                    "{which} goes to service {service:?}, which is not defined"
                ))
            })?),
            None => Target::Upstream(groups.get(&settings.upstream).cloned().ok_or_else(|| {
                ConfigError::new(format!(
                    "{which} goes to upstream {:?}, which is not defined",
                    settings.upstream
                ))
            })?),
        };
        let host = settings.host.as_deref().map(|host| {
            let host = host.to_ascii_lowercase();
            match host.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(host),
            }
        });
        let methods = settings
            .methods
            .iter()
            .map(|method| {
                Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| ConfigError::new(format!("{which}: {method:?} is not a method")))
            })
            .collect::<Result<_, _>>()?;
        let headers = settings
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::new(format!("{which}: {name:?} is not a header name"))
                })?;
                let value = match value.as_str() {
                    "*" => None,
                    value => Some(HeaderValue::from_str(value).map_err(|_| {
                        ConfigError::new(format!("{which}: {value:?} is not a header value"))
                    })?),
                };
                Ok((name, value))
            })
            .collect::<Result<_, ConfigError>>()?;
        let (middleware, kept) = crate::middleware::stack(&which, settings, previous)?;
        Ok(Route {
            host,
            prefix: settings.path.clone(),
            methods,
            headers,
            target,
            rewrite_prefix: settings.rewrite_prefix.clone(),
            set_request_headers: headers_of(&which, &settings.set_request_headers)?,
            remove_request_headers: names_of(&which, &settings.remove_request_headers)?,
            set_response_headers: headers_of(&which, &settings.set_response_headers)?,
            remove_response_headers: names_of(&which, &settings.remove_response_headers)?,
            retry_statuses: settings
                .retry
                .on
                .iter()
                .filter_map(|on| on.status())
                .collect(),
            max_body_bytes,
            middleware,
            kept,
            stats: registry.route(&name_of(settings)),
            settings: settings.clone(),
        })
    }

    /// Whether it takes a request for `host` (lowercase, without port).
    ///
    /// A CORS preflight goes to the route the request it asks about would
    /// go to: its method is the one in `Access-Control-Request-Method`,
    /// and a header condition holds when the header is named in
    /// `Access-Control-Request-Headers` (a preflight carries no values).
    pub(crate) fn matches(&self, host: &str, parts: &http::request::Parts) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(exact)) => host == exact,
            Some(HostMatch::Suffix(suffix)) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        };
        if !host_ok || !parts.uri.path().starts_with(&self.prefix) {
            return false;
        }
        if self.methods.is_empty() && self.headers.is_empty() {
            return true;
        }
        if let Some(asked) = preflight_of(parts) {
            return (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|method| method.as_str().as_bytes() == asked.method))
                && self.headers.iter().all(|(name, _)| {
                    asked
                        .headers
                        .split(',')
                        .any(|named| named.trim().eq_ignore_ascii_case(name.as_str()))
                });
        }
        (self.methods.is_empty() || self.methods.contains(&parts.method))
            && self.headers.iter().all(|(name, want)| {
                let mut values = parts.headers.get_all(name).iter();
                match want {
                    None => values.next().is_some(),
                    Some(want) => values.any(|value| value == want),
                }
            })
    }

    /// The path and query to send upstream: the prefix replaced when the
    /// route rewrites it.
    pub(crate) fn upstream_path<'a>(&self, uri: &'a http::Uri) -> std::borrow::Cow<'a, str> {
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        match &self.rewrite_prefix {
            None => std::borrow::Cow::Borrowed(path_and_query),
            Some(replacement) => {
                let rest = &path_and_query[self.prefix.len().min(path_and_query.len())..];
                let mut path = String::with_capacity(replacement.len() + rest.len());
                path.push_str(replacement);
                // `/api/` -> `/`: "/api/x" becomes "/x", not "//x".
                if path.ends_with('/') && rest.starts_with('/') {
                    path.push_str(&rest[1..]);
                } else {
                    path.push_str(rest);
                }
                std::borrow::Cow::Owned(path)
            }
        }
    }
}

/// What a CORS preflight asks about.
struct Preflight<'a> {
    method: &'a [u8],
    /// `Access-Control-Request-Headers`, comma-separated names.
    headers: &'a str,
}

/// The method and headers a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) asks about; `None` for other requests.
fn preflight_of(parts: &http::request::Parts) -> Option<Preflight<'_>> {
    if parts.method != Method::OPTIONS || !parts.headers.contains_key(http::header::ORIGIN) {
        return None;
    }
    let method = parts
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?
        .as_bytes();
    let headers = parts
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    Some(Preflight { method, headers })
}

/// The request's host: the URI's authority (HTTP/2, absolute-form) or the
/// Host header, lowercase, without port. Empty if there is none. Borrowed
/// when it is lowercase already, as hosts nearly always are.
pub(crate) fn host_of(parts: &http::request::Parts) -> std::borrow::Cow<'_, str> {
    let raw = match parts.uri.host() {
        Some(host) => host,
        None => match parts
            .headers
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
        {
            // [v6]:port, name:port, name
            Some(host) => match host.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(rest),
                None => host.rsplit_once(':').map_or(host, |(name, _)| name),
            },
            None => "",
        },
    };
    if raw.bytes().any(|byte| byte.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(raw.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    async fn routes(text: &str) -> Vec<Route> {
        let config = Config::from_toml(text).unwrap();
        let mut groups = HashMap::new();
        for (name, upstream) in &config.upstreams {
            groups.insert(
                name.clone(),
                Group::build(name, upstream, None).await.unwrap(),
            );
        }
        config
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                Route::new(
                    index,
                    route,
                    &groups,
                    &HashMap::new(),
                    0,
                    &Registry::default(),
                    None,
                )
                .unwrap()
            })
            .collect()
    }

    fn first(routes: &[Route], request: http::Request<()>) -> Option<&str> {
        let (parts, ()) = request.into_parts();
        let host = host_of(&parts);
        routes
            .iter()
            .find(|route| route.matches(&host, &parts))
            .map(|route| match &route.target {
                Target::Upstream(group) => group.name.as_str(),
                Target::Service(_) => "service",
            })
    }

    #[tokio::test]
    async fn routes_match_by_host_prefix_method_and_header() {
        let routes = routes(
            r#"
            [upstreams.a]
            servers = [{ address = "127.0.0.1:1" }]
            [upstreams.b]
            servers = [{ address = "127.0.0.1:2" }]
            [upstreams.c]
            servers = [{ address = "127.0.0.1:3" }]
            [upstreams.d]
            servers = [{ address = "127.0.0.1:4" }]

            [[routes]]
            host = "*.example.com"
            path = "/api/"
            methods = ["post"]
            upstream = "a"
            [[routes]]
            path = "/api/"
            headers = { "x-canary" = "1" }
            upstream = "b"
            [[routes]]
            path = "/api/"
            headers = { "x-debug" = "*" }
            upstream = "c"
            [[routes]]
            path = "/"
            upstream = "d"
            "#,
        )
        .await;
        let request = |method: &str, uri: &str, headers: &[(&str, &str)]| {
            let mut builder = http::Request::builder().method(method).uri(uri);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(
            first(
                &routes,
                request("POST", "/api/x", &[("host", "Shop.Example.com:8080")])
            ),
            Some("a")
        );
        assert_eq!(
            first(
                &routes,
                request("POST", "/api/x", &[("host", "example.com")])
            ),
            Some("d"),
            "*.example.com is not example.com"
        );
        assert_eq!(
            first(
                &routes,
                request(
                    "GET",
                    "/api/x",
                    &[("host", "a.example.com"), ("x-canary", "1")]
                )
            ),
            Some("b")
        );
        assert_eq!(
            first(
                &routes,
                request("GET", "/api/x", &[("x-canary", "2"), ("x-debug", "")])
            ),
            Some("c")
        );
        assert_eq!(first(&routes, request("GET", "/apix", &[])), Some("d"));
        assert_eq!(
            first(
                &routes,
                request("GET", "http://Shop.example.com/api/1", &[])
            ),
            Some("d"),
            "GET is not among the first route's methods"
        );
    }

    #[tokio::test]
    async fn preflights_go_where_the_request_they_ask_about_would() {
        let routes = routes(
            r#"
            [upstreams.a]
            servers = [{ address = "127.0.0.1:1" }]
            [upstreams.b]
            servers = [{ address = "127.0.0.1:2" }]
            [upstreams.c]
            servers = [{ address = "127.0.0.1:3" }]
            [[routes]]
            path = "/api/"
            methods = ["POST"]
            headers = { "x-tenant" = "blue" }
            upstream = "a"
            [[routes]]
            path = "/api/"
            methods = ["PUT"]
            upstream = "b"
            [[routes]]
            path = "/"
            upstream = "c"
            "#,
        )
        .await;
        let preflight = |method: &str, headers: &str| {
            http::Request::builder()
                .method("OPTIONS")
                .uri("/api/x")
                .header("origin", "https://app.example")
                .header("access-control-request-method", method)
                .header("access-control-request-headers", headers)
                .body(())
                .unwrap()
        };
        assert_eq!(
            first(&routes, preflight("POST", "content-type, X-Tenant")),
            Some("a")
        );
        assert_eq!(first(&routes, preflight("POST", "content-type")), Some("c"));
        assert_eq!(first(&routes, preflight("PUT", "")), Some("b"));
        // Not a preflight (no Origin): an OPTIONS request as any other.
        let plain = http::Request::builder()
            .method("OPTIONS")
            .uri("/api/x")
            .header("access-control-request-method", "PUT")
            .body(())
            .unwrap();
        assert_eq!(first(&routes, plain), Some("c"));
    }

    #[tokio::test]
    async fn prefixes_are_rewritten() {
        let routes = routes(
            r#"
            [upstreams.a]
            servers = [{ address = "127.0.0.1:1" }]
            [[routes]]
            path = "/api/"
            rewrite_prefix = "/"
            upstream = "a"
            [[routes]]
            path = "/old"
            rewrite_prefix = "/new"
            upstream = "a"
            "#,
        )
        .await;
        let uri = |text: &str| text.parse::<http::Uri>().unwrap();
        assert_eq!(
            routes[0].upstream_path(&uri("/api/items?x=1")),
            "/items?x=1"
        );
        assert_eq!(routes[0].upstream_path(&uri("/api/")), "/");
        assert_eq!(routes[1].upstream_path(&uri("/old/a")), "/new/a");
        assert_eq!(routes[1].upstream_path(&uri("/older")), "/newer");
    }
}
