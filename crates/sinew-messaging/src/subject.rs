//! Subjects, as NATS has them: what a message is published to
//! ([`Subject`]: `orders.eu.created`), and what a subscription listens to
//! ([`Filter`]: `orders.*.created`, `orders.>`).
//!
//! A subject is tokens separated by dots. A token is never empty and holds
//! no whitespace, no control character and no dot; `*` (any one token) and
//! `>` (one or more tokens, at the end only) are wildcards, in filters
//! only, and only as whole tokens (`ord*` is a literal token, as in NATS).
//! Every rule broken is a [`SubjectError`] that names the subject and the
//! rule, never a silent no-match, so a typo does not become a subscription
//! that never fires.

use std::fmt;
use std::sync::Arc;

/// The longest subject accepted, in bytes (NATS's default control line is
/// 4 KiB, the subject and the rest of the line included).
pub const MAX_SUBJECT_LEN: usize = 1024;

/// Why a subject or filter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid subject {subject:?}: {reason}")]
pub struct SubjectError {
    subject: String,
    reason: &'static str,
}

impl SubjectError {
    fn new(subject: &str, reason: &'static str) -> SubjectError {
        // A subject too long to be valid is cut in the message.
        let subject = subject.chars().take(80).collect();
        SubjectError { subject, reason }
    }

    /// The rule the subject broke.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Checks the rules both kinds share; `wildcards` says whether `*` and `>`
/// tokens may appear.
fn check(text: &str, wildcards: bool) -> Result<(), SubjectError> {
    if text.is_empty() {
        return Err(SubjectError::new(text, "empty"));
    }
    if text.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::new(text, "longer than 1024 bytes"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SubjectError::new(
            text,
            "whitespace or a control character (subjects are tokens separated by dots)",
        ));
    }
    let mut tokens = text.split('.').peekable();
    while let Some(token) = tokens.next() {
        match token {
            "" => {
                return Err(SubjectError::new(
                    text,
                    "an empty token (a leading, trailing or doubled dot)",
                ))
            }
            "*" | ">" if !wildcards => {
                return Err(SubjectError::new(
                    text,
                    "a wildcard (`*`, `>`) in a subject messages are published to",
                ))
            }
            ">" if tokens.peek().is_some() => {
                return Err(SubjectError::new(
                    text,
                    "`>` before the last token (it stands for all the tokens after it)",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A subject a message is published to: no wildcard. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(Arc<str>);

impl Subject {
    /// `text`, if it is a valid subject to publish to.
    pub fn new(text: &str) -> Result<Subject, SubjectError> {
        check(text, false)?;
        Ok(Subject(Arc::from(text)))
    }

    /// The subject as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its tokens.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for Subject {
    type Err = SubjectError;

    fn from_str(text: &str) -> Result<Subject, SubjectError> {
        Subject::new(text)
    }
}

/// What a subscription listens to: a subject, or a pattern with `*` (one
/// token) and a final `>` (one or more tokens). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filter(Arc<str>);

impl Filter {
    /// `text`, if it is a valid filter.
    pub fn new(text: &str) -> Result<Filter, SubjectError> {
        check(text, true)?;
        Ok(Filter(Arc::from(text)))
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it has a wildcard (else it matches one subject only).
    pub fn has_wildcards(&self) -> bool {
        self.0.split('.').any(|token| token == "*" || token == ">")
    }

    /// Whether a message published to `subject` reaches this filter.
    pub fn matches(&self, subject: &Subject) -> bool {
        let mut wanted = self.0.split('.');
        let mut given = subject.tokens();
        loop {
            match (wanted.next(), given.next()) {
                // `>` takes one token or more: there is one here.
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(token), Some(other)) if token == other => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl From<Subject> for Filter {
    /// A subject as a filter: it matches itself only.
    fn from(subject: Subject) -> Filter {
        Filter(subject.0)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for Filter {
    type Err = SubjectError;

    fn from_str(text: &str) -> Result<Filter, SubjectError> {
        Filter::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(text: &str) -> Subject {
        Subject::new(text).unwrap()
    }

    fn matches(filter: &str, subject_text: &str) -> bool {
        Filter::new(filter).unwrap().matches(&subject(subject_text))
    }

    #[test]
    fn wildcards_match_as_nats_matches_them() {
        assert!(matches("orders.eu.created", "orders.eu.created"));
        assert!(!matches("orders.eu.created", "orders.eu"));
        assert!(!matches("orders.eu", "orders.eu.created"));
        assert!(matches("orders.*.created", "orders.eu.created"));
        assert!(!matches("orders.*.created", "orders.eu.west.created"));
        assert!(!matches("orders.*", "orders"));
        assert!(matches("orders.>", "orders.eu"));
        assert!(matches("orders.>", "orders.eu.west.created"));
        // `>` needs at least one token.
        assert!(!matches("orders.>", "orders"));
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.*", "a.b"));
        assert!(!matches("*.*", "a.b.c"));
        assert!(matches("*.b.>", "a.b.c.d"));
        // A wildcard inside a token is a literal character, as in NATS.
        assert!(matches("ord*.x", "ord*.x"));
        assert!(!matches("ord*.x", "orders.x"));
        // Case matters.
        assert!(!matches("Orders", "orders"));
    }

    #[test]
    fn every_broken_rule_is_refused_with_its_reason() {
        for (text, reason) in [
            ("", "empty"),
            (".orders", "an empty token"),
            ("orders.", "an empty token"),
            ("orders..eu", "an empty token"),
            ("orders eu", "whitespace"),
            ("orders\teu", "whitespace"),
            ("orders\u{0}", "control character"),
            ("orders\r\n", "whitespace"),
        ] {
            for error in [
                Subject::new(text).unwrap_err(),
                Filter::new(text).unwrap_err(),
            ] {
                assert!(error.reason().contains(reason), "{text:?}: {error}");
            }
        }
        let wildcard = Subject::new("orders.*").unwrap_err();
        assert!(wildcard.reason().contains("wildcard"), "{wildcard}");
        assert!(Subject::new("orders.>").is_err());
        let early = Filter::new("orders.>.created").unwrap_err();
        assert!(early.reason().contains("before the last token"), "{early}");
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        let error = Subject::new(&long).unwrap_err();
        assert!(error.reason().contains("1024"));
        // The message names the subject, cut.
        assert!(error.to_string().len() < 200, "{error}");
        assert!(Subject::new(&"a".repeat(MAX_SUBJECT_LEN)).is_ok());
    }

    #[test]
    fn subjects_and_filters_read_back_as_written() {
        let orders: Subject = "orders.eu".parse().unwrap();
        assert_eq!(orders.to_string(), "orders.eu");
        assert_eq!(orders.tokens().collect::<Vec<_>>(), ["orders", "eu"]);
        let filter: Filter = "orders.>".parse().unwrap();
        assert!(filter.has_wildcards());
        let exact = Filter::from(orders.clone());
        assert!(!exact.has_wildcards());
        assert!(exact.matches(&orders));
        // Any other UTF-8 is allowed in tokens, as NATS allows it.
        assert!(Subject::new("commandes.été.créées").is_ok());
    }
}
