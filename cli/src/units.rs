//! Docker's human units (`github.com/docker/go-units`): `HumanSize` (`2.14MB`) and
//! `HumanDuration` (`3 days`), plus Go's `time.Time.String` for `CreatedAt`.

use chrono::{DateTime, Utc};

const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/// Go's `fmt.Sprintf("%.*g", precision, v)` for 0 <= v < 1000 (and beyond, in exponent form).
pub fn go_g(v: f64, precision: usize) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let p = precision.max(1);
    // Exponent after rounding to p significant digits.
    let sci = format!("{:.*e}", p - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let decimals = (p as i32 - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// `units.HumanSizeWithPrecision(size, precision)`: 1000-based, no space (`2.14MB`).
pub fn human_size_prec(size: f64, precision: usize) -> String {
    let mut s = size;
    let mut i = 0;
    while s >= 1000.0 && i < UNITS.len() - 1 {
        s /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(s, precision), UNITS[i])
}

/// `units.HumanSize`: 4 significant digits (`system df`).
pub fn human_size(size: u64) -> String {
    human_size_prec(size as f64, 4)
}

/// 3 significant digits (`images`, `history`).
pub fn human_size3(size: u64) -> String {
    human_size_prec(size as f64, 3)
}

/// `units.HumanDuration`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < 1 {
        return "Less than a second".to_string();
    }
    if seconds == 1 {
        return "1 second".to_string();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = d.num_minutes();
    if minutes == 1 {
        return "About a minute".to_string();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.num_milliseconds() as f64 / 3_600_000.0).round() as i64;
    if hours == 1 {
        return "About an hour".to_string();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", d.num_hours() / 24 / 365)
}

/// `N units ago` from `t` to now.
pub fn ago(t: DateTime<Utc>) -> String {
    format!("{} ago", human_duration(Utc::now() - t))
}

/// Go's `time.Time.String()` in UTC: `2024-03-01 00:00:00 +0000 UTC`.
pub fn go_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size3(0), "0B");
        assert_eq!(human_size3(999), "999B");
        assert_eq!(human_size3(1000), "1kB");
        assert_eq!(human_size3(2_140_000), "2.14MB");
        assert_eq!(human_size3(187_000_000), "187MB");
        assert_eq!(human_size3(77_640_000), "77.6MB");
        assert_eq!(human_size3(4_261_550), "4.26MB");
        assert_eq!(human_size3(999_999), "1e+03kB");
        assert_eq!(human_size(16_430_000), "16.43MB");
        assert_eq!(human_size(212), "212B");
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(
            human_duration(Duration::milliseconds(500)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::seconds(1)), "1 second");
        assert_eq!(human_duration(Duration::seconds(59)), "59 seconds");
        assert_eq!(human_duration(Duration::seconds(90)), "About a minute");
        assert_eq!(human_duration(Duration::minutes(59)), "59 minutes");
        assert_eq!(human_duration(Duration::minutes(89)), "About an hour");
        assert_eq!(human_duration(Duration::hours(47)), "47 hours");
        assert_eq!(human_duration(Duration::days(3)), "3 days");
        assert_eq!(human_duration(Duration::days(20)), "2 weeks");
        assert_eq!(human_duration(Duration::days(90)), "3 months");
        assert_eq!(human_duration(Duration::days(800)), "2 years");
    }

    #[test]
    fn go_time_string() {
        let t = DateTime::from_timestamp(1709251200, 0).unwrap();
        assert_eq!(go_time(t), "2024-03-01 00:00:00 +0000 UTC");
    }
}
