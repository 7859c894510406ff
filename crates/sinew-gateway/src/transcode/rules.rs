//! Which method an HTTP request calls: the `google.api.http` rules of the
//! services' methods (their bindings and additional bindings), and
//! `POST /package.Service/Method` for every method.
//!
//! A request goes to the most specific binding whose template matches its
//! path and whose method is the request's (a custom pattern `*` takes any
//! method): more literal segments first, then fewer `**`, then a verb,
//! then the order of the rules. A path that some binding matches but not
//! with the request's method is a 405 naming the methods that would do.
//! Each rule is checked when the gateway starts: a template that does not
//! parse, a variable, `body` or `response_body` naming a field the
//! message does not have, is a configuration error naming the method.

use super::template::{Bindings, Template};
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use sinew_schema::http::HttpRule;
use std::collections::HashMap;
use std::sync::Arc;

/// What the HTTP body of a request fills.
#[derive(Clone, Debug)]
pub(crate) enum BodyRule {
    /// Nothing: the body is ignored.
    None,
    /// The whole request message, but for the fields the path binds.
    Whole,
    /// One top-level field of the request.
    Field(FieldDescriptor),
}

/// One way to call a method over HTTP.
pub(crate) struct Binding {
    pub(crate) method: MethodDescriptor,
    /// `/package.Service/Method`: the call's path.
    pub(crate) call_path: Arc<str>,
    /// `None`: any HTTP method.
    http_method: Option<http::Method>,
    /// `None` for `POST /package.Service/Method`.
    template: Option<Template>,
    pub(crate) body: BodyRule,
    /// The response field sent as the body; `None`: the whole response.
    pub(crate) response_body: Option<FieldDescriptor>,
}

impl Binding {
    /// The request fields the path binds, as written in the template.
    pub(crate) fn path_fields(&self) -> impl Iterator<Item = &[String]> {
        self.template.iter().flat_map(Template::field_paths)
    }
}

/// What a request found.
pub(crate) enum Lookup<'a> {
    /// A binding, with the values its template bound.
    Found(&'a Binding, Bindings),
    /// Paths match, methods do not: the methods that would.
    NotAllowed(Vec<String>),
    NotFound,
}

/// Every binding of the services offered.
pub(crate) struct Rules {
    /// By specificity, most specific first (stable: rules in order).
    bindings: Vec<Binding>,
    /// Every method by its call path (`/package.Service/Method`): for
    /// gRPC-Web, and for JSON when `method_paths` is on.
    by_call_path: HashMap<String, Binding>,
    method_paths: bool,
}

/// Services nobody calls over HTTP unless named.
const INTERNAL: &[&str] = &["grpc.reflection.", "grpc.health."];

impl Rules {
    /// The rules of `services` (default: every service of the pool but
    /// reflection and health).
    pub(crate) fn build(
        pool: &DescriptorPool,
        services: &[String],
        method_paths: bool,
    ) -> Result<Rules, String> {
        let chosen: Vec<_> = if services.is_empty() {
            pool.services()
                .filter(|s| !INTERNAL.iter().any(|p| s.full_name().starts_with(p)))
                .collect()
        } else {
            services
                .iter()
                .map(|name| {
                    pool.get_service_by_name(name)
                        .ok_or_else(|| format!("the descriptors have no service {name}"))
                })
                .collect::<Result<_, _>>()?
        };
        if chosen.is_empty() {
            return Err("the descriptors have no service to offer".to_owned());
        }
        let mut bindings = Vec::new();
        let mut by_call_path = HashMap::new();
        for service in chosen {
            for method in service.methods() {
                let call_path: Arc<str> =
                    format!("/{}/{}", service.full_name(), method.name()).into();
                if let Some(rule) = sinew_schema::http::rule(&method) {
                    let which = format!("{}.{}", service.full_name(), method.name());
                    for one in std::iter::once(&rule).chain(&rule.additional_bindings) {
                        let binding = binding(&method, &call_path, one).map_err(|e| {
                            format!("{which}: rule {} {}: {e}", one.method, one.path)
                        })?;
                        bindings.push(binding);
                    }
                }
                let binding = Binding {
                    method: method.clone(),
                    call_path: call_path.clone(),
                    http_method: Some(http::Method::POST),
                    template: None,
                    body: BodyRule::Whole,
                    response_body: None,
                };
                by_call_path.insert(call_path.to_string(), binding);
            }
        }
        // Stable: equal templates keep the rules' order.
        bindings.sort_by_key(|binding| {
            std::cmp::Reverse(binding.template.as_ref().map(Template::specificity))
        });
        Ok(Rules {
            bindings,
            by_call_path,
            method_paths,
        })
    }

