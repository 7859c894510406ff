//! A response cache for a route's GET and HEAD requests, in memory,
//! bounded in entries and bytes.
//!
//! A response is kept when its request was a GET or HEAD without
//! credentials (no `Authorization`, `Cookie` or
//! `grpc-metadata-authorization`, and not let in by the route's `auth`:
//! a shared cache keeps no one's private answers, unless the key names
//! the caller with `$auth_subject`, which keeps each caller's apart), its
//! status one RFC 9110 lets a cache keep without asking (200, 203, 204,
//! 300, 301, 308, 404, 410), its `Cache-Control` has none of `no-store`,
//! `no-cache` and `private`, it sets no cookie, does not `Vary: *`, and its
//! body is known to be at most `max_entry_bytes`. It is served for
//! `s-maxage`, else `max-age`, else the route's `ttl`, to requests with the
//! same key (`$scheme://$host$request_uri` unless set) and the same values of the
//! headers it varies by, with `Age` and `X-Cache: HIT`; other answers say
//! `X-Cache: MISS` (looked up, not found) or `BYPASS` (not for the cache).
//! A request's own `Cache-Control: no-cache` (or `max-age=0`) fetches a
//! fresh answer, which is kept, and `no-store` keeps nothing. A successful
//! POST, PUT, PATCH or DELETE drops the entry of its key, as RFC 9111
//! §4.4 asks.
//!
//! An entry's size is its body, key and headers together, and `max_bytes`
//! bounds their sum. When full, expired entries go first (swept at most
//! once a second, so that a full cache does not scan every entry on every
//! insert), then the oldest. The cache keeps no lock across an await: a
//! lookup and an insert each hold it briefly.

use crate::body::ResponseBody;
use crate::config;
use crate::vars::{RequestVars, Template};
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Statuses kept without explicit freshness (RFC 9110 §15.1's
/// heuristically cacheable ones that make sense here).
const KEPT: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 410];

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// What it counts for against `max_bytes`.
    size: usize,
    /// The request headers the response varies by, and their values.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    stored: Instant,
    ttl: Duration,
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    /// Keys by when they were stored, oldest first (a key stored again
    /// appears twice: its older place is skipped when reached).
    order: VecDeque<(String, Instant)>,
    bytes: usize,
    /// When expired entries were last swept out.
    swept: Option<Instant>,
}

/// The bytes an entry counts for: its body, key and headers.
fn size_of(key: &str, headers: &HeaderMap, body: &Bytes) -> usize {
    let headers: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    body.len() + key.len() + headers
}

impl Store {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.size;
        }
    }

    /// Makes room for `size` more bytes and one more entry.
    fn make_room(&mut self, settings: &config::Cache, size: usize, now: Instant) {
        let full = |store: &Store| {
            store.entries.len() >= settings.max_entries || store.bytes + size > settings.max_bytes
        };
        let sweep_due = self
            .swept
            .is_none_or(|swept| now.saturating_duration_since(swept) >= Duration::from_secs(1));
        if full(self) && sweep_due {
            self.swept = Some(now);
            let expired: Vec<String> = self
                .entries
                .iter()
                .filter(|(_, entry)| now.saturating_duration_since(entry.stored) >= entry.ttl)
                .map(|(key, _)| key.clone())
                .collect();
            for key in expired {
                self.remove(&key);
            }
        }
        while full(self) {
            let Some((key, stored)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|entry| entry.stored == stored)
            {
                self.remove(&key);
            }
        }
        // Places of keys gone or stored again since.
        if self.order.len() > 2 * settings.max_entries.max(16) {
            let entries = &self.entries;
            self.order
                .retain(|(key, stored)| entries.get(key).is_some_and(|e| e.stored == *stored));
        }
    }
}

struct Settings {
    config: config::Cache,
    key: Template,
    /// The key names the caller: answers to authenticated requests may
    /// be kept, each caller's apart.
    per_caller: bool,
    store: Mutex<Store>,
}

/// A route's response cache; see the module docs.
#[derive(Clone)]
pub(crate) struct CacheLayer {
    settings: Arc<Settings>,
}

