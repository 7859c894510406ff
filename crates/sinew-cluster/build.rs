//! Generates etcd's v3 gRPC API (proto/etcd) with sinew's own code
//! generator, when the `etcd` feature is on: the clients sinew's etcd
//! registry calls etcd with, and the server traits sinew-state's embedded
//! store serves the same API through.
fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_ETCD").is_none() {
        return Ok(());
    }
    sinew_build::configure()
        .runtime_path("::sinew_rpc")
        .build_server(true)
        .compile(&["proto/etcd/rpc.proto"], &["proto/etcd"])
}
