//! Generates tonic clients for the example services and the standard ones
//! (health, reflection), used by the tests as an independent gRPC peer. The Go
//! and Python peers come with the test script.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../sinew-examples/proto/echo.proto",
        "../sinew-examples/proto/kv.proto",
        "../sinew-rpc/proto/grpc/health/v1/health.proto",
        "../sinew-rpc/proto/grpc/reflection/v1/reflection.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["../sinew-examples/proto", "../sinew-rpc/proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
