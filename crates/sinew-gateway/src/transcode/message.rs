//! The request message of a call, made of the HTTP request: the body
//! (as the rule's `body` says), then the query parameters, then the
//! values the path bound, each later one over what came before.
//!
//! * The body is proto3 JSON: the whole message for `body: "*"` and for
//!   `POST /package.Service/Method`, one field's value for `body: "field"`.
//!   An empty body is an empty message.
//! * A query parameter `a.b.c=value` sets that field (proto or JSON names)
//!   and appends to a repeated one; parameters are ignored with
//!   `body: "*"`, which leaves none for them, and for fields the path or
//!   the body field sets. A parameter naming no field is a 400 unless the
//!   service ignores unknown fields.
//! * Values from a path or a query are text, read as the field's type:
//!   numbers, `true`/`false`, enum names or numbers, base64 for bytes,
//!   RFC 3339 for a Timestamp, `1.5s` for a Duration, and the wrapper
//!   types as what they wrap. A message field cannot take text (name its
//!   fields instead), nor can a map.
//!
//! Every failure is a message for a 400 naming the field.

use super::rules::{self, BodyRule};
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    Value,
};

/// Messages whose JSON form is text, so that a path or query can set them.
const TEXT_MESSAGES: &[&str] = &[
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
];

/// Reads the body into a message of `input` by `rule`.
pub(crate) fn from_body(
    input: &MessageDescriptor,
    rule: &BodyRule,
    body: &[u8],
    options: &DeserializeOptions,
) -> Result<DynamicMessage, String> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    match rule {
        BodyRule::None => Ok(DynamicMessage::new(input.clone())),
        _ if blank => Ok(DynamicMessage::new(input.clone())),
        BodyRule::Whole => {
            let mut json = serde_json::Deserializer::from_slice(body);
            let message =
                DynamicMessage::deserialize_with_options(input.clone(), &mut json, options)
                    .map_err(|e| format!("the body does not fit {}: {e}", input.full_name()))?;
            json.end()
                .map_err(|e| format!("the body has more after its JSON value: {e}"))?;
            Ok(message)
        }
        BodyRule::Field(field) => {
            // One JSON value and nothing after it (checked without
            // building it), so that wrapping it cannot add fields.
            serde_json::from_slice::<serde::de::IgnoredAny>(body)
                .map_err(|e| format!("the body is not one JSON value: {e}"))?;
            // The field's value is read as the message's JSON would hold
            // it, so every type reads as proto3 JSON has it; the text is
            // wrapped rather than parsed into a tree first, which would
            // take many times its size.
            let name = field.json_name();
            let mut wrapped = Vec::with_capacity(body.len() + name.len() + 6);
            wrapped.push(b'{');
            serde_json::to_writer(&mut wrapped, name).map_err(|e| e.to_string())?;
            wrapped.push(b':');
            wrapped.extend_from_slice(body);
            wrapped.push(b'}');
            let mut json = serde_json::Deserializer::from_slice(&wrapped);
            DynamicMessage::deserialize_with_options(input.clone(), &mut json, options)
                .map_err(|e| format!("the body does not fit {}: {e}", field.full_name()))
        }
    }
}

/// Sets the field at `path` to `text` read as its type; a repeated field
/// gets it appended.
pub(crate) fn set_text(
    message: &mut DynamicMessage,
    path: &[String],
    text: &str,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("an empty field name".to_owned());
    };
    let mut current = message;
    for name in parents {
        let descriptor = current.descriptor();
        let field = rules::field(&descriptor, name)
            .ok_or_else(|| format!("{} has no field {name:?}", descriptor.full_name()))?;
        current = match (field.kind(), field.is_list() || field.is_map()) {
            (Kind::Message(_), false) => match current.get_field_mut(&field) {
                Value::Message(inner) => inner,
                _ => return Err(format!("{} is not a message", field.full_name())),
            },
            _ => {
                return Err(format!(
                    "{} is not a message field, so {:?} cannot go inside it",
                    field.full_name(),
                    path.join(".")
                ))
            }
        };
    }
    let descriptor = current.descriptor();
    let field = rules::field(&descriptor, last)
        .ok_or_else(|| format!("{} has no field {last:?}", descriptor.full_name()))?;
    let value = read_text(&descriptor, &field, text)?;
    if field.is_list() {
        if let (Value::List(list), Value::List(new)) = (current.get_field_mut(&field), value) {
            list.extend(new);
        }
    } else {
        current.set_field(&field, value);
    }
    Ok(())
}

