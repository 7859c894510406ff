//! Per-method call figures on each side, in tables of bounded size.
//!
//! A server's methods are the ones its services describe
//! ([`ServerCall::method`](sinew_rpc::server::ServerCall::method)); any
//! other path a client sends (a scanner's guesses, say) is counted under
//! one `_OTHER` entry, so no caller can grow the tables or the scrape. A
//! client's paths come from its own code, and are capped all the same
//! ([`MAX_CLIENT_METHODS`] per target, then `other`).
//!
//! Lookups take no lock: a table is a map behind an `ArcSwap`, replaced
//! whole when a method is first seen (rare: once per method).

use super::histogram::{Histogram, Snapshot};
use super::shard::Counter;
use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use sinew_wire::Code;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

/// The method label of server calls to paths no service offers (the
/// OpenTelemetry semantic conventions' value).
pub const SERVER_OTHER_METHOD: &str = "_OTHER";
/// The method label of client calls beyond [`MAX_CLIENT_METHODS`] (gRPC
/// A66's value).
pub const CLIENT_OTHER_METHOD: &str = "other";
/// Distinct methods counted per client target before the rest go to
/// [`CLIENT_OTHER_METHOD`].
pub const MAX_CLIENT_METHODS: usize = 1000;

/// Status codes 0 to 16.
const CODES: usize = 17;

/// One histogram per status code, made when the code is first seen.
#[derive(Debug, Default)]
pub(crate) struct ByStatus {
    histograms: [OnceLock<Histogram>; CODES],
}

impl ByStatus {
    pub(crate) fn get(&self, code: Code) -> &Histogram {
        let index = (code.as_u32() as usize).min(CODES - 1);
        self.histograms[index].get_or_init(Histogram::latency)
    }

    /// `(code, snapshot)` for every code seen.
    pub(crate) fn snapshots(&self) -> impl Iterator<Item = (Code, Snapshot)> + '_ {
        self.histograms
            .iter()
            .enumerate()
            .filter_map(|(code, histogram)| {
                Some((Code::from_u32(code as u32), histogram.get()?.snapshot()))
            })
    }

    /// Calls that ended so far.
    pub(crate) fn ended(&self) -> u64 {
        self.snapshots().map(|(_, snapshot)| snapshot.count()).sum()
    }
}

/// One method's figures on a server, for one protocol.
#[derive(Debug)]
pub struct ServerMethod {
    pub(crate) system: &'static str,
    pub(crate) method: Arc<str>,
    pub(crate) started: Counter,
    pub(crate) durations: ByStatus,
}

impl ServerMethod {
    /// The protocol (`rpc.system.name`): `sinew`, `grpc`.
    pub fn system(&self) -> &'static str {
        self.system
    }

    /// `package.Service/Method`, or `_OTHER`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Calls started.
    pub fn started(&self) -> u64 {
        self.started.get()
    }

    /// Calls in progress now.
    pub fn in_flight(&self) -> u64 {
        self.started().saturating_sub(self.durations.ended())
    }

    /// The durations of the calls that ended, per status code.
    pub fn durations(&self) -> Vec<(Code, Snapshot)> {
        self.durations.snapshots().collect()
    }
}

/// One method's figures on a client, for one target.
#[derive(Debug)]
pub struct ClientMethod {
    pub(crate) method: Arc<str>,
    pub(crate) attempts_started: Counter,
    pub(crate) attempt_durations: ByStatus,
    pub(crate) call_durations: ByStatus,
    pub(crate) retries: OnceLock<Histogram>,
}

impl ClientMethod {
    /// `package.Service/Method`, or `other`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Calls (or attempts, under a retrying layer) started.
    pub fn attempts_started(&self) -> u64 {
        self.attempts_started.get()
    }

    /// The durations of the calls that ended, per status code, as the
    /// application saw them (every attempt included).
    pub fn call_durations(&self) -> Vec<(Code, Snapshot)> {
        self.call_durations.snapshots().collect()
    }

    /// The durations of each attempt, per status code, when an attempt
    /// layer counts them; empty otherwise (each call is then its one
    /// attempt, and [`ClientMethod::call_durations`] are the attempts').
    pub fn attempt_durations(&self) -> Vec<(Code, Snapshot)> {
        self.attempt_durations.snapshots().collect()
    }

    pub(crate) fn retries(&self) -> &Histogram {
        self.retries.get_or_init(Histogram::counts)
    }
}

/// A map read without locks, written rarely, of at most `capacity` entries.
#[derive(Debug)]
pub(crate) struct Table<K, V> {
    entries: ArcSwap<FxHashMap<K, Arc<V>>>,
    writing: Mutex<()>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    pub(crate) fn new(capacity: usize) -> Table<K, V> {
        Table {
            entries: ArcSwap::from_pointee(FxHashMap::default()),
            writing: Mutex::new(()),
            capacity,
        }
    }

