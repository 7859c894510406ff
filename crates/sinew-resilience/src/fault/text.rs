//! [`FaultRule`]s written as text, for command lines and config files:
//! comma-separated settings.
//!
//! ```text
//! delay=20ms                         every call 20 ms later
//! delay=50ms@5%                      5% of the calls 50 ms later
//! abort=UNAVAILABLE@50%,pushback=100ms
//!                                    half the calls fail, asking for a retry in 100 ms
//! path=/grpc.examples.echo.Echo/,first-attempt,abort=UNAVAILABLE
//!                                    first attempts to one service fail
//! metadata=x-fault=slow,delay=1s     calls carrying x-fault: slow wait 1 s
//! ```
//!
//! `pushback=never` asks the client not to retry; codes are gRPC's names;
//! durations take `us`, `ms`, `s` or `m`.

use super::FaultRule;
use crate::retry::PUSHBACK;
use sinew_rpc::{Code, Status};
use std::str::FromStr;
use std::time::Duration;

/// A fault rule's text that does not parse; the message says which part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault rule {rule:?}: {problem}")]
pub struct ParseFaultError {
    rule: String,
    problem: String,
}

impl FromStr for FaultRule {
    type Err = ParseFaultError;

    fn from_str(text: &str) -> Result<FaultRule, ParseFaultError> {
        let error = |problem: String| ParseFaultError {
            rule: text.to_owned(),
            problem,
        };
        let mut rule = FaultRule::all();
        let mut pushback = None;
        let mut effect = false;
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key {
                "path" if value.starts_with('/') => rule.path_prefix = value.to_owned(),
                "path" => return Err(error(format!("path {value:?} does not start with /"))),
                "metadata" => {
                    let (key, value) = value
                        .split_once('=')
                        .ok_or_else(|| error(format!("metadata {value:?} is not KEY=VALUE")))?;
                    rule = rule.when_metadata(key, value);
                }
                "first-attempt" => rule = rule.first_attempt_only(),
                "delay" => {
                    let (delay, share) = with_share(value).map_err(error)?;
                    let delay = duration(delay).map_err(error)?;
                    rule = rule.delay(share, delay);
                    effect = true;
                }
                "abort" => {
                    let (code, share) = with_share(value).map_err(error)?;
                    let code = Code::ALL
                        .iter()
                        .find(|known| known.as_str().eq_ignore_ascii_case(code))
                        .filter(|code| **code != Code::Ok)
                        .ok_or_else(|| error(format!("{code:?} is not a failure's status code")))?;
                    rule = rule.abort_with(share, *code);
                    effect = true;
                }
                "pushback" if value == "never" => pushback = Some("-1".to_owned()),
                "pushback" => {
                    pushback = Some(duration(value).map_err(error)?.as_millis().to_string())
                }
                _ => {
                    return Err(error(format!(
                        "unknown setting {part:?}; the settings are path=, metadata=, first-attempt, delay=, abort=, pushback="
                    )))
                }
            }
        }
        if !effect {
            return Err(error(
                "it neither delays (delay=) nor fails (abort=) calls".to_owned(),
            ));
        }
        if let Some(pushback) = pushback {
            let Some((_, status)) = rule.abort.as_mut() else {
                return Err(error("pushback= goes with abort=".to_owned()));
            };
            let mut with_pushback = Status::new(status.code(), status.message());
            // Digits or -1: always valid metadata.
            let _ = with_pushback.metadata_mut().insert(PUSHBACK, &pushback);
            *status = with_pushback;
        }
        Ok(rule)
    }
}

/// `VALUE` or `VALUE@PERCENT%`: the value and the share (1 without one).
fn with_share(text: &str) -> Result<(&str, f64), String> {
    let Some((value, percent)) = text.split_once('@') else {
        return Ok((text, 1.0));
    };
    let share = percent
        .strip_suffix('%')
        .and_then(|number| number.parse::<f64>().ok())
        .filter(|number| (0.0..=100.0).contains(number))
        .ok_or_else(|| format!("{percent:?} is not a percentage from 0% to 100%"))?;
    Ok((value, share / 100.0))
}

/// A duration with a unit: `250us`, `20ms`, `1.5s`, `2m`.
fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 20ms or 1.5s"))?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("{text:?} has no unit: write us, ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_rpc::MetadataMap;

    #[test]
    fn each_setting_parses_into_the_rule() {
        let rule: FaultRule = "delay=50ms@5%".parse().unwrap();
        assert_eq!(rule.delay, Some((0.05, Duration::from_millis(50))));
        assert!(rule.abort.is_none());

        let rule: FaultRule = "path=/a.B/,first-attempt,abort=unavailable@50%,pushback=100ms"
            .parse()
            .unwrap();
        assert_eq!(rule.path_prefix, "/a.B/");
        assert!(rule.first_attempt_only);
        let (share, status) = rule.abort.as_ref().unwrap();
        assert_eq!(*share, 0.5);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get(PUSHBACK), Some("100"));

        let rule: FaultRule = "metadata=X-Fault=slow,delay=1.5s".parse().unwrap();
        let mut metadata = MetadataMap::new();
        assert!(!rule.matches("/a.B/C", &metadata));
        metadata.insert("x-fault", "slow").unwrap();
        assert!(rule.matches("/a.B/C", &metadata));
        assert_eq!(rule.delay, Some((1.0, Duration::from_millis(1500))));

        let rule: FaultRule = "abort=ABORTED,pushback=never".parse().unwrap();
        assert_eq!(rule.abort.unwrap().1.metadata().get(PUSHBACK), Some("-1"));
    }

    #[test]
    fn malformed_rules_say_what_is_wrong() {
        for (text, word) in [
            ("", "neither"),
            ("path=/a.B/", "neither"),
            ("delay=20", "unit"),
            ("delay=soon", "duration"),
            ("delay=20ms@150%", "percentage"),
            ("delay=20ms@5", "percentage"),
            ("abort=SOMETIMES", "SOMETIMES"),
            ("abort=OK", "OK"),
            ("path=a.B", "start with /"),
            ("metadata=x-fault", "KEY=VALUE"),
            ("delay=1s,pushback=1s", "goes with abort"),
            ("delay=1s,colour=red", "unknown setting"),
        ] {
            let error = text.parse::<FaultRule>().unwrap_err().to_string();
            assert!(error.contains(word), "{text:?}: {error}");
        }
    }
}
