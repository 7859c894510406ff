//! Generates the peers' code: tonic from the same echo.proto sinew serves (parsed
//! by protox, no protoc), and Volo from the Thrift IDL in idl/.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../sinew-examples/proto/echo.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../sinew-examples/proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed=idl/echo.thrift");
    volo_build::Builder::thrift()
        .add_service("idl/echo.thrift")
        .filename(std::path::PathBuf::from("volo_echo.rs"))
        .write()?;
    Ok(())
}
