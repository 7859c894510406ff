//! nginx's request limits and the route's `rate_limit` they become:
//! `limit_req_zone` (the key a zone counts by, its rate, its size),
//! `limit_req` (the zones a level's requests are held to, passed down as
//! nginx passes it: a level's `limit_req`s replace those around it only
//! if it has any), `limit_req_status` and `limit_req_dry_run`.
//!
//! ```text
//!  limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;
//!  limit_req zone=api burst=20 nodelay;
//!    ──▶ rate_limit = { rate = 10.0, burst = 21, key = "$binary_remote_addr", max_keys = 81920 }
//! ```
//!
//! Why `burst + 1`: nginx lets a key's first request through with an
//! excess of 0 and counts each later one, refusing a request when its
//! excess would pass `burst`; the excess drains at the rate. That is
//! `burst + 1` requests at once, then one per 1/rate: exactly a token
//! bucket of `burst + 1` tokens, which is what the gateway's `burst` is.
//! nginx's default `burst=0` is one request at a time, a bucket of 1.
//!
//! Where the gateway differs, a note says so: without `nodelay` nginx holds
//! the requests over the rate back and passes them at the rate, where the
//! gateway has no queue and passes them at once (as `nodelay`); nginx
//! refuses with 503 unless `limit_req_status` says otherwise, the gateway
//! always with 429; a zone's size becomes `max_keys` only roughly; a route
//! has one rate limit, nginx applies every `limit_req` of a location.
//!
//! Not here: the other directives passed down (`inherit`); writing
//! `rate_limit` out (`emit`).

use super::inherit::Replaced;
use super::{Converter, Inherited, RateLimitDraft};
use crate::nginx::parse::Directive;
use crate::nginx::units::{may_expand_to_nothing, nginx_rate, nginx_size, variable_problem};

/// What one key's state takes in a zone, as nginx's documentation puts
/// it for `$binary_remote_addr` on 64-bit systems (about 8,000 a
/// megabyte); keys of up to some 48 bytes take as much.
const ZONE_BYTES_PER_KEY: u64 = 128;

/// A `limit_req_zone`, read.
#[derive(Debug)]
pub(super) struct Zone {
    line: usize,
    name: String,
    /// The key, a template the gateway expands; `None` when it cannot
    /// (noted at the zone).
    key: Option<String>,
    /// Requests a second; `None` when the rate could not be read (noted).
    rate: Option<f64>,
    /// The rate as written (`10r/s`), for notes.
    rate_text: String,
    /// The size as written (`10m`) and the keys it holds, if it could be
    /// read (noted otherwise).
    size: Option<(String, usize)>,
    sync: bool,
}

impl Zone {
    fn usable(&self) -> bool {
        self.key.is_some() && self.rate.is_some()
    }
}

/// A `limit_req`, read: its zone is in the file and usable.
#[derive(Clone, Debug)]
pub(super) struct LimitReq {
    line: usize,
    zone: String,
    burst: u32,
    delay: Delay,
}

/// When nginx starts to hold back requests over the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delay {
    /// After this many (`delay=N`; 0, the default, is at once).
    After(u32),
    /// Never (`nodelay`).
    Never,
}

/// nginx's status for requests over the limit, when `limit_req_status`
/// does not say; the gateway answers 429.
const NGINX_DEFAULT_STATUS: u16 = 503;

