//! Docker's size arguments (go-units), one owner: `RAMInBytes` (binary: `-m 512m`,
//! `--shm-size 64MiB`) and `FromHumanSize` (decimal: `--log-opt max-size=10m`). One grammar —
//! a number, an optional space, an optional unit `k m g t p` (any case), optional `i`, optional
//! `b` — with two bases.

/// go-units `RAMInBytes`: `1k` is 1,024 bytes.
pub fn ram_in_bytes(s: &str) -> Option<u64> {
    parse(s, 1024.0)
}

/// go-units `FromHumanSize`: `1k` is 1,000 bytes.
pub fn from_human_size(s: &str) -> Option<u64> {
    parse(s, 1000.0)
}

fn parse(s: &str, base: f64) -> Option<u64> {
    let s = s.trim();
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    n.is_finite().then(|| (n * base.powi(power)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bases() {
        assert_eq!(ram_in_bytes("512m"), Some(512 << 20));
        assert_eq!(ram_in_bytes("1g"), Some(1 << 30));
        assert_eq!(ram_in_bytes("128MiB"), Some(128 << 20));
        assert_eq!(ram_in_bytes("1.5k"), Some(1536));
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(from_human_size("1.5k"), Some(1500));
        assert_eq!(from_human_size("20MB"), Some(20_000_000));
        assert_eq!(from_human_size("5 GiB"), Some(5_000_000_000));
        for bad in ["lots", "1x", "", "-1m", "m"] {
            assert_eq!(ram_in_bytes(bad), None, "{bad}");
            assert_eq!(from_human_size(bad), None, "{bad}");
        }
    }
}
