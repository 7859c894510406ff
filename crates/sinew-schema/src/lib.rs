//! Protobuf schemas at run time: `.proto` files compiled in pure Rust
//! (protox, no `protoc`), descriptor sets decoded with their options kept,
//! and the `google.api.http` rules of methods read from those options.
//!
//! Three places in sinew need a schema they did not generate code for:
//! `sinew-build` (which compiles a service's `.proto` at build time and
//! embeds its descriptors for server reflection), the `sinew` CLI (which
//! calls any method as JSON) and the gateway (which transcodes HTTP/JSON
//! into calls per the methods' HTTP rules). They share this crate so that
//!
//! * `import "google/api/annotations.proto";` compiles everywhere without
//!   vendoring googleapis: [`GoogleApiFileResolver`] serves
//!   `google/api/http.proto` and `google/api/annotations.proto`, as protox
//!   serves `google/protobuf/*`;
//! * options survive: a `prost_types::FileDescriptorSet` drops extension
//!   options such as `(google.api.http)`, so [`compile`] returns the
//!   encoded set (as protox encodes it, extensions kept) and
//!   [`pool_from_files`] builds a pool from encoded files (as server
//!   reflection returns them) without a round trip through `prost_types`.
//!
//! [`http`] reads a method's `(google.api.http)` rule.
//!
//! Not here: fetching descriptors from a server (the reflection client is
//! in `sinew_rpc::server::reflection`) and JSON (prost-reflect's serde
//! support, re-exported as [`prost_reflect`]).

pub mod http;

pub use prost_reflect;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorError, DescriptorPool};
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The googleapis files [`GoogleApiFileResolver`] serves: name and text.
pub const GOOGLE_API_FILES: &[(&str, &str)] = &[
    (
        "google/api/http.proto",
        include_str!("../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../proto/google/api/annotations.proto"),
    ),
];

/// Serves `google/api/http.proto` and `google/api/annotations.proto` to
/// protox, so that a `.proto` importing them compiles without a copy of
/// googleapis on disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoogleApiFileResolver;

impl FileResolver for GoogleApiFileResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match GOOGLE_API_FILES.iter().find(|(file, _)| *file == name) {
            Some((name, source)) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Finds imports in `includes` (in order), then the googleapis files of
/// [`GoogleApiFileResolver`], then protobuf's well-known types: what
/// [`compile`] uses.
pub fn resolver(includes: impl IntoIterator<Item = impl AsRef<Path>>) -> ChainFileResolver {
    let mut resolver = ChainFileResolver::new();
    for include in includes {
        resolver.add(IncludeFileResolver::new(include.as_ref().to_owned()));
    }
    resolver.add(GoogleApiFileResolver);
    resolver.add(GoogleFileResolver::new());
    resolver
}

/// Compiles `files` (paths under one of `includes`, or names relative to
/// them) and returns the encoded `FileDescriptorSet` of them and every file
/// they import, dependencies first, with source info (comments) and every
/// option, extensions included.
pub fn compile(
    files: impl IntoIterator<Item = impl AsRef<Path>>,
    includes: impl IntoIterator<Item = impl AsRef<Path>>,
) -> Result<Vec<u8>, protox::Error> {
    let mut compiler = protox::Compiler::with_file_resolver(resolver(includes));
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files)?;
    Ok(compiler.encode_file_descriptor_set())
}

/// [`compile`], into a descriptor pool.
pub fn compile_pool(
    files: impl IntoIterator<Item = impl AsRef<Path>>,
    includes: impl IntoIterator<Item = impl AsRef<Path>>,
) -> Result<DescriptorPool, protox::Error> {
    let mut compiler = protox::Compiler::with_file_resolver(resolver(includes));
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files)?;
    Ok(compiler.descriptor_pool())
}

