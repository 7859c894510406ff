//! Authentication of a route's requests: an API key, or a bearer token
//! (JWT) verified as sinew's RPC servers verify them (`sinew_auth`'s
//! `TokenVerifier`: HMAC secrets, PEM public keys, JWK sets, issuers,
//! audiences, expiry).
//!
//! A request passes with a key of the route's list in its API key header
//! (`x-api-key` unless set), or with `Authorization: Bearer TOKEN` for a
//! token that verifies. Otherwise it is answered 401 with
//! `WWW-Authenticate: Bearer` and goes no further; a token that is
//! present but does not verify says why (expired, wrong issuer, bad
//! signature) in the answer, a key never says anything of the keys. Who
//! passed goes in the request's extensions ([`Authenticated`]), for the
//! rate limit's `$auth_subject`; the request itself goes on unchanged.

use crate::body::ResponseBody;
use crate::config;
use futures_util::future::{BoxFuture, FutureExt};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use sinew_auth::TokenVerifier;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Who a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Authenticated {
    /// An API key (the key is the identity).
    ApiKey(String),
    /// A verified token, by its subject.
    Token(String),
}

impl Authenticated {
    /// The identity as text: `$auth_subject`.
    pub(crate) fn subject(&self) -> &str {
        match self {
            Authenticated::ApiKey(key) => key,
            Authenticated::Token(subject) => subject,
        }
    }
}

struct Settings {
    keys: HashSet<String>,
    key_header: HeaderName,
    verifier: Option<TokenVerifier>,
}

/// Authentication for a route; see the module docs.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    settings: Arc<Settings>,
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("auth: reading {}: {e}", path.display()))
}

