//! Request paths put in their normal form before routing, so that one
//! resource has one spelling.
//!
//! Routes match path prefixes, and middleware (auth, rate limits) hangs
//! off routes: if `//admin/x`, `/%61dmin/x` or `/static/../admin/x` could
//! miss an `/admin/` route and fall to `/`, they would reach the same
//! upstream resource without its checks. So before a route is chosen, the
//! path is normalized as RFC 3986 §6.2.2 says, as nginx does before it
//! matches `location`s:
//!
//! * percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, other percent-encodings get uppercase hex digits;
//! * `.` and `..` segments are removed (`[server] merge_slashes`, on by
//!   default, also merges `//` into `/`);
//! * a `..` above the root, a `%` not followed by two hex digits and an
//!   encoded NUL are refused (400), as is an encoded `/` or `\` with
//!   `escaped_slashes = "reject"` (they are kept encoded by default).
//!
//! The normalized path is the one the route, the middleware, the
//! transcoder and the upstream all see (what was matched is what is sent);
//! the access log records the request as it came. The query is left as it
//! is. A path already in normal form, as nearly all are, is left
//! untouched without allocating.

use crate::config::EscapedSlashes;

/// How a path is normalized, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Normalizer {
    pub(crate) merge_slashes: bool,
    pub(crate) escaped_slashes: EscapedSlashes,
}

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) &'static str);

