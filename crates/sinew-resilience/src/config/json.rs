//! The JSON form of a service config, as gRPC defines it
//! (`grpc/service_config.proto`, in its proto3 JSON mapping: camelCase field
//! names, durations as `"1.5s"`, codes by name or number), turned into
//! [`ServiceConfig`] with gRPC's checks.

use super::{LoadBalancingConfig, MethodConfig, MethodName, ServiceConfig, MAX_ATTEMPTS_CAP};
use crate::hedge::HedgingPolicy;
use crate::retry::{RetryPolicy, RetryThrottling};
use serde::Deserialize;
use sinew_rpc::Code;
use std::fmt;
use std::time::Duration;

/// A service config that does not parse, or that gRPC would reject; the
/// message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid service config: {message}")]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Json {
    #[serde(default, alias = "method_config")]
    method_config: Vec<JsonMethodConfig>,
    #[serde(default, alias = "retry_throttling")]
    retry_throttling: Option<JsonThrottling>,
    #[serde(default, alias = "load_balancing_config")]
    load_balancing_config: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonMethodConfig {
    #[serde(default)]
    name: Vec<JsonName>,
    #[serde(default, alias = "wait_for_ready")]
    wait_for_ready: Option<bool>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default, alias = "max_request_message_bytes")]
    max_request_message_bytes: Option<Number>,
    #[serde(default, alias = "max_response_message_bytes")]
    max_response_message_bytes: Option<Number>,
    #[serde(default, alias = "retry_policy")]
    retry_policy: Option<JsonRetryPolicy>,
    #[serde(default, alias = "hedging_policy")]
    hedging_policy: Option<JsonHedgingPolicy>,
}

#[derive(Deserialize)]
struct JsonName {
    #[serde(default)]
    service: String,
    #[serde(default)]
    method: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRetryPolicy {
    #[serde(alias = "max_attempts")]
    max_attempts: Option<Number>,
    #[serde(alias = "initial_backoff")]
    initial_backoff: Option<String>,
    #[serde(alias = "max_backoff")]
    max_backoff: Option<String>,
    #[serde(alias = "backoff_multiplier")]
    backoff_multiplier: Option<f64>,
    #[serde(default, alias = "retryable_status_codes")]
    retryable_status_codes: Vec<JsonCode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonHedgingPolicy {
    #[serde(alias = "max_attempts")]
    max_attempts: Option<Number>,
    #[serde(default, alias = "hedging_delay")]
    hedging_delay: Option<String>,
    #[serde(default, alias = "non_fatal_status_codes")]
    non_fatal_status_codes: Vec<JsonCode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonThrottling {
    #[serde(alias = "max_tokens")]
    max_tokens: Option<Number>,
    #[serde(alias = "token_ratio")]
    token_ratio: Option<f64>,
}

/// An integer as proto3 JSON writes them: a number, or (for 64-bit
/// fields) a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Number(u64),
    Text(String),
}

impl Number {
    fn get(&self, field: &str) -> Result<u64, ConfigError> {
        match self {
            Number::Number(value) => Ok(*value),
            Number::Text(text) => text.parse().map_err(|_| {
                ConfigError::new(format!("{field} is {text:?}, not a non-negative integer"))
            }),
        }
    }
}

/// A status code by name (`"UNAVAILABLE"`) or number (`14`).
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonCode {
    Number(u32),
    Name(String),
}

impl JsonCode {
    fn get(&self, field: &str) -> Result<Code, ConfigError> {
        let code = match self {
            JsonCode::Number(number) => Code::ALL.get(*number as usize).copied(),
            JsonCode::Name(name) => Code::ALL
                .iter()
                .find(|code| code.as_str().eq_ignore_ascii_case(name))
                .copied(),
        };
        code.filter(|code| *code != Code::Ok).ok_or_else(|| {
            ConfigError::new(format!(
                "{field} has {self}, which is not a failure's status code"
            ))
        })
    }
}

impl fmt::Display for JsonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonCode::Number(number) => write!(f, "{number}"),
            JsonCode::Name(name) => write!(f, "{name:?}"),
        }
    }
}

pub(super) fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
    let json: Json =
        serde_json::from_str(text).map_err(|error| ConfigError::new(error.to_string()))?;
    let mut config = ServiceConfig::new();
    for (index, method) in json.method_config.into_iter().enumerate() {
        let method = method_config(method).map_err(|error| {
            ConfigError::new(format!("methodConfig[{index}]: {}", error.message))
        })?;
        config.add(method).map_err(|error| {
            ConfigError::new(format!("methodConfig[{index}]: {}", error.message))
        })?;
    }
    if let Some(throttling) = json.retry_throttling {
        config.retry_throttling = Some(throttling_config(throttling)?);
    }
    for (index, entry) in json.load_balancing_config.into_iter().enumerate() {
        let mut entries = entry.into_iter();
        let (Some((name, settings)), None) = (entries.next(), entries.next()) else {
            return Err(ConfigError::new(format!(
                "loadBalancingConfig[{index}] must have exactly one field, the policy's name"
            )));
        };
        config
            .load_balancing
            .push(LoadBalancingConfig { name, settings });
    }
    Ok(config)
}

