//! What every benchmark prints beside its table and writes into its JSON: how each headline
//! figure is measured ([`Clock`]: where the clock starts and stops, what it excludes, the
//! instrument's resolution), and the JSON file itself.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use wuos_lab::LabEnv;

use crate::host::Machine;

/// How a figure is measured. Printed under the table and written in the JSON beside the figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Clock {
    /// The figure's name as the table shows it.
    pub figure: String,
    /// The event that starts the clock.
    pub starts: String,
    /// The event that stops it.
    pub stops: String,
    /// What the interval does not contain.
    pub excludes: String,
    /// The instrument and its resolution; figures are not quoted finer than this.
    pub resolution: String,
}

impl Clock {
    pub fn new(figure: &str, starts: &str, stops: &str, excludes: &str, resolution: &str) -> Self {
        Self {
            figure: figure.into(),
            starts: starts.into(),
            stops: stops.into(),
            excludes: excludes.into(),
            resolution: resolution.into(),
        }
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  {}:", self.figure)?;
        writeln!(f, "    starts:     {}", self.starts)?;
        writeln!(f, "    stops:      {}", self.stops)?;
        writeln!(f, "    excludes:   {}", self.excludes)?;
        writeln!(f, "    resolution: {}", self.resolution)
    }
}

/// Prints the "how measured" block of `clocks`.
pub fn print_clocks(clocks: &[Clock]) {
    println!("how each figure is measured:");
    for c in clocks {
        print!("{c}");
    }
}

/// The start of every benchmark: `runs` checked, the host's lab paths, and the machine as it is
/// now (load included).
pub fn begin(runs: usize) -> Result<(LabEnv, Machine)> {
    if runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    let env = LabEnv::system();
    let machine = Machine::read(&env.proc_root);
    Ok((env, machine))
}

/// Writes `report` as pretty JSON to `path`, creating its directory; prints where.
pub fn write_json(path: &Path, report: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report).context("the report does not serialise")?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_says_start_stop_exclusions_and_resolution() {
        let c = Clock::new(
            "up",
            "before up()",
            "every Status answered",
            "the kernel's freeing",
            "1 µs",
        );
        let s = c.to_string();
        for part in [
            "  up:",
            "starts:     before up()",
            "stops:      every Status answered",
            "excludes:   the kernel's freeing",
            "resolution: 1 µs",
        ] {
            assert!(s.contains(part), "{part:?} in {s}");
        }
    }

    #[test]
    fn json_goes_where_it_is_asked_with_its_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/dir/x.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["a"], 1);
    }
}
