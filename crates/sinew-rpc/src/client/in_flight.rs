//! [`InFlight`]: the count of a call service's calls in flight, for
//! `tower::load::Load`.

use crate::call::{CallResponse, ResponseBody};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts the calls in flight through a call service, each from its start
/// until its response body ends (or the call or the body is dropped). Cheap to
/// clone: clones share the count.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
}

impl InFlight {
    /// Calls in flight now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts one more call until the returned guard is dropped.
    pub fn start(&self) -> InFlightCall {
        self.count.fetch_add(1, Ordering::Relaxed);
        InFlightCall {
            count: self.count.clone(),
        }
    }
}

/// One call counted by [`InFlight`], until dropped.
#[derive(Debug)]
pub struct InFlightCall {
    count: Arc<AtomicUsize>,
}

impl InFlightCall {
    /// Keeps the call counted until `response`'s body ends.
    pub fn until_end_of(self, response: CallResponse) -> CallResponse {
        let (headers, body, extensions) = response.into_parts();
        let body = ResponseBody::new(body.map(move |frame| {
            let _counted = &self;
            frame
        }));
        CallResponse::from_parts(headers, body, extensions)
    }
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}