impl Converter {
    /// A `limit_req_zone`, in the first pass (locations may come before
    /// it). Notes what it cannot read; what it becomes is noted where a
    /// route uses it.
    pub(super) fn limit_req_zone(&mut self, directive: &Directive) {
        let line = directive.line;
        let mut key = None;
        let mut zone = None;
        let mut rate = None;
        let mut sync = false;
        for arg in &directive.args {
            if let Some(value) = arg.strip_prefix("zone=") {
                zone = Some(match value.split_once(':') {
                    Some((name, size)) => (name, Some(size)),
                    None => (value, None),
                });
            } else if let Some(value) = arg.strip_prefix("rate=") {
                rate = Some(value);
            } else if arg == "sync" {
                sync = true;
            } else if key.is_none() {
                key = Some(arg.as_str());
            } else {
                self.note(
                    line,
                    format!("limit_req_zone: {arg}: not a parameter nginx knows: ignored"),
                );
            }
        }
        let Some((name, size)) = zone.filter(|(name, _)| !name.is_empty()) else {
            self.note(line, "limit_req_zone: no zone=NAME: not converted");
            return;
        };
        let shown = format!("limit_req_zone {name}");
        let key = match key {
            None | Some("") => {
                self.note(line, format!("{shown}: no key: not converted"));
                None
            }
            Some(key) => match variable_problem(key) {
                Some(problem) => {
                    self.note(
                        line,
                        format!("{shown}: {problem}: not converted (nor the limit_req that use the zone)"),
                    );
                    None
                }
                None => Some(key.to_owned()),
            },
        };
        // nginx's rate when none is given: 1r/s.
        let rate_text = rate.unwrap_or("1r/s").to_owned();
        let rate = match nginx_rate(&rate_text) {
            Ok(rate) => Some(rate),
            Err(problem) => {
                self.note(
                    line,
                    format!(
                        "{shown}: {problem}: not converted (nor the limit_req that use the zone)"
                    ),
                );
                None
            }
        };
        let size = match size.map(|size| (size, nginx_size(size))) {
            Some((text, Ok(bytes))) => {
                let keys = usize::try_from(bytes / ZONE_BYTES_PER_KEY)
                    .unwrap_or(usize::MAX)
                    .max(1);
                Some((text.to_owned(), keys))
            }
            Some((_, Err(problem))) => {
                self.note(
                    line,
                    format!(
                        "{shown}: the zone's size: {problem}: max_keys stays the gateway's default"
                    ),
                );
                None
            }
            None => {
                self.note(
                    line,
                    format!("{shown}: no zone size (zone={name}:SIZE): max_keys stays the gateway's default"),
                );
                None
            }
        };
        self.zones.insert(
            name.to_owned(),
            Zone {
                line,
                name: name.to_owned(),
                key,
                rate,
                rate_text,
                size,
                sync,
            },
        );
    }

    /// A `limit_req` of a level: the level's first replaces those it
    /// inherited, as nginx does.
    pub(super) fn limit_req(
        &mut self,
        directive: &Directive,
        settings: &mut Inherited,
        replaced: &mut Replaced,
    ) {
        if !std::mem::replace(&mut replaced.limit_reqs, true) {
            settings.limit_reqs.clear();
        }
        let line = directive.line;
        let shown = format!("limit_req {}", directive.args.join(" "));
        let mut zone = None;
        let mut burst = 0;
        let mut delay = Delay::After(0);
        for arg in &directive.args {
            let number = |value: &str| value.parse::<u32>().ok();
            if let Some(value) = arg.strip_prefix("zone=") {
                zone = Some(value);
            } else if let Some(value) = arg.strip_prefix("burst=") {
                let Some(value) = number(value) else {
                    self.note(
                        line,
                        format!("{shown}: {arg} is not a number of requests: not converted"),
                    );
                    return;
                };
                burst = value;
            } else if let Some(value) = arg.strip_prefix("delay=") {
                let Some(value) = number(value) else {
                    self.note(
                        line,
                        format!("{shown}: {arg} is not a number of requests: not converted"),
                    );
                    return;
                };
                delay = Delay::After(value);
            } else if arg == "nodelay" {
                delay = Delay::Never;
            } else {
                self.note(
                    line,
                    format!("{shown}: {arg} is not a parameter nginx knows: not converted"),
                );
                return;
            }
        }
        let Some(zone) = zone else {
            self.note(line, "limit_req: no zone=NAME: not converted");
            return;
        };
        match self.zones.get(zone) {
            None => self.note(
                line,
                format!("{shown}: its limit_req_zone is not in this file: not converted"),
            ),
            Some(defined) if !defined.usable() => {
                let text = format!(
                    "{shown}: its limit_req_zone (line {}) could not be converted: neither is this",
                    defined.line
                );
                self.note(line, text);
            }
            Some(_) => settings.limit_reqs.push(LimitReq {
                line,
                zone: zone.to_owned(),
                burst,
                delay,
            }),
        }
    }

    /// `limit_req_status`: nginx's status for requests over the limit.
    pub(super) fn limit_req_status(&mut self, directive: &Directive, settings: &mut Inherited) {
        let Some(status) = self.number::<u16>(directive) else {
            return;
        };
        if (400..=599).contains(&status) {
            settings.limit_req_status = Some((directive.line, status));
        } else {
            self.note(
                directive.line,
                format!("limit_req_status {status}: not a status nginx takes (400 to 599): not converted"),
            );
        }
    }

