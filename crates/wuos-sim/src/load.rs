//! Load traces: each router's CPU and memory use over time, as its samples report them.
//!
//! A [`LoadModel`] says how every router's load moves; an event (`set_load`) pins one router's
//! figures from then on. Each router draws from its own generator (seeded from the run's seed
//! and its index), so a router's trace does not depend on what the others do.

use std::fmt;
use std::str::FromStr;

use wuos_model::rng::SplitMix64;

/// How routers' CPU and memory use move.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadModel {
    /// The same figures at every router, always.
    Constant {
        /// CPU busy, percent.
        cpu_pct: f64,
        /// Memory used, percent.
        mem_pct: f64,
    },
    /// A random walk per router: starts uniform in 5–60% (CPU) and 10–60% (memory), then moves
    /// by up to `step_pct` either way at every sample, reflected into 0–100%.
    Walk {
        /// Largest move per sample, percentage points.
        step_pct: f64,
    },
}

impl Default for LoadModel {
    fn default() -> Self {
        LoadModel::Constant {
            cpu_pct: 20.0,
            mem_pct: 20.0,
        }
    }
}

/// A load model spec that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad load model {spec:?}: use constant:CPU:MEM (percent, e.g. constant:20:35), walk or walk:STEP (e.g. walk:5)"
)]
pub struct LoadModelError {
    /// As given.
    pub spec: String,
}

impl FromStr for LoadModel {
    type Err = LoadModelError;

    /// `constant:CPU:MEM`, `walk`, `walk:STEP`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = || LoadModelError { spec: spec.into() };
        let pct = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| (0.0..=100.0).contains(v))
                .ok_or_else(bad)
        };
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.as_slice() {
            ["constant", cpu, mem] => Ok(LoadModel::Constant {
                cpu_pct: pct(cpu)?,
                mem_pct: pct(mem)?,
            }),
            ["walk"] => Ok(LoadModel::Walk { step_pct: 2.0 }),
            ["walk", step] => Ok(LoadModel::Walk { step_pct: pct(step)? }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for LoadModel {
    /// The spec form, which [`LoadModel::from_str`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadModel::Constant { cpu_pct, mem_pct } => write!(f, "constant:{cpu_pct}:{mem_pct}"),
            LoadModel::Walk { step_pct } => write!(f, "walk:{step_pct}"),
        }
    }
}

/// One router's load: where its trace is, and whether an event pinned it.
#[derive(Clone, Debug)]
pub struct Load {
    cpu_pct: f64,
    mem_pct: f64,
    pinned: bool,
    rng: SplitMix64,
}

impl Load {
    /// Router `index`'s trace under `model`, from the run's `seed`.
    pub fn new(model: LoadModel, seed: u64, index: usize) -> Self {
        let mut rng = SplitMix64::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x4c4f_4144);
        let (cpu_pct, mem_pct) = match model {
            LoadModel::Constant { cpu_pct, mem_pct } => (cpu_pct, mem_pct),
            LoadModel::Walk { .. } => (5.0 + 55.0 * rng.next_f64(), 10.0 + 50.0 * rng.next_f64()),
        };
        Load {
            cpu_pct,
            mem_pct,
            pinned: false,
            rng,
        }
    }

    /// The figures of the next sample: (CPU %, memory %).
    pub fn next(&mut self, model: LoadModel) -> (f64, f64) {
        if let (LoadModel::Walk { step_pct }, false) = (model, self.pinned) {
            let step = |v: f64, rng: &mut SplitMix64| {
                let moved = v + step_pct * (2.0 * rng.next_f64() - 1.0);
                // Reflected at the bounds.
                let reflected = if moved < 0.0 {
                    -moved
                } else if moved > 100.0 {
                    200.0 - moved
                } else {
                    moved
                };
                // Two decimals: what a sample reports.
                (reflected.clamp(0.0, 100.0) * 100.0).round() / 100.0
            };
            self.cpu_pct = step(self.cpu_pct, &mut self.rng);
            self.mem_pct = step(self.mem_pct, &mut self.rng);
        }
        (self.cpu_pct, self.mem_pct)
    }

    /// Pins the figures given (the others keep their value) from now on.
    pub fn pin(&mut self, cpu_pct: Option<f64>, mem_pct: Option<f64>) {
        self.pinned = true;
        self.cpu_pct = cpu_pct.unwrap_or(self.cpu_pct);
        self.mem_pct = mem_pct.unwrap_or(self.mem_pct);
    }

    /// The latest figures: (CPU %, memory %).
    pub fn now(&self) -> (f64, f64) {
        (self.cpu_pct, self.mem_pct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for spec in ["constant:20:35", "walk:5", "constant:0:100"] {
            let m: LoadModel = spec.parse().unwrap();
            assert_eq!(m.to_string(), spec);
        }
        assert_eq!("walk".parse(), Ok(LoadModel::Walk { step_pct: 2.0 }));
        let e = "constant:20".parse::<LoadModel>().unwrap_err().to_string();
        assert!(
            e.starts_with("bad load model \"constant:20\": use constant:CPU:MEM"),
            "{e}"
        );
        assert!("constant:101:5".parse::<LoadModel>().is_err());
        assert!("walk:x".parse::<LoadModel>().is_err());
    }

    #[test]
    fn a_walk_stays_in_range_is_seeded_per_router_and_can_be_pinned() {
        let m = LoadModel::Walk { step_pct: 30.0 };
        let trace = |seed, index| {
            let mut l = Load::new(m, seed, index);
            (0..200).map(|_| l.next(m)).collect::<Vec<_>>()
        };
        let a = trace(1, 3);
        assert_eq!(a, trace(1, 3), "same seed and router, same trace");
        assert_ne!(a, trace(1, 4));
        assert_ne!(a, trace(2, 3));
        assert!(
            a.iter()
                .all(|(c, m)| (0.0..=100.0).contains(c) && (0.0..=100.0).contains(m))
        );
        let mut l = Load::new(m, 1, 3);
        l.pin(Some(90.0), None);
        let (_, mem) = l.now();
        assert_eq!(l.next(m), (90.0, mem), "pinned: no longer walks");
        let mut c = Load::new(LoadModel::default(), 1, 0);
        assert_eq!(c.next(LoadModel::default()), (20.0, 20.0));
    }
}
