// The echo service for the Volo peer: the same shape as grpc.examples.echo's
// UnaryEcho (one string in, the same string out).
namespace rs echo

struct EchoRequest {
    1: required string message,
}

struct EchoResponse {
    1: required string message,
}

// The payload of the harness's `bytes` cells: Thrift `binary`, which Volo
// decodes without a copy and without a UTF-8 check.
struct Blob {
    1: required binary data,
}

service Echo {
    EchoResponse UnaryEcho(1: EchoRequest req),
    Blob BlobEcho(1: Blob req),
}
