//! Pressure stall information (PSI): the share of recent time tasks waited for a resource.
//!
//! Read from the cgroup's own `cpu.pressure`, `memory.pressure` and `io.pressure` on cgroup v2;
//! otherwise from the host-wide `/proc/pressure/{cpu,memory,io}`, flagged
//! [`Pressure::host_scope`]. A missing file (kernel without PSI, v1 cgroups) gives `None`.

use std::path::Path;

use super::source::Reader;
use super::{MonitorError, Pressure, parse_err};

/// Parses a PSI file:
///
/// ```text
/// some avg10=0.65 avg60=2.44 avg300=5.27 total=172524026
/// full avg10=0.00 avg60=0.00 avg300=0.00 total=0
/// ```
///
/// The `full` line is absent from `cpu` files of kernels before 5.13: `full_avg10` is then 0.
pub fn parse_pressure(text: &str, host_scope: bool) -> Result<Pressure, &'static str> {
    let mut some = None;
    let mut full = 0.0;
    for line in text.lines() {
        let (kind, fields) = line.split_once(' ').unwrap_or((line, ""));
        let slot = match kind {
            "some" => some.insert(0.0),
            "full" => &mut full,
            _ => continue,
        };
        let avg10 = fields
            .split_ascii_whitespace()
            .find_map(|f| f.strip_prefix("avg10="))
            .ok_or("a line has no avg10 field")?;
        *slot = avg10.parse().map_err(|_| "an avg10 field is not a number")?;
    }
    let some_avg10 = some.ok_or("there is no \"some\" line")?;
    Ok(Pressure {
        some_avg10,
        full_avg10: full,
        host_scope,
    })
}

/// Reads and parses the PSI file at `path`; `None` when there is no path or no file.
pub(crate) fn read(
    reader: &mut Reader,
    path: Option<&Path>,
    host_scope: bool,
) -> Result<Option<Pressure>, MonitorError> {
    let Some(path) = path else { return Ok(None) };
    match reader.read_optional(path)? {
        None => Ok(None),
        Some(text) => parse_pressure(text, host_scope)
            .map(Some)
            .map_err(|r| parse_err(path, r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full() {
        let text = "some avg10=0.34 avg60=0.11 avg300=0.16 total=10662915\n\
                    full avg10=0.29 avg60=0.08 avg300=0.12 total=9169998\n";
        assert_eq!(
            parse_pressure(text, false),
            Ok(Pressure {
                some_avg10: 0.34,
                full_avg10: 0.29,
                host_scope: false
            })
        );
    }

    #[test]
    fn cpu_of_older_kernels_has_no_full_line() {
        let p = parse_pressure("some avg10=12.50 avg60=3.00 avg300=1.00 total=42\n", true).unwrap();
        assert_eq!(
            p,
            Pressure {
                some_avg10: 12.5,
                full_avg10: 0.0,
                host_scope: true
            }
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(parse_pressure("", false), Err("there is no \"some\" line"));
        assert_eq!(
            parse_pressure("some total=1\n", false),
            Err("a line has no avg10 field")
        );
        assert_eq!(
            parse_pressure("some avg10=x\n", false),
            Err("an avg10 field is not a number")
        );
    }
}
