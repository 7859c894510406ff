//! HTTP/JSON to RPC calls, as `google.api.http` rules describe them.
//!
//! In progress: the rules' path templates ([`template`]) are written and
//! tested; the transcoder that routes requests by them (descriptors from
//! server reflection or `.proto` files, query parameters, bodies, proto3
//! JSON, gRPC statuses as HTTP statuses, streaming, gRPC-Web) builds on
//! them next, and until it does this module is compiled for its tests
//! only (`lib.rs`).

pub(crate) mod template;
