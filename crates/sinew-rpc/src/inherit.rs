//! Deadlines that travel: the calls a handler makes inherit the deadline of
//! the call it is handling, less the server's margin
//! ([`ServerBuilder::deadline_margin`](crate::ServerBuilder::deadline_margin)),
//! over every transport and gRPC alike, without the handler passing
//! anything by hand. A deadline of the outbound call's own that is sooner
//! stands.
//!
//! The server polls each handler with its call's deadline in a task-local
//! value; [`CallRequest::new`](crate::CallRequest::new) (which every client,
//! typed or not, builds its calls with) reads it. Cancellation travels by
//! ownership: when a call ends early (its client cancelled, its deadline
//! passed), its handler is dropped, and with it every call the handler was
//! awaiting, which cancels them on their servers in turn. Work a handler
//! moves to a task of its own (`tokio::spawn`) inherits neither: pass
//! [`inherited_deadline`] along, and keep the task's handle, as for any
//! spawned work.

use tokio::time::Instant;

tokio::task_local! {
    static HANDLING: Option<Instant>;
}

/// The deadline the calls made now inherit: that of the call the current
/// task is handling, less the server's margin; `None` outside a handler or
/// for a call without a deadline.
pub fn inherited_deadline() -> Option<Instant> {
    HANDLING.try_with(|deadline| *deadline).ok().flatten()
}

/// Polls a handler (`poll`) with `deadline` as what its calls inherit.
pub(crate) fn poll_with<R>(deadline: Option<Instant>, poll: impl FnOnce() -> R) -> R {
    HANDLING.sync_scope(deadline, poll)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_code_inside_a_handler_inherits() {
        assert_eq!(inherited_deadline(), None);
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            poll_with(Some(deadline), inherited_deadline),
            Some(deadline)
        );
        let request = poll_with(Some(deadline), || {
            crate::CallRequest::new(
                "/a.B/C",
                crate::call::RequestBody::single(crate::call::Payload::from_bytes(
                    bytes::Bytes::new(),
                )),
            )
        });
        assert_eq!(request.deadline(), Some(deadline));
        assert_eq!(inherited_deadline(), None, "only while polled");
    }
}
