//! Durations on the command line: read as `500ms`, `10s`, `2m`, `250us`, and
//! printed the same way, rounded for a human reader (`1.2s`, `850ms`, `35us`).
//!
//! Reading is the gateway's [`parse_duration`], the one duration reader of
//! sinew's configuration text, so that a flag and a `gateway.toml` take the
//! same durations and refuse the same mistakes; it is re-exported here for the
//! flags' `value_parser`s. Printing is this module's own.
//!
//! Not for tables of figures meant to be compared row by row (the histogram
//! of `sinew bench`, the per-transport latencies of `sinew demo`): those keep
//! one unit per column, named in the header, and more digits.

use std::time::Duration;

/// Parses `<number><unit>` with unit `us`, `ms`, `s`, `m` or `h`, e.g.
/// `250us`, `500ms`, `1.5s`, `2m`; a bare number is refused rather than
/// guessed at (`--deadline 5`: 5 ms or 5 s?). Its messages are what clap
/// prints after `invalid value ... for '--deadline <DURATION>'`.
pub(crate) use sinew::gateway::config::parse_duration;

/// `duration` for a human reader, in the largest unit that keeps it at least 1
/// and rounded to two or three significant figures: `35us`, `850ms`, `1.2s`,
/// `30s`, `2m30s`. Apart from nanoseconds (`850ns`) and a mixed `2m30s`, the
/// text parses back with [`parse_duration`], to within the rounding.
pub(crate) fn format_duration(duration: Duration) -> String {
    const SCALES: [(&str, f64); 4] = [("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)];
    if duration.is_zero() {
        return "0s".to_owned();
    }
    let nanos = duration.as_nanos() as f64;
    let mut unit = SCALES
        .iter()
        .rposition(|(_, scale)| nanos >= *scale)
        .unwrap_or(0);
    loop {
        let (name, scale) = SCALES[unit];
        let value = nanos / scale;
        // One decimal below 10 (`1.2s`), whole numbers above (`35us`, `850ms`).
        let rounded = if value < 10.0 {
            (value * 10.0).round() / 10.0
        } else {
            value.round()
        };
        // 999.7us rounds to 1000us: say 1ms instead.
        if rounded >= 1000.0 && unit + 1 < SCALES.len() {
            unit += 1;
            continue;
        }
        if name == "s" && rounded >= 60.0 {
            let seconds = duration.as_secs_f64().round() as u64;
            return match (seconds / 60, seconds % 60) {
                (minutes, 0) => format!("{minutes}m"),
                (minutes, seconds) => format!("{minutes}m{seconds}s"),
            };
        }
        return if rounded.fract() == 0.0 {
            format!("{rounded:.0}{name}")
        } else {
            format!("{rounded:.1}{name}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit the flags have taken reads, through the gateway's parser;
    /// its bad-input classes are tested beside it.
    #[test]
    fn the_flags_units_read() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn a_number_without_a_unit_is_refused_with_the_units_to_add() {
        for bare in ["5", "0", "1.5", "500"] {
            let error = parse_duration(bare).unwrap_err();
            assert!(error.contains("has no unit"), "{error}");
            assert!(
                error.contains(&format!("{bare}s")) && error.contains(&format!("{bare}ms")),
                "{error}"
            );
        }
        assert_eq!(
            parse_duration("5").unwrap_err(),
            "5 has no unit: add one, as in 5s, 5ms, 5us or 5m"
        );
    }

    #[test]
    fn durations_print_rounded_for_humans() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(35_400), "35us"),
            (Duration::from_micros(999), "999us"),
            (Duration::from_nanos(999_700), "1ms"),
            (Duration::from_micros(1_240), "1.2ms"),
            (Duration::from_micros(1_260), "1.3ms"),
            (Duration::from_micros(849_600), "850ms"),
            (Duration::from_millis(1_000), "1s"),
            (Duration::from_nanos(1_234_567_891), "1.2s"),
            (Duration::from_millis(9_960), "10s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(59_700), "1m"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_secs(7_200), "120m"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format_duration(duration), expected, "{duration:?}");
        }
    }

    #[test]
    fn printed_durations_parse_back() {
        for micros in [35, 999, 1_240, 850_000, 1_234_567, 30_000_000, 120_000_000] {
            let duration = Duration::from_micros(micros);
            let printed = format_duration(duration);
            let parsed = parse_duration(&printed).unwrap();
            let error = (parsed.as_secs_f64() - duration.as_secs_f64()).abs();
            assert!(
                error <= duration.as_secs_f64() * 0.05,
                "{duration:?} -> {printed} -> {parsed:?}"
            );
        }
    }
}
