//! Certificates and keys in PEM, from a file or from memory, with errors that
//! name the file and what is wrong with it.

use super::TlsError;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;

/// Where PEM comes from. Files are read again on every reload.
#[derive(Clone)]
pub(crate) enum Source {
    File(PathBuf),
    Memory(Vec<u8>),
}

/// Never prints PEM held in memory: it may be a private key.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => f.debug_tuple("File").field(path).finish(),
            Source::Memory(pem) => write!(f, "Memory({} bytes)", pem.len()),
        }
    }
}

impl Source {
    /// The file, if this comes from one (to be watched).
    pub(crate) fn path(&self) -> Option<&PathBuf> {
        match self {
            Source::File(path) => Some(path),
            Source::Memory(_) => None,
        }
    }

    fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Memory(_) => "PEM in memory".to_owned(),
        }
    }

    fn read(&self) -> Result<Vec<u8>, TlsError> {
        match self {
            Source::File(path) => std::fs::read(path)
                .map_err(|e| TlsError::new(format!("reading {}: {e}", path.display()))),
            Source::Memory(pem) => Ok(pem.clone()),
        }
    }

    /// Every certificate (a chain: the end-entity one first).
    pub(crate) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let pem = self.read()?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::new(format!("{}: {e}", self.name())))?;
        if certificates.is_empty() {
            return Err(TlsError::new(format!(
                "{}: no certificate (expected PEM with -----BEGIN CERTIFICATE-----)",
                self.name()
            )));
        }
        Ok(certificates)
    }

    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let pem = self.read()?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => TlsError::new(format!(
                "{}: no private key (expected PEM with -----BEGIN PRIVATE KEY-----)",
                self.name()
            )),
            other => TlsError::new(format!("{}: {other}", self.name())),
        })
    }

    /// The certificates as trust anchors.
    pub(crate) fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for certificate in self.certificates()? {
            roots.add(certificate).map_err(|e| {
                TlsError::new(format!("{}: not a CA certificate: {e}", self.name()))
            })?;
        }
        Ok(roots)
    }
}

/// The platform's trust store (as `rustls-native-certs` finds it: the
/// system's bundle, or the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name), read
/// once per process.
pub(crate) fn native_roots() -> Result<RootCertStore, TlsError> {
    static ROOTS: std::sync::OnceLock<Result<RootCertStore, TlsError>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(TlsError::new(format!(
                    "no trusted root certificates found on this system{why} (give a CA)"
                )));
            }
            Ok(roots)
        })
        .clone()
}