    /// The binding a request with `method` and `path` (without query)
    /// goes to.
    pub(crate) fn find(&self, method: &http::Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for binding in &self.bindings {
            let Some(values) = binding.template.as_ref().and_then(|t| t.matches(path)) else {
                continue;
            };
            match &binding.http_method {
                Some(wanted) if wanted != method => {
                    if !allowed.contains(&wanted.to_string()) {
                        allowed.push(wanted.to_string());
                    }
                }
                _ => return Lookup::Found(binding, values),
            }
        }
        if let Some(binding) = self.by_call_path.get(path).filter(|_| self.method_paths) {
            if method == http::Method::POST {
                return Lookup::Found(binding, Vec::new());
            }
            allowed.push("POST".to_owned());
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::NotAllowed(allowed)
        }
    }

    /// The method a call path (`/package.Service/Method`) names, if it is
    /// one of the services offered.
    pub(crate) fn call(&self, path: &str) -> Option<&Binding> {
        self.by_call_path.get(path)
    }

    /// How many bindings there are, `POST /package.Service/Method` ones
    /// included.
    pub(crate) fn len(&self) -> usize {
        let call_paths = if self.method_paths {
            self.by_call_path.len()
        } else {
            0
        };
        self.bindings.len() + call_paths
    }
}

/// A field of `message` by its proto name or its JSON name.
pub(crate) fn field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

/// The field a dotted path names, every step but the last a singular
/// message.
pub(crate) fn field_at(
    message: &MessageDescriptor,
    path: &[String],
) -> Result<FieldDescriptor, String> {
    let mut current = message.clone();
    let mut found = None;
    for (index, name) in path.iter().enumerate() {
        let field = field(&current, name)
            .ok_or_else(|| format!("{} has no field {name:?}", current.full_name()))?;
        if index + 1 < path.len() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                _ => {
                    return Err(format!(
                        "{} is not a message field, so {:?} cannot go inside it",
                        field.full_name(),
                        path.join(".")
                    ))
                }
            }
        }
        found = Some(field);
    }
    found.ok_or_else(|| "an empty field path".to_owned())
}

