//! Parsing gRPC service configs: what gRPC accepts loads, with each field
//! where it belongs; what gRPC rejects is an error naming the field.

use super::*;

const FULL: &str = r#"{
  "loadBalancingConfig": [{"round_robin": {}}, {"pick_first": {"shuffleAddressList": true}}],
  "methodConfig": [
    {
      "name": [{"service": "grpc.examples.echo.Echo", "method": "UnaryEcho"}],
      "timeout": "1.5s",
      "waitForReady": true,
      "maxRequestMessageBytes": 1024,
      "maxResponseMessageBytes": "2048",
      "retryPolicy": {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 1.5,
        "retryableStatusCodes": ["UNAVAILABLE", "resource_exhausted", 10]
      }
    },
    {
      "name": [{"service": "grpc.examples.echo.Echo"}],
      "hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.050s", "nonFatalStatusCodes": ["UNAVAILABLE"]}
    },
    {"name": [{}], "timeout": "10s", "someFieldFromTheFuture": 1}
  ],
  "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
}"#;

#[test]
fn a_full_grpc_config_loads_with_every_field_in_place() {
    let config = ServiceConfig::from_json(FULL).unwrap();
    let unary = config
        .method_config("/grpc.examples.echo.Echo/UnaryEcho")
        .unwrap();
    assert_eq!(unary.timeout_value(), Some(Duration::from_millis(1500)));
    assert_eq!(unary.wait_for_ready_value(), Some(true));
    assert_eq!(unary.max_request_bytes_value(), Some(1024));
    assert_eq!(unary.max_response_bytes_value(), Some(2048));
    let retry = unary.retry_policy().unwrap();
    assert_eq!(retry.max_attempts(), 4);
    assert_eq!(retry.initial_backoff(), Duration::from_millis(100));
    assert_eq!(retry.max_backoff(), Duration::from_secs(2));
    assert_eq!(retry.backoff_multiplier(), 1.5);
    for code in [Code::Unavailable, Code::ResourceExhausted, Code::Aborted] {
        assert!(retry.is_retryable(code), "{code}");
    }
    assert!(!retry.is_retryable(Code::Internal));

    // Another method of the service: the service's config.
    let other = config
        .method_config("/grpc.examples.echo.Echo/ServerStreamingEcho")
        .unwrap();
    let hedging = other.hedging_policy().unwrap();
    assert_eq!(hedging.max_attempts(), 3);
    assert_eq!(hedging.delay(), Duration::from_millis(50));
    assert!(hedging.is_non_fatal(Code::Unavailable));
    assert!(other.retry_policy().is_none());

    // Any other service: the default.
    let default = config.method_config("/other.Svc/M").unwrap();
    assert_eq!(default.timeout_value(), Some(Duration::from_secs(10)));

    let throttling = config.retry_throttling().unwrap();
    assert_eq!(throttling.max_tokens(), 10);
    assert_eq!(throttling.token_ratio(), 0.1);
    let policies: Vec<&str> = config
        .load_balancing()
        .iter()
        .map(|policy| policy.name.as_str())
        .collect();
    assert_eq!(policies, ["round_robin", "pick_first"]);
    assert_eq!(
        config.load_balancing()[1].settings["shuffleAddressList"],
        true
    );
}

#[test]
fn without_a_default_unnamed_methods_have_no_config() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}], "timeout": "1s"}]}"#,
    )
    .unwrap();
    assert!(config.method_config("/a.B/M").is_some());
    assert!(config.method_config("/a.C/M").is_none());
    assert!(config.method_config("not a path").is_none());
    assert!(ServiceConfig::from_json("{}")
        .unwrap()
        .method_config("/a.B/M")
        .is_none());
}

#[test]
fn snake_case_field_names_load_too() {
    let config = ServiceConfig::from_json(
        r#"{"method_config": [{"name": [{"service": "a.B"}], "retry_policy": {
            "max_attempts": 2, "initial_backoff": "1s", "max_backoff": "1s",
            "backoff_multiplier": 1, "retryable_status_codes": ["ABORTED"]}}]}"#,
    )
    .unwrap();
    let retry = config
        .method_config("/a.B/M")
        .unwrap()
        .retry_policy()
        .unwrap();
    assert!(retry.is_retryable(Code::Aborted));
}

