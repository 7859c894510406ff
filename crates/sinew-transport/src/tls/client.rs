//! [`ClientTls`]: the roots a client trusts, its own certificate for mutual
//! TLS, and the identity it expects of the server.

use super::pem::{native_roots, Source};
use super::reload::{Reloading, Watch};
use super::{handshake_error, provider, Buffered, TlsError, ALPN_H2, ALPN_SINEW};
use crate::identity::CertificateIdentity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The TLS settings of a client's `tls://` connections (and of the gRPC
/// client's `grpcs://` ones). Cheap to clone; clones share the configuration,
/// its reloads and its TLS session cache.
///
/// ```no_run
/// # fn example() -> Result<(), sinew_transport::tls::TlsError> {
/// use sinew_transport::tls::ClientTls;
/// let tls = ClientTls::builder()
///     .ca_file("/etc/sinew/ca.crt")
///     .identity_files("/etc/sinew/client.crt", "/etc/sinew/client.key") // mutual TLS
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientTls {
    configs: Arc<Reloading<Configs>>,
    server_name: Option<String>,
}

/// One configuration per protocol a client speaks over TLS; they differ in
/// the ALPN id they offer only.
#[derive(Debug)]
struct Configs {
    sinew: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

/// Builds a [`ClientTls`]; see [`ClientTls::builder`].
#[derive(Clone, Debug, Default)]
pub struct ClientTlsBuilder {
    roots: Option<Source>,
    identity: Option<(Source, Source)>,
    server_name: Option<String>,
    expected_uri: Option<String>,
    watch: Watch,
    no_resumption: bool,
}

impl ClientTls {
    /// Settings that trust the system's root certificates, with no client
    /// certificate, until told otherwise.
    pub fn builder() -> ClientTlsBuilder {
        ClientTlsBuilder::default()
    }

    /// The settings a `tls://` address gets when its client was given none:
    /// the system's roots, no client certificate. Built once per process.
    pub fn system_default() -> Result<ClientTls, TlsError> {
        static DEFAULT: std::sync::OnceLock<Result<ClientTls, TlsError>> =
            std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| ClientTls::builder().build()).clone()
    }

    /// The name the server's certificate is verified against, when it is not
    /// the host of the address.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The same settings (sharing their configuration and reloads), with
    /// `name` as the server name (for addresses whose host is not it: an IP
    /// a name resolved to).
    pub fn with_server_name(&self, name: impl Into<String>) -> ClientTls {
        ClientTls {
            configs: self.configs.clone(),
            server_name: Some(name.into()),
        }
    }

    /// Reads the files again now. On an error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.configs.reload()
    }

    /// Runs the client side of a handshake on a connected stream, offering
    /// `alpn` ([`ALPN_SINEW`](super::ALPN_SINEW) or
    /// [`ALPN_H2`](super::ALPN_H2)); `host` is the name the server's
    /// certificate must have (unless the settings name another).
    pub async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
        alpn: &[u8],
    ) -> io::Result<tokio_rustls::client::TlsStream<Buffered<TcpStream>>> {
        self.configs.ensure_watching();
        let configs = self.configs.current();
        let config = if alpn == ALPN_SINEW {
            configs.sinew.clone()
        } else if alpn == ALPN_H2 {
            configs.h2.clone()
        } else {
            let mut config = (*configs.sinew).clone();
            config.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(config)
        };
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid TLS server name"),
            )
        })?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, Buffered::new(stream))
            .await
            .map_err(|e| handshake_error(e, "use tcp:// for a plaintext server"))
    }
}

