//! Who is at the other end of a connection, as its transport proved it.
//!
//! Two transports prove something about their peer. TLS with a client
//! certificate proves the names in that certificate, once the listener's
//! client CA has verified it: DNS names, URIs (a SPIFFE workload identity such
//! as `spiffe://example.org/ns/prod/sa/billing` is a URI SAN, as linkerd and
//! Istio issue them) and the subject's common name. A Unix socket or a
//! shared-memory connection proves the peer process's user, group and process
//! ids (`SO_PEERCRED`, from the kernel). Plain TCP proves nothing.
//!
//! A [`PeerIdentity`] is computed once per connection and shared by its calls;
//! an authorization policy reads it, whatever the transport, through
//! [`PeerIdentity::principals`].
//!
//! This module reads names; it does not verify certificates: rustls does, in
//! the TLS handshake, before an identity is ever made.

pub use sinew_shm::PeerCredentials;
use std::fmt;
use std::time::{Duration, SystemTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a connection's transport proved about its peer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerIdentity {
    /// A TLS peer's certificate, verified in the handshake.
    Certificate(CertificateIdentity),
    /// A process on this host (Unix socket or shared memory).
    Process(PeerCredentials),
}

impl PeerIdentity {
    /// The names this identity answers to, written as authorization
    /// policies write them: each URI SAN as it is (`spiffe://...`), each DNS
    /// SAN as `dns:NAME`, the subject's common name as `cn:NAME`; for a local
    /// process `uid:N` and `gid:N`. For display and logs: a URI SAN is
    /// written unprefixed, so a certificate could carry one that reads like
    /// another kind (`uid:0` is a valid URI); decisions go through typed
    /// names (`sinew-auth`'s `Principal`), never through these strings.
    pub fn principals(&self) -> Vec<String> {
        match self {
            PeerIdentity::Certificate(certificate) => certificate
                .uris
                .iter()
                .cloned()
                .chain(
                    certificate
                        .dns_names
                        .iter()
                        .map(|name| format!("dns:{name}")),
                )
                .chain(
                    certificate
                        .common_name
                        .iter()
                        .map(|name| format!("cn:{name}")),
                )
                .collect(),
            PeerIdentity::Process(credentials) => vec![
                format!("uid:{}", credentials.uid),
                format!("gid:{}", credentials.gid),
            ],
        }
    }

    /// The certificate, for a TLS peer that presented one.
    pub fn certificate(&self) -> Option<&CertificateIdentity> {
        match self {
            PeerIdentity::Certificate(certificate) => Some(certificate),
            PeerIdentity::Process(_) => None,
        }
    }

    /// The process credentials, for a local peer.
    pub fn credentials(&self) -> Option<&PeerCredentials> {
        match self {
            PeerIdentity::Process(credentials) => Some(credentials),
            PeerIdentity::Certificate(_) => None,
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Certificate(certificate) => fmt::Display::fmt(certificate, f),
            PeerIdentity::Process(credentials) => match credentials.pid {
                Some(pid) => write!(
                    f,
                    "pid {pid} (uid {}, gid {})",
                    credentials.uid, credentials.gid
                ),
                None => write!(f, "uid {}, gid {}", credentials.uid, credentials.gid),
            },
        }
    }
}

/// The names of a verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateIdentity {
    uris: Vec<String>,
    dns_names: Vec<String>,
    common_name: Option<String>,
    not_after: SystemTime,
}

/// A certificate whose names could not be read.
#[derive(Clone, Debug, thiserror::Error)]
#[error("unreadable certificate: {0}")]
pub struct CertificateError(String);

