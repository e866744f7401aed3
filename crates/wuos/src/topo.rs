//! Topology arguments: a TOML file or a generator (`grid:3x3`), and the lab name they default to.

use std::fmt;
use std::path::Path;

use wuos_model::generate::{Generator, generate, looks_like_generator};
use wuos_model::{Topology, file};

/// Invalid input from the user; maps to exit code 3.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Loads a topology from a file or a generator spec.
pub fn load(arg: &str, seed: u64) -> Result<Topology, BadInput> {
    if looks_like_generator(arg) && !Path::new(arg).exists() {
        let g: Generator = arg.parse().map_err(|e| BadInput(format!("{e}")))?;
        Ok(generate(&g, seed))
    } else {
        file::load(Path::new(arg)).map_err(|e| BadInput(e.to_string()))
    }
}

/// The lab name for a topology: `--name`, else its own name made valid, else `lab`.
pub fn lab_name(explicit: Option<&str>, t: &Topology) -> String {
    if let Some(n) = explicit {
        return n.to_string();
    }
    let raw = t.name.clone().unwrap_or_else(|| "lab".into()).to_lowercase();
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s = s.trim_start_matches('-').chars().take(16).collect();
    if s.is_empty() { "lab".into() } else { s }
}

/// Something named that does not exist (a service, a domain); maps to exit code 4.
#[derive(Debug)]
pub struct NotFound(pub String);

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFound {}

impl wuos_model::Classify for BadInput {
    fn class(&self) -> wuos_model::ErrorClass {
        wuos_model::ErrorClass::BadInput
    }
}

impl wuos_model::Classify for NotFound {
    fn class(&self) -> wuos_model::ErrorClass {
        wuos_model::ErrorClass::NotFound
    }
}
