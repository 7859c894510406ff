//! [`Policy`]: allow and deny rules over principals, methods and metadata.
//!
//! The semantics are Istio's `AuthorizationPolicy`, which operators already
//! know: **deny rules first** (a call that matches one is refused); then, if
//! the policy has any allow rule, a call must match one; a policy without
//! allow rules allows what no deny rule refuses. A rule matches a call when
//! every part it gives matches (a part left out matches anything):
//! `principals` (any of them is one of the caller's), `methods` (any of them
//! is the call's path) and `metadata` (every entry is present with a matching
//! value).
//!
//! ```toml
//! # The intern may read the ledger but not move money.
//! [[deny]]
//! name = "no transfers for the intern"
//! principals = ["spiffe://example.org/ns/bank/sa/intern"]
//! methods = ["/bank.Ledger/Transfer"]
//!
//! [[allow]]
//! principals = ["spiffe://example.org/ns/bank/*", "uid:1000", "scope:ledger"]
//! methods = ["/bank.Ledger/*"]
//!
//! [[allow]]   # health checks and reflection from anyone
//! principals = ["*"]
//! methods = ["/grpc.health.v1.Health/*", "/grpc.reflection.v1.ServerReflection/*"]
//!
//! [[allow]]
//! principals = ["authenticated"]
//! metadata = { "x-tenant" = "acme-*" }
//! ```
//!
//! Principal and metadata patterns may have one `*`, at their start or end
//! (`spiffe://example.org/ns/*`, `dns:*.example.org`); method patterns at
//! their end (`/bank.Ledger/*`), or `*` alone. Principals are written
//! as [`Principal`](crate::Principal)s print, plus `*` (anyone, anonymous
//! callers too) and `authenticated` (anyone with a principal). Every part of a
//! policy is checked when it is loaded: an unknown field, a principal of an
//! unknown kind or a malformed method is an error, not a rule that never
//! matches.

mod pattern;

use crate::principal::Principal;
use pattern::{method_pattern, Glob, PrincipalPattern};
use serde::Deserialize;
use sinew_rpc::MetadataMap;
use std::collections::BTreeMap;
use std::path::Path;

/// A policy that could not be loaded: the message says where and why.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    message: String,
}

impl PolicyError {
    pub(crate) fn new(message: impl Into<String>) -> PolicyError {
        PolicyError {
            message: message.into(),
        }
    }
}

/// One rule, as code writes it (see the module docs for what each part
/// means); [`Policy::builder`] checks it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl Rule {
    /// A rule that matches every call, until parts are added.
    pub fn new() -> Rule {
        Rule::default()
    }

    /// A name for the logs, which say which rule refused a call.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a principal pattern (the rule matches callers with any of them).
    pub fn principal(mut self, pattern: impl Into<String>) -> Self {
        self.principals.push(pattern.into());
        self
    }

    /// Adds a method pattern (the rule matches calls to any of them).
    pub fn method(mut self, pattern: impl Into<String>) -> Self {
        self.methods.push(pattern.into());
        self
    }

    /// Requires a metadata entry whose value matches `pattern`.
    pub fn metadata(mut self, key: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), pattern.into());
        self
    }

    fn compile(self, kind: &str, index: usize) -> Result<CompiledRule, PolicyError> {
        let label = match &self.name {
            Some(name) => format!("{kind} rule {name:?}"),
            None => format!("{kind} rule #{}", index + 1),
        };
        let context = |error: PolicyError| PolicyError::new(format!("{label}: {error}"));
        Ok(CompiledRule {
            principals: self
                .principals
                .iter()
                .map(|text| PrincipalPattern::parse(text))
                .collect::<Result<_, _>>()
                .map_err(context)?,
            methods: self
                .methods
                .iter()
                .map(|text| method_pattern(text))
                .collect::<Result<_, _>>()
                .map_err(context)?,
            metadata: self
                .metadata
                .iter()
                .map(|(key, value)| Ok((key.to_ascii_lowercase(), Glob::parse(value)?)))
                .collect::<Result<_, PolicyError>>()
                .map_err(context)?,
            label,
        })
    }
}

