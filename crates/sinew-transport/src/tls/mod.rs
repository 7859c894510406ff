//! TLS over TCP (`tls://host:port`), with rustls: server and client
//! configuration, mutual TLS, and certificates reloaded from disk.
//!
//! A server listens with a [`ServerTls`] (its certificate chain and key, and
//! optionally the CA that client certificates must chain to); a client
//! connects with a [`ClientTls`] (the roots it trusts, and optionally its own
//! certificate). Both read PEM, from files or from memory. Files are watched:
//! when they change (or on `SIGHUP`, where asked), new handshakes use the new
//! certificates and open connections are left alone. A reload that fails (a
//! half-written file, a key that does not match) keeps the old ones and says
//! so in the log.
//!
//! After the handshake, ALPN tells what a connection speaks: [`ALPN_SINEW`]
//! for sinew's own protocol, `h2` for gRPC (the server offers both on the same
//! port, as first-byte sniffing tells them apart on a plaintext one). A
//! verified client certificate becomes the connection's
//! [`PeerIdentity`](crate::PeerIdentity).
//!
//! rustls's crypto comes from ring, chosen explicitly in every configuration
//! built here, so a process that links another provider too never meets the
//! "no process-level CryptoProvider" panic (rustls#1938). rustls verifies a
//! server's DNS names and IP addresses but not URIs (rustls#1194): a client
//! that expects a SPIFFE ID ([`ClientTlsBuilder::expect_identity`]) has the
//! chain verified by rustls and the URI checked by this module, inside the
//! handshake, as linkerd2-proxy does.

mod buffered;
mod client;
#[cfg(feature = "dev-certs")]
pub mod dev;
mod pem;
mod reload;
mod server;

pub use buffered::Buffered;
pub use client::{ClientTls, ClientTlsBuilder};
pub use server::{ClientAuth, ServerTls, ServerTlsBuilder};

use std::sync::Arc;

/// The ALPN protocol id of sinew's own protocol over TLS.
pub const ALPN_SINEW: &[u8] = b"sinew";

/// The ALPN protocol id of HTTP/2, which gRPC speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// ALPN's name for HTTP/1.1, which an HTTP server such as the gateway
/// offers beside [`ALPN_H2`] ([`ServerTlsBuilder::alpn`]).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A TLS configuration that could not be built: a file that cannot be read,
/// PEM without a certificate or a key, a key that does not match its
/// certificate. The message says which and why.
#[derive(Clone, Debug)]
pub struct TlsError {
    message: String,
}

impl TlsError {
    pub(crate) fn new(message: impl Into<String>) -> TlsError {
        TlsError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for std::io::Error {
    fn from(error: TlsError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, error)
    }
}

/// The crypto provider of every configuration sinew builds: ring, with
/// AES-128-GCM preferred over AES-256-GCM (as Go's crypto/tls and BoringSSL
/// prefer it): four fewer AES rounds per block and SHA-256 rather than
/// SHA-384 in the key schedule, at a security level TLS 1.3 mandates for
/// every implementation. The suites and groups are otherwise ring's
/// defaults.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // Also the process default, if nobody chose one: other rustls
            // users in the process (without a provider of their own) then work
            // rather than panic. Someone else's choice stays.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut provider = rustls::crypto::ring::default_provider();
            provider
                .cipher_suites
                .sort_by_key(|suite| suite_preference(suite.suite()));
            Arc::new(provider)
        })
        .clone()
}

/// Where a cipher suite goes in sinew's order of preference (lower first);
/// a stable sort keeps ring's order among equals.
fn suite_preference(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite::*;
    match suite {
        TLS13_AES_128_GCM_SHA256 => 0,
        TLS13_AES_256_GCM_SHA384 | TLS13_CHACHA20_POLY1305_SHA256 => 1,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 2,
        _ => 3,
    }
}

/// Turns a failed handshake into an error that says what to do about it.
pub(crate) fn handshake_error(error: std::io::Error, plaintext_hint: &str) -> std::io::Error {
    let message = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        // Our own checks (an identity that does not match) read better
        // without rustls's wrapping.
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            format!("TLS handshake failed: {}", other.0)
        }
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("TLS handshake failed: {error} (the peer does not speak TLS? {plaintext_hint})")
        }
        _ if error.kind() == std::io::ErrorKind::UnexpectedEof => format!(
            "TLS handshake failed: the peer closed the connection (it does not speak TLS? {plaintext_hint})"
        ),
        _ => format!("TLS handshake failed: {error}"),
    };
    std::io::Error::new(error.kind(), message)
}