fn binding(
    method: &MethodDescriptor,
    call_path: &Arc<str>,
    rule: &HttpRule,
) -> Result<Binding, String> {
    let template = Template::parse(&rule.path).map_err(|e| e.to_string())?;
    let input = method.input();
    for path in template.field_paths() {
        let field = field_at(&input, path)?;
        if field.is_list() || field.is_map() {
            return Err(format!(
                "{} is repeated: a path variable binds one value",
                field.full_name()
            ));
        }
    }
    let http_method = match rule.method.as_str() {
        "*" => None,
        name => Some(
            http::Method::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not an HTTP method"))?,
        ),
    };
    let body = match rule.body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| format!("body: {} has no field {name:?}", input.full_name()))?,
        ),
    };
    let response_body = match rule.response_body.as_str() {
        "" => None,
        name => {
            let output = method.output();
            Some(output.get_field_by_name(name).ok_or_else(|| {
                format!(
                    "response_body: {} has no field {name:?}",
                    output.full_name()
                )
            })?)
        }
    };
    Ok(Binding {
        method: method.clone(),
        call_path: call_path.clone(),
        http_method,
        template: Some(template),
        body,
        response_body,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pool(body: &str) -> DescriptorPool {
        let dir = tempfile::tempdir().unwrap();
        let proto = format!(
            "syntax = \"proto3\"; package t; import \"google/api/annotations.proto\";
             message Book {{ string name = 1; string title = 2; Inner inner = 3; repeated string tags = 4; }}
             message Inner {{ string id = 1; }}
             {body}"
        );
        std::fs::write(dir.path().join("t.proto"), proto).unwrap();
        sinew_schema::compile_pool(["t.proto"], [dir.path()]).unwrap()
    }

    fn called<'a>(
        rules: &'a Rules,
        method: &str,
        path: &str,
    ) -> Result<(&'a str, Bindings), String> {
        match rules.find(&http::Method::from_bytes(method.as_bytes()).unwrap(), path) {
            Lookup::Found(binding, values) => Ok((binding.method.name(), values)),
            Lookup::NotAllowed(methods) => Err(format!("405 {}", methods.join(","))),
            Lookup::NotFound => Err("404".to_owned()),
        }
    }

    const SERVICE: &str = r#"
        service S {
          rpc Get(Book) returns (Book) { option (google.api.http) = {
            get: "/v1/{name=shelves/*/books/*}"
            additional_bindings { get: "/v1/books/{name}" }
          }; }
          rpc Special(Book) returns (Book) { option (google.api.http) = { get: "/v1/shelves/main/books/{name}" }; }
          rpc Rest(Book) returns (Book) { option (google.api.http) = { get: "/v1/{name=**}" }; }
          rpc Create(Book) returns (Book) { option (google.api.http) = { post: "/v1/{name=shelves/*}/books" body: "inner" }; }
          rpc Cancel(Book) returns (Book) { option (google.api.http) = { post: "/v1/{name=shelves/*/books/*}:cancel" body: "*" }; }
          rpc Any(Book) returns (Book) { option (google.api.http) = { custom { kind: "*" path: "/any/{inner.id}" } }; }
          rpc Plain(Book) returns (Book);
        }"#;

    #[test]
    fn the_most_specific_binding_of_the_request_method_wins() {
        let rules = Rules::build(&pool(SERVICE), &[], true).unwrap();
        let (method, values) = called(&rules, "GET", "/v1/shelves/1/books/2").unwrap();
        assert_eq!(method, "Get");
        assert_eq!(
            values,
            vec![(vec!["name".to_owned()], "shelves/1/books/2".to_owned())]
        );
        // More literal segments win over the general template.
        assert_eq!(
            called(&rules, "GET", "/v1/shelves/main/books/2").unwrap().0,
            "Special"
        );
        // The additional binding.
        assert_eq!(called(&rules, "GET", "/v1/books/9").unwrap().0, "Get");
        // `**` takes what nothing more specific does.
        assert_eq!(called(&rules, "GET", "/v1/a/b/c/d/e").unwrap().0, "Rest");
        assert_eq!(
            called(&rules, "POST", "/v1/shelves/1/books/2:cancel")
                .unwrap()
                .0,
            "Cancel"
        );
        assert_eq!(called(&rules, "DELETE", "/any/7").unwrap().0, "Any");
        let (_, values) = called(&rules, "PUT", "/any/7").unwrap();
        assert_eq!(
            values,
            vec![(vec!["inner".to_owned(), "id".to_owned()], "7".to_owned())]
        );
    }

    #[test]
    fn a_path_without_its_method_is_405_and_no_path_is_404() {
        let rules = Rules::build(&pool(SERVICE), &[], true).unwrap();
        assert_eq!(
            called(&rules, "PATCH", "/v1/shelves/1/books").unwrap_err(),
            "405 POST,GET"
        );
        assert_eq!(called(&rules, "GET", "/nothing/here").unwrap_err(), "404");
        assert_eq!(called(&rules, "GET", "/t.S/Plain").unwrap_err(), "405 POST");
    }

    #[test]
    fn every_method_has_its_call_path_unless_turned_off() {
        let rules = Rules::build(&pool(SERVICE), &[], true).unwrap();
        assert_eq!(called(&rules, "POST", "/t.S/Plain").unwrap().0, "Plain");
        assert_eq!(called(&rules, "POST", "/t.S/Get").unwrap().0, "Get");
        let rules = Rules::build(&pool(SERVICE), &[], false).unwrap();
        assert_eq!(called(&rules, "POST", "/t.S/Plain").unwrap_err(), "404");
    }

    #[test]
    fn rules_naming_missing_fields_are_refused_with_the_method() {
        for (rule, expected) in [
            (r#"get: "/v1/{nope}""#, "has no field \"nope\""),
            (r#"get: "/v1/{title.x}""#, "is not a message field"),
            (r#"get: "/v1/{tags}""#, "is repeated"),
            (r#"post: "/v1" body: "nope""#, "body: t.Book has no field"),
            (r#"get: "/v1" response_body: "nope""#, "response_body"),
            (r#"get: "v1/x""#, "path template"),
        ] {
            let service = format!(
                "service S {{ rpc M(Book) returns (Book) {{ option (google.api.http) = {{ {rule} }}; }} }}"
            );
            let error = Rules::build(&pool(&service), &[], true).err().unwrap();
            assert!(
                error.contains("t.S.M") && error.contains(expected),
                "{rule}: {error}"
            );
        }
    }

    #[test]
    fn services_can_be_chosen_and_an_unknown_one_is_an_error() {
        let pool = pool(SERVICE);
        assert!(Rules::build(&pool, &["t.S".to_owned()], true).is_ok());
        let error = Rules::build(&pool, &["t.Nope".to_owned()], true)
            .err()
            .unwrap();
        assert!(error.contains("no service t.Nope"), "{error}");
    }
}