#[derive(Clone, Debug)]
struct CompiledRule {
    label: String,
    principals: Vec<PrincipalPattern>,
    methods: Vec<Glob>,
    metadata: Vec<(String, Glob)>,
}

impl CompiledRule {
    /// Whether the rule matches a call. A metadata key the caller sent
    /// several times is taken the way that refuses more: a deny rule's
    /// pattern matches if any value does, an allow rule's only if every
    /// value does (a second value cannot slip past a deny rule, nor ride in
    /// beside an allowed one).
    fn matches(
        &self,
        principals: &[Principal<'_>],
        path: &str,
        metadata: &MetadataMap,
        deny: bool,
    ) -> bool {
        let value_matches = |pattern: &Glob, value: &[u8]| {
            std::str::from_utf8(value).is_ok_and(|value| pattern.matches(value))
        };
        (self.principals.is_empty() || self.principals.iter().any(|p| p.matches(principals)))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m.matches(path)))
            && self.metadata.iter().all(|(key, pattern)| {
                let mut values = metadata.get_all(key).peekable();
                if deny {
                    values.any(|value| value_matches(pattern, value))
                } else {
                    values.peek().is_some() && values.all(|value| value_matches(pattern, value))
                }
            })
    }
}

/// Allow and deny rules; see the module docs. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    deny: std::sync::Arc<[CompiledRule]>,
    allow: std::sync::Arc<[CompiledRule]>,
}

/// What a policy says of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision<'a> {
    Allow,
    /// Refused by this rule (`None`: matched no allow rule).
    Deny(Option<&'a str>),
}

/// Builds a [`Policy`] from code.
#[derive(Clone, Debug, Default)]
pub struct PolicyBuilder {
    deny: Vec<Rule>,
    allow: Vec<Rule>,
}

impl PolicyBuilder {
    /// Adds a deny rule.
    pub fn deny(mut self, rule: Rule) -> Self {
        self.deny.push(rule);
        self
    }

    /// Adds an allow rule.
    pub fn allow(mut self, rule: Rule) -> Self {
        self.allow.push(rule);
        self
    }

    /// Checks every rule.
    pub fn build(self) -> Result<Policy, PolicyError> {
        let compile = |rules: Vec<Rule>, kind: &str| {
            rules
                .into_iter()
                .enumerate()
                .map(|(index, rule)| rule.compile(kind, index))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            deny: compile(self.deny, "deny")?.into(),
            allow: compile(self.allow, "allow")?.into(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    deny: Vec<Rule>,
    #[serde(default)]
    allow: Vec<Rule>,
}

impl Policy {
    /// A policy built from code.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// A policy in TOML: `[[deny]]` and `[[allow]]` tables of `name`,
    /// `principals`, `methods` and `metadata` (see the module docs).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text)
            .map_err(|e| PolicyError::new(e.to_string().trim_end().to_owned()))?;
        Policy::builder().extend(file.deny, file.allow).build()
    }

    /// A policy from a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::new(format!("reading {}: {e}", path.display())))?;
        Policy::from_toml(&text).map_err(|e| PolicyError::new(format!("{}: {e}", path.display())))
    }

    /// What the policy says of a call by a caller with `principals`.
    pub(crate) fn decide(
        &self,
        principals: &[Principal<'_>],
        path: &str,
        metadata: &MetadataMap,
    ) -> Decision<'_> {
        if let Some(rule) = self
            .deny
            .iter()
            .find(|rule| rule.matches(principals, path, metadata, true))
        {
            return Decision::Deny(Some(&rule.label));
        }
        if self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|rule| rule.matches(principals, path, metadata, false))
        {
            return Decision::Allow;
        }
        Decision::Deny(None)
    }

