//! Certificates for tests, demos and development: a throwaway CA that issues
//! certificates for any names (feature `dev-certs`).
//!
//! `sinew demo` runs its cluster with mutual TLS on certificates made here at
//! start, and the tests make theirs here. Keys live in memory until written;
//! nothing here is a way to run a production CA (no revocation, no
//! persistence of the CA's key, no policy).
//!
//! ```
//! use sinew_transport::tls::dev::DevCa;
//! let ca = DevCa::new("sinew test CA").unwrap();
//! let server = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
//! let client = ca.issue(&["spiffe://example.org/ns/test/sa/client"]).unwrap();
//! # let _ = (server, client);
//! ```

use super::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A certificate authority whose key lives in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key, as PEM.
#[derive(Clone)]
pub struct DevCertificate {
    chain_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for DevCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCertificate").finish_non_exhaustive()
    }
}

fn rcgen_error(error: rcgen::Error) -> TlsError {
    TlsError::new(format!("generating a certificate: {error}"))
}

impl DevCa {
    /// A new CA (an ECDSA P-256 key), valid from an hour ago for ten years,
    /// with `name` as its common name.
    pub fn new(name: &str) -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::new(Vec::new()).map_err(rcgen_error)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let certificate = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(DevCa {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's certificate, as PEM: what clients (or servers, for client
    /// certificates) trust.
    pub fn certificate_pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `names`, valid from an hour ago for a year: an IP
    /// address becomes an IP SAN, a URI (`spiffe://...`) a URI SAN, anything
    /// else a DNS SAN; the first name is also the common name. It serves for
    /// both servers and clients.
    pub fn issue(&self, names: &[&str]) -> Result<DevCertificate, TlsError> {
        let now = SystemTime::now();
        self.issue_valid(
            names,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(365 * 24 * 3600),
        )
    }

    /// As [`issue`](Self::issue), valid from `not_before` to `not_after`
    /// (in the past, to test that expired certificates are refused).
    pub fn issue_valid(
        &self,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<DevCertificate, TlsError> {
        let mut params = CertificateParams::new(Vec::new()).map_err(rcgen_error)?;
        for name in names {
            let san = if name.contains("://") {
                SanType::URI(
                    (*name)
                        .try_into()
                        .map_err(|_| TlsError::new(format!("{name:?} is not a valid URI SAN")))?,
                )
            } else if let Ok(ip) = name.parse::<std::net::IpAddr>() {
                SanType::IpAddress(ip)
            } else {
                SanType::DnsName(
                    (*name)
                        .try_into()
                        .map_err(|_| TlsError::new(format!("{name:?} is not a valid DNS name")))?,
                )
            };
            params.subject_alt_names.push(san);
        }
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let certificate = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(DevCertificate {
            chain_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl DevCertificate {
    /// The certificate, as PEM (the chain is the certificate alone: the CA
    /// issued it directly).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The private key, as PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `STEM.crt` and `STEM.key` (readable by the owner only) into
    /// `directory`, replacing them atomically (each is written aside, then
    /// renamed), and returns their paths.
    pub fn write(&self, directory: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        let chain = directory.join(format!("{stem}.crt"));
        let key = directory.join(format!("{stem}.key"));
        write_atomically(&chain, self.chain_pem.as_bytes(), 0o644)?;
        write_atomically(&key, self.key_pem.as_bytes(), 0o600)?;
        Ok((chain, key))
    }
}

/// Writes `contents` beside `path` and renames it over `path`, so that a
/// reader sees the old file or the new one, never half of one. The file
/// written aside is new (`O_EXCL`: never one that someone else put there,
/// nor a link), with `mode` from the start.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let aside = path.with_extension(format!(
        "{}.tmp{}-{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&aside)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&aside, path)
}
