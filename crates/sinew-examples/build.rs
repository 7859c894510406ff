//! Generates the example services from proto/ at build time.
fn main() -> std::io::Result<()> {
    sinew_build::compile_protos("proto/echo.proto")?;
    sinew_build::compile_protos("proto/kv.proto")?;
    // Imports google/api/annotations.proto, which sinew-build serves itself.
    sinew_build::compile_protos("proto/library.proto")?;
    Ok(())
}
