//! The `(google.api.http)` rule of a method, read from its options.
//!
//! ```proto
//! rpc GetBook(GetBookRequest) returns (Book) {
//!   option (google.api.http) = {
//!     get: "/v1/{name=shelves/*/books/*}"
//!     additional_bindings { get: "/v1/books/{name}" }
//!   };
//! }
//! ```
//!
//! A method's options hold the rule only if its descriptors kept their
//! extension options: a pool built by [`compile_pool`](crate::compile_pool),
//! decoded from [`compile`](crate::compile)'s bytes or by
//! [`pool_from_files`](crate::pool_from_files) does. What the rule means
//! for a request (templates, bodies, query parameters) is the transcoder's
//! business (`sinew-gateway`).

use prost_reflect::{DynamicMessage, MethodDescriptor, ReflectMessage, Value};

/// The extension's full name.
pub const EXTENSION: &str = "google.api.http";

/// One HTTP binding of a method, and the ones added to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRule {
    /// `GET`, `PUT`, `POST`, `DELETE`, `PATCH`, a custom pattern's kind
    /// (`HEAD`, ...) as written, or `*` for any method.
    pub method: String,
    /// The path template.
    pub path: String,
    /// The request field the HTTP body fills: `*` for every field the path
    /// does not bind, empty for no body.
    pub body: String,
    /// The response field sent as the HTTP body; empty for the whole
    /// response.
    pub response_body: String,
    /// Further bindings of the same method (one level deep: theirs are
    /// ignored, as the specification says they must be empty).
    pub additional_bindings: Vec<HttpRule>,
}

/// The method's rule, if it has one with a pattern.
pub fn rule(method: &MethodDescriptor) -> Option<HttpRule> {
    let extension = method.parent_pool().get_extension_by_name(EXTENSION)?;
    let options = method.options();
    if !options.has_extension(&extension) {
        return None;
    }
    let value = options.get_extension(&extension);
    let rule = value.as_message()?;
    let mut parsed = from_message(rule)?;
    if let Some(Value::List(bindings)) = rule.get_field_by_name("additional_bindings").as_deref() {
        parsed.additional_bindings = bindings
            .iter()
            .filter_map(Value::as_message)
            .filter_map(from_message)
            .collect();
    }
    Some(parsed)
}

fn text(message: &DynamicMessage, field: &str) -> String {
    message
        .get_field_by_name(field)
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn has(message: &DynamicMessage, field: &str) -> bool {
    message
        .descriptor()
        .get_field_by_name(field)
        .is_some_and(|field| message.has_field(&field))
}

/// One rule without its additional bindings; `None` without a pattern.
fn from_message(rule: &DynamicMessage) -> Option<HttpRule> {
    let (method, path) = ["get", "put", "post", "delete", "patch"]
        .into_iter()
        .find(|field| has(rule, field))
        .map(|field| (field.to_ascii_uppercase(), text(rule, field)))
        .or_else(|| {
            if !has(rule, "custom") {
                return None;
            }
            let custom = rule.get_field_by_name("custom")?;
            let custom = custom.as_message()?;
            Some((text(custom, "kind"), text(custom, "path")))
        })?;
    Some(HttpRule {
        method,
        path,
        body: text(rule, "body"),
        response_body: text(rule, "response_body"),
        additional_bindings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(methods: &str) -> prost_reflect::DescriptorPool {
        let dir = tempfile::tempdir().unwrap();
        let proto = format!(
            "syntax = \"proto3\"; package t; import \"google/api/annotations.proto\";
             message M {{ string name = 1; }}
             service S {{ {methods} }}"
        );
        std::fs::write(dir.path().join("t.proto"), proto).unwrap();
        crate::compile_pool(["t.proto"], [dir.path()]).unwrap()
    }

    fn rule_of(pool: &prost_reflect::DescriptorPool, name: &str) -> Option<HttpRule> {
        let service = pool.get_service_by_name("t.S").unwrap();
        let method = service.methods().find(|m| m.name() == name).unwrap();
        rule(&method)
    }

    #[test]
    fn every_pattern_body_response_body_and_additional_bindings_are_read() {
        let pool = pool(
            r#"rpc A(M) returns (M) { option (google.api.http) = {
                   post: "/v1/{name=a/*}:run" body: "*" response_body: "name"
                   additional_bindings { put: "/v1/a" body: "name" }
                   additional_bindings { custom { kind: "HEAD" path: "/v1/h" } }
               }; }
               rpc B(M) returns (M) { option (google.api.http) = { delete: "/v1/{name}" }; }
               rpc C(M) returns (M);"#,
        );
        let a = rule_of(&pool, "A").unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str(), a.body.as_str()),
            ("POST", "/v1/{name=a/*}:run", "*")
        );
        assert_eq!(a.response_body, "name");
        assert_eq!(a.additional_bindings.len(), 2);
        assert_eq!(a.additional_bindings[0].method, "PUT");
        assert_eq!(a.additional_bindings[0].body, "name");
        assert_eq!(a.additional_bindings[1].method, "HEAD");
        assert_eq!(a.additional_bindings[1].path, "/v1/h");
        let b = rule_of(&pool, "B").unwrap();
        assert_eq!((b.method.as_str(), b.body.as_str()), ("DELETE", ""));
        assert_eq!(rule_of(&pool, "C"), None);
    }
}
