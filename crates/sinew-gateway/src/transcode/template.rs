//! Path templates of `google.api.http` rules: parsed once, matched against
//! request paths, giving the values of the fields they bind.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `*` matches one path segment, `**` any number of them (zero included)
//! and only as the template's last segment; `{name}` is `{name=*}`. A
//! variable of one segment gets the segment percent-decoded; a variable of
//! several gets them joined by `/`, decoded except for `%2F` (which stays,
//! so that an encoded slash is not taken for a separator), as
//! `google/api/http.proto` specifies. A verb (`/v1/{name=tasks/*}:cancel`)
//! must end the path's last segment.
//!
//! Not here: which rule a request goes to when several match (the router,
//! `mod.rs`, ranks them by [`Template::specificity`]), and turning values
//! into fields of a message.

use std::fmt;

/// One segment of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`
    One,
    /// `**`
    Rest,
}

/// A variable: the field it sets and the segments it spans.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Variable {
    field_path: Vec<String>,
    start: usize,
    /// Exclusive; for a variable ending in `**`, the template's last
    /// segment + 1 (it takes the rest of the path).
    end: usize,
}

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
    text: String,
}

/// Why a template is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateError {
    template: String,
    reason: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "path template {:?}: {}", self.template, self.reason)
    }
}

impl std::error::Error for TemplateError {}

/// The fields a matched path binds: each field path (`["book", "name"]`)
/// with its value, in the template's order.
pub(crate) type Bindings = Vec<(Vec<String>, String)>;

struct Parser<'a> {
    text: &'a str,
    position: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: impl Into<String>) -> TemplateError {
        TemplateError {
            template: self.text.to_owned(),
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.position..].chars().next()
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.position += expected.len_utf8();
            true
        } else {
            false
        }
    }

    /// Segments up to the end, a `}` or a `:` verb; `in_variable` forbids
    /// nested variables.
    fn segments(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        loop {
            self.segment(in_variable)?;
            if !self.eat('/') {
                return Ok(());
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        if let Some(Segment::Rest) = self.segments.last() {
            return Err(self.error("** must be the last segment"));
        }
        if self.text[self.position..].starts_with("**") {
            self.position += 2;
            self.segments.push(Segment::Rest);
            return Ok(());
        }
        if self.eat('*') {
            self.segments.push(Segment::One);
            return Ok(());
        }
        if self.peek() == Some('{') {
            if in_variable {
                return Err(self.error("a variable inside a variable"));
            }
            return self.variable();
        }
        let start = self.position;
        while let Some(c) = self.peek() {
            if matches!(c, '/' | '{' | '}' | ':' | '*' | '?' | '#') {
                break;
            }
            if c.is_whitespace() || c.is_control() {
                return Err(self.error(format!("{c:?} in a literal")));
            }
            self.position += c.len_utf8();
        }
        if self.position == start {
            return Err(self.error(format!("an empty segment at byte {start}")));
        }
        let literal = self.text[start..self.position].to_owned();
        self.segments.push(Segment::Literal(literal));
        Ok(())
    }

    fn variable(&mut self) -> Result<(), TemplateError> {
        self.eat('{');
        let start = self.position;
        while let Some(c) = self.peek() {
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                break;
            }
            self.position += 1;
        }
        let field_path: Vec<String> = self.text[start..self.position]
            .split('.')
            .map(str::to_owned)
            .collect();
        if field_path
            .iter()
            .any(|part| part.is_empty() || part.starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err(self.error(format!(
                "{:?} is not a field path",
                &self.text[start..self.position]
            )));
        }
        let first = self.segments.len();
        if self.eat('=') {
            self.segments(true)?;
        } else {
            self.segments.push(Segment::One);
        }
        if !self.eat('}') {
            return Err(self.error("a variable without its closing }"));
        }
        if self
            .variables
            .iter()
            .any(|variable| variable.field_path == field_path)
        {
            return Err(self.error(format!("{} is bound twice", field_path.join("."))));
        }
        self.variables.push(Variable {
            field_path,
            start: first,
            end: self.segments.len(),
        });
        Ok(())
    }
}

impl Template {
    /// Parses `text`.
    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parser = Parser {
            text,
            position: 0,
            segments: Vec::new(),
            variables: Vec::new(),
        };
        if !parser.eat('/') {
            return Err(parser.error("a path template starts with /"));
        }
        parser.segments(false)?;
        let verb = if parser.eat(':') {
            let verb = &text[parser.position..];
            if verb.is_empty() || verb.contains(['/', '{', '}', '*', ':']) {
                return Err(parser.error(format!("{verb:?} is not a verb")));
            }
            parser.position = text.len();
            Some(verb.to_owned())
        } else {
            None
        };
        if parser.position != text.len() {
            return Err(parser.error(format!(
                "unexpected {:?} at byte {}",
                &text[parser.position..],
                parser.position
            )));
        }
        Ok(Template {
            segments: parser.segments,
            variables: parser.variables,
            verb,
            text: text.to_owned(),
        })
    }

    /// The fields it binds.
    pub(crate) fn field_paths(&self) -> impl Iterator<Item = &[String]> {
        self.variables
            .iter()
            .map(|variable| variable.field_path.as_slice())
    }

    /// How specific it is, to rank templates that match the same path:
    /// more literal segments first, then fewer wildcards, then a verb.
    pub(crate) fn specificity(&self) -> (usize, usize, bool) {
        let literals = self
            .segments
            .iter()
            .filter(|segment| matches!(segment, Segment::Literal(_)))
            .count();
        let rest = self
            .segments
            .iter()
            .filter(|segment| matches!(segment, Segment::Rest))
            .count();
        (literals, usize::MAX - rest, self.verb.is_some())
    }

    /// Matches a request's path (without its query): the bound fields, or
    /// `None` if the path is not one of the template's.
    pub(crate) fn matches(&self, path: &str) -> Option<Bindings> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => {
                let (rest, found) = path.rsplit_once(':')?;
                if found != verb || rest.rsplit('/').next()?.is_empty() && !rest.is_empty() {
                    return None;
                }
                rest
            }
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        // Where each template segment starts in `parts`; `**` takes what
        // is left.
        let mut spans = Vec::with_capacity(self.segments.len() + 1);
        let mut index = 0;
        for segment in &self.segments {
            spans.push(index);
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(index) != Some(&literal.as_str()) {
                        return None;
                    }
                    index += 1;
                }
                Segment::One => {
                    if parts.get(index).is_none_or(|part| part.is_empty()) {
                        return None;
                    }
                    index += 1;
                }
                Segment::Rest => index = parts.len(),
            }
        }
        spans.push(index);
        if index != parts.len() {
            return None;
        }
        let mut bindings = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let (from, to) = (spans[variable.start], spans[variable.end]);
            let taken = &parts[from..to];
            let value = if variable.end - variable.start == 1
                && !matches!(self.segments[variable.start], Segment::Rest)
            {
                decode(taken.first().copied().unwrap_or(""), false)?
            } else {
                let joined = taken.join("/");
                decode(&joined, true)?
            };
            bindings.push((variable.field_path.clone(), value));
        }
        Some(bindings)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Percent-decodes `text` (keeping `%2F` encoded if `keep_slash`);
