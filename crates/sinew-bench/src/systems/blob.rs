//! The echo of the `bytes` cells (proto/blob.proto) for sinew and tonic:
//! the generated code of both, and the service each serves. The payload is a
//! protobuf `bytes` field generated as `bytes::Bytes`, so decoding shares the
//! received buffer; the service returns what it got.

/// sinew's code for proto/blob.proto.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod sinew_blob {
    include!(concat!(env!("OUT_DIR"), "/sinew/sinew.bench.rs"));
}

/// tonic's code for proto/blob.proto.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod tonic_blob {
    tonic::include_proto!("sinew.bench");
}

/// sinew's blob echo.
pub(crate) struct SinewBlobEcho;

impl sinew_blob::blob_echo_server::BlobEcho for SinewBlobEcho {
    async fn unary_echo(
        &self,
        request: sinew::Request<sinew_blob::Blob>,
    ) -> Result<sinew::Response<sinew_blob::Blob>, sinew::Status> {
        Ok(sinew::Response::new(request.into_inner()))
    }
}

/// tonic's blob echo.
pub(crate) struct TonicBlobEcho;

#[tonic::async_trait]
impl tonic_blob::blob_echo_server::BlobEcho for TonicBlobEcho {
    async fn unary_echo(
        &self,
        request: tonic::Request<tonic_blob::Blob>,
    ) -> Result<tonic::Response<tonic_blob::Blob>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}
