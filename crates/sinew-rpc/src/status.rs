//! [`Status`]: how every RPC failure is reported, on both sides.

use bytes::Bytes;
use sinew_wire::{Code, MetadataMap};
use std::fmt;

/// The outcome of a failed call: a [`Code`] in the gRPC code space, a message for
/// humans, optional opaque details and trailing metadata.
///
/// Servers return it from handlers; clients receive it for every failure, local
/// (connection refused, deadline passed) or remote.
///
/// A client-side status also says whether the server's application provably
/// never saw the call ([`Status::is_not_processed`]), which is what makes a
/// retry safe for a call that is not idempotent.
#[derive(Clone)]
pub struct Status {
    code: Code,
    not_processed: bool,
    /// Everything else, boxed: a status is 16 bytes, so results and the items
    /// of a call's inbox stay small, and the bare `OK` that ends every
    /// successful call allocates nothing.
    rest: Option<Box<Rest>>,
}

#[derive(Clone, Default)]
struct Rest {
    message: String,
    details: Bytes,
    metadata: MetadataMap,
    /// Where the attempt that failed went (client side; never sent).
    destination: Option<crate::call::Destination>,
}

static EMPTY_DETAILS: Bytes = Bytes::new();
static EMPTY_METADATA: MetadataMap = MetadataMap::new();

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        let message = message.into();
        if message.is_empty() {
            // The bare status that ends every successful call: nothing to box.
            return Status {
                code,
                not_processed: false,
                rest: None,
            };
        }
        Status::from_parts(code, message, Bytes::new(), MetadataMap::new())
    }

    /// A status with details, for example an encoded `google.rpc.Status`.
    pub fn with_details(code: Code, message: impl Into<String>, details: Bytes) -> Status {
        Status::from_parts(code, message.into(), details, MetadataMap::new())
    }

    constructors! {
        /// `CANCELLED`.
        cancelled => Cancelled,
        /// `UNKNOWN`.
        unknown => Unknown,
        /// `INVALID_ARGUMENT`.
        invalid_argument => InvalidArgument,
        /// `DEADLINE_EXCEEDED`.
        deadline_exceeded => DeadlineExceeded,
        /// `NOT_FOUND`.
        not_found => NotFound,
        /// `ALREADY_EXISTS`.
        already_exists => AlreadyExists,
        /// `PERMISSION_DENIED`.
        permission_denied => PermissionDenied,
        /// `RESOURCE_EXHAUSTED`.
        resource_exhausted => ResourceExhausted,
        /// `FAILED_PRECONDITION`.
        failed_precondition => FailedPrecondition,
        /// `ABORTED`.
        aborted => Aborted,
        /// `OUT_OF_RANGE`.
        out_of_range => OutOfRange,
        /// `UNIMPLEMENTED`.
        unimplemented => Unimplemented,
        /// `INTERNAL`.
        internal => Internal,
        /// `UNAVAILABLE`.
        unavailable => Unavailable,
        /// `DATA_LOSS`.
        data_loss => DataLoss,
        /// `UNAUTHENTICATED`.
        unauthenticated => Unauthenticated,
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message for humans.
    pub fn message(&self) -> &str {
        self.rest.as_ref().map_or("", |rest| &rest.message)
    }

    /// The opaque details (empty when none).
    pub fn details(&self) -> &Bytes {
        self.rest
            .as_ref()
            .map_or(&EMPTY_DETAILS, |rest| &rest.details)
    }

    /// Trailing metadata that came with the status.
    pub fn metadata(&self) -> &MetadataMap {
        self.rest
            .as_ref()
            .map_or(&EMPTY_METADATA, |rest| &rest.metadata)
    }

    /// Mutable trailing metadata, to send along with the status.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.rest.get_or_insert_with(Box::default).metadata
    }

    /// Where the attempt that failed with this status went, when the
    /// service that picked its destination (a balancer) said so: a retry
    /// layer hands it to the next attempt ([`crate::call::Attempts`]) so that
    /// the retry goes elsewhere. Local to the client: never sent, and not
    /// part of equality.
    pub fn destination(&self) -> Option<&crate::call::Destination> {
        self.rest.as_ref()?.destination.as_ref()
    }

    /// Marks where the attempt that failed went (see
    /// [`Status::destination`]).
    pub fn set_destination(&mut self, destination: crate::call::Destination) {
        self.rest.get_or_insert_with(Box::default).destination = Some(destination);
    }

    /// Whether the server's application provably never saw the call, so that
    /// sending it again (to this server or another) is safe even if it is not
    /// idempotent.
    ///
    /// Set by the client side only, and only when that is certain: the server
    /// refused the call before dispatching it (above its stream limit, or
    /// after its GOAWAY), or the call never left this process (no connection,
    /// the connection failed before any byte of the call was handed to the
    /// socket, the deadline passed before it was sent). Unset for every status
    /// that came from a handler, and whenever the call may have been seen, even
    /// if its code is `UNAVAILABLE`. Retry layers rely on it; see
    /// `docs/protocol.md`, section 2.5.
    pub fn is_not_processed(&self) -> bool {
        self.not_processed
    }

    /// The same status, marked as never seen by the server's application (see
    /// [`Status::is_not_processed`]). For transports and layers that know it
    /// for certain.
    pub fn mark_not_processed(mut self) -> Status {
        self.not_processed = true;
        self
    }

    pub(crate) fn from_parts(
        code: Code,
        message: String,
        details: Bytes,
        metadata: MetadataMap,
    ) -> Status {
        let bare = message.is_empty() && details.is_empty() && metadata.is_empty();
        Status {
            code,
            not_processed: false,
            rest: (!bare).then(|| {
                Box::new(Rest {
                    message,
                    details,
                    metadata,
                    destination: None,
                })
            }),
        }
    }

    pub(crate) fn into_metadata(self) -> MetadataMap {
        self.rest.map(|rest| rest.metadata).unwrap_or_default()
    }
}

