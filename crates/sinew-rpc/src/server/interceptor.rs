//! [`Interceptor`]: a closure that checks every call before it runs.
//!
//! The common case of a server layer: look at a call's metadata (a token, a
//! tenant), refuse it with a status or let it go on, perhaps after adding what
//! was learnt to its extensions for the handler. Added with
//! [`ServerBuilder::interceptor`](super::ServerBuilder::interceptor).

use super::call::ServerCall;
use crate::status::Status;
use futures_util::future::{ready, Either, Ready};
use std::task::{Context, Poll};

/// Makes [`Interceptor`]s.
#[derive(Clone, Debug)]
pub struct InterceptorLayer<F> {
    check: F,
}

impl<F> InterceptorLayer<F> {
    /// A layer that runs `check` on every call: `Err(status)` refuses it.
    pub fn new(check: F) -> Self {
        InterceptorLayer { check }
    }
}

impl<S, F: Clone> tower::Layer<S> for InterceptorLayer<F> {
    type Service = Interceptor<S, F>;

    fn layer(&self, inner: S) -> Interceptor<S, F> {
        Interceptor {
            inner,
            check: self.check.clone(),
        }
    }
}

/// Runs a check on every call, refusing those it fails.
#[derive(Clone, Debug)]
pub struct Interceptor<S, F> {
    inner: S,
    check: F,
}

impl<S, F> tower::Service<ServerCall> for Interceptor<S, F>
where
    S: tower::Service<ServerCall, Response = Status, Error = Status>,
    F: Fn(&mut ServerCall) -> Result<(), Status>,
{
    type Response = Status;
    type Error = Status;
    type Future = Either<S::Future, Ready<Result<Status, Status>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ServerCall) -> Self::Future {
        match (self.check)(&mut call) {
            Ok(()) => Either::Left(self.inner.call(call)),
            Err(status) => Either::Right(ready(Err(status))),
        }
    }
}
