//! Generates the service used only by the end-to-end tests.
fn main() -> std::io::Result<()> {
    sinew_build::compile_protos("tests/proto/testing.proto")
}
