//! Generates the peers' code: tonic from the same echo.proto sinew serves (parsed
//! by protox, no protoc), sinew and tonic from proto/blob.proto (the `bytes`
//! cells, with `bytes::Bytes` fields for both), and Volo from the Thrift IDL
//! in idl/.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../sinew-examples/proto/echo.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../sinew-examples/proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;

    // Both generators name their file after the package: sinew's goes in a
    // directory of its own.
    let blob = "proto/blob.proto";
    println!("cargo:rerun-if-changed={blob}");
    let descriptors = protox::compile([blob], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    let sinew_out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("sinew");
    std::fs::create_dir_all(&sinew_out)?;
    sinew_build::configure()
        .out_dir(sinew_out)
        .bytes(["."])
        .compile(&[blob], &["proto"])?;

    println!("cargo:rerun-if-changed=idl/echo.thrift");
    volo_build::Builder::thrift()
        .add_service("idl/echo.thrift")
        .filename(std::path::PathBuf::from("volo_echo.rs"))
        .write()?;
    Ok(())
}