fn method_config(json: JsonMethodConfig) -> Result<MethodConfig, ConfigError> {
    let mut names = Vec::with_capacity(json.name.len());
    for name in json.name {
        names.push(match (name.service.is_empty(), name.method.is_empty()) {
            (true, true) => MethodName::all(),
            (false, true) => MethodName::service(name.service),
            (false, false) => MethodName::method(name.service, name.method),
            (true, false) => {
                return Err(ConfigError::new(format!(
                    "name has method {:?} but no service",
                    name.method
                )))
            }
        });
    }
    let mut config = MethodConfig::new(names);
    config.wait_for_ready = json.wait_for_ready;
    if let Some(timeout) = json.timeout {
        config.timeout = Some(duration(&timeout, "timeout")?);
    }
    if let Some(bytes) = json.max_request_message_bytes {
        config.max_request_bytes = Some(size(bytes.get("maxRequestMessageBytes")?));
    }
    if let Some(bytes) = json.max_response_message_bytes {
        config.max_response_bytes = Some(size(bytes.get("maxResponseMessageBytes")?));
    }
    if let Some(retry) = json.retry_policy {
        config.retry = Some(retry_policy(retry)?);
    }
    if let Some(hedging) = json.hedging_policy {
        config.hedging = Some(hedging_policy(hedging)?);
    }
    Ok(config)
}

fn retry_policy(json: JsonRetryPolicy) -> Result<RetryPolicy, ConfigError> {
    let max_attempts = json
        .max_attempts
        .ok_or_else(|| ConfigError::new("retryPolicy.maxAttempts is missing"))?
        .get("retryPolicy.maxAttempts")?;
    if max_attempts < 2 {
        return Err(ConfigError::new(format!(
            "retryPolicy.maxAttempts is {max_attempts}; it must be at least 2"
        )));
    }
    let initial = positive_duration(json.initial_backoff, "retryPolicy.initialBackoff")?;
    let max = positive_duration(json.max_backoff, "retryPolicy.maxBackoff")?;
    let multiplier = match json.backoff_multiplier {
        Some(multiplier) if multiplier > 0.0 && multiplier.is_finite() => multiplier,
        Some(multiplier) => {
            return Err(ConfigError::new(format!(
                "retryPolicy.backoffMultiplier is {multiplier}; it must be above 0"
            )))
        }
        None => return Err(ConfigError::new("retryPolicy.backoffMultiplier is missing")),
    };
    let codes = codes(
        &json.retryable_status_codes,
        "retryPolicy.retryableStatusCodes",
    )?;
    if codes.is_empty() {
        return Err(ConfigError::new(
            "retryPolicy.retryableStatusCodes is empty; name at least one code",
        ));
    }
    let attempts = max_attempts.min(u64::from(MAX_ATTEMPTS_CAP)) as u32;
    Ok(RetryPolicy::new(attempts, codes).backoff(initial, max, multiplier))
}

fn hedging_policy(json: JsonHedgingPolicy) -> Result<HedgingPolicy, ConfigError> {
    let max_attempts = json
        .max_attempts
        .ok_or_else(|| ConfigError::new("hedgingPolicy.maxAttempts is missing"))?
        .get("hedgingPolicy.maxAttempts")?;
    let delay = match json.hedging_delay {
        Some(delay) => duration(&delay, "hedgingPolicy.hedgingDelay")?,
        None => Duration::ZERO,
    };
    let codes = codes(
        &json.non_fatal_status_codes,
        "hedgingPolicy.nonFatalStatusCodes",
    )?;
    HedgingPolicy::new(
        max_attempts.min(u64::from(MAX_ATTEMPTS_CAP)) as u32,
        delay,
        codes,
    )
}

fn throttling_config(json: JsonThrottling) -> Result<RetryThrottling, ConfigError> {
    let max_tokens = json
        .max_tokens
        .ok_or_else(|| ConfigError::new("retryThrottling.maxTokens is missing"))?
        .get("retryThrottling.maxTokens")?;
    let token_ratio = json
        .token_ratio
        .ok_or_else(|| ConfigError::new("retryThrottling.tokenRatio is missing"))?;
    RetryThrottling::new(max_tokens.min(u64::from(u32::MAX)) as u32, token_ratio)
}

fn codes(json: &[JsonCode], field: &str) -> Result<Vec<Code>, ConfigError> {
    json.iter().map(|code| code.get(field)).collect()
}

fn size(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

fn positive_duration(text: Option<String>, field: &str) -> Result<Duration, ConfigError> {
    let text = text.ok_or_else(|| ConfigError::new(format!("{field} is missing")))?;
    let duration = duration(&text, field)?;
    if duration.is_zero() {
        return Err(ConfigError::new(format!(
            "{field} is 0; it must be above 0"
        )));
    }
    Ok(duration)
}

/// A duration as proto3 JSON writes `google.protobuf.Duration`: seconds with
/// up to nine decimals and an `s` (`"1.5s"`, `"0.000340s"`).
pub(crate) fn duration(text: &str, field: &str) -> Result<Duration, ConfigError> {
    let invalid = || {
        ConfigError::new(format!(
            "{field} is {text:?}; write a duration in seconds, such as \"1.5s\""
        ))
    };
    let seconds = text.strip_suffix('s').ok_or_else(invalid)?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return Err(invalid());
    }
    let whole: u64 = whole.parse().map_err(|_| invalid())?;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().map_err(|_| invalid())?
    };
    Ok(Duration::new(whole, nanos))
}
