//! [`BearerToken`]: the client side of token authentication, a layer that
//! puts `authorization: Bearer TOKEN` on every call.

use arc_swap::ArcSwap;
use sinew_rpc::call::{CallRequest, CallResponse};
use sinew_rpc::Status;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Sends a bearer token with every call of the channel it wraps. Clones
/// share the token, which [`BearerToken::set`] replaces (when a fresh one
/// is fetched) for the calls that start afterwards.
#[derive(Clone, Debug)]
pub struct BearerToken {
    value: Arc<ArcSwap<String>>,
}

impl BearerToken {
    /// Sends `token`. A token that cannot be a metadata value (a line
    /// break, say) is refused here.
    pub fn new(token: &str) -> Result<BearerToken, Status> {
        Ok(BearerToken {
            value: Arc::new(ArcSwap::from_pointee(header(token)?)),
        })
    }

    /// Sends `token` from now on.
    pub fn set(&self, token: &str) -> Result<(), Status> {
        self.value.store(Arc::new(header(token)?));
        Ok(())
    }
}

fn header(token: &str) -> Result<String, Status> {
    let value = format!("Bearer {}", token.trim());
    let mut probe = sinew_rpc::MetadataMap::new();
    probe
        .insert("authorization", &value)
        .map_err(|e| Status::invalid_argument(format!("unusable bearer token: {e}")))?;
    Ok(value)
}

impl<S> Layer<S> for BearerToken {
    type Service = BearerTokenService<S>;

    fn layer(&self, inner: S) -> BearerTokenService<S> {
        BearerTokenService {
            inner,
            token: self.clone(),
        }
    }
}

/// A call service that sends a bearer token; see [`BearerToken`].
#[derive(Clone, Debug)]
pub struct BearerTokenService<S> {
    inner: S,
    token: BearerToken,
}

impl<S> Service<CallRequest> for BearerTokenService<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status>,
{
    type Response = CallResponse;
    type Error = Status;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: CallRequest) -> Self::Future {
        let value = self.token.value.load();
        // Checked when the token was set.
        let _ = request.metadata_mut().insert("authorization", &value);
        self.inner.call(request)
    }
}