#[test]
fn attempts_above_five_count_as_five() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {
            "maxAttempts": 9, "initialBackoff": "1s", "maxBackoff": "1s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
    )
    .unwrap();
    let retry = config
        .method_config("/a.B/M")
        .unwrap()
        .retry_policy()
        .unwrap();
    assert_eq!(retry.max_attempts(), 5);
}

#[test]
fn durations_are_seconds_with_up_to_nine_decimals() {
    for (text, expected) in [
        ("1s", Duration::from_secs(1)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.000340012s", Duration::from_nanos(340_012)),
        ("0s", Duration::ZERO),
        ("86400.000000001s", Duration::new(86_400, 1)),
    ] {
        assert_eq!(json::duration(text, "timeout").unwrap(), expected, "{text}");
    }
    for bad in [
        "1",
        "1.5",
        "-1s",
        "1.0000000001s",
        "s",
        ".5s",
        "1e3s",
        " 1s",
        "1ms",
        "1.s5",
    ] {
        let error = json::duration(bad, "timeout").unwrap_err();
        assert!(error.to_string().contains("timeout"), "{bad}: {error}");
    }
}

/// Each config gRPC rejects, and a word the error must have.
const REJECTED: &[(&str, &str)] = &[
    ("not json", "expected"),
    (
        r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#,
        "no service",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "timeout": "soon"}]}"#,
        "timeout",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 1, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        "maxAttempts",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        "initialBackoff",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        "initialBackoff",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 0, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        "backoffMultiplier",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": []}}]}"#,
        "retryableStatusCodes",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["SOMETIMES"]}}]}"#,
        "SOMETIMES",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["OK"]}}]}"#,
        "OK",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}, "hedgingPolicy": {"maxAttempts": 2}}]}"#,
        "both",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "hedgingPolicy": {"maxAttempts": 1}}]}"#,
        "maxAttempts",
    ),
    (
        r#"{"methodConfig": [{"name": [{"service": "a.B"}]}, {"name": [{"service": "a.B"}]}]}"#,
        "service a.B is named by two",
    ),
    (
        r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 0.1}}"#,
        "maxTokens",
    ),
    (r#"{"retryThrottling": {"maxTokens": 10}}"#, "tokenRatio"),
    (
        r#"{"loadBalancingConfig": [{"round_robin": {}, "pick_first": {}}]}"#,
        "exactly one",
    ),
    (
        r#"{"methodConfig": [{"name": [{}], "maxRequestMessageBytes": "-5"}]}"#,
        "maxRequestMessageBytes",
    ),
];

#[test]
fn configs_grpc_rejects_are_errors_naming_the_field() {
    for (text, word) in REJECTED {
        let error = ServiceConfig::from_json(text).unwrap_err().to_string();
        assert!(error.contains(word), "{text}\n  -> {error}");
    }
}

#[test]
fn configs_from_code_follow_the_same_rules() {
    let config = ServiceConfig::new()
        .with_method(
            MethodConfig::new([MethodName::service("a.B")]).timeout(Duration::from_secs(1)),
        )
        .unwrap();
    let error = config
        .with_method(MethodConfig::new([MethodName::service("a.B")]))
        .unwrap_err();
    assert!(error.to_string().contains("service a.B"), "{error}");
    assert!(HedgingPolicy::new(1, Duration::ZERO, []).is_err());
}

#[test]
fn a_config_file_loads_and_a_missing_one_is_named() {
    let dir = std::env::temp_dir().join(format!("sinew-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("service_config.json");
    std::fs::write(&path, FULL).unwrap();
    assert!(ServiceConfig::from_file(&path)
        .unwrap()
        .retry_throttling()
        .is_some());
    let missing = dir.join("missing.json");
    let error = ServiceConfig::from_file(&missing).unwrap_err();
    assert!(error.to_string().contains("missing.json"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
