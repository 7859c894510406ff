//! The example services of sinew, used by the runnable examples, the CLI's
//! `serve --example`, the benchmark harness and the end-to-end tests.
//!
//! * [`echo`]: gRPC's own echo service (`grpc.examples.echo.Echo`), every call kind.
//! * [`kv`]: a key-value store with versions, compare-and-set and watches
//!   (`sinew.examples.kv.KeyValue`), showing errors and deadlines in a service with
//!   real state.
//! * [`library`]: books on shelves (`sinew.examples.library.Library`), with
//!   `google.api.http` annotations: the service the HTTP gateway's JSON
//!   transcoding is tested and demonstrated against.
//!
//! Each module holds the code generated from its `.proto` (in `proto/`) and an
//! implementation of the generated server trait.

#![forbid(unsafe_code)]

pub mod echo;
pub mod kv;
pub mod library;
