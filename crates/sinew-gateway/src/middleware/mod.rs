//! A route's middleware, as tower layers around what the route does
//! (proxy or transcode): CORS, authentication, rate limits and a response
//! cache, each configured per route; and the access log, for every
//! request the gateway answers.
//!
//! ```text
//!  request ─▶ cors ─▶ auth ─▶ rate_limit ─▶ cache ─▶ core (proxy.rs / transcode/)
//!             preflights,  401        429      GET hits
//!             headers out
//! ```
//!
//! The order is fixed: a browser's preflight is answered before anyone is
//! asked for credentials, a limit may be keyed by who authenticated
//! (`$auth_subject`), and only requests that passed reach the cache. A route
//! without middleware has no stack at all: its requests go straight to the
//! core, with no boxing on the way.
//!
//! Each layer is generic over the request body, so its logic is tested
//! with tower's mocks; the gateway runs them over hyper's bodies.

pub(crate) mod access_log;
mod auth;
mod cache;
mod cors;
mod rate_limit;

use crate::body::ResponseBody;
use crate::config::{self, ConfigError};
use crate::route::Route;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

pub(crate) use auth::Authenticated;

/// A route's middleware around its core.
pub(crate) type Stack = BoxCloneSyncService<Request<Incoming>, Response<ResponseBody>, Infallible>;

/// The route a request matched, for the core at the bottom of its stack.
#[derive(Clone)]
pub(crate) struct Matched(pub(crate) Arc<Route>);

/// The bottom of every stack: what the matched route does with the
/// request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Core;

impl tower::Service<Request<Incoming>> for Core {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        Box::pin(async move {
            let Some(Matched(route)) = request.extensions().get::<Matched>().cloned() else {
                // Only the gateway calls its stacks, after matching.
                return Ok(crate::proxy::answer(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "a route's middleware was called without its route",
                ));
            };
            Ok(crate::proxy::handle(&route, request).await)
        })
    }
}

/// The layers of a route that hold what clients did (rate-limit buckets,
/// cached answers), kept for a reload that leaves their settings as they
/// were, so that a reload neither refills every bucket nor empties the
/// cache.
#[derive(Clone, Default)]
pub(crate) struct Kept {
    rate_limit: Option<rate_limit::RateLimitLayer>,
    cache: Option<cache::CacheLayer>,
}

/// The stack of a route's settings (`None` when it has no middleware),
/// and its layers with state. `previous` is the same route before a
/// reload: its rate limit and cache are kept where their settings are
/// unchanged (CORS and auth are made again: a reload is how key files
/// are read anew).
pub(crate) fn stack(
    which: &str,
    settings: &config::Route,
    previous: Option<&Route>,
) -> Result<(Option<Stack>, Kept), ConfigError> {
    let error = |e: String| ConfigError::new(format!("{which}: {e}"));
    let cors = settings
        .cors
        .as_ref()
        .map(cors::CorsLayer::new)
        .transpose()
        .map_err(error)?;
    let auth = settings
        .auth
        .as_ref()
        .map(auth::AuthLayer::new)
        .transpose()
        .map_err(error)?;
    let rate_limit = match unchanged_layer(
        previous,
        |p| p.settings.rate_limit == settings.rate_limit,
        |kept| kept.rate_limit.clone(),
    ) {
        Some(kept) => Some(kept),
        None => settings
            .rate_limit
            .as_ref()
            .map(rate_limit::RateLimitLayer::new)
            .transpose()
            .map_err(error)?,
    };
    let cache = match unchanged_layer(
        previous,
        |p| p.settings.cache == settings.cache,
        |kept| kept.cache.clone(),
    ) {
        Some(kept) => Some(kept),
        None => settings
            .cache
            .as_ref()
            .map(cache::CacheLayer::new)
            .transpose()
            .map_err(error)?,
    };
    let kept = Kept {
        rate_limit: rate_limit.clone(),
        cache: cache.clone(),
    };
    if cors.is_none() && auth.is_none() && rate_limit.is_none() && cache.is_none() {
        return Ok((None, kept));
    }
    let service = ServiceBuilder::new()
        .option_layer(cors)
        .option_layer(auth)
        .option_layer(rate_limit)
        .option_layer(cache)
        .service(Core);
    Ok((Some(BoxCloneSyncService::new(service)), kept))
}

/// The previous route's layer, if its settings for it are unchanged.
fn unchanged_layer<T>(
    previous: Option<&Route>,
    same: impl Fn(&Route) -> bool,
    layer: impl Fn(&Kept) -> Option<T>,
) -> Option<T> {
    previous.filter(|p| same(p)).and_then(|p| layer(&p.kept))
}

/// What the layers' unit tests stand on.
#[cfg(test)]
pub(crate) mod testing {
    use crate::body::ResponseBody;
    use http::{Request, Response};
    use std::convert::Infallible;

    /// The service under a layer in a test: answers every request with
    /// what `answer` makes of it.
    pub(crate) fn service(
        answer: fn(&Request<()>) -> Response<ResponseBody>,
    ) -> impl tower::Service<
        Request<()>,
        Response = Response<ResponseBody>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<ResponseBody>, Infallible>>,
    > + Clone {
        tower::service_fn(move |request: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(answer(&request)))
        })
    }
}
