//! Docker's time arguments, one owner: Go durations (`--health-interval 30s`, `HEALTHCHECK
//! --interval`) and the points in time of `--since`/`--until` and `until=` filters.

use chrono::{DateTime, Utc};

/// Go's `time.ParseDuration` for what Docker accepts (`1h2m3.5s`, `500ms`, `0`), in
/// nanoseconds; `None` for anything else (negative durations included).
pub fn go_duration(v: &str) -> Option<i64> {
    if v == "0" {
        return Some(0);
    }
    if v.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut rest = v;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[u..];
    }
    Some(total as i64)
}

/// A point in time as Docker's `--since`/`--until`/`until=` take it (moby `GetTimestamp`): an
/// RFC 3339 time, a date or date-time without zone (read as UTC), Unix seconds (`1700000000`,
/// `1700000000.5`), or a Go duration counted back from `now` (`10m`, `1h30m`).
pub fn parse_time_arg(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Some(t) = crate::store::config::parse_time(s) {
        return Some(t);
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    if let Ok(secs) = s.parse::<f64>() {
        let whole = secs.trunc() as i64;
        let nanos = ((secs - secs.trunc()) * 1e9) as u32;
        return DateTime::from_timestamp(whole, nanos);
    }
    // Docker's GetTimestamp: any duration, `0s` included, counts back from now ("0" alone
    // was the Unix epoch above).
    let ns = go_duration(s)?;
    Some(now - chrono::Duration::nanoseconds(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration("500ms"), Some(500_000_000));
        assert_eq!(go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(go_duration("0"), Some(0));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("-1s"), None);
        assert_eq!(go_duration("5x"), None);
    }

    #[test]
    fn times() {
        let now = DateTime::parse_from_rfc3339("2024-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = |s: &str| parse_time_arg(s, now).map(|t| t.to_rfc3339());
        assert_eq!(t("10m").unwrap(), "2024-03-01T11:50:00+00:00");
        assert_eq!(t("1h30m").unwrap(), "2024-03-01T10:30:00+00:00");
        assert_eq!(t("2024-02-01").unwrap(), "2024-02-01T00:00:00+00:00");
        assert_eq!(t("1700000000").unwrap(), "2023-11-14T22:13:20+00:00");
        assert!(t("yesterday").is_none());
        assert_eq!(t("0s").unwrap(), "2024-03-01T12:00:00+00:00");
        assert_eq!(t("0").unwrap(), "1970-01-01T00:00:00+00:00");
    }
}