impl Normalizer {
    /// The normal form of `path`: `None` when it is in normal form already.
    /// Paths that do not start with `/` (`*`, an authority) are left
    /// alone.
    pub(crate) fn normalize(&self, path: &str) -> Result<Option<String>, Refused> {
        if !path.starts_with('/') || self.is_normal(path.as_bytes()) {
            return Ok(None);
        }
        let decoded = self.decode(path)?;
        let mut out = String::with_capacity(decoded.len());
        // Segments after the leading '/', resolved with a stack of the
        // lengths of `out` before each pushed segment.
        let mut starts: Vec<usize> = Vec::new();
        let mut segments = decoded[1..].split('/').peekable();
        while let Some(segment) = segments.next() {
            let last = segments.peek().is_none();
            match segment {
                "." => {
                    if last {
                        out.push('/');
                    }
                }
                ".." => {
                    let Some(start) = starts.pop() else {
                        return Err(Refused("the path climbs above the root"));
                    };
                    out.truncate(start);
                    if last {
                        out.push('/');
                    }
                }
                "" if self.merge_slashes && !last => {}
                segment => {
                    starts.push(out.len());
                    out.push('/');
                    out.push_str(segment);
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok((out != path).then_some(out))
    }

    /// Whether `path` needs no work: no `%`, no `//` (when merged) and no
    /// `.` or `..` segment.
    fn is_normal(&self, path: &[u8]) -> bool {
        let mut previous = b'/';
        for (index, &byte) in path.iter().enumerate().skip(1) {
            match byte {
                b'%' => return false,
                b'/' if previous == b'/' && self.merge_slashes => return false,
                b'.' if previous == b'/' => {
                    let rest = &path[index..];
                    if rest == b"."
                        || rest == b".."
                        || rest.starts_with(b"./")
                        || rest.starts_with(b"../")
                    {
                        return false;
                    }
                }
                _ => {}
            }
            previous = byte;
        }
        true
    }

    /// `path` with unreserved characters decoded and other escapes in
    /// uppercase.
    fn decode(&self, path: &str) -> Result<String, Refused> {
        let bytes = path.as_bytes();
        let mut out = String::with_capacity(path.len());
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            if byte != b'%' {
                // The path is ASCII (the URI parser takes nothing else),
                // so byte-wise is char-wise.
                out.push(byte as char);
                index += 1;
                continue;
            }
            let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
            let (Some(high), Some(low)) = (hex(index + 1), hex(index + 2)) else {
                return Err(Refused(
                    "a '%' in the path is not followed by two hex digits",
                ));
            };
            let value = (high * 16 + low) as u8;
            match value {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(value as char)
                }
                0 => return Err(Refused("the path has an encoded NUL")),
                b'/' | b'\\' if self.escaped_slashes == EscapedSlashes::Reject => {
                    return Err(Refused("the path has an encoded '/' or '\\'"))
                }
                _ => {
                    out.push('%');
                    out.push_str(&format!("{value:02X}"));
                }
            }
            index += 3;
        }
        Ok(out)
    }
}

/// `uri` with its path replaced by `path`, scheme, authority and query
/// kept.
pub(crate) fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, Refused> {
    let mut path_and_query =
        String::with_capacity(path.len() + uri.query().map_or(0, |q| q.len() + 1));
    path_and_query.push_str(path);
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| Refused("the normalized path is not a valid URI path"))?,
    );
    http::Uri::from_parts(parts).map_err(|_| Refused("the normalized path is not a valid URI path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalizer() -> Normalizer {
        Normalizer {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }

    fn normal(path: &str) -> String {
        normalizer()
            .normalize(path)
            .unwrap()
            .unwrap_or_else(|| path.to_owned())
    }

    #[test]
    fn paths_in_normal_form_are_left_alone() {
        for path in [
            "/",
            "/api/items",
            "/api/items/",
            "/.well-known/x",
            "/a.b/c..d/...",
            "/a/.b",
            "*",
        ] {
            assert_eq!(normalizer().normalize(path), Ok(None), "{path}");
        }
    }

    #[test]
    fn spellings_of_one_path_become_one() {
        for path in [
            "//admin/x",
            "/admin//x",
            "/%61dmin/x",
            "/%61%64%6D%69%6e/x",
            "/./admin/x",
            "/static/../admin/x",
            "/a/b/../../admin/./x",
            "/admin/x/.",
        ] {
            let got = normal(path);
            assert!(got == "/admin/x" || got == "/admin/x/", "{path} -> {got}");
        }
        assert_eq!(normal("/a/.."), "/");
        assert_eq!(normal("/a/b/.."), "/a/");
        assert_eq!(normal("/a//"), "/a/");
        assert_eq!(normal("/a/%7e%2d"), "/a/~-");
        assert_eq!(normal("/a%2fb"), "/a%2Fb", "kept encoded, hex uppercased");
        assert_eq!(normal("/a%20b"), "/a%20b");
        assert_eq!(normal("/caf%c3%a9"), "/caf%C3%A9");
        // An encoded dot segment is a dot segment.
        assert_eq!(normal("/x/%2e%2E/admin"), "/admin");
    }

    #[test]
    fn slashes_are_kept_when_not_merged() {
        let keep = Normalizer {
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        };
        assert_eq!(keep.normalize("//a//b"), Ok(None));
        assert_eq!(keep.normalize("//a/./b").unwrap().as_deref(), Some("//a/b"));
    }

    #[test]
    fn bad_paths_are_refused() {
        for path in ["/..", "/a/../..", "/../etc/passwd", "/%2e%2e/x"] {
            assert_eq!(
                normalizer().normalize(path),
                Err(Refused("the path climbs above the root")),
                "{path}"
            );
        }
        for path in ["/a%", "/a%2", "/a%zz", "/a%g0"] {
            assert!(normalizer().normalize(path).is_err(), "{path}");
        }
        assert!(normalizer().normalize("/a%00b").is_err());
        let reject = Normalizer {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        };
        assert!(reject.normalize("/a%2Fb").is_err());
        assert!(reject.normalize("/a%5cb").is_err());
        assert_eq!(reject.normalize("/a%41").unwrap().as_deref(), Some("/aA"));
    }

    #[test]
    fn the_query_is_kept() {
        let uri: http::Uri = "http://h:1//a/./b?x=%2e%2e&y".parse().unwrap();
        let path = normal(uri.path());
        let uri = with_path(&uri, &path).unwrap();
        assert_eq!(uri.to_string(), "http://h:1/a/b?x=%2e%2e&y");
    }
}
