//! Human-readable units: link rates, durations, byte sizes and percentages.
//!
//! Every parser is case-insensitive, tolerates surrounding whitespace and a
//! space between the number and the unit, and accepts decimal numbers as long
//! as the result is exact in the base unit (`"1.5ms"` is fine, `"1.5bit"` is
//! not). Decimal arithmetic is exact: no value goes through `f64` except
//! percentages.
//!
//! Every `format_*` function produces a string its parser accepts and maps
//! back to the same value, so they can be used for serialization.

use std::time::Duration;

/// A value that could not be parsed as the expected unit.
///
/// `Display` names the bad value and lists the accepted forms, e.g.
/// `bad rate "10mbits": use a number with bit, kbit, mbit or gbit (e.g. "10mbit")`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a rate in bits per second.
    #[error("bad rate \"{0}\": {hint}", hint = RATE_HINT)]
    Rate(String),
    /// Not a duration.
    #[error("bad duration \"{0}\": {hint}", hint = DURATION_HINT)]
    Duration(String),
    /// Not a byte size.
    #[error("bad size \"{0}\": {hint}", hint = BYTES_HINT)]
    Bytes(String),
    /// Not a percentage in 0..=100.
    #[error("bad percentage \"{0}\": {hint}", hint = PERCENT_HINT)]
    Percent(String),
}

const RATE_HINT: &str = "use a number with bit, kbit, mbit or gbit (e.g. \"10mbit\"), or a bare number of bits/s";
const DURATION_HINT: &str = "use a number with ns, us, ms or s (e.g. \"20ms\", \"1.5ms\"), or \"0\"";
const BYTES_HINT: &str = "use a number with KiB, MiB, GiB or TiB (e.g. \"256MiB\"; K, M, G, T \
                          are binary too), or a bare number of bytes";
const PERCENT_HINT: &str = "use a number from 0 to 100 followed by % (e.g. \"0.5%\")";

impl UnitError {
    /// What kind of value was expected: `"rate"`, `"duration"`, `"size"` or `"percentage"`.
    pub fn what(&self) -> &'static str {
        match self {
            UnitError::Rate(_) => "rate",
            UnitError::Duration(_) => "duration",
            UnitError::Bytes(_) => "size",
            UnitError::Percent(_) => "percentage",
        }
    }

    /// The offending input, as given.
    pub fn value(&self) -> &str {
        match self {
            UnitError::Rate(v) | UnitError::Duration(v) | UnitError::Bytes(v) | UnitError::Percent(v) => v,
        }
    }

    /// How to write the value correctly.
    pub fn hint(&self) -> &'static str {
        match self {
            UnitError::Rate(_) => RATE_HINT,
            UnitError::Duration(_) => DURATION_HINT,
            UnitError::Bytes(_) => BYTES_HINT,
            UnitError::Percent(_) => PERCENT_HINT,
        }
    }
}

/// Splits `"10 mbit"` into `("10", "mbit")`; the number is `digits[.digits]`.
fn split_number(s: &str) -> Option<(&str, String)> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, rest) = s.split_at(end);
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    let digits_ok = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int) || frac.is_some_and(|f| !digits_ok(f)) {
        return None;
    }
    Some((num, rest.trim().to_ascii_lowercase()))
}

/// `num * mult`, exactly, if the result is an integer that fits in a `u128`.
fn exact(num: &str, mult: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let frac = frac.trim_end_matches('0');
    if frac.len() > 30 {
        return None;
    }
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let int: u128 = int.parse().ok()?;
    let frac: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let scaled = int.checked_mul(scale)?.checked_add(frac)?.checked_mul(mult)?;
    (scaled % scale == 0).then_some(scaled / scale)
}

