//! [`AuthorizeLayer`]: a [`Policy`] applied to every call a server takes.

use crate::policy::{Decision, Policy};
use crate::principal;
use arc_swap::ArcSwap;
use futures_util::future::Either;
use sinew_rpc::server::ServerCall;
use sinew_rpc::Status;
use std::future::Ready;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Refuses the calls a [`Policy`] does not allow, with `PERMISSION_DENIED`
/// and no detail (the server logs which rule refused whom, at debug level).
/// Goes in a server's stack with [`ServerBuilder::layer`](sinew_rpc::ServerBuilder::layer),
/// after [`AuthenticateLayer`](crate::AuthenticateLayer) if tokens are used.
/// Clones share the policy, which [`AuthorizeLayer::set_policy`] replaces
/// while the server runs.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    policy: ArcSwap<Policy>,
    denied: AtomicU64,
}

impl AuthorizeLayer {
    /// Applies `policy`.
    pub fn new(policy: Policy) -> AuthorizeLayer {
        AuthorizeLayer {
            shared: Arc::new(Shared {
                policy: ArcSwap::from_pointee(policy),
                denied: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces the policy: calls that start from now on are decided by it.
    pub fn set_policy(&self, policy: Policy) {
        self.shared.policy.store(Arc::new(policy));
    }

    /// How many calls were refused so far.
    pub fn denied(&self) -> u64 {
        self.shared.denied.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = AuthorizeService<S>;

    fn layer(&self, inner: S) -> AuthorizeService<S> {
        AuthorizeService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A server stack behind an [`AuthorizeLayer`].
#[derive(Clone, Debug)]
pub struct AuthorizeService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<ServerCall> for AuthorizeService<S>
where
    S: Service<ServerCall, Response = Status, Error = Status>,
{
    type Response = Status;
    type Error = Status;
    type Future = Either<S::Future, Ready<Result<Status, Status>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let allowed = {
            let policy = self.shared.policy.load();
            let principals = principal::of_call(&call);
            match policy.decide(&principals, call.path(), call.metadata()) {
                Decision::Allow => true,
                Decision::Deny(rule) => {
                    tracing::debug!(
                        path = call.path(),
                        principals = %Listed(&principals),
                        rule = rule.unwrap_or("no allow rule matched"),
                        "call refused by the authorization policy"
                    );
                    false
                }
            }
        };
        if allowed {
            Either::Left(self.inner.call(call))
        } else {
            self.shared.denied.fetch_add(1, Ordering::Relaxed);
            Either::Right(std::future::ready(Err(Status::permission_denied(
                "permission denied",
            ))))
        }
    }
}

/// Principals as a log shows them: `[uid:1000, gid:1000]`.
struct Listed<'a>(&'a [crate::Principal<'a>]);

impl std::fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[")?;
        for (index, principal) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{principal}")?;
        }
        f.write_str("]")
    }
}
