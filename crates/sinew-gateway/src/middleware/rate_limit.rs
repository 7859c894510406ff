//! A rate limit for a route's requests: a token bucket per key, nginx's
//! `limit_req` (without its queue: a request over the limit is answered
//! at once rather than delayed).
//!
//! The key is a template of request variables, `$remote_addr` unless set
//! (`$http_x_api_key`, `$auth_subject`, ...); a request whose key comes
//! out empty is not limited, as in nginx. A request whose bucket is
//! empty is answered 429 with `Retry-After` (whole seconds until its next
//! token, at least 1) and goes no further. The buckets are
//! `sinew_resilience::RateLimiter`'s, the ones sinew's RPC servers limit
//! calls with: a bounded table, made-up keys sharing a few overflow
//! buckets once it is full. A key longer than 64 bytes (a header a
//! client fills) is kept as a keyed 128-bit hash of itself, so the
//! table's memory does not grow with what clients send.

use crate::body::ResponseBody;
use crate::config;
use crate::vars::{RequestVars, Template};
use futures_util::future::{BoxFuture, FutureExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use sinew_resilience::RateLimiter;
use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

struct Settings {
    key: Template,
    limiter: RateLimiter,
    /// Keys for hashing long keys, random for each limit.
    hashers: (RandomState, RandomState),
}

/// The longest key kept as it is.
const MAX_KEY_BYTES: usize = 64;

impl Settings {
    /// `key`, or for a long one a hash of it (SipHash under two random
    /// keys, 128 bits: a client cannot make two keys share a bucket).
    fn bounded(&self, key: String) -> String {
        if key.len() <= MAX_KEY_BYTES {
            return key;
        }
        let (a, b) = &self.hashers;
        format!("#{:016x}{:016x}", a.hash_one(&key), b.hash_one(&key))
    }
}

/// A route's rate limit; see the module docs.
#[derive(Clone)]
pub(crate) struct RateLimitLayer {
    settings: Arc<Settings>,
}

impl RateLimitLayer {
    pub(crate) fn new(limit: &config::RateLimit) -> Result<RateLimitLayer, String> {
        if !(limit.rate.is_finite() && limit.rate > 0.0) || limit.burst == 0 {
            return Err("rate_limit: rate and burst must be more than 0".to_owned());
        }
        let key = Template::parse(&limit.key).map_err(|e| format!("rate_limit.key: {e}"))?;
        let settings =
            sinew_resilience::RateLimit::new(limit.rate, limit.burst).max_keys(limit.max_keys);
        Ok(RateLimitLayer {
            settings: Arc::new(Settings {
                key,
                limiter: RateLimiter::new(settings),
                hashers: (RandomState::new(), RandomState::new()),
            }),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// A route's service under a rate limit.
#[derive(Clone)]
pub(crate) struct RateLimited<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S, B> Service<Request<B>> for RateLimited<S>
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
        let (parts, body) = request.into_parts();
        let remote = parts
            .extensions
            .get::<crate::ClientAddr>()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |client| client.0);
        let host = crate::route::host_of(&parts);
        let key = self.settings.key.expand(&RequestVars {
            parts: &parts,
            remote,
            host: &host,
            request_id: "",
        });
        // As nginx's limit_req: a request whose key is empty (a header it
        // lacks, no one authenticated) is not limited.
        if key.is_empty() {
            return self.inner.call(Request::from_parts(parts, body)).boxed();
        }
        match self
            .settings
            .limiter
            .try_acquire(&self.settings.bounded(key))
        {
            Ok(()) => self.inner.call(Request::from_parts(parts, body)).boxed(),
            Err(wait) => {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut response = crate::proxy::answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests: slow down",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
                std::future::ready(Ok(response)).boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn ok() -> impl Service<
        Request<()>,
        Response = Response<ResponseBody>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<ResponseBody>, Infallible>>,
    > + Clone {
        super::super::testing::service(|_| Response::new(ResponseBody::empty()))
    }

    async fn status(layer: &RateLimitLayer, from: &str, key: &str) -> (StatusCode, Option<String>) {
        let mut request = Request::get("/").header("x-api-key", key).body(()).unwrap();
        request
            .extensions_mut()
            .insert(crate::ClientAddr(from.parse().unwrap()));
        let response = layer.layer(ok()).oneshot(request).await.unwrap();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), retry)
    }

    #[tokio::test(start_paused = true)]
    async fn each_client_gets_its_burst_then_429_until_a_token_comes() {
        let limit = config::RateLimit {
            rate: 0.5,
            burst: 2,
            ..config::RateLimit::default()
        };
        let layer = RateLimitLayer::new(&limit).unwrap();
        for _ in 0..2 {
            assert_eq!(status(&layer, "10.0.0.1:1", "").await.0, StatusCode::OK);
        }
        let (refused, retry) = status(&layer, "10.0.0.1:2", "").await;
        assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("2"), "a token every 2 s");
        // Another address has its own bucket.
        assert_eq!(status(&layer, "10.0.0.2:1", "").await.0, StatusCode::OK);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        assert_eq!(status(&layer, "10.0.0.1:3", "").await.0, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_can_be_headers_and_bad_settings_are_refused() {
        let limit = config::RateLimit {
            rate: 1.0,
            burst: 1,
            key: "$http_x_api_key".to_owned(),
            ..config::RateLimit::default()
        };
        let layer = RateLimitLayer::new(&limit).unwrap();
        assert_eq!(status(&layer, "10.0.0.1:1", "a").await.0, StatusCode::OK);
        assert_eq!(status(&layer, "10.0.0.1:1", "b").await.0, StatusCode::OK);
        assert_eq!(
            status(&layer, "10.0.0.2:1", "a").await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Long keys are hashed: the same long key shares its bucket, a
        // different one does not, and what is kept is short.
        let long = "k".repeat(10_000);
        let other = format!("{}j", "k".repeat(9_999));
        assert_eq!(status(&layer, "10.0.0.1:1", &long).await.0, StatusCode::OK);
        assert_eq!(
            status(&layer, "10.0.0.1:1", &long).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(status(&layer, "10.0.0.1:1", &other).await.0, StatusCode::OK);
        let kept = layer.settings.bounded(long.clone());
        assert_eq!(kept.len(), 33);
        assert_eq!(kept, layer.settings.bounded(long));
        assert_eq!(layer.settings.bounded("short".to_owned()), "short");
        // No key at all: not limited, as in nginx.
        for _ in 0..3 {
            assert_eq!(status(&layer, "10.0.0.2:1", "").await.0, StatusCode::OK);
        }
        for bad in [
            config::RateLimit {
                rate: 0.0,
                ..config::RateLimit::default()
            },
            config::RateLimit {
                burst: 0,
                ..config::RateLimit::default()
            },
            config::RateLimit {
                key: "$nope".to_owned(),
                ..config::RateLimit::default()
            },
        ] {
            assert!(RateLimitLayer::new(&bad).is_err());
        }
    }
}
