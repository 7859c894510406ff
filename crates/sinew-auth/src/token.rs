//! Bearer tokens: [`TokenVerifier`] checks a JWT, [`AuthenticateLayer`]
//! verifies the `authorization: Bearer ...` of a server's calls and hands
//! the [`TokenIdentity`] to the layers and handlers after it.
//!
//! For callers that have no certificate: a browser behind a gateway, a job
//! with a token from an identity provider. Verification is jsonwebtoken's
//! (signature, `exp` always, `nbf`, and `iss` / `aud` when configured, with
//! a leeway of 60 s for clock skew); keys are an HMAC secret, a public key
//! (RSA, EC or Ed25519, PEM) or a JWK set, whose `kid` picks the key.
//! Tokens signed with `none`, or with an algorithm of another family than
//! the key's, are refused.

use futures_util::future::Either;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sinew_rpc::server::ServerCall;
use sinew_rpc::Status;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Who a verified token says the caller is: its subject (`sub`), issuer
/// (`iss`) and scopes (the space-separated `scope` claim, or an `scp` list),
/// and every claim. A per-call extension
/// ([`ServerCall::extensions`], [`Request::extensions`](sinew_rpc::Request::extensions)).
#[derive(Clone, Debug)]
pub struct TokenIdentity {
    subject: String,
    issuer: Option<String>,
    scopes: Vec<String>,
    claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl TokenIdentity {
    /// The token's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The token's issuer, if it names one.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The scopes the token grants.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Every claim of the token.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.claims
    }
}

/// A token that was refused, and why (for logs: callers are told less).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    message: String,
    expired: bool,
}

impl TokenError {
    fn new(message: impl Into<String>) -> TokenError {
        TokenError {
            message: message.into(),
            expired: false,
        }
    }

    /// Whether the token was refused only for being out of date.
    pub fn is_expired(&self) -> bool {
        self.expired
    }
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        TokenError {
            expired: matches!(
                error.kind(),
                jsonwebtoken::errors::ErrorKind::ExpiredSignature
            ),
            message: error.to_string(),
        }
    }
}

#[derive(Clone)]
struct Key {
    id: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Verifies JWTs; see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<[Key]>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];
const ED: [Algorithm; 1] = [Algorithm::EdDSA];

/// jsonwebtoken's crypto: RustCrypto, chosen explicitly so that another
/// crate enabling its aws-lc feature cannot leave it without a default.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    });
}

