//! Patterns of policy rules: names with a leading or trailing `*`.

use super::PolicyError;
use crate::principal::Principal;

/// A text pattern: exact, `prefix*`, `*suffix`, or `*` (anything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Glob {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Glob {
    pub(crate) fn parse(text: &str) -> Result<Glob, PolicyError> {
        let stars = text.matches('*').count();
        if text == "*" {
            return Ok(Glob::Any);
        }
        match (stars, text.strip_suffix('*'), text.strip_prefix('*')) {
            (0, _, _) => Ok(Glob::Exact(text.to_owned())),
            (1, Some(prefix), _) => Ok(Glob::Prefix(prefix.to_owned())),
            (1, _, Some(suffix)) => Ok(Glob::Suffix(suffix.to_owned())),
            _ => Err(PolicyError::new(format!(
                "{text:?}: a pattern may have one `*`, at its start or its end"
            ))),
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(exact) => text == exact,
            Glob::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Glob::Suffix(suffix) => text.ends_with(suffix.as_str()),
        }
    }
}

/// Who a rule is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PrincipalPattern {
    /// `*`: anyone, anonymous callers included.
    Anyone,
    /// `authenticated`: anyone with at least one principal.
    Authenticated,
    Uri(Glob),
    Dns(Glob),
    CommonName(Glob),
    Uid(u32),
    Gid(u32),
    Jwt(Glob),
    Scope(Glob),
}

impl PrincipalPattern {
    pub(crate) fn parse(text: &str) -> Result<PrincipalPattern, PolicyError> {
        let number = |value: &str| {
            value.parse::<u32>().map_err(|_| {
                PolicyError::new(format!("{text:?}: expected a number after the colon"))
            })
        };
        if text == "*" {
            return Ok(PrincipalPattern::Anyone);
        }
        if text == "authenticated" {
            return Ok(PrincipalPattern::Authenticated);
        }
        // The kinds come first: a scope or a subject may itself be a URL
        // (`scope:https://api.example.org/write`), and stays a scope.
        let typed = match text.split_once(':') {
            Some(("dns" | "cn" | "uid" | "gid" | "jwt" | "scope", "")) => {
                return Err(PolicyError::new(format!(
                    "{text:?}: nothing after the colon"
                )))
            }
            Some(("dns", value)) => {
                PrincipalPattern::Dns(Glob::parse(&value.to_ascii_lowercase())?)
            }
            Some(("cn", value)) => PrincipalPattern::CommonName(Glob::parse(value)?),
            Some(("uid", value)) => PrincipalPattern::Uid(number(value)?),
            Some(("gid", value)) => PrincipalPattern::Gid(number(value)?),
            Some(("jwt", value)) => PrincipalPattern::Jwt(Glob::parse(value)?),
            Some(("scope", value)) => PrincipalPattern::Scope(Glob::parse(value)?),
            _ if text.contains("://") => PrincipalPattern::Uri(Glob::parse(text)?),
            Some((other, _)) => {
                return Err(PolicyError::new(format!(
                    "{text:?}: unknown kind of principal {other:?} (dns, cn, uid, gid, jwt, scope, or a URI such as spiffe://...)"
                )))
            }
            None => {
                return Err(PolicyError::new(format!(
                    "{text:?} is not a principal: expected *, authenticated, a URI (spiffe://...), dns:, cn:, uid:, gid:, jwt: or scope:"
                )))
            }
        };
        Ok(typed)
    }