/// Parses a rate in bits per second.
///
/// Accepted: a bare number (bits/s), or a number followed by `bit`, `kbit`,
/// `mbit`, `gbit`, `tbit` (decimal multiples), the same with `bps` instead of
/// `bit` (here `bps` means *bits* per second, unlike `tc`), or a bare SI
/// prefix `k`, `m`, `g`, `t` (also bits). Case-insensitive.
pub fn parse_rate(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Rate(s.to_string());
    let (num, unit) = split_number(s).ok_or_else(err)?;
    let mult: u128 = match unit.as_str() {
        "" | "bit" | "bps" | "bit/s" => 1,
        "k" | "kbit" | "kbps" | "kbit/s" => 1_000,
        "m" | "mbit" | "mbps" | "mbit/s" => 1_000_000,
        "g" | "gbit" | "gbps" | "gbit/s" => 1_000_000_000,
        "t" | "tbit" | "tbps" | "tbit/s" => 1_000_000_000_000,
        _ => return Err(err()),
    };
    let v = exact(num, mult).ok_or_else(err)?;
    u64::try_from(v).map_err(|_| err())
}

/// Parses a duration: a number followed by `ns`, `us` (or `µs`), `ms` or `s`.
/// A bare number is only accepted when it is zero (`"0"`).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration(s.to_string());
    let (num, unit) = split_number(s).ok_or_else(err)?;
    let mult: u128 = match unit.as_str() {
        "" => 0,
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return Err(err()),
    };
    let nanos = if mult == 0 {
        // Only zero may go without a unit.
        if exact(num, 1).ok_or_else(err)? != 0 {
            return Err(err());
        }
        0
    } else {
        exact(num, mult).ok_or_else(err)?
    };
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| err())?;
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, sub))
}

/// Parses a byte size. Multiples are binary, like cgroups: `K`/`KiB` = 1024,
/// `M`/`MiB` = 1024², `G`/`GiB`, `T`/`TiB`; `B` or no unit means bytes.
/// `KB`/`MB`/`GB` are rejected as ambiguous.
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Bytes(s.to_string());
    let (num, unit) = split_number(s).ok_or_else(err)?;
    let mult: u128 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    let v = exact(num, mult).ok_or_else(err)?;
    u64::try_from(v).map_err(|_| err())
}

/// Parses a percentage such as `"0.5%"` into `0.5`. The `%` is required and
/// the value must be within 0..=100.
pub fn parse_percent(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError::Percent(s.to_string());
    let (num, unit) = split_number(s).ok_or_else(err)?;
    if unit != "%" {
        return Err(err());
    }
    let v: f64 = num.parse().map_err(|_| err())?;
    if !(0.0..=100.0).contains(&v) {
        return Err(err());
    }
    Ok(v)
}

/// Picks the largest unit that divides `v` exactly.
fn format_exact(v: u128, units: &[(u128, &str)], base: &str) -> String {
    if v != 0 {
        for &(mult, name) in units {
            if v.is_multiple_of(mult) {
                return format!("{}{name}", v / mult);
            }
        }
    }
    format!("{v}{base}")
}

/// Formats bits per second, e.g. `10_000_000` → `"10mbit"`, `1_500_000` → `"1500kbit"`.
pub fn format_rate(bps: u64) -> String {
    format_exact(
        u128::from(bps),
        &[
            (1_000_000_000_000, "tbit"),
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ],
        "bit",
    )
}