    /// `limit_req_dry_run`: on, nginx counts and refuses nothing, which
    /// the gateway cannot do: the limits it covers are left out.
    pub(super) fn limit_req_dry_run(&mut self, directive: &Directive, settings: &mut Inherited) {
        let line = directive.line;
        match self.single(directive) {
            Some("on") => {
                self.note(
                    line,
                    "limit_req_dry_run on: not converted (the gateway's rate limits always refuse): the limit_req it covers are left out, since nginx refuses nothing under it",
                );
                settings.limit_req_dry_run = true;
            }
            Some("off") => settings.limit_req_dry_run = false,
            Some(other) => self.note(
                line,
                format!("limit_req_dry_run {other}: expects on or off: not converted"),
            ),
            None => {}
        }
    }

    /// A route's `rate_limit`, from the `limit_req`s its location has or
    /// inherited, with the notes about where it is not nginx's.
    pub(super) fn rate_limit(&mut self, settings: &Inherited) -> Option<RateLimitDraft> {
        if settings.limit_req_dry_run {
            return None;
        }
        let (first, others) = settings.limit_reqs.split_first()?;
        for other in others {
            let text = format!(
                "limit_req zone={}: not converted: nginx holds a request to every limit_req of its location, the gateway's route to one rate_limit, zone {}'s (line {})",
                other.zone, first.zone, first.line
            );
            self.note(other.line, text);
        }
        let zone = self.zones.get(&first.zone)?;
        let (Some(key), Some(rate)) = (zone.key.clone(), zone.rate) else {
            return None;
        };
        let draft = RateLimitDraft {
            rate,
            burst: first.burst.saturating_add(1),
            key,
            max_keys: zone.size.as_ref().map(|(_, keys)| *keys),
        };
        let mut notes = Vec::new();
        if let Some((size, keys)) = &zone.size {
            notes.push((
                zone.line,
                format!(
                    "limit_req_zone {}:{size}: max_keys = {keys}, about as many keys as nginx keeps in {size} (some 8,000 a megabyte on 64-bit systems); once full, nginx forgets the longest idle, the gateway has new keys share a few buckets",
                    zone.name
                ),
            ));
        }
        if zone.sync {
            notes.push((
                zone.line,
                format!(
                    "limit_req_zone {} sync: not converted (each gateway counts its own requests; nginx Plus shares the zone across its cluster)",
                    zone.name
                ),
            ));
        }
        if may_expand_to_nothing(&draft.key) {
            notes.push((
                zone.line,
                format!(
                    "limit_req_zone {}: nginx does not limit the requests whose key {} is empty; the gateway counts them all under one empty key",
                    zone.name, draft.key
                ),
            ));
        }
        let delayed = match first.delay {
            Delay::Never => 0,
            Delay::After(at_once) => first.burst.saturating_sub(at_once),
        };
        if delayed > 0 {
            let burst = first.burst;
            let rate = &zone.rate_text;
            let nginx = match first.delay {
                Delay::After(at_once) if at_once > 0 => format!(
                    "nginx passes {at_once} requests over {rate} at once and holds the next {delayed} back to pass them at {rate}"
                ),
                _ => format!("nginx holds the requests over {rate} back (up to {burst}) to pass them at {rate}"),
            };
            notes.push((
                first.line,
                format!(
                    "limit_req zone={}: {nginx}; the gateway has no queue: it passes them at once (as nodelay) and answers 429 beyond burst = {}",
                    first.zone, draft.burst
                ),
            ));
        }
        match settings.limit_req_status {
            Some((_, 429)) => {}
            Some((line, status)) => notes.push((
                line,
                format!("limit_req_status {status}: not converted: the gateway answers 429 Too Many Requests (with Retry-After) to requests over the limit"),
            )),
            None if !self.limit_status_noted => {
                self.limit_status_noted = true;
                notes.push((
                    first.line,
                    format!("limit_req: nginx refuses requests over the limit with {NGINX_DEFAULT_STATUS} (limit_req_status is not set); the gateway answers 429 Too Many Requests, with Retry-After"),
                ));
            }
            None => {}
        }
        for (line, text) in notes {
            self.note(line, text);
        }
        Some(draft)
    }
}
