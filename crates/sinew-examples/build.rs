//! Generates the example services from proto/ at build time.
fn main() -> std::io::Result<()> {
    sinew_build::compile_protos("proto/echo.proto")?;
    sinew_build::compile_protos("proto/kv.proto")?;
    Ok(())
}
