//! [`ServerTls`]: a listener's certificate, key and client authentication.

use super::pem::Source;
use super::reload::{Reloading, Watch};
use super::{handshake_error, provider, Buffered, TlsError, ALPN_H2, ALPN_SINEW};
use rustls::server::WebPkiClientVerifier;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Whether a TLS listener asks its clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// It does not: every client is anonymous (the default without a client CA).
    None,
    /// A client may present a certificate, which must then chain to the client
    /// CA; clients without one are served, with no identity.
    Optional,
    /// Every client must present a certificate that chains to the client CA
    /// (the default with one): mutual TLS.
    Required,
}

/// The TLS settings of a server's `tls://` listeners: its certificate chain
/// and private key, and which client certificates it accepts. Cheap to clone;
/// clones share the configuration and its reloads.
///
/// ```no_run
/// # fn example() -> Result<(), sinew_transport::tls::TlsError> {
/// use sinew_transport::tls::ServerTls;
/// let tls = ServerTls::from_pem_files("/etc/sinew/server.crt", "/etc/sinew/server.key")
///     .client_ca_file("/etc/sinew/clients-ca.crt") // mutual TLS
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<Reloading<rustls::ServerConfig>>,
    client_auth: ClientAuth,
}

/// Builds a [`ServerTls`]; see [`ServerTls::from_pem_files`].
#[derive(Clone, Debug)]
pub struct ServerTlsBuilder {
    chain: Source,
    key: Source,
    client_ca: Option<Source>,
    client_auth: Option<ClientAuth>,
    watch: Watch,
    alpn: Vec<Vec<u8>>,
}

impl ServerTls {
    /// A certificate chain (the server's certificate first, then the
    /// intermediates) and its private key, from PEM files. The files are
    /// checked for changes every 5 seconds (see
    /// [`ServerTlsBuilder::reload_interval`]).
    pub fn from_pem_files(chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ServerTlsBuilder {
        ServerTlsBuilder::new(Source::File(chain.into()), Source::File(key.into()))
    }

    /// A certificate chain and its private key, as PEM in memory.
    pub fn from_pem(chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> ServerTlsBuilder {
        ServerTlsBuilder::new(Source::Memory(chain.into()), Source::Memory(key.into()))
    }

    /// Whether clients are asked for certificates.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// Reads the files again now (as a change or `SIGHUP` would). On an error
    /// the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.config.reload()
    }

    /// Makes sure file changes are watched (the first listener does this).
    pub(crate) fn start_watching(&self) {
        self.config.ensure_watching();
    }

    /// Runs the server side of a handshake on an accepted connection.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<Buffered<TcpStream>>> {
        tokio_rustls::TlsAcceptor::from(self.config.current())
            .accept(Buffered::new(stream))
            .await
            .map_err(|e| {
                handshake_error(e, "the client may be speaking plaintext to a tls:// port")
            })
    }
}

impl ServerTlsBuilder {
    fn new(chain: Source, key: Source) -> ServerTlsBuilder {
        ServerTlsBuilder {
            chain,
            key,
            client_ca: None,
            client_auth: None,
            watch: Watch::default(),
            alpn: vec![ALPN_SINEW.to_vec(), ALPN_H2.to_vec()],
        }
    }

    /// The application protocols offered in the handshake (ALPN), the
    /// preferred first; default `sinew` then `h2`, what a sinew server's
    /// `tls://` listeners speak. An HTTP server offers `h2` and
    /// [`ALPN_HTTP1`](super::ALPN_HTTP1).
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|protocol| protocol.to_vec()).collect();
        self
    }

    /// Accepts client certificates that chain to the CA certificates in this
    /// PEM file, and (unless [`client_auth`](Self::client_auth) says
    /// otherwise) requires one.
    pub fn client_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(Source::File(path.into()));
        self
    }

    /// As [`client_ca_file`](Self::client_ca_file), from PEM in memory.
    pub fn client_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_ca = Some(Source::Memory(pem.into()));
        self
    }

    /// Whether a client certificate is required or optional (it needs a client
    /// CA either way).
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = Some(client_auth);
        self
    }

    /// How often the files are checked for a change (default 5 s; `None`:
    /// only [`ServerTls::reload`] and, if enabled, `SIGHUP` reload them).
    pub fn reload_interval(mut self, interval: Option<Duration>) -> Self {
        self.watch.interval = interval;
        self
    }

    /// Whether `SIGHUP` reloads the files (default: no, as a library should
    /// not take a process's signals; `sinew serve` turns it on).
    pub fn reload_on_sighup(mut self, enabled: bool) -> Self {
        self.watch.sighup = enabled;
        self
    }

    /// Reads and checks everything (the key must match the certificate).
    pub fn build(self) -> Result<ServerTls, TlsError> {
        let client_auth = match (self.client_auth, &self.client_ca) {
            (None, None) => ClientAuth::None,
            (None, Some(_)) => ClientAuth::Required,
            (Some(ClientAuth::None), _) => ClientAuth::None,
            (Some(auth), Some(_)) => auth,
            (Some(_), None) => {
                return Err(TlsError::new(
                    "client certificates need a client CA to verify them against",
                ))
            }
        };
        let files = [Some(&self.chain), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|source| source.path().cloned())
            .collect();
        let ServerTlsBuilder {
            chain,
            key,
            client_ca,
            watch,
            alpn,
            ..
        } = self;
        let config = Reloading::new(
            "server certificate",
            files,
            watch,
            Box::new(move || {
                let mut config = build_config(&chain, &key, client_ca.as_ref(), client_auth)?;
                config.alpn_protocols = alpn.clone();
                Ok(config)
            }),
        )?;
        Ok(ServerTls {
            config,
            client_auth,
        })
    }
}

fn build_config(
    chain: &Source,
    key: &Source,
    client_ca: Option<&Source>,
    client_auth: ClientAuth,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(e.to_string()))?;
    let builder = match (client_auth, client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let roots = Arc::new(ca.roots()?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::new(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain.certificates()?, key.private_key()?)
        .map_err(|e| TlsError::new(format!("server certificate and key: {e}")))?;
    if client_auth == ClientAuth::None {
        // Stateless resumption: a returning client skips the certificate
        // exchange and its signatures.
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = ticketer;
        }
    } else {
        // No resumption with client certificates: a resumed session carries
        // the client's certificate from its first handshake unverified, so a
        // client could keep the identity of a certificate that has since
        // expired (or whose CA was rotated out) by resuming, ticket after
        // ticket. Every handshake verifies the certificate instead.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}
