//! CORS: which web pages of other origins may call a route from a browser.
//!
//! A preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) from an allowed origin, for an allowed
//! method and headers, is answered here with 204 and the
//! `Access-Control-Allow-*` headers, and goes no further; from another
//! origin, or asking for more, it gets 403. Other requests go on; the
//! response to one from an allowed origin gets
//! `Access-Control-Allow-Origin` (the origin itself, with `Vary: Origin`,
//! unless any origin is allowed and no credentials are), and
//! `Access-Control-Expose-Headers` and `-Allow-Credentials` as set. A
//! request from an origin not allowed is served without them, so the
//! browser keeps its answer from the page, as the CORS protocol has it.

use crate::body::ResponseBody;
use crate::config;
use futures_util::future::{BoxFuture, FutureExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

struct Settings {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

/// CORS for a route; see the module docs.
#[derive(Clone)]
pub(crate) struct CorsLayer {
    settings: Arc<Settings>,
}

fn joined<T: AsRef<str>>(items: &[T]) -> Result<HeaderValue, String> {
    let text = items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).map_err(|_| format!("cors: {text:?} is not a header value"))
}

impl CorsLayer {
    pub(crate) fn new(cors: &config::Cors) -> Result<CorsLayer, String> {
        if cors.allow_origins.is_empty() {
            return Err("cors.allow_origins is empty: name the origins, or \"*\"".to_owned());
        }
        let any_origin = cors.allow_origins.iter().any(|origin| origin == "*");
        if any_origin && cors.allow_credentials {
            return Err(
                "cors: allow_credentials with any origin (\"*\") would let every site act as the user; name the origins"
                    .to_owned(),
            );
        }
        let origins = cors
            .allow_origins
            .iter()
            .filter(|origin| *origin != "*")
            .map(|origin| {
                HeaderValue::from_str(origin.trim_end_matches('/'))
                    .map_err(|_| format!("cors: {origin:?} is not an origin"))
            })
            .collect::<Result<_, _>>()?;
        let methods = cors
            .allow_methods
            .iter()
            .map(|method| {
                Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("cors: {method:?} is not a method"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = cors
            .allow_headers
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("cors: {name:?} is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expose_headers = if cors.expose_headers.is_empty() {
            None
        } else {
            Some(joined(&cors.expose_headers)?)
        };
        Ok(CorsLayer {
            settings: Arc::new(Settings {
                any_origin,
                origins,
                allow_methods: joined(&methods.iter().map(Method::as_str).collect::<Vec<_>>())?,
                allow_headers: joined(&headers.iter().map(HeaderName::as_str).collect::<Vec<_>>())?,
                methods,
                headers,
                expose_headers,
                credentials: cors.allow_credentials,
                max_age: HeaderValue::from(cors.max_age.as_secs()),
            }),
        })
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// A route's service under CORS.
#[derive(Clone)]
pub(crate) struct Cors<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl Settings {
    fn allows(&self, origin: &HeaderValue) -> bool {
        self.any_origin || self.origins.iter().any(|allowed| allowed == origin)
    }

    /// The response headers for a request from an allowed `origin`.
    fn decorate(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        if self.any_origin && !self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The answer to a preflight.
    fn preflight(&self, origin: &HeaderValue, request: &HeaderMap) -> Response<ResponseBody> {
        let method_ok = request
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|value| Method::from_bytes(value.as_bytes()).ok())
            .is_some_and(|method| self.methods.contains(&method));
        let headers_ok = request
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .all(|name| {
                self.headers
                    .iter()
                    .any(|allowed| allowed.as_str().eq_ignore_ascii_case(name))
            });
        if !(self.allows(origin) && method_ok && headers_ok) {
            return crate::proxy::answer(
                StatusCode::FORBIDDEN,
                "this cross-origin request is not allowed",
            );
        }
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.decorate(origin, headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        headers.append(
            header::VARY,
            HeaderValue::from_static(
                "Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        response
    }
}

impl<S, B> Service<Request<B>> for Cors<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
            // Not from a browser's cross-origin request; the answer still
            // varies by Origin for caches on the way, unless any origin
            // gets the same.
            let future = self.inner.call(request);
            let vary = !self.settings.any_origin || self.settings.credentials;
            return async move {
                let mut response = future.await?;
                if vary {
                    response
                        .headers_mut()
                        .append(header::VARY, HeaderValue::from_static("Origin"));
                }
                Ok(response)
            }
            .boxed();
        };
        let settings = self.settings.clone();
        if request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            let response = settings.preflight(&origin, request.headers());
            return std::future::ready(Ok(response)).boxed();
        }
        let future = self.inner.call(request);
        async move {
            let mut response = future.await?;
            if settings.allows(&origin) {
                let headers = response.headers_mut();
                settings.decorate(&origin, headers);
                if let Some(expose) = &settings.expose_headers {
                    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                }
            }
            Ok(response)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn layer(toml: &str) -> CorsLayer {
        let cors: config::Cors = toml::from_str(toml).unwrap();
        CorsLayer::new(&cors).unwrap()
    }

    /// A service that answers 200 "inner".
    fn inner() -> impl Service<
        Request<()>,
        Response = Response<ResponseBody>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<ResponseBody>, Infallible>>,
    > + Clone {
        super::super::testing::service(|_| Response::new(ResponseBody::full("inner")))
    }

    async fn send(layer: &CorsLayer, request: Request<()>) -> Response<ResponseBody> {
        layer.layer(inner()).oneshot(request).await.unwrap()
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> Request<()> {
        Request::builder()
            .method("OPTIONS")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn preflights_from_allowed_origins_are_answered_here() {
        let cors = layer(r#"allow_origins = ["https://app.example"]"#);
        let response = send(
            &cors,
            preflight("https://app.example", "POST", "Content-Type, X-Grpc-Web"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let headers = response.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert!(headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-grpc-web"));
        assert_eq!(headers["access-control-max-age"], "600");
        // Another origin, a method or a header not allowed: refused.
        for request in [
            preflight("https://evil.example", "POST", ""),
            preflight("https://app.example", "TRACE", ""),
            preflight("https://app.example", "GET", "x-secret"),
        ] {
            assert_eq!(send(&cors, request).await.status(), StatusCode::FORBIDDEN);
        }
    }

    #[tokio::test]
    async fn responses_carry_the_headers_only_for_allowed_origins() {
        let cors = layer(
            r#"allow_origins = ["https://app.example"]
               allow_credentials = true
               expose_headers = ["x-request-id"]"#,
        );
        let request = |origin: &str| Request::get("/").header("origin", origin).body(()).unwrap();
        let allowed = send(&cors, request("https://app.example")).await;
        assert_eq!(
            allowed.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(
            allowed.headers()["access-control-allow-credentials"],
            "true"
        );
        assert_eq!(
            allowed.headers()["access-control-expose-headers"],
            "x-request-id"
        );
        assert_eq!(allowed.headers()["vary"], "Origin");
        let other = send(&cors, request("https://evil.example")).await;
        assert_eq!(other.status(), StatusCode::OK);
        assert!(other.headers().get("access-control-allow-origin").is_none());
        // No Origin: not a cross-origin request, no CORS headers, but
        // caches are told the answer varies by Origin.
        let plain = send(&cors, Request::get("/").body(()).unwrap()).await;
        assert!(plain.headers().get("access-control-allow-origin").is_none());
        assert_eq!(plain.headers()["vary"], "Origin");
    }

    #[tokio::test]
    async fn any_origin_is_a_star_and_refuses_credentials() {
        let cors = layer(r#"allow_origins = ["*"]"#);
        let response = send(
            &cors,
            Request::get("/")
                .header("origin", "https://x.example")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let both: config::Cors =
            toml::from_str("allow_origins = [\"*\"]\nallow_credentials = true").unwrap();
        assert!(CorsLayer::new(&both)
            .err()
            .unwrap()
            .contains("name the origins"));
        let none: config::Cors = toml::from_str("").unwrap();
        assert!(CorsLayer::new(&none).err().unwrap().contains("empty"));
    }
}