impl CertificateIdentity {
    /// Reads the names of a DER-encoded certificate (the end-entity one of a
    /// chain). It does not verify it.
    pub fn from_der(der: &[u8]) -> Result<CertificateIdentity, CertificateError> {
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|e| CertificateError(e.to_string()))?;
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        if let Ok(Some(names)) = certificate.subject_alternative_name() {
            for name in &names.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                    GeneralName::DNSName(name) => dns_names.push((*name).to_owned()),
                    _ => {}
                }
            }
        }
        let common_name = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .map(str::to_owned);
        let seconds = certificate.validity().not_after.timestamp();
        let not_after = if seconds >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64)
        } else {
            SystemTime::UNIX_EPOCH
        };
        Ok(CertificateIdentity {
            uris,
            dns_names,
            common_name,
            not_after,
        })
    }

    /// The SPIFFE ID: the certificate's `spiffe://` URI SAN (an X.509 SVID
    /// has exactly one; a certificate with several has none that counts).
    pub fn spiffe_id(&self) -> Option<&str> {
        let mut spiffe = self.uris.iter().filter(|uri| is_spiffe_id(uri));
        match (spiffe.next(), spiffe.next()) {
            (Some(id), None) => Some(id),
            _ => None,
        }
    }

    /// The URI SANs.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The DNS SANs.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The subject's common name, if it has one.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// When the certificate stops being valid.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether `name` is one of this certificate's names: a URI SAN
    /// (`spiffe://...`), or a DNS SAN (with or without a `dns:` prefix).
    pub fn has_name(&self, name: &str) -> bool {
        if name.contains("://") {
            return self.uris.iter().any(|uri| uri == name);
        }
        let name = name.strip_prefix("dns:").unwrap_or(name);
        self.dns_names
            .iter()
            .any(|dns| dns.eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for CertificateIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.spiffe_id() {
            return f.write_str(id);
        }
        match (self.uris.first(), self.dns_names.first(), &self.common_name) {
            (Some(uri), _, _) => f.write_str(uri),
            (None, Some(dns), _) => write!(f, "dns:{dns}"),
            (None, None, Some(cn)) => write!(f, "cn:{cn}"),
            (None, None, None) => f.write_str("certificate without names"),
        }
    }
}

/// Whether `uri` is a well-formed SPIFFE ID: `spiffe://` + a trust domain of
/// lower-case letters, digits, `.`, `-`, `_` + an optional path of non-empty
/// segments, no query, no fragment, no port or user info.
pub fn is_spiffe_id(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return false;
    };
    let (domain, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
    let path_ok = path.is_empty()
        || path[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
        });
    domain_ok && path_ok && uri.len() <= 2048
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_are_checked_for_form() {
        assert!(is_spiffe_id("spiffe://example.org/ns/prod/sa/billing"));
        assert!(is_spiffe_id("spiffe://example.org"));
        for bad in [
            "spiffe://",
            "spiffe://Example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org//x",
            "spiffe://example.org/a/../b",
            "spiffe://user@example.org/x",
            "spiffe://example.org:443/x",
            "spiffe://example.org/x?q=1",
            "https://example.org/x",
        ] {
            assert!(!is_spiffe_id(bad), "{bad}");
        }
    }

    #[test]
    fn names_are_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["api.example.org".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/ns/prod/sa/api".try_into().unwrap(),
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "api");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let identity = CertificateIdentity::from_der(certificate.der()).unwrap();
        assert_eq!(identity.dns_names(), ["api.example.org"]);
        assert_eq!(
            identity.spiffe_id(),
            Some("spiffe://example.org/ns/prod/sa/api")
        );
        assert_eq!(identity.common_name(), Some("api"));
        assert!(identity.has_name("dns:API.example.org"));
        assert!(identity.has_name("spiffe://example.org/ns/prod/sa/api"));
        assert!(!identity.has_name("spiffe://example.org/ns/prod/sa/other"));
        assert_eq!(
            PeerIdentity::Certificate(identity.clone()).principals(),
            [
                "spiffe://example.org/ns/prod/sa/api",
                "dns:api.example.org",
                "cn:api"
            ]
        );
        assert_eq!(identity.to_string(), "spiffe://example.org/ns/prod/sa/api");
        assert!(CertificateIdentity::from_der(b"not a certificate").is_err());
    }
}
