//! What the layers' unit tests share: `tower-test`'s mock service as a call
//! service (its errors are statuses), requests and responses.

use bytes::Bytes;
use sinew_rpc::call::{
    BoxError, CallRequest, CallResponse, Payload, RequestBody, ResponseBody, ResponseFrame,
};
use sinew_rpc::{Code, MetadataMap, Status};
use tower::ServiceExt;
use tower_test::mock;

/// The mock, as a call service.
pub(crate) type Mock =
    tower::util::MapErr<mock::Mock<CallRequest, CallResponse>, fn(BoxError) -> Status>;

/// What the test sees of the calls the mock receives, and answers them with.
pub(crate) type Handle = mock::Handle<CallRequest, CallResponse>;

/// A mock call service and its handle.
pub(crate) fn pair() -> (Mock, Handle) {
    let (service, handle) = mock::pair::<CallRequest, CallResponse>();
    (
        service.map_err(Status::from_error as fn(BoxError) -> Status),
        handle,
    )
}

/// A call to `path` with a 4-byte message, "ping".
pub(crate) fn request(path: &'static str) -> CallRequest {
    CallRequest::new(
        path,
        RequestBody::single(Payload::from_bytes(Bytes::from_static(b"ping"))),
    )
}

/// A response of one message, then OK.
pub(crate) fn ok_response(message: &'static [u8]) -> CallResponse {
    CallResponse::new(
        MetadataMap::new(),
        ResponseBody::new(futures_util::stream::iter([
            ResponseFrame::Message(Bytes::from_static(message)),
            ResponseFrame::Status(Status::new(Code::Ok, "")),
        ])),
    )
}