/// Formats a duration, e.g. `20ms` → `"20ms"`, `1.5ms` → `"1500us"`, zero → `"0"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0".to_string();
    }
    format_exact(
        d.as_nanos(),
        &[(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")],
        "ns",
    )
}

/// Formats a byte size with binary units, e.g. `268435456` → `"256MiB"`, `1000` → `"1000B"`.
pub fn format_bytes(b: u64) -> String {
    format_exact(
        u128::from(b),
        &[(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")],
        "B",
    )
}

/// Formats a percentage, e.g. `0.5` → `"0.5%"`.
pub fn format_percent(p: f64) -> String {
    format!("{p}%")
}

/// `#[serde(with = "crate::units::duration")]` for `Duration`: a human string (`"1s"`) both
/// ways, through [`format_duration`] and [`parse_duration`].
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes as [`super::format_duration`]`(d)`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Deserializes what [`super::parse_duration`] accepts.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::units::opt_bytes")]` for an `Option<u64>` of bytes: `"256MiB"` (or a
/// bare number of bytes) both ways, through [`format_bytes`] and [`parse_bytes`].
pub mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some(b)` as [`super::format_bytes`]`(b)`.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&super::format_bytes(*b)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes `null`, a size string or a number of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        Option::<Raw>::deserialize(d)?
            .map(|r| match r {
                Raw::Text(s) => super::parse_bytes(&s).map_err(serde::de::Error::custom),
                Raw::Number(n) => Ok(n),
            })
            .transpose()
    }
}

/// `#[serde(with = "crate::units::opt_duration")]` for `Option<Duration>`:
/// serializes as a human string (`"20ms"`) or `null`, and deserializes what
/// [`parse_duration`] accepts.
pub mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes `Some(d)` as [`super::format_duration`]`(d)`.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes `null` or a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("10Mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("10mbps"), Ok(10_000_000));
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_rate("10M"), Ok(10_000_000));
        assert_eq!(parse_rate(" 1.5 mbit "), Ok(1_500_000));
        assert_eq!(parse_rate("0"), Ok(0));
        for bad in [
            "",
            "mbit",
            "10mbits",
            "1.5bit",
            "-1mbit",
            "1..5mbit",
            "1e6",
            "99999999tbit",
        ] {
            assert_eq!(parse_rate(bad), Err(UnitError::Rate(bad.into())), "{bad}");
        }
        assert_eq!(
            UnitError::Rate("10mbits".into()).to_string(),
            "bad rate \"10mbits\": use a number with bit, kbit, mbit or gbit (e.g. \"10mbit\"), \
             or a bare number of bits/s"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        for bad in ["", "20", "ms", "20m", "1.5ns", "20 msec", "-1ms"] {
            assert_eq!(parse_duration(bad), Err(UnitError::Duration(bad.into())), "{bad}");
        }
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
        assert_eq!(parse_bytes("1.5GiB"), Ok(1536 << 20));
        assert_eq!(parse_bytes("100B"), Ok(100));
        for bad in ["", "512MB", "1.5", "lots", "99999999TiB"] {
            assert_eq!(parse_bytes(bad), Err(UnitError::Bytes(bad.into())), "{bad}");
        }
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert_eq!(parse_percent("1%"), Ok(1.0));
        assert_eq!(parse_percent("100%"), Ok(100.0));
        assert_eq!(parse_percent("0 %"), Ok(0.0));
        for bad in ["", "0.5", "101%", "-1%", "nan%", "%"] {
            assert_eq!(parse_percent(bad), Err(UnitError::Percent(bad.into())), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_rate(10_000_000), "10mbit");
        assert_eq!(format_rate(1_500_000), "1500kbit");
        assert_eq!(format_rate(0), "0bit");
        assert_eq!(format_rate(1234), "1234bit");
        assert_eq!(format_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(format_duration(Duration::ZERO), "0");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_bytes(256 << 20), "256MiB");
        assert_eq!(format_bytes(1000), "1000B");
        assert_eq!(format_percent(0.5), "0.5%");
        for v in [0, 1, 999, 1000, 1_500_000, 10_000_000_000, u64::MAX] {
            assert_eq!(parse_rate(&format_rate(v)), Ok(v));
            assert_eq!(parse_bytes(&format_bytes(v)), Ok(v));
        }
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::new(3, 5),
            Duration::from_secs(86_400),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        for p in [0.0, 0.5, 1.0, 12.345, 100.0] {
            assert_eq!(parse_percent(&format_percent(p)), Ok(p));
        }
    }

    #[test]
    fn error_accessors() {
        let e = parse_bytes("lots").unwrap_err();
        assert_eq!(e.what(), "size");
        assert_eq!(e.value(), "lots");
        assert!(e.hint().contains("MiB"));
    }
}