impl PartialEq for Status {
    fn eq(&self, other: &Status) -> bool {
        self.code == other.code
            && self.not_processed == other.not_processed
            && self.message() == other.message()
            && self.details() == other.details()
            && self.metadata() == other.metadata()
    }
}

impl Eq for Status {}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Status");
        debug
            .field("code", &self.code)
            .field("message", &self.message());
        if !self.details().is_empty() {
            debug.field("details", self.details());
        }
        if !self.metadata().is_empty() {
            debug.field("metadata", self.metadata());
        }
        if self.not_processed {
            debug.field("not_processed", &true);
        }
        debug.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message().is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message())
        }
    }
}

impl std::error::Error for Status {}

impl Status {
    /// The status for an error a tower service or layer returned: a `Status`
    /// is itself; a timeout layer's `Elapsed` is `DEADLINE_EXCEEDED`; a load
    /// shedder's `Overloaded` is `UNAVAILABLE` (not processed: the call was
    /// refused before it went anywhere); a `Status` found in the error's
    /// source chain is that status; anything else is `UNKNOWN` with the
    /// error's text.
    pub fn from_error(error: crate::call::BoxError) -> Status {
        let error = match error.downcast::<Status>() {
            Ok(status) => return *status,
            Err(error) => error,
        };
        if error.is::<tower::timeout::error::Elapsed>() {
            return Status::deadline_exceeded(format!("{error} (a timeout layer)"));
        }
        if error.is::<tower::load_shed::error::Overloaded>() {
            return Status::unavailable(format!("{error}: the call was shed")).mark_not_processed();
        }
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(status) = cause.downcast_ref::<Status>() {
                return status.clone();
            }
            source = cause.source();
        }
        Status::unknown(error.to_string())
    }
}

impl From<std::io::Error> for Status {
    fn from(error: std::io::Error) -> Status {
        Status::unavailable(error.to_string())
    }
}