impl CacheLayer {
    pub(crate) fn new(cache: &config::Cache) -> Result<CacheLayer, String> {
        if cache.max_entries == 0 || cache.max_bytes == 0 || cache.ttl.is_zero() {
            return Err("cache: ttl, max_entries and max_bytes must be more than 0".to_owned());
        }
        if cache.max_entry_bytes > cache.max_bytes {
            return Err(format!(
                "cache: max_entry_bytes ({}) is more than max_bytes ({}): no such entry would fit",
                cache.max_entry_bytes, cache.max_bytes
            ));
        }
        let key = Template::parse(&cache.key).map_err(|e| format!("cache.key: {e}"))?;
        Ok(CacheLayer {
            settings: Arc::new(Settings {
                config: cache.clone(),
                key,
                per_caller: cache.key.contains("$auth_subject")
                    || cache.key.contains("${auth_subject}"),
                store: Mutex::new(Store::default()),
            }),
        })
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// A route's service behind its response cache.
#[derive(Clone)]
pub(crate) struct Cache<S> {
    inner: S,
    settings: Arc<Settings>,
}

/// The directives of a `Cache-Control` header set.
fn directives(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|directive| directive.trim().to_ascii_lowercase())
        .filter(|directive| !directive.is_empty())
        .collect()
}

fn seconds(directives: &[String], name: &str) -> Option<Duration> {
    directives.iter().find_map(|directive| {
        let value = directive.strip_prefix(name)?.strip_prefix('=')?;
        value
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

fn tagged(mut response: Response<ResponseBody>, tag: &'static str) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(X_CACHE.clone(), HeaderValue::from_static(tag));
    response
}

impl Settings {
    fn key_of(&self, parts: &http::request::Parts) -> String {
        let remote = parts
            .extensions
            .get::<crate::ClientAddr>()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |client| client.0);
        let host = crate::route::host_of(parts);
        self.key.expand(&RequestVars {
            parts,
            remote,
            host: &host,
            request_id: "",
        })
    }

    /// A fresh entry's response for a request with `headers`.
    fn lookup(
        &self,
        key: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<ResponseBody>> {
        let store = crate::lock(&self.store);
        let entry = store.entries.get(key)?;
        let age = Instant::now().saturating_duration_since(entry.stored);
        if age >= entry.ttl {
            return None;
        }
        let same = entry
            .vary
            .iter()
            .all(|(name, value)| headers.get(name) == value.as_ref());
        if !same {
            return None;
        }
        let body = if method == Method::HEAD {
            ResponseBody::empty()
        } else {
            ResponseBody::full(entry.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age.as_secs()));
        Some(tagged(response, "HIT"))
    }

    /// How long `response` may be kept, or `None` if it may not.
    fn freshness(&self, response: &Response<ResponseBody>) -> Option<Duration> {
        if !KEPT.contains(&response.status().as_u16())
            || response.headers().contains_key(header::SET_COOKIE)
        {
            return None;
        }
        let said = directives(response.headers());
        if said
            .iter()
            .any(|d| matches!(d.as_str(), "no-store" | "no-cache" | "private"))
        {
            return None;
        }
        let vary_all = response
            .headers()
            .get_all(header::VARY)
            .iter()
            .any(|value| {
                value
                    .to_str()
                    .is_ok_and(|v| v.split(',').any(|n| n.trim() == "*"))
            });
        if vary_all {
            return None;
        }
        let ttl = seconds(&said, "s-maxage")
            .or_else(|| seconds(&said, "max-age"))
            .unwrap_or(self.config.ttl);
        let fits = response
            .body()
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= self.config.max_entry_bytes as u64);
        (fits && !ttl.is_zero()).then_some(ttl)
    }

    fn store(
        &self,
        key: String,
        request: &HeaderMap,
        response: &Response<ResponseBody>,
        body: Bytes,
        ttl: Duration,
    ) {
        let vary = response
            .headers()
            .get_all(header::VARY)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .map(|name| {
                let value = request.get(&name).cloned();
                (name, value)
            })
            .collect();
        let now = Instant::now();
        let mut headers = response.headers().clone();
        headers.remove(&X_CACHE);
        // Each request has an id of its own, a hit too.
        headers.remove("x-request-id");
        let size = size_of(&key, &headers, &body);
        if size > self.config.max_bytes {
            return;
        }
        let mut store = crate::lock(&self.store);
        store.remove(&key);
        store.make_room(&self.config, size, now);
        store.bytes += size;
        store.order.push_back((key.clone(), now));
        store.entries.insert(
            key,
            Entry {
                status: response.status(),
                headers,
                body,
                size,
                vary,
                stored: now,
                ttl,
            },
        );
    }
}

impl<S, B> Service<Request<B>> for Cache<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let settings = self.settings.clone();
        let (parts, body) = request.into_parts();
        let readable = matches!(parts.method, Method::GET | Method::HEAD);
        let changes = matches!(
            parts.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        // A shared cache keeps no one's private answers: not a request
        // that carried credentials of any kind (a bearer token, an API
        // key the route's auth took, cookies, gRPC metadata).
        // A key naming the caller (`$auth_subject`) keeps answers per
        // caller, so an authenticated caller's may be kept then.
        let authenticated = parts.extensions.get::<super::Authenticated>().is_some();
        let credentials = parts.headers.contains_key(header::AUTHORIZATION)
            || parts.headers.contains_key(header::COOKIE)
            || parts.headers.contains_key("grpc-metadata-authorization");
        let private = (credentials || authenticated) && !(settings.per_caller && authenticated);
        if private || !(readable || changes) {
            let future = self.inner.call(Request::from_parts(parts, body));
            return async move { Ok(tagged(future.await?, "BYPASS")) }.boxed();
        }
        let key = settings.key_of(&parts);
        if changes {
            let future = self.inner.call(Request::from_parts(parts, body));
            return async move {
                let response = future.await?;
                if response.status().is_success() || response.status().is_redirection() {
                    crate::lock(&settings.store).remove(&key);
                }
                Ok(response)
            }
            .boxed();
        }
        let asked = directives(&parts.headers);
        let fresh_wanted = asked.iter().any(|d| d == "no-cache" || d == "max-age=0");
        let no_store = asked.iter().any(|d| d == "no-store");
        if !fresh_wanted && !no_store {
            if let Some(mut hit) = settings.lookup(&key, &parts.method, &parts.headers) {
                let id = crate::proxy::request_id(&parts.headers);
                hit.headers_mut().insert("x-request-id", id);
                return std::future::ready(Ok(hit)).boxed();
            }
        }
        let method = parts.method.clone();
        let request_headers = parts.headers.clone();
        let future = self.inner.call(Request::from_parts(parts, body));
        async move {
            let response = future.await?;
            // A HEAD's answer has no body to keep.
            let ttl = if method == Method::GET && !no_store {
                settings.freshness(&response)
            } else {
                None
            };
            let Some(ttl) = ttl else {
                return Ok(tagged(response, "MISS"));
            };
            let (head, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return Ok(crate::proxy::answer(
                        StatusCode::BAD_GATEWAY,
                        &format!("the response body broke off: {error}"),
                    ))
                }
            };
            let response = Response::from_parts(head, ResponseBody::full(body.clone()));
            settings.store(key, &request_headers, &response, body, ttl);
            Ok(tagged(response, "MISS"))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    /// Answers with the body "n" (a count of calls) and the headers given.
    #[derive(Clone)]
    struct Origin {
        calls: Arc<AtomicUsize>,
        headers: Vec<(&'static str, &'static str)>,
        status: u16,
    }

    impl Service<Request<()>> for Origin {
        type Response = Response<ResponseBody>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<ResponseBody>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let mut response = Response::new(ResponseBody::full(n.to_string()));
            *response.status_mut() = StatusCode::from_u16(self.status).unwrap();
            for (name, value) in &self.headers {
                response
                    .headers_mut()
                    .append(*name, HeaderValue::from_static(value));
            }
            std::future::ready(Ok(response))
        }
    }

    fn origin(headers: &[(&'static str, &'static str)]) -> Origin {
        Origin {
            calls: Arc::new(AtomicUsize::new(0)),
            headers: headers.to_vec(),
            status: 200,
        }
    }

    fn layer(toml: &str) -> CacheLayer {
        CacheLayer::new(&toml::from_str(toml).unwrap()).unwrap()
    }

    async fn get(service: &Cache<Origin>, uri: &str, headers: &[(&str, &str)]) -> (String, String) {
        let mut request = Request::get(uri).header("host", "h");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = service
            .clone()
            .oneshot(request.body(()).unwrap())
            .await
            .unwrap();
        let tag = response.headers()["x-cache"].to_str().unwrap().to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (String::from_utf8(body.to_vec()).unwrap(), tag)
    }

    #[tokio::test(start_paused = true)]
    async fn gets_are_served_again_until_they_expire() {
        let cache = layer("ttl = \"10s\"").layer(origin(&[]));
        assert_eq!(get(&cache, "/a", &[]).await, ("1".into(), "MISS".into()));
        assert_eq!(get(&cache, "/a", &[]).await, ("1".into(), "HIT".into()));
        assert_eq!(get(&cache, "/b", &[]).await, ("2".into(), "MISS".into()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(get(&cache, "/a", &[]).await, ("3".into(), "MISS".into()));
        // The request may ask for a fresh answer.
        assert_eq!(
            get(&cache, "/a", &[("cache-control", "no-cache")]).await,
            ("4".into(), "MISS".into())
        );
        assert_eq!(get(&cache, "/a", &[]).await, ("4".into(), "HIT".into()));
        // Authorized requests are not the cache's.
        assert_eq!(
            get(&cache, "/a", &[("authorization", "Bearer x")]).await,
            ("5".into(), "BYPASS".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_says_how_long_or_not_at_all() {
        let cache =
            layer("ttl = \"10s\"").layer(origin(&[("cache-control", "public, max-age=60")]));
        get(&cache, "/a", &[]).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(get(&cache, "/a", &[]).await.1, "HIT");
        for headers in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "private, max-age=60")],
            &[("set-cookie", "a=b")],
            &[("vary", "*")],
        ] {
            let cache = layer("ttl = \"10s\"").layer(origin(headers));
            get(&cache, "/a", &[]).await;
            assert_eq!(
                get(&cache, "/a", &[]).await,
                ("2".into(), "MISS".into()),
                "{headers:?}"
            );
        }
        let mut failing = origin(&[]);
        failing.status = 500;
        let cache = layer("ttl = \"10s\"").layer(failing);
        get(&cache, "/a", &[]).await;
        assert_eq!(get(&cache, "/a", &[]).await.0, "2");
    }

    #[tokio::test(start_paused = true)]
    async fn vary_keeps_answers_apart_and_changes_drop_the_entry() {
        let cache = layer("ttl = \"10s\"").layer(origin(&[("vary", "accept-language")]));
        get(&cache, "/a", &[("accept-language", "fr")]).await;
        assert_eq!(
            get(&cache, "/a", &[("accept-language", "fr")]).await.1,
            "HIT"
        );
        assert_eq!(
            get(&cache, "/a", &[("accept-language", "de")]).await.1,
            "MISS"
        );
        let response = cache
            .clone()
            .oneshot(Request::delete("/a").header("host", "h").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            get(&cache, "/a", &[("accept-language", "de")]).await.1,
            "MISS"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn authenticated_answers_are_kept_only_per_caller() {
        let send = |cache: Cache<Origin>, who: &str| {
            let mut request = Request::get("/me").header("host", "h").body(()).unwrap();
            request
                .extensions_mut()
                .insert(super::super::Authenticated::ApiKey(who.to_owned()));
            async move {
                let response = cache.oneshot(request).await.unwrap();
                let tag = response.headers()["x-cache"].to_str().unwrap().to_owned();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (String::from_utf8(body.to_vec()).unwrap(), tag)
            }
        };
        let shared = layer("ttl = \"10s\"").layer(origin(&[]));
        assert_eq!(
            send(shared.clone(), "alice").await,
            ("1".into(), "BYPASS".into())
        );
        assert_eq!(
            send(shared.clone(), "bob").await,
            ("2".into(), "BYPASS".into())
        );
        assert_eq!(get(&shared, "/me", &[("cookie", "s=1")]).await.1, "BYPASS");
        let per_caller =
            layer("ttl = \"10s\"\nkey = \"$auth_subject $request_uri\"").layer(origin(&[]));
        assert_eq!(
            send(per_caller.clone(), "alice").await,
            ("1".into(), "MISS".into())
        );
        assert_eq!(
            send(per_caller.clone(), "alice").await,
            ("1".into(), "HIT".into())
        );
        assert_eq!(
            send(per_caller.clone(), "bob").await,
            ("2".into(), "MISS".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_is_bounded_in_entries_and_bytes() {
        let cache = layer("ttl = \"60s\"\nmax_entries = 3").layer(origin(&[]));
        for path in ["/1", "/2", "/3", "/4"] {
            get(&cache, path, &[]).await;
        }
        {
            let store = crate::lock(&cache.settings.store);
            assert_eq!(store.entries.len(), 3);
            assert!(
                !store.entries.contains_key("http://h/1"),
                "the oldest went first"
            );
        }
        // Bytes count body, key and headers: room for two entries here.
        let cache = layer("ttl = \"60s\"\nmax_bytes = 150\nmax_entry_bytes = 100")
            .layer(origin(&[("x-served-by", "origin")]));
        for path in ["/1", "/2", "/3", "/4"] {
            get(&cache, path, &[]).await;
        }
        {
            let store = crate::lock(&cache.settings.store);
            assert!(store.bytes <= 150, "{}", store.bytes);
            assert_eq!(store.entries.len(), 2, "{}", store.bytes);
            let counted: usize = store.entries.values().map(|e| e.size).sum();
            assert_eq!(counted, store.bytes);
        }
        // A key longer than all of max_bytes is not kept.
        let long = format!("/{}", "k".repeat(500));
        assert_eq!(get(&cache, &long, &[]).await.1, "MISS");
        assert_eq!(get(&cache, &long, &[]).await.1, "MISS");
        let bigger: config::Cache = toml::from_str("max_bytes = 10\nmax_entry_bytes = 11").unwrap();
        assert!(CacheLayer::new(&bigger)
            .err()
            .unwrap()
            .contains("max_entry_bytes"));
        let zero: config::Cache = toml::from_str("max_entries = 0").unwrap();
        assert!(CacheLayer::new(&zero).is_err());
    }
}
