//! A configuration rebuilt from its files when they change or on `SIGHUP`.
//!
//! The current configuration is an `Arc` behind a lock that is held only to
//! clone it: a handshake takes the configuration of its moment and keeps it,
//! so a reload never touches a connection that is open or opening. Changes
//! are found by polling the files' metadata (modification time, size, inode):
//! that sees edits in place, `mv` over the file and the symlink swaps with
//! which Kubernetes updates mounted secrets, and needs no inotify. The watcher
//! task holds the configuration weakly and ends soon after it is dropped.

use super::TlsError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

/// How a configuration watches its files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Watch {
    /// How often the files are checked for a change; `None`: never.
    pub(crate) interval: Option<Duration>,
    /// Whether `SIGHUP` reloads.
    pub(crate) sighup: bool,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            interval: Some(Duration::from_secs(5)),
            sighup: false,
        }
    }
}

/// What a file looked like: a change to any part is a change of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A configuration of type `T` and how to build it again.
pub(crate) struct Reloading<T> {
    current: RwLock<Arc<T>>,
    build: Build<T>,
    files: Vec<PathBuf>,
    stamps: Mutex<Vec<Option<Stamp>>>,
    watch: Watch,
    watching: std::sync::Once,
    /// What this is, for logs: "server certificate", ...
    what: &'static str,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the first configuration (its errors are the caller's: a server
    /// should not start with a certificate it cannot read).
    pub(crate) fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        watch: Watch,
        build: Build<T>,
    ) -> Result<Arc<Reloading<T>>, TlsError> {
        let stamps = files.iter().map(stamp).collect();
        let first = build()?;
        Ok(Arc::new(Reloading {
            current: RwLock::new(Arc::new(first)),
            build,
            files,
            stamps: Mutex::new(stamps),
            watch,
            watching: std::sync::Once::new(),
            what,
        }))
    }

    /// The configuration for a handshake starting now.
    pub(crate) fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Builds the configuration again now; on an error the current one stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let stamps: Vec<_> = self.files.iter().map(stamp).collect();
        // Remembered even if the build fails, so that a bad file is reported
        // once, not at every check, and tried again when it changes.
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        let next = (self.build)()?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        Ok(())
    }

    fn changed(&self) -> bool {
        let stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        self.files
            .iter()
            .zip(stamps.iter())
            .any(|(path, before)| stamp(path) != *before)
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(what = self.what, why, "TLS configuration reloaded"),
            Err(error) => tracing::warn!(
                what = self.what,
                why,
                %error,
                "TLS configuration not reloaded; the previous one stays in use"
            ),
        }
    }

    /// Starts the watcher, once, if there are files to watch or `SIGHUP` to
    /// listen for and a tokio runtime to run on (configurations are built
    /// anywhere; they are first used inside a runtime, which calls this).
    /// The watcher runs on that first runtime: a configuration shared by
    /// several runtimes stops reloading if that one shuts down
    /// ([`ServerTls::reload`](super::ServerTls::reload) still works).
    pub(crate) fn ensure_watching(self: &Arc<Self>) {
        let watches_files = !self.files.is_empty() && self.watch.interval.is_some();
        if !watches_files && !self.watch.sighup {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.watching.call_once(|| {
            runtime.spawn(watch(Arc::downgrade(self), self.watch));
        });
    }
}

/// How often a watcher without a file interval checks that its configuration
/// still exists.
const LIVENESS_CHECK: Duration = Duration::from_secs(30);

async fn watch<T: Send + Sync + 'static>(config: Weak<Reloading<T>>, watch: Watch) {
    let mut hangups = if watch.sighup {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; TLS files are only polled");
                None
            }
        }
    } else {
        None
    };
    // (A zero interval would make tokio's interval panic: no faster than 10 ms.)
    let period = watch
        .interval
        .unwrap_or(LIVENESS_CHECK)
        .max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let hangup = tokio::select! {
            _ = ticks.tick() => false,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let Some(config) = config.upgrade() else {
            return;
        };
        if hangup {
            config.reload_and_log("SIGHUP");
        } else if watch.interval.is_some() && config.changed() {
            config.reload_and_log("a file changed");
        }
    }
}