/// `text` as a value of `field` of `parent` (for a repeated field, a list
/// of that one value).
fn read_text(
    parent: &MessageDescriptor,
    field: &FieldDescriptor,
    text: &str,
) -> Result<Value, String> {
    if field.is_map() {
        return Err(format!(
            "{} is a map: it cannot be set from text",
            field.full_name()
        ));
    }
    let json = match field.kind() {
        Kind::Bool => serde_json::Value::Bool(boolean(field, text)?),
        Kind::Message(message) if message.full_name() == "google.protobuf.BoolValue" => {
            serde_json::Value::Bool(boolean(field, text)?)
        }
        Kind::Message(message) if !TEXT_MESSAGES.contains(&message.full_name()) => {
            return Err(format!(
                "{} is a message: set its fields ({}.FIELD=...) instead",
                field.full_name(),
                field.name()
            ))
        }
        Kind::Enum(_) if text.parse::<i32>().is_ok() => {
            serde_json::Value::from(text.parse::<i32>().unwrap_or(0))
        }
        _ => serde_json::Value::String(text.to_owned()),
    };
    let json = if field.is_list() {
        serde_json::Value::Array(vec![json])
    } else {
        json
    };
    // Read through proto3 JSON, which takes every type from a string.
    let wrapped = serde_json::json!({ field.json_name(): json });
    let message = DynamicMessage::deserialize(parent.clone(), wrapped)
        .map_err(|e| format!("{:?} is not a value of {}: {e}", text, field.full_name()))?;
    Ok(message.get_field(field).into_owned())
}

/// `true`/`false` as Go's `strconv.ParseBool` reads them (grpc-gateway
/// does): also `1`, `0`, `t`, `f`, in any case.
fn boolean(field: &FieldDescriptor, text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Ok(true),
        "false" | "f" | "0" => Ok(false),
        _ => Err(format!(
            "{text:?} is not a value of {} (true or false)",
            field.full_name()
        )),
    }
}

/// The query string's parameters, decoded (`+` as a space), in order.
pub(crate) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                super::template::decode(&text.replace('+', " "), false)
                    .ok_or_else(|| format!("the query parameter {pair:?} is not validly encoded"))
            };
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

