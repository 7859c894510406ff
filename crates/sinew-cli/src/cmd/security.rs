//! The security options of the commands: TLS, mutual TLS, an authorization
//! policy and bearer tokens for `serve`; the CA, a client certificate and a
//! token for the commands that make calls.

use crate::error::CliError;
use sinew::auth::{AuthenticateLayer, AuthorizeLayer, Policy, TokenVerifier};
use sinew::tls::{ClientAuth, ClientTls, ServerTls};
use std::path::PathBuf;

/// How `serve` secures its `tls://` listeners and its calls.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Security")]
pub(crate) struct ServerSecurity {
    /// The certificate chain (PEM, the server's certificate first) of the
    /// tls:// listeners. Reloaded when the file changes, and on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates that chain to the CA certificates in this
    /// PEM file (mutual TLS); a verified certificate's names (URI SANs such
    /// as SPIFFE IDs, DNS names) are the caller's identity.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// With --client-ca: `required` (default), or `optional` (clients without
    /// a certificate are served, anonymous).
    #[arg(long, value_name = "required|optional", requires = "client_ca", value_parser = parse_client_auth)]
    client_auth: Option<ClientAuth>,
    /// An authorization policy (TOML: tables of deny and allow rules over
    /// principals, methods and metadata); calls it refuses end with
    /// PERMISSION_DENIED. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Verify bearer tokens (JWT, HS256/384/512) with the secret in this file.
    #[arg(long, value_name = "FILE", group = "jwt_key")]
    jwt_secret_file: Option<PathBuf>,
    /// Verify bearer tokens (JWT) with this public key (PEM: RSA, EC or Ed25519).
    #[arg(long, value_name = "FILE", group = "jwt_key")]
    jwt_public_key: Option<PathBuf>,
    /// Verify bearer tokens (JWT) with the keys of this JWK set (JSON).
    #[arg(long, value_name = "FILE", group = "jwt_key")]
    jwt_jwks: Option<PathBuf>,
    /// Accept only tokens from this issuer (repeatable).
    #[arg(long, value_name = "ISSUER", requires = "jwt_key")]
    jwt_issuer: Vec<String>,
    /// Accept only tokens for this audience (repeatable).
    #[arg(long, value_name = "AUDIENCE", requires = "jwt_key")]
    jwt_audience: Vec<String>,
    /// Refuse calls without a valid bearer token (UNAUTHENTICATED).
    #[arg(long, requires = "jwt_key")]
    require_token: bool,
}

fn parse_client_auth(text: &str) -> Result<ClientAuth, String> {
    match text {
        "required" => Ok(ClientAuth::Required),
        "optional" => Ok(ClientAuth::Optional),
        _ => Err(format!("{text:?} is neither `required` nor `optional`")),
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))
}

impl ServerSecurity {
    /// The TLS settings, if a certificate was given.
    pub(crate) fn tls(&self) -> Result<Option<ServerTls>, CliError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut builder = ServerTls::from_pem_files(cert, key).reload_on_sighup(true);
        if let Some(ca) = &self.client_ca {
            builder = builder.client_ca_file(ca);
        }
        if let Some(auth) = self.client_auth {
            builder = builder.client_auth(auth);
        }
        builder
            .build()
            .map(Some)
            .map_err(|e| CliError::usage(e.to_string()))
    }

    /// Token verification, if a key was given.
    pub(crate) fn authenticate(&self) -> Result<Option<AuthenticateLayer>, CliError> {
        let verifier = if let Some(path) = &self.jwt_secret_file {
            let secret = read(path)?;
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
            TokenVerifier::hmac_secret(secret)
        } else if let Some(path) = &self.jwt_public_key {
            TokenVerifier::public_key_pem(&read(path)?)
        } else if let Some(path) = &self.jwt_jwks {
            TokenVerifier::jwks(&String::from_utf8_lossy(&read(path)?))
        } else {
            return Ok(None);
        };
        let mut verifier = verifier.map_err(|e| CliError::usage(format!("--jwt-*: {e}")))?;
        for issuer in &self.jwt_issuer {
            verifier = verifier.issuer(issuer);
        }
        for audience in &self.jwt_audience {
            verifier = verifier.audience(audience);
        }
        Ok(Some(
            AuthenticateLayer::new(verifier).required(self.require_token),
        ))
    }

    /// The authorization policy, if one was given; reloaded on SIGHUP (a
    /// policy that no longer loads leaves the one in force, and says why).
    pub(crate) fn authorize(&self) -> Result<Option<AuthorizeLayer>, CliError> {
        let Some(path) = &self.policy else {
            return Ok(None);
        };
        let policy = Policy::from_file(path).map_err(|e| CliError::usage(e.to_string()))?;
        let layer = AuthorizeLayer::new(policy);
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| CliError::failure(format!("cannot listen for SIGHUP: {e}")))?;
        let (reloading, path) = (layer.clone(), path.clone());
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match Policy::from_file(&path) {
                    Ok(policy) => {
                        reloading.set_policy(policy);
                        eprintln!("reloaded the policy {} (SIGHUP)", path.display());
                    }
                    Err(error) => eprintln!("{error}; the policy in force stays"),
                }
            }
        });
        Ok(Some(layer))
    }
}

/// How the commands that make calls reach a TLS server and prove who they
/// are.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Security")]
pub(crate) struct ClientSecurity {
    /// Trust the CA certificates in this PEM file for tls:// and grpcs://
    /// servers [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Present this certificate chain (PEM) to servers that ask for one
    /// (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Verify the server's certificate against this name (or URI, such as a
    /// SPIFFE ID) instead of the address's host.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Send this bearer token with every call (authorization: Bearer TOKEN).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl ClientSecurity {
    /// The connect settings these options make.
    pub(crate) fn connect_options(&self) -> Result<sinew::ConnectOptions, CliError> {
        let options = sinew::ConnectOptions::new();
        if self.ca.is_none() && self.cert.is_none() && self.server_name.is_none() {
            return Ok(options);
        }
        let mut builder = ClientTls::builder();
        if let Some(ca) = &self.ca {
            builder = builder.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            builder = builder.identity_files(cert, key);
        }
        if let Some(name) = &self.server_name {
            builder = builder.expect_identity(name);
        }
        let tls = builder
            .build()
            .map_err(|e| CliError::usage(e.to_string()))?;
        Ok(options.tls(tls))
    }

    /// `channel`, sending the token if one was given.
    pub(crate) fn with_token(&self, channel: sinew::Channel) -> Result<sinew::Channel, CliError> {
        let Some(token) = &self.token else {
            return Ok(channel);
        };
        let bearer = sinew::auth::BearerToken::new(token)
            .map_err(|status| CliError::usage(status.message().to_owned()))?;
        Ok(sinew::Channel::from_service(tower::Layer::layer(
            &bearer, channel,
        )))
    }
}
