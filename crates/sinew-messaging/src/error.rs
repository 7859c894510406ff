//! [`Error`]: why a call to a broker failed, whatever its backend.

use crate::subject::{Subject, SubjectError};
use sinew_rpc::{Code, Status};
use std::time::Duration;

/// Why a call to a broker failed.
///
/// The same error comes from every backend. What a client checks before
/// sending (subjects, headers, the payload's size against the limit the
/// broker told it) is refused by the client itself, with the embedded
/// broker's variant; a remote broker's own refusals come back as the
/// variant the embedded broker returns ([`Error::NoResponders`],
/// [`Error::TimedOut`], [`Error::QueueFull`], [`Error::UnknownQueue`],
/// [`Error::LeaseLost`], [`Error::Storage`], [`Error::Closed`]); anything
/// else (the connection lost, a call refused by a server layer) is
/// [`Error::Remote`], or [`Error::Nats`] from NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subject, filter or name broke a rule.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// A request found nobody subscribed to its subject.
    #[error("no responders for {0}")]
    NoResponders(Subject),
    /// The payload is larger than the broker takes.
    #[error("a payload of {size} bytes is over the broker's limit of {max}")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit ([`BrokerBuilder::max_payload`](crate::BrokerBuilder::max_payload)).
        max: usize,
    },
    /// A header broke a rule.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name (cut to 80 characters).
        name: String,
        /// The rule.
        reason: &'static str,
    },
    /// A request's answer did not come in time.
    #[error("no answer to a request on {subject} within {timeout:?}")]
    TimedOut {
        /// The request's subject.
        subject: Subject,
        /// How long it waited.
        timeout: Duration,
    },
    /// A work queue holds as many jobs or bytes as its settings allow.
    #[error("work queue {queue} is full ({limit})")]
    QueueFull {
        /// The queue.
        queue: String,
        /// Which limit: jobs or bytes, and its value.
        limit: String,
    },
    /// No work queue has this name (declare it first).
    #[error("no work queue {0}")]
    UnknownQueue(String),
    /// A job's settlement came after its lease ran out (it was, or will
    /// be, delivered again), or for a job already settled.
    #[error("job {sequence} of {queue} (delivery {attempt}) is no longer leased")]
    LeaseLost {
        /// The queue.
        queue: String,
        /// The job's sequence number.
        sequence: u64,
        /// The delivery the settlement was for.
        attempt: u32,
    },
    /// The work queues' store failed (a disk error, typically).
    #[error("the broker's store failed: {0}")]
    Storage(String),
    /// The broker is shut down.
    #[error("the broker is shut down")]
    Closed,
    /// The NATS server could not be reached, or refused a call.
    #[error("nats: {0}")]
    Nats(String),
    /// The backend cannot do what was asked.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// A remote broker could not be reached, or answered with an error of
    /// its own.
    #[error("remote broker: {0}")]
    Remote(Status),
}

/// The metadata key a served broker names its refusals with, so that the
/// remote client gives back the embedded broker's [`Error`].
pub(crate) const ERROR_KIND: &str = "sinew-broker-error";

impl Error {
    /// Whether retrying the same call later may succeed: the broker or the
    /// connection to it was unavailable, or a queue was full.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::QueueFull { .. } | Error::Closed | Error::TimedOut { .. } | Error::Nats(_) => {
                true
            }
            Error::Remote(status) => matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
            ),
            _ => false,
        }
    }

    /// The error as a [`Status`], for a served broker: a code a gRPC client
    /// understands, the message, and the kind in metadata for sinew's
    /// remote client.
    pub(crate) fn to_status(&self) -> Status {
        let (code, kind) = match self {
            Error::Subject(_) => (Code::InvalidArgument, "subject"),
            Error::NoResponders(_) => (Code::Unavailable, "no-responders"),
            Error::PayloadTooLarge { .. } => (Code::InvalidArgument, "payload-too-large"),
            Error::InvalidHeader { .. } => (Code::InvalidArgument, "invalid-header"),
            Error::TimedOut { .. } => (Code::DeadlineExceeded, "timed-out"),
            Error::QueueFull { .. } => (Code::ResourceExhausted, "queue-full"),
            Error::UnknownQueue(_) => (Code::NotFound, "unknown-queue"),
            Error::LeaseLost { .. } => (Code::FailedPrecondition, "lease-lost"),
            Error::Storage(_) => (Code::Internal, "storage"),
            Error::Closed => (Code::Unavailable, "closed"),
            Error::Nats(_) => (Code::Unavailable, "nats"),
            Error::Unsupported(_) => (Code::Unimplemented, "unsupported"),
            Error::Remote(status) => return status.clone(),
        };
        let mut status = Status::new(code, self.to_string());
        // A constant, valid key and value: this cannot fail.
        let _ = status.metadata_mut().insert(ERROR_KIND, kind);
        status
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::Remote(status)
    }
}