impl AuthLayer {
    pub(crate) fn new(auth: &config::Auth) -> Result<AuthLayer, String> {
        let mut keys: HashSet<String> = auth.api_keys.iter().cloned().collect();
        if let Some(path) = &auth.api_keys_file {
            let text = String::from_utf8(read(path)?)
                .map_err(|_| format!("auth: {} is not UTF-8", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if keys.iter().any(String::is_empty) {
            return Err("auth: an API key is empty".to_owned());
        }
        let given = [
            &auth.jwt_secret_file,
            &auth.jwt_public_key_file,
            &auth.jwt_jwks_file,
        ]
        .iter()
        .filter(|file| file.is_some())
        .count();
        if given > 1 {
            return Err(
                "auth: give one of jwt_secret_file, jwt_public_key_file and jwt_jwks_file"
                    .to_owned(),
            );
        }
        let verifier = if let Some(path) = &auth.jwt_secret_file {
            let secret = read(path)?;
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
            Some(TokenVerifier::hmac_secret(secret))
        } else if let Some(path) = &auth.jwt_public_key_file {
            Some(TokenVerifier::public_key_pem(&read(path)?))
        } else if let Some(path) = &auth.jwt_jwks_file {
            Some(TokenVerifier::jwks(&String::from_utf8_lossy(&read(path)?)))
        } else {
            None
        };
        let mut verifier = verifier
            .transpose()
            .map_err(|e| format!("auth: the JWT key: {e}"))?;
        if let Some(verifying) = verifier.take() {
            let verifying = auth
                .jwt_issuers
                .iter()
                .fold(verifying, |v, issuer| v.issuer(issuer));
            let verifying = auth
                .jwt_audiences
                .iter()
                .fold(verifying, |v, audience| v.audience(audience));
            verifier = Some(verifying);
        }
        if keys.is_empty() && verifier.is_none() {
            return Err(
                "auth: no API key and no JWT key: nobody could pass (remove auth to let everyone)"
                    .to_owned(),
            );
        }
        let key_header = HeaderName::from_bytes(auth.api_key_header.as_bytes())
            .map_err(|_| format!("auth: {:?} is not a header name", auth.api_key_header))?;
        Ok(AuthLayer {
            settings: Arc::new(Settings {
                keys,
                key_header,
                verifier,
            }),
        })
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// A route's service behind authentication.
#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl Settings {
    /// Who the request is, or why it may not pass.
    fn check(&self, headers: &http::HeaderMap) -> Result<Authenticated, String> {
        if let Some(key) = headers.get(&self.key_header) {
            if let Ok(key) = key.to_str() {
                if self.keys.contains(key) {
                    return Ok(Authenticated::ApiKey(key.to_owned()));
                }
            }
            if self.verifier.is_none() {
                return Err("the API key is not one of this route's".to_owned());
            }
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match (bearer, &self.verifier) {
            (Some(token), Some(verifier)) => verifier
                .verify(token)
                .map(|identity| Authenticated::Token(identity.subject().to_owned()))
                .map_err(|e| format!("the bearer token does not verify: {e}")),
            _ => Err("this route needs an API key or a bearer token".to_owned()),
        }
    }
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.settings.check(request.headers()) {
            Ok(who) => {
                request.extensions_mut().insert(who);
                self.inner.call(request).boxed()
            }
            Err(why) => {
                let mut response = crate::proxy::answer(StatusCode::UNAUTHORIZED, &why);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                std::future::ready(Ok(response)).boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// Answers 200 with who passed, as a header.
    fn inner() -> impl Service<
        Request<()>,
        Response = Response<ResponseBody>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<ResponseBody>, Infallible>>,
    > + Clone {
        super::super::testing::service(|request| {
            let who = request
                .extensions()
                .get::<Authenticated>()
                .map(|who| who.subject().to_owned())
                .unwrap_or_default();
            let mut response = Response::new(ResponseBody::empty());
            response
                .headers_mut()
                .insert("x-who", HeaderValue::from_str(&who).unwrap());
            response
        })
    }

    async fn send(layer: &AuthLayer, headers: &[(&str, &str)]) -> Response<ResponseBody> {
        let mut request = Request::get("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        layer
            .layer(inner())
            .oneshot(request.body(()).unwrap())
            .await
            .unwrap()
    }

    fn token(secret: &[u8], subject: &str, expires_in: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({ "sub": subject, "exp": now + expires_in });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    const SECRET: &str = "a secret of at least thirty-two bytes";

    #[tokio::test]
    async fn api_keys_and_bearer_tokens_pass_others_get_401() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{}\n", SECRET)).unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "# ops\nfrom-file\n\n").unwrap();
        let auth = config::Auth {
            api_keys: vec!["inline".to_owned()],
            api_keys_file: Some(keys),
            jwt_secret_file: Some(secret),
            ..config::Auth::default()
        };
        let layer = AuthLayer::new(&auth).unwrap();
        for (headers, who) in [
            (vec![("x-api-key", "inline")], "inline"),
            (vec![("x-api-key", "from-file")], "from-file"),
        ] {
            let response = send(&layer, &headers).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["x-who"], who);
        }
        let good = format!("Bearer {}", token(SECRET.as_bytes(), "alice", 60));
        let response = send(&layer, &[("authorization", &good)]).await;
        assert_eq!(response.headers()["x-who"], "alice");
        // A wrong key falls to the token, when there is one.
        let response = send(&layer, &[("x-api-key", "wrong"), ("authorization", &good)]).await;
        assert_eq!(response.headers()["x-who"], "alice");
        for headers in [
            vec![],
            vec![("x-api-key", "wrong")],
            vec![("authorization", "Basic YWxpY2U6eA==")],
        ] {
            let response = send(&layer, &headers).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
        let expired = format!("Bearer {}", token(SECRET.as_bytes(), "alice", -3600));
        let forged = format!(
            "Bearer {}",
            token(b"another secret of thirty-two bytes!", "mallory", 60)
        );
        for bad in [expired, forged] {
            let response = send(&layer, &[("authorization", &bad)]).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn settings_that_let_nobody_in_or_are_ambiguous_are_refused() {
        let nobody = AuthLayer::new(&config::Auth::default()).err().unwrap();
        assert!(nobody.contains("nobody could pass"), "{nobody}");
        let both = config::Auth {
            jwt_secret_file: Some("a".into()),
            jwt_jwks_file: Some("b".into()),
            ..config::Auth::default()
        };
        assert!(AuthLayer::new(&both).err().unwrap().contains("give one of"));
        let missing = config::Auth {
            api_keys_file: Some("/nonexistent/keys".into()),
            ..config::Auth::default()
        };
        assert!(AuthLayer::new(&missing)
            .err()
            .unwrap()
            .contains("/nonexistent/keys"));
        let empty = config::Auth {
            api_keys: vec![String::new()],
            ..config::Auth::default()
        };
        assert!(AuthLayer::new(&empty).err().unwrap().contains("empty"));
    }
}