impl TokenVerifier {
    fn with_keys(keys: Vec<Key>) -> TokenVerifier {
        install_crypto();
        TokenVerifier {
            keys: keys.into(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(60),
        }
    }

    /// Tokens signed with an HMAC secret (HS256, HS384, HS512).
    pub fn hmac_secret(secret: &[u8]) -> Result<TokenVerifier, TokenError> {
        if secret.len() < 32 {
            return Err(TokenError::new(
                "an HMAC secret must have at least 32 bytes (256 bits)",
            ));
        }
        Ok(TokenVerifier::with_keys(vec![Key {
            id: None,
            key: DecodingKey::from_secret(secret)?,
            algorithms: HMAC.to_vec(),
        }]))
    }

    /// Tokens signed with the private key of this public key (PEM: RSA, EC
    /// P-256/P-384 or Ed25519).
    pub fn public_key_pem(pem: &[u8]) -> Result<TokenVerifier, TokenError> {
        let key = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, ED.to_vec())
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, EC.to_vec())
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, RSA.to_vec())
        } else {
            return Err(TokenError::new(
                "not a PEM public key of RSA, EC (P-256, P-384) or Ed25519",
            ));
        };
        Ok(TokenVerifier::with_keys(vec![Key {
            id: None,
            key: key.0,
            algorithms: key.1,
        }]))
    }

    /// Tokens signed with any key of a JWK set (`{"keys": [...]}`), as
    /// identity providers publish them; a token's `kid` picks its key.
    pub fn jwks(json: &str) -> Result<TokenVerifier, TokenError> {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(json)
            .map_err(|e| TokenError::new(format!("not a JWK set: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk)?;
            let algorithms = match key.family() {
                jsonwebtoken::AlgorithmFamily::Hmac => HMAC.to_vec(),
                jsonwebtoken::AlgorithmFamily::Rsa => RSA.to_vec(),
                jsonwebtoken::AlgorithmFamily::Ec => EC.to_vec(),
                jsonwebtoken::AlgorithmFamily::Ed => ED.to_vec(),
            };
            keys.push(Key {
                id: jwk.common.key_id.clone(),
                key,
                algorithms,
            });
        }
        if keys.is_empty() {
            return Err(TokenError::new("the JWK set has no keys"));
        }
        Ok(TokenVerifier::with_keys(keys))
    }

    /// Accepts only tokens from this issuer (`iss`); may be given several
    /// times.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts only tokens for this audience (`aud`); may be given several
    /// times. Without one, tokens that name an audience are refused (they
    /// are meant for someone else).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (default 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Verifies a token (without its `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|key| key.algorithms.contains(&header.alg))
            .filter(|key| match (&header.kid, &key.id) {
                (Some(wanted), Some(id)) => wanted == id,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::new(format!(
                "no key for a token signed with {:?}{}",
                header.alg,
                header
                    .kid
                    .as_deref()
                    .map(|kid| format!(" (kid {kid:?})"))
                    .unwrap_or_default()
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        let mut last_error = None;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => return identity(data.claims, self.audiences.is_empty()),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error
            .map(TokenError::from)
            .unwrap_or_else(|| TokenError::new("no key")))
    }
}

fn identity(
    claims: serde_json::Map<String, serde_json::Value>,
    no_audience_expected: bool,
) -> Result<TokenIdentity, TokenError> {
    if no_audience_expected && claims.contains_key("aud") {
        return Err(TokenError::new(
            "the token is for an audience, and this server expects none",
        ));
    }
    let subject = claims
        .get("sub")
        .and_then(|sub| sub.as_str())
        .filter(|sub| !sub.is_empty())
        .ok_or_else(|| TokenError::new("the token has no subject (sub)"))?
        .to_owned();
    let issuer = claims
        .get("iss")
        .and_then(|iss| iss.as_str())
        .map(str::to_owned);
    let scopes = match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(scope)), _) => {
            scope.split_whitespace().map(str::to_owned).collect()
        }
        (_, Some(serde_json::Value::Array(list))) => list
            .iter()
            .filter_map(|scope| scope.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Ok(TokenIdentity {
        subject,
        issuer,
        scopes,
        claims: Arc::new(claims),
    })
}

/// Verifies the bearer token of a server's calls (`authorization: Bearer
/// TOKEN`), and puts the [`TokenIdentity`] in the call's extensions, where
/// [`AuthorizeLayer`](crate::AuthorizeLayer) finds its `jwt:` and `scope:`
/// principals. A call with a token that fails verification ends with
/// `UNAUTHENTICATED` ("invalid bearer token", or "bearer token expired");
/// a call without one goes on (its certificate or process may prove who it
/// is) unless tokens are [`required`](AuthenticateLayer::required).
#[derive(Clone, Debug)]
pub struct AuthenticateLayer {
    verifier: TokenVerifier,
    required: bool,
}

impl AuthenticateLayer {
    /// Verifies tokens with `verifier`; calls without a token go on.
    pub fn new(verifier: TokenVerifier) -> AuthenticateLayer {
        AuthenticateLayer {
            verifier,
            required: false,
        }
    }

    /// Whether every call must carry a valid token.
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = AuthenticateService<S>;

    fn layer(&self, inner: S) -> AuthenticateService<S> {
        AuthenticateService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A server stack behind an [`AuthenticateLayer`].
#[derive(Clone, Debug)]
pub struct AuthenticateService<S> {
    inner: S,
    layer: AuthenticateLayer,
}

/// The token of `authorization: Bearer TOKEN` (the scheme in any case).
fn bearer(call: &ServerCall) -> Option<&str> {
    let value = call.metadata().get("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

impl<S> Service<ServerCall> for AuthenticateService<S>
where
    S: Service<ServerCall, Response = Status, Error = Status>,
{
    type Response = Status;
    type Error = Status;
    type Future = Either<S::Future, Ready<Result<Status, Status>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ServerCall) -> Self::Future {
        let refusal = match bearer(&call).map(|token| self.layer.verifier.verify(token)) {
            Some(Ok(identity)) => {
                call.extensions_mut().insert(identity);
                None
            }
            Some(Err(error)) => {
                tracing::debug!(path = call.path(), %error, "bearer token refused");
                Some(if error.is_expired() {
                    "bearer token expired"
                } else {
                    "invalid bearer token"
                })
            }
            None if self.layer.required => Some("a bearer token is required"),
            None => None,
        };
        match refusal {
            None => Either::Left(self.inner.call(call)),
            Some(message) => {
                Either::Right(std::future::ready(Err(Status::unauthenticated(message))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: serde_json::Value) -> String {
        install_crypto();
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_good_token_gives_its_subject_and_scopes() {
        let verifier = TokenVerifier::hmac_secret(SECRET)
            .unwrap()
            .issuer("https://id.example.org");
        let token = hs256(json!({
            "sub": "alice", "iss": "https://id.example.org",
            "exp": now() + 60, "scope": "ledger.read ledger.write",
        }));
        let identity = verifier.verify(&token).unwrap();
        assert_eq!(identity.subject(), "alice");
        assert_eq!(identity.issuer(), Some("https://id.example.org"));
        assert_eq!(identity.scopes(), ["ledger.read", "ledger.write"]);
        let listed = hs256(json!({"sub": "bob", "iss": "https://id.example.org",
            "exp": now() + 60, "scp": ["a", "b"]}));
        assert_eq!(verifier.verify(&listed).unwrap().scopes(), ["a", "b"]);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let verifier = TokenVerifier::hmac_secret(SECRET)
            .unwrap()
            .issuer("https://id.example.org")
            .leeway(Duration::ZERO);
        let good = json!({"sub": "alice", "iss": "https://id.example.org", "exp": now() + 60});
        let expired = verifier
            .verify(&hs256(
                json!({"sub": "a", "iss": "https://id.example.org", "exp": now() - 10}),
            ))
            .unwrap_err();
        assert!(expired.is_expired(), "{expired}");
        let cases = [
            (
                "other issuer",
                hs256(json!({"sub": "a", "iss": "https://evil", "exp": now() + 60})),
            ),
            (
                "no exp",
                hs256(json!({"sub": "a", "iss": "https://id.example.org"})),
            ),
            (
                "no sub",
                hs256(json!({"iss": "https://id.example.org", "exp": now() + 60})),
            ),
            (
                "not yet",
                hs256(
                    json!({"sub": "a", "iss": "https://id.example.org", "exp": now() + 60, "nbf": now() + 30}),
                ),
            ),
            (
                "for an audience",
                hs256(
                    json!({"sub": "a", "iss": "https://id.example.org", "exp": now() + 60, "aud": "other"}),
                ),
            ),
            ("tampered", {
                let token = hs256(good.clone());
                let (rest, signature) = token.rsplit_once('.').unwrap();
                let flipped = if signature.starts_with('A') { "B" } else { "A" };
                format!("{rest}.{flipped}{}", &signature[1..])
            }),
            ("other secret", {
                encode(
                    &Header::new(Algorithm::HS256),
                    &good,
                    &EncodingKey::from_secret(b"another secret of thirty-two bytes!").unwrap(),
                )
                .unwrap()
            }),
            ("garbage", "not.a.token".to_owned()),
            ("unsigned", {
                // alg "none", which jsonwebtoken cannot even express: by hand.
                let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
                let token = hs256(good.clone());
                let payload = token.split('.').nth(1).unwrap();
                format!("{header}.{payload}.")
            }),
        ];
        for (case, token) in cases {
            let error = verifier.verify(&token).unwrap_err();
            assert!(!error.is_expired(), "{case}: {error}");
        }
        assert!(TokenVerifier::hmac_secret(b"short").is_err());
    }

    #[test]
    fn public_keys_and_key_sets_verify_their_own_tokens_only() {
        install_crypto();
        let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
        let verifier = TokenVerifier::public_key_pem(key.public_key_pem().as_bytes())
            .unwrap()
            .audience("ledger");
        let claims = json!({"sub": "svc", "aud": "ledger", "exp": now() + 60});
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().subject(), "svc");
        let wrong_audience = json!({"sub": "svc", "aud": "other", "exp": now() + 60});
        let token = encode(&Header::new(Algorithm::ES256), &wrong_audience, &signing).unwrap();
        assert!(verifier.verify(&token).is_err());
        // Algorithm confusion: an HMAC token "signed" with the public key.
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.public_key_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let error = verifier.verify(&forged).unwrap_err().to_string();
        assert!(error.contains("no key"), "{error}");

        // A JWK set: the kid picks the key.
        let set = json!({"keys": [
            {"kty": "oct", "kid": "one", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"},
        ]});
        let verifier = TokenVerifier::jwks(&set.to_string()).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("one".to_owned());
        let claims = json!({"sub": "k", "exp": now() + 60});
        let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().subject(), "k");
        header.kid = Some("two".to_owned());
        let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap();
        assert!(verifier
            .verify(&token)
            .unwrap_err()
            .to_string()
            .contains("kid"));
    }
}
