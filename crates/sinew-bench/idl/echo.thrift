// The echo service for the Volo peer: the same shape as grpc.examples.echo's
// UnaryEcho (one string in, the same string out).
namespace rs echo

struct EchoRequest {
    1: required string message,
}

struct EchoResponse {
    1: required string message,
}

service Echo {
    EchoResponse UnaryEcho(1: EchoRequest req),
}
