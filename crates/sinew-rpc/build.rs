//! Generates the standard services every sinew server offers (gRPC server
//! reflection) with sinew's own code generator, pointed at this crate.
fn main() -> std::io::Result<()> {
    sinew_build::configure()
        .runtime_path("crate")
        .build_client(true)
        .compile(&["proto/grpc/reflection/v1/reflection.proto"], &["proto"])
}
