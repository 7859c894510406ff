//! Service configs that change live: [`ConfigHandle::follow_file`] puts a
//! config file in force again whenever it changes, (feature `etcd`)
//! [`ConfigHandle::follow_etcd`] the config stored in an etcd key, and
//! (feature `gossip`) [`ConfigHandle::follow_gossip`] the one the members
//! of a gossip cluster publish for a service, so that operators change the
//! policies of every client at once.

use super::ConfigHandle;
use crate::config::ServiceConfig;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// Keeps a [`ConfigHandle`] following a file; stops when dropped.
#[derive(Debug)]
pub struct FollowedFile {
    task: JoinHandle<()>,
}

impl Drop for FollowedFile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What identifies a version of the file: its modification time and length.
type Version = Option<(SystemTime, u64)>;

fn version(path: &PathBuf) -> Version {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

impl ConfigHandle {
    /// Puts the service config in `path` in force now, and again each time
    /// the file changes (looked at every `every`; a change is a new
    /// modification time or length). A file that cannot be read or is not a
    /// valid config leaves the config in force as it is, and says why in a
    /// warning (so a half-written edit does no harm; replacing the file with
    /// a rename is the atomic way). Following stops when the returned value
    /// is dropped. The first read's error is returned: a service should not
    /// start on a config it cannot read. Needs a tokio runtime.
    pub fn follow_file(
        &self,
        path: impl Into<PathBuf>,
        every: Duration,
    ) -> Result<FollowedFile, crate::ConfigError> {
        let path = path.into();
        let mut seen = version(&path);
        self.set(ServiceConfig::from_file(&path)?);
        let handle = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = version(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match ServiceConfig::from_file(&path) {
                    Ok(config) => {
                        tracing::info!(path = %path.display(), "service config reloaded");
                        handle.set(config);
                    }
                    Err(error) => tracing::warn!(
                        path = %path.display(),
                        %error,
                        "service config not reloaded; the one in force stays"
                    ),
                }
            }
        });
        Ok(FollowedFile { task })
    }
}

/// Keeps a [`ConfigHandle`] following a registry's key (an etcd key, or a
/// service's config in a gossip cluster); stops when dropped.
#[cfg(any(feature = "etcd", feature = "gossip"))]
#[derive(Debug)]
pub struct FollowedKey {
    task: JoinHandle<()>,
}

#[cfg(any(feature = "etcd", feature = "gossip"))]
impl Drop for FollowedKey {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(feature = "etcd")]
impl ConfigHandle {
    /// Puts the service config (gRPC's JSON) stored at `key` in etcd in
    /// force, and again whenever the key changes: etcd is watched, the watch
    /// resumed across reconnects and etcd restarts
    /// (`sinew_cluster::etcd::PrefixFollower`). A value that is not a valid
    /// config, a deleted key, or etcd out of reach leaves the config in
    /// force as it is, and says why in a warning. Following stops when the
    /// returned value is dropped. Needs a tokio runtime.
    pub fn follow_etcd(
        &self,
        etcd: &sinew_cluster::etcd::Etcd,
        key: impl Into<String>,
    ) -> FollowedKey {
        use futures_util::StreamExt;
        let key = key.into();
        let wanted = key.clone();
        let values = etcd.follow_prefix(key.as_bytes()).map(move |snapshot| {
            // The prefix is the key: only the key itself counts.
            snapshot.map(|snapshot| snapshot.entries.get(wanted.as_bytes()).cloned())
        });
        follow_values(self.clone(), format!("etcd key {key}"), values)
    }
}

#[cfg(feature = "gossip")]
impl ConfigHandle {
    /// Puts the service config of `service` that the members of `member`'s
    /// gossip cluster publish (the newest a live member publishes,
    /// `Member::publish_service_config`) in force, and again whenever it
    /// changes. A config that is not valid, or none published (any more),
    /// leaves the config in force as it is, and says why in a warning.
    /// Following stops when the returned value is dropped (it keeps the
    /// member in the cluster until then). Needs a tokio runtime.
    pub fn follow_gossip(
        &self,
        member: &sinew_cluster::gossip::Member,
        service: &str,
    ) -> FollowedKey {
        use futures_util::StreamExt;
        let values = member
            .service_configs(service)
            .map(|config| Ok(config.map(String::into_bytes)));
        follow_values(
            self.clone(),
            format!("gossip config of {service} in cluster {}", member.cluster()),
            values,
        )
    }
}

/// Puts each new value of `values` in force in `handle`; see the callers.
#[cfg(any(feature = "etcd", feature = "gossip"))]
fn follow_values<S>(handle: ConfigHandle, source: String, values: S) -> FollowedKey
where
    S: futures_core::Stream<Item = Result<Option<Vec<u8>>, sinew_rpc::Status>> + Send + 'static,
{
    use futures_util::StreamExt;
    let task = tokio::spawn(async move {
        let mut values = std::pin::pin!(values);
        let mut seen: Option<Option<Vec<u8>>> = None;
        while let Some(value) = values.next().await {
            let value = match value {
                Ok(value) => value,
                Err(status) => {
                    tracing::warn!(%source, %status, "service config: out of reach; the one in force stays");
                    continue;
                }
            };
            if seen.as_ref() == Some(&value) {
                continue;
            }
            let had_one = seen.as_ref().is_some_and(Option::is_some);
            seen = Some(value.clone());
            let Some(value) = value else {
                if had_one {
                    tracing::warn!(%source, "service config gone; the one in force stays");
                } else {
                    tracing::debug!(%source, "no service config yet");
                }
                continue;
            };
            let parsed = std::str::from_utf8(&value)
                .map_err(|_| crate::ConfigError::new("the value is not UTF-8"))
                .and_then(ServiceConfig::from_json);
            match parsed {
                Ok(config) => {
                    tracing::info!(%source, "service config in force");
                    handle.set(config);
                }
                Err(error) => {
                    tracing::warn!(%source, %error, "service config not valid; the one in force stays")
                }
            }
        }
    });
    FollowedKey { task }
}
