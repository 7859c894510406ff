//! Who may call what on a sinew server: authentication and authorization as
//! tower layers on the server's call path.
//!
//! A caller is known by its **principals**, the names the server can prove:
//!
//! | principal | proved by |
//! |-----------|-----------|
//! | `spiffe://example.org/ns/prod/sa/api` (any URI) | a URI SAN of the client's certificate (mutual TLS) |
//! | `dns:client.example.org`, `cn:client` | a DNS SAN, the subject's common name (mutual TLS) |
//! | `uid:1000`, `gid:1000` | the peer process's credentials (`unix://`, `shm://`: `SO_PEERCRED`) |
//! | `jwt:alice`, `scope:ledger.write` | a bearer token's subject and scopes, verified by [`AuthenticateLayer`] |
//!
//! [`AuthorizeLayer`] applies a [`Policy`] of allow and deny rules over
//! principals, methods and metadata to every call, whatever the transport it
//! came by (sinew's protocol over TCP, TLS, Unix sockets and shared memory,
//! gRPC, in-process): a call the policy refuses ends with
//! `PERMISSION_DENIED` and nothing more (which rule, which principal, stays
//! in the server's debug log). [`AuthenticateLayer`] verifies bearer tokens
//! (JWT) for callers without certificates; a bad token is `UNAUTHENTICATED`.
//! On the client, [`BearerToken`] attaches a token to calls.
//!
//! ```
//! use sinew_auth::{AuthorizeLayer, Policy};
//! let policy = Policy::from_toml(r#"
//!     [[deny]]
//!     principals = ["spiffe://example.org/ns/test/sa/intern"]
//!     methods = ["/bank.Ledger/Transfer"]
//!
//!     [[allow]]
//!     principals = ["spiffe://example.org/ns/*", "uid:1000"]
//! "#).unwrap();
//! let layer = AuthorizeLayer::new(policy); // ServerBuilder::layer(layer)
//! # let _ = layer;
//! ```
//!
//! This crate decides; it does not encrypt or verify certificates: that is
//! the transport's TLS (`sinew_transport::tls`), which hands the verified
//! identity over in [`Peer::identity`](sinew_rpc::server::Peer::identity).

#![forbid(unsafe_code)]

mod authorize;
mod bearer;
mod policy;
mod principal;
mod token;

pub use authorize::{AuthorizeLayer, AuthorizeService};
pub use bearer::{BearerToken, BearerTokenService};
pub use policy::{Policy, PolicyError, Rule};
pub use principal::Principal;
pub use token::{AuthenticateLayer, AuthenticateService, TokenError, TokenIdentity, TokenVerifier};