/// The include directory that makes a lone `.proto` path compile: its
/// parent directory (`.` for a bare file name).
pub fn include_of(proto: &Path) -> PathBuf {
    match proto.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Just the name of a `FileDescriptorProto`, decoded without the rest.
#[derive(Clone, PartialEq, Message)]
struct FileName {
    #[prost(string, tag = "1")]
    name: String,
}

/// A pool of encoded `FileDescriptorProto`s, as server reflection returns
/// them (in any order; a file given twice is taken once), options kept.
pub fn pool_from_files(
    files: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> Result<DescriptorPool, DescriptorError> {
    // A FileDescriptorSet is its files as field 1, so the encoded files
    // make one by being framed as that field, and the pool decodes it with
    // its own types (which keep options) rather than prost_types' (which
    // drop extensions).
    let mut names = BTreeSet::new();
    let mut set = Vec::new();
    for file in files {
        let file = file.as_ref();
        let name = FileName::decode(file).map(|f| f.name).unwrap_or_default();
        if !names.insert(name) {
            continue;
        }
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut set);
        prost::encoding::encode_varint(file.len() as u64, &mut set);
        set.extend_from_slice(file);
    }
    DescriptorPool::decode(Bytes::from(set))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIBRARY: &str = r#"
        syntax = "proto3";
        package test.library;
        import "google/api/annotations.proto";
        service Library {
          rpc GetBook(GetBookRequest) returns (Book) {
            option (google.api.http) = { get: "/v1/{name=shelves/*/books/*}" };
          }
        }
        message GetBookRequest { string name = 1; }
        message Book { string name = 1; string title = 2; }
    "#;

    fn write_proto(dir: &Path) -> PathBuf {
        let path = dir.join("library.proto");
        std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(LIBRARY.as_bytes()))
            .unwrap();
        path
    }

    #[test]
    fn google_api_imports_compile_and_the_rule_survives_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_proto(dir.path());
        let encoded = compile([&path], [dir.path()]).unwrap();
        // Through the encoded set (what sinew-build embeds)...
        let pool = DescriptorPool::decode(encoded.as_slice()).unwrap();
        let method = pool
            .get_service_by_name("test.library.Library")
            .unwrap()
            .methods()
            .next()
            .unwrap();
        let rule = http::rule(&method).expect("the rule is kept");
        assert_eq!(rule.method, "GET");
        assert_eq!(rule.path, "/v1/{name=shelves/*/books/*}");
        // ... and through files one by one (what reflection returns).
        let set = prost_types::FileDescriptorSet::decode(encoded.as_slice()).unwrap();
        assert!(set.file.iter().any(|f| f.name() == "google/api/http.proto"));
        let files = raw_files(&encoded);
        let doubled = files.iter().chain(files.iter());
        let pool = pool_from_files(doubled).unwrap();
        let method = pool
            .get_service_by_name("test.library.Library")
            .unwrap()
            .methods()
            .next()
            .unwrap();
        assert_eq!(
            http::rule(&method).unwrap().path,
            "/v1/{name=shelves/*/books/*}"
        );
    }

    #[test]
    fn a_missing_import_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.proto");
        std::fs::write(&path, "syntax = \"proto3\"; import \"nowhere/x.proto\";").unwrap();
        let error = compile([&path], [dir.path()]).unwrap_err().to_string();
        assert!(error.contains("nowhere/x.proto"), "{error}");
    }

    #[test]
    fn include_of_a_bare_name_is_the_current_directory() {
        assert_eq!(include_of(Path::new("x.proto")), PathBuf::from("."));
        assert_eq!(include_of(Path::new("a/b/x.proto")), PathBuf::from("a/b"));
    }

    /// The encoded files of an encoded set (field 1, length-delimited).
    fn raw_files(set: &[u8]) -> Vec<Vec<u8>> {
        #[derive(Clone, PartialEq, Message)]
        struct RawSet {
            #[prost(bytes = "vec", repeated, tag = "1")]
            file: Vec<Vec<u8>>,
        }
        RawSet::decode(set).unwrap().file
    }
}