/// `None` if an escape is broken or the bytes are not UTF-8.
pub(crate) fn decode(text: &str, keep_slash: bool) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if keep_slash && value == b'/' {
                out.extend_from_slice(&bytes[index..index + 3]);
            } else {
                out.push(value);
            }
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template)
            .unwrap()
            .matches(path)
            .map(|bindings| {
                bindings
                    .into_iter()
                    .map(|(field, value)| (field.join("."), value))
                    .collect()
            })
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(field, value)| (field.to_string(), value.to_string()))
                .collect(),
        )
    }

    #[test]
    fn literals_and_single_segment_variables() {
        assert_eq!(bound("/v1/shelves", "/v1/shelves"), pairs(&[]));
        assert_eq!(bound("/v1/shelves", "/v1/shelves/1"), None);
        assert_eq!(
            bound(
                "/v1/shelves/{shelf}/books/{book.id}",
                "/v1/shelves/7/books/a%20b"
            ),
            pairs(&[("shelf", "7"), ("book.id", "a b")])
        );
        let template = Template::parse("/v1/shelves/{shelf}/books/{book.id}").unwrap();
        let fields: Vec<String> = template.field_paths().map(|path| path.join(".")).collect();
        assert_eq!(fields, ["shelf", "book.id"]);
        assert_eq!(
            bound("/v1/shelves/{shelf}", "/v1/shelves/"),
            None,
            "an empty segment is no value"
        );
        assert_eq!(bound("/v1/*/x", "/v1/anything/x"), pairs(&[]));
    }

    #[test]
    fn multi_segment_variables_keep_encoded_slashes() {
        assert_eq!(
            bound(
                "/v1/{name=projects/*/files/**}",
                "/v1/projects/p1/files/a/b%2Fc/d%20e"
            ),
            pairs(&[("name", "projects/p1/files/a/b%2Fc/d e")])
        );
        assert_eq!(
            bound("/v1/{name=projects/*/files/**}", "/v1/projects/p1/files"),
            pairs(&[("name", "projects/p1/files")]),
            "** takes zero segments too"
        );
        assert_eq!(bound("/v1/{name=projects/*}", "/v1/projects/p1/x"), None);
        assert_eq!(bound("/static/**", "/static/css/site.css"), pairs(&[]));
    }

    #[test]
    fn verbs_end_the_last_segment() {
        assert_eq!(
            bound("/v1/{name=tasks/*}:cancel", "/v1/tasks/t9:cancel"),
            pairs(&[("name", "tasks/t9")])
        );
        assert_eq!(bound("/v1/{name=tasks/*}:cancel", "/v1/tasks/t9"), None);
        assert_eq!(
            bound("/v1/{name=tasks/*}:cancel", "/v1/tasks/t9:undo"),
            None
        );
        assert_eq!(
            bound("/v1/tasks/{id}", "/v1/tasks/a:b"),
            pairs(&[("id", "a:b")]),
            "without a verb in the template, a colon is part of the value"
        );
    }

    #[test]
    fn broken_templates_are_refused() {
        for text in [
            "v1/x",
            "/v1//x",
            "/v1/{name",
            "/v1/{name=a/{b}}",
            "/v1/**/x",
            "/v1/{1name}",
            "/v1/{a}/{a}",
            "/v1/x:",
            "/v1/x y",
            "/v1/{a.}",
        ] {
            assert!(Template::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn broken_escapes_do_not_match() {
        assert_eq!(bound("/v1/{id}", "/v1/%zz"), None);
        assert_eq!(bound("/v1/{id}", "/v1/%ff"), None, "not UTF-8");
        assert_eq!(bound("/v1/{id}", "/v1/%E2%82%AC"), pairs(&[("id", "€")]));
    }

    #[test]
    fn specificity_ranks_literals_first() {
        let literal = Template::parse("/v1/shelves/default").unwrap();
        let variable = Template::parse("/v1/shelves/{shelf}").unwrap();
        let rest = Template::parse("/v1/{name=**}").unwrap();
        assert!(literal.specificity() > variable.specificity());
        assert!(variable.specificity() > rest.specificity());
    }
}