    /// Whether a caller with `principals` may call `path` with `metadata`
    /// (for code that decides outside a server's call path).
    pub fn allows(&self, principals: &[Principal<'_>], path: &str, metadata: &MetadataMap) -> bool {
        self.decide(principals, path, metadata) == Decision::Allow
    }
}

impl PolicyBuilder {
    fn extend(mut self, deny: Vec<Rule>, allow: Vec<Rule>) -> Self {
        self.deny.extend(deny);
        self.allow.extend(allow);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANK: &str = r#"
        [[deny]]
        name = "no transfers for the intern"
        principals = ["spiffe://example.org/ns/bank/sa/intern"]
        methods = ["/bank.Ledger/Transfer"]

        [[allow]]
        principals = ["spiffe://example.org/ns/bank/*", "uid:1000"]
        methods = ["/bank.Ledger/*"]

        [[allow]]
        principals = ["*"]
        methods = ["/grpc.health.v1.Health/*"]

        [[allow]]
        principals = ["authenticated"]
        metadata = { "X-Tenant" = "acme-*" }
    "#;

    #[test]
    fn deny_rules_come_first_then_an_allow_rule_must_match() {
        let policy = Policy::from_toml(BANK).unwrap();
        let intern = [Principal::Uri("spiffe://example.org/ns/bank/sa/intern")];
        let teller = [Principal::Uri("spiffe://example.org/ns/bank/sa/teller")];
        let local = [Principal::Uid(1000), Principal::Gid(1000)];
        let stranger = [Principal::Uid(1001)];
        let none = MetadataMap::new();
        let mut acme = MetadataMap::new();
        acme.insert("x-tenant", "acme-eu").unwrap();

        assert_eq!(
            policy.decide(&intern, "/bank.Ledger/Transfer", &none),
            Decision::Deny(Some("deny rule \"no transfers for the intern\""))
        );
        assert!(policy.allows(&intern, "/bank.Ledger/Balance", &none));
        assert!(policy.allows(&teller, "/bank.Ledger/Transfer", &none));
        assert!(policy.allows(&local, "/bank.Ledger/Transfer", &none));
        assert_eq!(
            policy.decide(&stranger, "/bank.Ledger/Balance", &none),
            Decision::Deny(None)
        );
        assert!(policy.allows(&[], "/grpc.health.v1.Health/Check", &none));
        assert!(
            !policy.allows(&[], "/other.Service/Call", &acme),
            "anonymous"
        );
        assert!(policy.allows(&stranger, "/other.Service/Call", &acme));
        assert!(!policy.allows(&stranger, "/other.Service/Call", &none));
        // A second value of the key rides in beside the allowed one: refused.
        let mut two = acme.clone();
        two.append("x-tenant", "globex").unwrap();
        assert!(!policy.allows(&stranger, "/other.Service/Call", &two));
    }

    #[test]
    fn a_second_metadata_value_cannot_slip_past_a_deny_rule() {
        let policy = Policy::builder()
            .deny(Rule::new().metadata("x-tenant", "blocked"))
            .build()
            .unwrap();
        let mut metadata = MetadataMap::new();
        metadata.append("x-tenant", "fine").unwrap();
        assert!(policy.allows(&[], "/a.B/C", &metadata));
        metadata.append("x-tenant", "blocked").unwrap();
        assert!(!policy.allows(&[], "/a.B/C", &metadata));
    }

    #[test]
    fn a_policy_without_allow_rules_allows_what_is_not_denied() {
        let policy = Policy::builder()
            .deny(Rule::new().principal("uid:0"))
            .build()
            .unwrap();
        let none = MetadataMap::new();
        assert!(policy.allows(&[], "/a.B/C", &none));
        assert!(!policy.allows(&[Principal::Uid(0)], "/a.B/C", &none));
        assert!(Policy::default().allows(&[], "/a.B/C", &none));
    }

    #[test]
    fn mistakes_in_a_policy_are_errors_that_say_where() {
        for (text, expected) in [
            (
                "[[allow]]\nprincipal = [\"uid:1\"]",
                "unknown field `principal`",
            ),
            (
                "[[allow]]\nprincipals = [\"bob\"]",
                "allow rule #1: \"bob\" is not a principal",
            ),
            (
                "[[deny]]\nname = \"x\"\nmethods = [\"Transfer\"]",
                "deny rule \"x\": \"Transfer\" is not a method",
            ),
            ("[[permit]]", "unknown field `permit`"),
            ("[[allow]]\nprincipals = [\"uid:me\"]", "expected a number"),
        ] {
            let error = Policy::from_toml(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
