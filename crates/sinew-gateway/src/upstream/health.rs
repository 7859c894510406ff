//! Active health checks: a GET of the configured path to every server of a
//! group at an interval, on a connection of its own (a check must not wait
//! behind requests, nor pass because a pooled connection still works after
//! the server stopped listening). `fails` failed checks in a row take a
//! server out; `passes` good ones bring it back (see [`Peer::checked`]).
//!
//! A check fails on a connect error, a timeout, or a status outside the
//! configured ranges.

use super::conn::Conn;
use super::peer::Peer;
use crate::body::RequestBody;
use crate::config::{HealthCheck, StatusRanges};
use std::sync::Arc;

/// A group's check, ready to run.
pub(crate) struct Checker {
    pub(crate) settings: HealthCheck,
    pub(crate) good: StatusRanges,
}

impl Checker {
    pub(crate) fn new(settings: HealthCheck) -> Checker {
        let good = StatusRanges::parse(&settings.status)
            .unwrap_or_else(|_| StatusRanges::parse("200-399").expect("a valid range"));
        Checker { settings, good }
    }

    /// Checks every server once, at the same time, and records the results.
    pub(crate) async fn check_all(&self, peers: &[Arc<Peer>]) {
        let checks = peers
            .iter()
            .filter(|peer| !peer.settings.down)
            .map(|peer| async move {
                let good = self.check(peer).await;
                peer.checked(good, self.settings.fails, self.settings.passes);
            });
        futures_util::future::join_all(checks).await;
    }

    async fn check(&self, peer: &Peer) -> bool {
        let address = peer.settings.address;
        let attempt = async {
            let conn = Conn::connect(address, self.settings.timeout).await.ok()?;
            let host = self
                .settings
                .host
                .clone()
                .unwrap_or_else(|| address.to_string());
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::HOST, http::HeaderValue::from_str(&host).ok()?);
            headers.insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static("sinew-gateway health check"),
            );
            headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            let (parts, _body) = conn
                .send(
                    &http::Method::GET,
                    &self.settings.path,
                    &headers,
                    RequestBody::Full(None),
                    self.settings.timeout,
                )
                .await
                .ok()?;
            Some(self.good.contains(parts.status.as_u16()))
        };
        match tokio::time::timeout(self.settings.timeout, attempt).await {
            Ok(Some(good)) => good,
            _ => false,
        }
    }
}