    /// Whether a caller with `principals` is one this pattern names.
    pub(crate) fn matches(&self, principals: &[Principal<'_>]) -> bool {
        match self {
            PrincipalPattern::Anyone => true,
            PrincipalPattern::Authenticated => !principals.is_empty(),
            pattern => principals
                .iter()
                .any(|principal| pattern.matches_one(principal)),
        }
    }

    fn matches_one(&self, principal: &Principal<'_>) -> bool {
        match (self, principal) {
            (PrincipalPattern::Uri(glob), Principal::Uri(uri)) => glob.matches(uri),
            (PrincipalPattern::Dns(glob), Principal::Dns(name)) => {
                glob.matches(&name.to_ascii_lowercase())
            }
            (PrincipalPattern::CommonName(glob), Principal::CommonName(name)) => glob.matches(name),
            (PrincipalPattern::Uid(uid), Principal::Uid(theirs)) => uid == theirs,
            (PrincipalPattern::Gid(gid), Principal::Gid(theirs)) => gid == theirs,
            (PrincipalPattern::Jwt(glob), Principal::Jwt(subject)) => glob.matches(subject),
            (PrincipalPattern::Scope(glob), Principal::Scope(scope)) => glob.matches(scope),
            _ => false,
        }
    }
}

/// Which methods a rule is about: `*`, `/package.Service/Method` (the
/// leading `/` may be left out), or a path with a `*` at its end
/// (`/package.Service/*`, `/package.*`).
pub(crate) fn method_pattern(text: &str) -> Result<Glob, PolicyError> {
    if text == "*" {
        return Ok(Glob::Any);
    }
    let path = if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("/{text}")
    };
    let well_formed = path.len() > 1
        && (path.ends_with('*')
            || path[1..]
                .split_once('/')
                .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty()));
    if !well_formed {
        return Err(PolicyError::new(format!(
            "{text:?} is not a method: expected /package.Service/Method, /package.Service/* or *"
        )));
    }
    Glob::parse(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_at_one_end() {
        assert!(Glob::parse("spiffe://a/*").unwrap().matches("spiffe://a/b"));
        assert!(!Glob::parse("spiffe://a/*").unwrap().matches("spiffe://b/a"));
        assert!(Glob::parse("*.example.org")
            .unwrap()
            .matches("x.example.org"));
        assert!(Glob::parse("*").unwrap().matches(""));
        assert!(Glob::parse("a*b").is_err());
        assert!(Glob::parse("*a*").is_err());
    }

    #[test]
    fn principals_are_typed() {
        let certificate = [
            Principal::Uri("spiffe://example.org/ns/a/sa/b"),
            Principal::Dns("API.example.org"),
        ];
        let process = [Principal::Uid(1000), Principal::Gid(100)];
        let cases = [
            ("spiffe://example.org/ns/a/*", true, false),
            ("dns:api.example.org", true, false),
            ("dns:*.example.org", true, false),
            ("uid:1000", false, true),
            ("gid:100", false, true),
            ("uid:1001", false, false),
            ("authenticated", true, true),
            ("*", true, true),
            ("jwt:alice", false, false),
        ];
        for (text, on_certificate, on_process) in cases {
            let pattern = PrincipalPattern::parse(text).unwrap();
            assert_eq!(pattern.matches(&certificate), on_certificate, "{text}");
            assert_eq!(pattern.matches(&process), on_process, "{text}");
        }
        assert!(!PrincipalPattern::parse("authenticated")
            .unwrap()
            .matches(&[]));
        assert!(PrincipalPattern::parse("*").unwrap().matches(&[]));
        // A kind's value may be a URL, and stays that kind.
        let url_scope = PrincipalPattern::parse("scope:https://api.example.org/write").unwrap();
        assert!(url_scope.matches(&[Principal::Scope("https://api.example.org/write")]));
        assert!(!url_scope.matches(&[Principal::Uri("scope:https://api.example.org/write")]));
        assert_eq!(
            PrincipalPattern::parse("cn:spiffe://a/b").unwrap(),
            PrincipalPattern::CommonName(Glob::Exact("spiffe://a/b".into()))
        );
        for bad in ["alice", "user:alice", "uid:x", "dns:", "spiffe://a*b*"] {
            assert!(PrincipalPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_are_paths() {
        let exact = method_pattern("bank.Ledger/Transfer").unwrap();
        assert!(exact.matches("/bank.Ledger/Transfer"));
        assert!(!exact.matches("/bank.Ledger/TransferAll"));
        assert!(method_pattern("/bank.Ledger/*")
            .unwrap()
            .matches("/bank.Ledger/Get"));
        assert!(method_pattern("*").unwrap().matches("/x.Y/Z"));
        for bad in ["", "/", "bank.Ledger", "/bank.Ledger/", "//Transfer"] {
            assert!(method_pattern(bad).is_err(), "{bad}");
        }
    }
}