    /// The entry of `key`, made with `make` if new; `None` when the table
    /// is full and `key` is not in it.
    pub(crate) fn get_or_insert<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V)) -> Option<Arc<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(value) = self.entries.load().get(key) {
            return Some(value.clone());
        }
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let current = self.entries.load();
        if let Some(value) = current.get(key) {
            return Some(value.clone());
        }
        if current.len() >= self.capacity {
            return None;
        }
        let (key, value) = make();
        let value = Arc::new(value);
        let mut next = FxHashMap::clone(&current);
        next.insert(key, value.clone());
        self.entries.store(Arc::new(next));
        Some(value)
    }

    /// Every entry now.
    pub(crate) fn values(&self) -> Vec<Arc<V>> {
        self.entries.load().values().cloned().collect()
    }
}

/// A server's methods: known ones by their descriptor (and protocol), and
/// one `_OTHER` entry per protocol for everything else.
#[derive(Debug)]
pub(crate) struct ServerMethods {
    /// Keyed by (protocol, descriptor address); address 0 is `_OTHER`.
    table: Table<(&'static str, usize), ServerMethod>,
}

impl Default for ServerMethods {
    fn default() -> Self {
        // Methods come from the services' descriptors: bounded by the code
        // the server runs; the cap only guards against a protocol extension
        // naming itself in many ways.
        ServerMethods {
            table: Table::new(64 * 1024),
        }
    }
}

impl ServerMethods {
    pub(crate) fn get(
        &self,
        protocol: &'static str,
        method: Option<&'static sinew_rpc::server::MethodDescriptor>,
    ) -> Arc<ServerMethod> {
        let address = method.map_or(0, |method| method as *const _ as usize);
        let make = || {
            let name: Arc<str> = match method {
                Some(method) => Arc::from(method.path.trim_start_matches('/')),
                None => Arc::from(SERVER_OTHER_METHOD),
            };
            (
                (protocol, address),
                ServerMethod {
                    system: protocol,
                    method: name,
                    started: Counter::default(),
                    durations: ByStatus::default(),
                },
            )
        };
        match self.table.get_or_insert(&(protocol, address), make) {
            Some(stats) => stats,
            None => self
                .table
                .get_or_insert(&("other", 0), || {
                    (
                        ("other", 0),
                        ServerMethod {
                            system: "other",
                            method: Arc::from(SERVER_OTHER_METHOD),
                            started: Counter::default(),
                            durations: ByStatus::default(),
                        },
                    )
                })
                .unwrap_or_else(|| Arc::new(make().1)),
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<ServerMethod>> {
        self.table.values()
    }
}

/// A client target's methods.
#[derive(Debug)]
pub struct ClientTarget {
    pub(crate) target: Arc<str>,
    /// An attempt layer counts this target's attempts: call layers then
    /// hand it a counter per call.
    pub(crate) attempt_layer: std::sync::atomic::AtomicBool,
    table: Table<Box<str>, ClientMethod>,
    other: Arc<ClientMethod>,
}

impl ClientTarget {
    pub(crate) fn new(target: Arc<str>) -> ClientTarget {
        ClientTarget {
            target,
            attempt_layer: std::sync::atomic::AtomicBool::new(false),
            table: Table::new(MAX_CLIENT_METHODS),
            other: Arc::new(client_method(Arc::from(CLIENT_OTHER_METHOD))),
        }
    }

    /// The target, as the client was named (`grpc.target`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether an attempt layer counts this target's attempts (else each
    /// call is counted as its one attempt).
    pub fn counts_attempts(&self) -> bool {
        self.attempt_layer.load(Ordering::Relaxed)
    }

    /// The figures of calls to `path` (`/package.Service/Method`).
    pub(crate) fn get(&self, path: &str) -> Arc<ClientMethod> {
        self.table
            .get_or_insert(path, || {
                (
                    Box::from(path),
                    client_method(Arc::from(path.trim_start_matches('/'))),
                )
            })
            .unwrap_or_else(|| self.other.clone())
    }

    /// Every method called so far.
    pub fn methods(&self) -> Vec<Arc<ClientMethod>> {
        let mut methods = self.table.values();
        if self.other.attempts_started() > 0 {
            methods.push(self.other.clone());
        }
        methods
    }
}

fn client_method(method: Arc<str>) -> ClientMethod {
    ClientMethod {
        method,
        attempts_started: Counter::default(),
        attempt_durations: ByStatus::default(),
        call_durations: ByStatus::default(),
        retries: OnceLock::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_table_is_capped_and_the_rest_is_other() {
        let target = ClientTarget::new(Arc::from("t"));
        for index in 0..MAX_CLIENT_METHODS + 10 {
            let method = target.get(&format!("/s.S/M{index}"));
            method.attempts_started.increment();
        }
        let methods = target.methods();
        assert_eq!(methods.len(), MAX_CLIENT_METHODS + 1);
        let other = methods
            .iter()
            .find(|method| method.method() == CLIENT_OTHER_METHOD)
            .unwrap();
        assert_eq!(other.attempts_started(), 10);
        assert!(Arc::ptr_eq(&target.get("/s.S/M0"), &target.get("/s.S/M0")));
    }

    #[test]
    fn unknown_server_methods_share_one_entry_per_protocol() {
        let methods = ServerMethods::default();
        let first = methods.get("sinew", None);
        let second = methods.get("sinew", None);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.method(), SERVER_OTHER_METHOD);
        let grpc = methods.get("grpc", None);
        assert!(!Arc::ptr_eq(&first, &grpc));
        assert_eq!(methods.all().len(), 2);
    }
}
