//! Generates the standard services every sinew server offers (gRPC server
//! reflection and health checking, and sinew's local-endpoint discovery) with sinew's own code generator, pointed at
//! this crate.
fn main() -> std::io::Result<()> {
    sinew_build::configure()
        .runtime_path("crate")
        .compile(&["proto/grpc/reflection/v1/reflection.proto"], &["proto"])?;
    sinew_build::configure().runtime_path("crate").compile(
        &["proto/grpc/reflection/v1alpha/reflection.proto"],
        &["proto"],
    )?;
    sinew_build::configure()
        .runtime_path("crate")
        .compile(&["proto/grpc/health/v1/health.proto"], &["proto"])?;
    sinew_build::configure()
        .runtime_path("crate")
        .compile(&["proto/sinew/local/v1/local.proto"], &["proto"])
}
