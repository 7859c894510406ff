//! The access log: one line per request the gateway answers, in nginx's
//! `combined` format (with the request id and the response time appended)
//! or as JSON, to stdout, stderr or a file.
//!
//! ```text
//! 127.0.0.1 - - [02/Dec/2026:16:18:11 +0000] "GET /v1/books HTTP/1.1" 200 312 "-" "curl/8.5.0" 3f2a... 0.004
//! {"time":"2026-12-02T16:18:11Z","remote_addr":"127.0.0.1","method":"GET","uri":"/v1/books","protocol":"HTTP/1.1","status":200,"bytes":312,"referer":null,"user_agent":"curl/8.5.0","request_id":"3f2a...","duration_ms":4.1}
//! ```
//!
//! Lines are written by a thread of their own, through a queue bounded in
//! lines and bytes:
//! a slow disk never holds a request up, and when the queue is full lines
//! are dropped and counted (the next line written says how many). The
//! byte count is the response's `Content-Length` (`-` when it is
//! streamed), and the time is until the response's head, as the log is
//! written when the head goes out. A request whose client went away
//! before its answer began is logged with nginx's 499. The request line
//! is in origin form (`GET /path?q HTTP/2.0`) for HTTP/2 as for HTTP/1.1.
//!
//! A file log is opened again on a reload (SIGHUP to `sinew gateway`), so
//! logrotate's rename-then-signal works, as with nginx's `USR1`; a reload
//! that names another file or format switches to it.

use crate::config::AccessLogFormat;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer at most.
const QUEUE: usize = 16 * 1024;

/// Bytes of lines waiting for the writer at most (lines carry what
/// clients send: a long URI or user agent).
const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// What the writer thread is sent.
enum Message {
    Line(String),
    /// Open the file again (it was renamed away).
    Reopen,
}

/// Where lines go and how they look.
pub(crate) struct AccessLog {
    target: String,
    format: AccessLogFormat,
    lines: SyncSender<Message>,
    /// A reopen asked for while the queue was full, done at the next line.
    reopen_pending: std::sync::atomic::AtomicBool,
    dropped: AtomicU64,
    /// Bytes of the lines queued, taken off as the writer writes them.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// What is logged of one request.
pub(crate) struct Record<'a> {
    pub(crate) remote: SocketAddr,
    pub(crate) method: &'a http::Method,
    pub(crate) uri: &'a http::Uri,
    pub(crate) version: http::Version,
    pub(crate) status: u16,
    pub(crate) bytes: Option<u64>,
    pub(crate) referer: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) elapsed: Duration,
    pub(crate) time: SystemTime,
}

impl AccessLog {
    /// A log to `target` (`stdout`, `stderr` or a file, appended to).
    pub(crate) fn open(target: &str, format: AccessLogFormat) -> io::Result<AccessLog> {
        let out = writer(target)?;
        let (lines, queue) = mpsc::sync_channel::<Message>(QUEUE);
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = queued.clone();
        let path = target.to_owned();
        std::thread::Builder::new()
            .name("sinew-access-log".to_owned())
            .spawn(move || {
                let mut buffered = io::BufWriter::new(out);
                let take = |buffered: &mut io::BufWriter<Box<dyn Write + Send>>,
                                message: Message| match message {
                    Message::Line(line) => {
                        let _ = buffered.write_all(line.as_bytes());
                        written.fetch_sub(line.len(), Ordering::Relaxed);
                    }
                    Message::Reopen => {
                        let _ = buffered.flush();
                        match writer(&path) {
                            Ok(out) => *buffered = io::BufWriter::new(out),
                            Err(error) => {
                                tracing::warn!(%error, "the access log could not be opened again; still writing to the one open")
                            }
                        }
                    }
                };
                while let Ok(message) = queue.recv() {
                    take(&mut buffered, message);
                    // Flush when nothing else is waiting.
                    while let Ok(message) = queue.try_recv() {
                        take(&mut buffered, message);
                    }
                    let _ = buffered.flush();
                }
            })?;
        Ok(AccessLog {
            target: target.to_owned(),
            format,
            lines,
            reopen_pending: std::sync::atomic::AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            queued,
        })
    }

    /// Whether it writes to `target` in `format`.
    pub(crate) fn is(&self, target: &str, format: AccessLogFormat) -> bool {
        self.target == target && self.format == format
    }

    /// Opens its file again (a rotated log's new file); nothing for
    /// stdout and stderr. Lines queued before it go to the old file.
    pub(crate) fn reopen(&self) {
        if matches!(self.target.as_str(), "stdout" | "stderr") {
            return;
        }
        if self.lines.try_send(Message::Reopen).is_err() {
            self.reopen_pending.store(true, Ordering::Relaxed);
        }
    }

    /// Logs one request.
    pub(crate) fn log(&self, record: &Record<'_>) {
        let mut line = match self.format {
            AccessLogFormat::Combined => combined(record),
            AccessLogFormat::Json => json(record),
        };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            line = format!("(access log: {dropped} lines dropped, the writer fell behind)\n{line}");
        }
        let size = line.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1 + dropped, Ordering::Relaxed);
            return;
        }
        if self.reopen_pending.swap(false, Ordering::Relaxed) {
            self.reopen();
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.lines.try_send(Message::Line(line))
        {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1 + dropped, Ordering::Relaxed);
        }
    }
}

/// Where `target` names: stdout, stderr, or a file appended to.
fn writer(target: &str) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        "stdout" => Box::new(io::stdout()),
        "stderr" => Box::new(io::stderr()),
        path => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("access log {path}: {e}")))?,
        ),
    })
}

