//! Generates the broker service (`proto/sinew/messaging/v1/broker.proto`):
//! the server the embedded broker is served by and the client the remote
//! backend speaks, with sinew's own code generator.
fn main() -> std::io::Result<()> {
    sinew_build::configure()
        .runtime_path("::sinew_rpc")
        .bytes(["."])
        .compile(&["proto/sinew/messaging/v1/broker.proto"], &["proto"])
}