impl ClientTlsBuilder {
    /// Trusts the CA certificates in this PEM file instead of the system's.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.roots = Some(Source::File(path.into()));
        self
    }

    /// As [`ca_file`](Self::ca_file), from PEM in memory.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots = Some(Source::Memory(pem.into()));
        self
    }

    /// Presents this certificate chain (client certificate first) and key to
    /// servers that ask for one: mutual TLS.
    pub fn identity_files(mut self, chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((Source::File(chain.into()), Source::File(key.into())));
        self
    }

    /// As [`identity_files`](Self::identity_files), from PEM in memory.
    pub fn identity_pem(mut self, chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((Source::Memory(chain.into()), Source::Memory(key.into())));
        self
    }

    /// The name to verify the server's certificate against (and to send as
    /// SNI) instead of the host of the address.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Accepts a server whose certificate (verified against the roots) names
    /// `identity`: a URI such as a SPIFFE ID (`spiffe://example.org/ns/x/sa/y`,
    /// which rustls does not check, so this does), or a DNS name (the same as
    /// [`server_name`](Self::server_name)).
    pub fn expect_identity(mut self, identity: impl Into<String>) -> Self {
        let identity = identity.into();
        if identity.contains("://") {
            self.expected_uri = Some(identity);
        } else {
            self.server_name = Some(identity);
        }
        self
    }

    /// How often the files are checked for a change (default 5 s; `None`:
    /// never).
    pub fn reload_interval(mut self, interval: Option<Duration>) -> Self {
        self.watch.interval = interval;
        self
    }

    /// Whether a reconnecting client resumes its earlier TLS session, which
    /// skips the certificate exchange and its signatures (default: yes;
    /// resumption lets an observer link the two connections).
    pub fn resumption(mut self, enabled: bool) -> Self {
        self.no_resumption = !enabled;
        self
    }

    /// Whether `SIGHUP` reloads the files (default: no).
    pub fn reload_on_sighup(mut self, enabled: bool) -> Self {
        self.watch.sighup = enabled;
        self
    }

    /// Reads and checks everything.
    pub fn build(self) -> Result<ClientTls, TlsError> {
        let mut files: Vec<PathBuf> = self
            .roots
            .iter()
            .filter_map(|source| source.path().cloned())
            .collect();
        if let Some((chain, key)) = &self.identity {
            files.extend(chain.path().cloned());
            files.extend(key.path().cloned());
        }
        let ClientTlsBuilder {
            roots,
            identity,
            server_name,
            expected_uri,
            watch,
            no_resumption,
        } = self;
        let configs = Reloading::new(
            "client certificate",
            files,
            watch,
            Box::new(move || {
                let mut config =
                    build_config(roots.as_ref(), identity.as_ref(), expected_uri.as_deref())?;
                if no_resumption {
                    config.resumption = rustls::client::Resumption::disabled();
                }
                let mut h2 = config.clone();
                h2.alpn_protocols = vec![ALPN_H2.to_vec()];
                let mut sinew = config;
                sinew.alpn_protocols = vec![ALPN_SINEW.to_vec()];
                Ok(Configs {
                    sinew: Arc::new(sinew),
                    h2: Arc::new(h2),
                })
            }),
        )?;
        Ok(ClientTls {
            configs,
            server_name,
        })
    }
}

fn build_config(
    roots: Option<&Source>,
    identity: Option<&(Source, Source)>,
    expected_uri: Option<&str>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(match roots {
        Some(source) => source.roots()?,
        None => native_roots()?,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(e.to_string()))?;
    let builder = match expected_uri {
        None => builder.with_root_certificates(roots),
        Some(uri) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::new(format!("CA: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ExpectUri {
                    webpki,
                    expected: uri.to_owned(),
                }))
        }
    };
    match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.certificates()?, key.private_key()?)
            .map_err(|e| TlsError::new(format!("client certificate and key: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Verifies the chain as rustls does, then accepts the certificate if it has
/// the expected URI SAN, whatever its DNS names.
#[derive(Debug)]
struct ExpectUri {
    webpki: Arc<WebPkiServerVerifier>,
    expected: String,
}

/// The server's certificate is valid, but not for the identity expected.
#[derive(Debug)]
struct IdentityMismatch {
    expected: String,
    found: String,
}

impl std::fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate is for {}, not {}",
            self.found, self.expected
        )
    }
}

impl std::error::Error for IdentityMismatch {}

impl ServerCertVerifier for ExpectUri {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // The name rustls checks (the address's host) is not the point:
            // the chain is verified, the identity is checked below.
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(other) => return Err(other),
        }
        let identity = CertificateIdentity::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if identity.uris().contains(&self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(IdentityMismatch {
                expected: self.expected.clone(),
                found: identity.to_string(),
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
