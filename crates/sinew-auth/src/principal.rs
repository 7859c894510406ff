//! [`Principal`]: one name a caller is known by, and the principals of a call.

use crate::token::TokenIdentity;
use sinew_rpc::server::ServerCall;
use sinew_transport::PeerIdentity;
use std::fmt;

/// One name the server can prove of a caller (see the crate docs for which
/// proves what). Written as text, as policies write them:
/// `spiffe://...`, `dns:NAME`, `cn:NAME`, `uid:N`, `gid:N`, `jwt:SUBJECT`,
/// `scope:SCOPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal<'a> {
    /// A URI SAN of the client's certificate (a SPIFFE ID, typically).
    Uri(&'a str),
    /// A DNS SAN of the client's certificate.
    Dns(&'a str),
    /// The common name of the client certificate's subject.
    CommonName(&'a str),
    /// The peer process's effective user id.
    Uid(u32),
    /// The peer process's effective group id.
    Gid(u32),
    /// The subject of a verified bearer token.
    Jwt(&'a str),
    /// A scope a verified bearer token grants.
    Scope(&'a str),
}

impl fmt::Display for Principal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Uri(uri) => f.write_str(uri),
            Principal::Dns(name) => write!(f, "dns:{name}"),
            Principal::CommonName(name) => write!(f, "cn:{name}"),
            Principal::Uid(uid) => write!(f, "uid:{uid}"),
            Principal::Gid(gid) => write!(f, "gid:{gid}"),
            Principal::Jwt(subject) => write!(f, "jwt:{subject}"),
            Principal::Scope(scope) => write!(f, "scope:{scope}"),
        }
    }
}

/// Every principal of a call: its connection's identity, then its token's.
pub(crate) fn of_call(call: &ServerCall) -> Vec<Principal<'_>> {
    let mut principals = Vec::new();
    match call.peer().and_then(|peer| peer.identity()) {
        Some(PeerIdentity::Certificate(certificate)) => {
            principals.extend(certificate.uris().iter().map(|uri| Principal::Uri(uri)));
            principals.extend(
                certificate
                    .dns_names()
                    .iter()
                    .map(|name| Principal::Dns(name)),
            );
            principals.extend(certificate.common_name().map(Principal::CommonName));
        }
        Some(PeerIdentity::Process(credentials)) => {
            principals.push(Principal::Uid(credentials.uid));
            principals.push(Principal::Gid(credentials.gid));
        }
        Some(_) | None => {}
    }
    if let Some(token) = call.extensions().get::<TokenIdentity>() {
        principals.push(Principal::Jwt(token.subject()));
        principals.extend(token.scopes().iter().map(|scope| Principal::Scope(scope)));
    }
    principals
}