/// The request's target as its request line has it: origin form
/// (`/path?query`) but for an HTTP/1.1 request sent in absolute form.
fn target(record: &Record<'_>) -> String {
    match record.version {
        http::Version::HTTP_2 | http::Version::HTTP_3 => record
            .uri
            .path_and_query()
            .map_or_else(|| record.uri.to_string(), |pq| pq.as_str().to_owned()),
        _ => record.uri.to_string(),
    }
}

/// A header value as logged: `"-"` when absent, quotes and backslashes
/// escaped (a client cannot forge a field).
fn quoted(value: Option<&str>) -> String {
    match value {
        None => "\"-\"".to_owned(),
        Some(value) => {
            let mut out = String::with_capacity(value.len() + 2);
            out.push('"');
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

fn combined(record: &Record<'_>) -> String {
    let request = format!("{} {} {:?}", record.method, target(record), record.version);
    format!(
        "{} - - [{}] {} {} {} {} {} {} {:.3}\n",
        record.remote.ip(),
        clf_time(record.time),
        quoted(Some(&request)),
        record.status,
        record
            .bytes
            .map_or("-".to_owned(), |bytes| bytes.to_string()),
        quoted(record.referer),
        quoted(record.user_agent),
        record.request_id.unwrap_or("-"),
        record.elapsed.as_secs_f64(),
    )
}

fn json(record: &Record<'_>) -> String {
    let value = serde_json::json!({
        "time": rfc3339(record.time),
        "remote_addr": record.remote.ip().to_string(),
        "method": record.method.as_str(),
        "uri": target(record),
        "protocol": format!("{:?}", record.version),
        "status": record.status,
        "bytes": record.bytes,
        "referer": record.referer,
        "user_agent": record.user_agent,
        "request_id": record.request_id,
        "duration_ms": (record.elapsed.as_secs_f64() * 1e6).round() / 1e3,
    });
    format!("{value}\n")
}

/// Year, month, day, hours, minutes, seconds of a time, in UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// `02/Dec/2026:16:18:11 +0000`.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, hour, minute, second) = civil(time);
    format!(
        "{day:02}/{}/{year}:{hour:02}:{minute:02}:{second:02} +0000",
        MONTHS[(month - 1) as usize]
    )
}

/// `2026-12-02T16:18:11Z`.
fn rfc3339(time: SystemTime) -> String {
    let (year, month, day, hour, minute, second) = civil(time);
    format!("{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(method: &'a http::Method, uri: &'a http::Uri) -> Record<'a> {
        Record {
            remote: "10.1.2.3:5555".parse().unwrap(),
            method,
            uri,
            version: http::Version::HTTP_11,
            status: 200,
            bytes: Some(312),
            referer: None,
            user_agent: Some("curl/8 \"quoted\""),
            request_id: Some("abc"),
            elapsed: Duration::from_micros(4100),
            // 2026-12-02T16:18:11Z
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_228_291),
        }
    }

    #[test]
    fn combined_lines_read_as_nginx_writes_them() {
        let (method, uri) = (http::Method::GET, "/v1/books?x=1".parse().unwrap());
        assert_eq!(
            combined(&record(&method, &uri)),
            "10.1.2.3 - - [02/Dec/2026:16:18:11 +0000] \"GET /v1/books?x=1 HTTP/1.1\" 200 312 \"-\" \"curl/8 \\\"quoted\\\"\" abc 0.004\n"
        );
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let (method, uri) = (http::Method::POST, "/a".parse().unwrap());
        let line = json(&record(&method, &uri));
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-12-02T16:18:11Z");
        assert_eq!(value["status"], 200);
        assert_eq!(value["user_agent"], "curl/8 \"quoted\"");
        assert_eq!(value["duration_ms"], 4.1);
        assert!(value["referer"].is_null());
    }

    #[test]
    fn dates_are_civil_across_leap_years() {
        let at = |seconds: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn a_file_log_gets_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(path.to_str().unwrap(), AccessLogFormat::Json).unwrap();
        let (method, uri) = (http::Method::GET, "/".parse().unwrap());
        for _ in 0..100 {
            log.log(&record(&method, &uri));
        }
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 100 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} lines",
                text.lines().count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(AccessLog::open("/nonexistent/dir/log", AccessLogFormat::Json).is_err());
    }

    /// Waits until `path` holds `lines` lines.
    fn wait_for_lines(path: &std::path::Path, lines: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() == lines {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{path:?}: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_rotated_file_is_followed_by_a_new_one_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rotated) = (
            dir.path().join("access.log"),
            dir.path().join("access.log.1"),
        );
        let log = AccessLog::open(path.to_str().unwrap(), AccessLogFormat::Combined).unwrap();
        let (method, uri) = (http::Method::GET, "/".parse().unwrap());
        log.log(&record(&method, &uri));
        wait_for_lines(&path, 1);
        // logrotate: rename, then signal.
        std::fs::rename(&path, &rotated).unwrap();
        log.log(&record(&method, &uri));
        log.reopen();
        log.log(&record(&method, &uri));
        wait_for_lines(&path, 1);
        wait_for_lines(&rotated, 2);
        assert!(log.is(path.to_str().unwrap(), AccessLogFormat::Combined));
        assert!(!log.is(path.to_str().unwrap(), AccessLogFormat::Json));
    }

    #[test]
    fn http2_requests_are_logged_in_origin_form() {
        let (method, uri) = (
            http::Method::GET,
            "https://api.test/v1/books?x=1".parse().unwrap(),
        );
        let mut h2 = record(&method, &uri);
        h2.version = http::Version::HTTP_2;
        assert!(
            combined(&h2).contains("\"GET /v1/books?x=1 HTTP/2.0\""),
            "{}",
            combined(&h2)
        );
        let h1 = record(&method, &uri);
        assert!(combined(&h1).contains("\"GET https://api.test/v1/books?x=1 HTTP/1.1\""));
    }
}