/// Sets the fields the query names, but for those `skip` says are set
/// otherwise; a parameter naming no field is an error unless `lenient`.
pub(crate) fn apply_query(
    message: &mut DynamicMessage,
    query: &str,
    skip: impl Fn(&[String]) -> bool,
    lenient: bool,
) -> Result<(), String> {
    for (key, value) in query_pairs(query)? {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        if skip(&path) {
            continue;
        }
        if let Err(error) = rules::field_at(&message.descriptor(), &path) {
            if lenient {
                continue;
            }
            return Err(format!("query parameter {key:?}: {error}"));
        }
        set_text(message, &path, &value).map_err(|e| format!("query parameter {key:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> MessageDescriptor {
        let pool = super::super::rules::tests::pool(
            r#"import "google/protobuf/timestamp.proto";
               import "google/protobuf/wrappers.proto";
               enum Genre { GENRE_UNSPECIFIED = 0; FICTION = 1; }
               message Full {
                 string name = 1; int64 pages = 2; bool read = 3; Genre genre = 4;
                 repeated string tags = 5; bytes cover = 6; double score = 7;
                 google.protobuf.Timestamp created = 8; google.protobuf.BoolValue kept = 9;
                 Inner inner = 10; map<string, string> labels = 11; uint32 count = 12;
                 google.protobuf.Int64Value big = 13;
               }"#,
        );
        pool.get_message_by_name("t.Full").unwrap()
    }

    fn set(message: &mut DynamicMessage, path: &str, text: &str) -> Result<(), String> {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        set_text(message, &path, text)
    }

    fn json(message: &DynamicMessage) -> serde_json::Value {
        serde_json::to_value(message).unwrap()
    }

    #[test]
    fn text_is_read_as_each_type() {
        let mut m = DynamicMessage::new(book());
        set(&mut m, "name", "a b/c").unwrap();
        set(&mut m, "pages", "-12").unwrap();
        set(&mut m, "read", "T").unwrap();
        set(&mut m, "genre", "FICTION").unwrap();
        set(&mut m, "tags", "x").unwrap();
        set(&mut m, "tags", "y").unwrap();
        set(&mut m, "cover", "aGk=").unwrap();
        set(&mut m, "score", "1.5").unwrap();
        set(&mut m, "created", "2024-01-02T03:04:05Z").unwrap();
        set(&mut m, "kept", "false").unwrap();
        set(&mut m, "inner.id", "7").unwrap();
        set(&mut m, "count", "4294967295").unwrap();
        set(&mut m, "big", "9007199254740993").unwrap();
        assert_eq!(
            json(&m),
            serde_json::json!({
                "name": "a b/c", "pages": "-12", "read": true, "genre": "FICTION",
                "tags": ["x", "y"], "cover": "aGk=", "score": 1.5,
                "created": "2024-01-02T03:04:05Z", "kept": false, "inner": {"id": "7"},
                "count": 4294967295u32, "big": "9007199254740993"
            })
        );
        // Enum numbers and JSON names are taken too.
        let mut m = DynamicMessage::new(book());
        set(&mut m, "genre", "1").unwrap();
        assert_eq!(json(&m)["genre"], "FICTION");
    }

    #[test]
    fn text_that_does_not_fit_is_an_error_naming_the_field() {
        for (path, text, expected) in [
            ("pages", "many", "t.Full.pages"),
            ("count", "-1", "t.Full.count"),
            ("read", "yes", "true or false"),
            ("genre", "POETRY", "t.Full.genre"),
            ("created", "yesterday", "t.Full.created"),
            ("inner", "x", "set its fields"),
            ("labels", "x", "is a map"),
            ("name.x", "1", "is not a message field"),
            ("nope", "1", "has no field"),
            ("cover", "!!", "t.Full.cover"),
        ] {
            let mut m = DynamicMessage::new(book());
            let error = set(&mut m, path, text).unwrap_err();
            assert!(error.contains(expected), "{path}={text}: {error}");
        }
    }

    #[test]
    fn bodies_fill_the_message_or_one_field() {
        let input = book();
        let options = DeserializeOptions::new();
        let whole = from_body(
            &input,
            &BodyRule::Whole,
            br#"{"name":"n","pages":3}"#,
            &options,
        )
        .unwrap();
        assert_eq!(json(&whole), serde_json::json!({"name": "n", "pages": "3"}));
        let inner = input.get_field_by_name("inner").unwrap();
        let field = from_body(
            &input,
            &BodyRule::Field(inner.clone()),
            br#"{"id":"9"}"#,
            &options,
        )
        .unwrap();
        assert_eq!(json(&field), serde_json::json!({"inner": {"id": "9"}}));
        let tags = input.get_field_by_name("tags").unwrap();
        let list = from_body(&input, &BodyRule::Field(tags), br#"["a","b"]"#, &options).unwrap();
        assert_eq!(json(&list), serde_json::json!({"tags": ["a", "b"]}));
        let empty = from_body(&input, &BodyRule::Whole, b"  \n", &options).unwrap();
        assert_eq!(json(&empty), serde_json::json!({}));
        let ignored = from_body(&input, &BodyRule::None, b"not json", &options).unwrap();
        assert_eq!(json(&ignored), serde_json::json!({}));
        for bad in [
            &b"{"[..],
            b"{\"nope\":1}",
            b"{\"pages\":\"x\"}",
            b"{} {}",
            b"[1]",
        ] {
            let error = from_body(&input, &BodyRule::Whole, bad, &options).unwrap_err();
            assert!(error.contains("body"), "{error}");
        }
        // A field's body is one value: what follows it cannot add fields.
        for bad in [
            &br#"{"id":"9"}, "name": "evil""#[..],
            br#"{"id":"9"}} {"#,
            br#"{"id":"9"} {}"#,
            b"",
        ] {
            let error = from_body(&input, &BodyRule::Field(inner.clone()), bad, &options);
            assert!(
                bad.is_empty() || error.is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let spaced = from_body(
            &input,
            &BodyRule::Field(inner),
            b" {\"id\":\"9\"}\n",
            &options,
        );
        assert_eq!(
            json(&spaced.unwrap()),
            serde_json::json!({"inner": {"id": "9"}})
        );
        // Unknown fields pass when asked.
        let lenient = DeserializeOptions::new().deny_unknown_fields(false);
        assert!(from_body(&input, &BodyRule::Whole, b"{\"nope\":1}", &lenient).is_ok());
    }

    #[test]
    fn query_parameters_set_fields_skip_some_and_refuse_unknown_ones() {
        let mut m = DynamicMessage::new(book());
        let skip = |path: &[String]| path == ["name"];
        apply_query(
            &mut m,
            "pages=5&tags=a+b&tags=c%26d&inner.id=1&name=no&read",
            skip,
            false,
        )
        .unwrap_err();
        let mut m = DynamicMessage::new(book());
        apply_query(
            &mut m,
            "pages=5&tags=a+b&tags=c%26d&inner.id=1&name=no",
            skip,
            false,
        )
        .unwrap();
        assert_eq!(
            json(&m),
            serde_json::json!({"pages": "5", "tags": ["a b", "c&d"], "inner": {"id": "1"}})
        );
        let error = apply_query(&mut m, "nope=1", |_| false, false).unwrap_err();
        assert!(error.contains("\"nope\""), "{error}");
        apply_query(&mut m, "nope=1", |_| false, true).unwrap();
        let error = apply_query(&mut m, "pages=%zz", |_| false, true).unwrap_err();
        assert!(error.contains("encoded"), "{error}");
    }
}
