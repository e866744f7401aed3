//! Regions: whether routers choose one, as the daemon's sampler does
//! (`crates/wuosd/src/sampler.rs`).
//!
//! With [`Regions::Nearest`] (the default, as regions are on by default in the daemon), at each
//! of its own samples a router chooses its region with the daemon's own function,
//! [`wuos_orchestrator::region::choose`], over its instance's neighborhood: a data-centre router
//! is in none, an orchestrator's router is its own region, any other router joins the nearest
//! fresh orchestrator of its view (fewest hops, then the smallest id), or none. Its controller is
//! told first (`wuos_controller::Input::Region`), then its advert names the region; the
//! orchestrators run with `Config::region` and work inside their region.
//!
//! With [`Regions::None`], as a network without regions: no router names a region, controllers
//! are never told one (any orchestrator writes anything, the newest rule wins), orchestrators run
//! with `Config::region` off and route their whole view. Kept to compare: the simulator counts
//! what orchestrators do to each other either way (conflicts, refusals, the conflict check).

use std::fmt;
use std::str::FromStr;

use wuos_controller::Region;
use wuos_model::{Role, RouterId};
use wuos_proto::Instance;

/// Whether routers choose a region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Regions {
    /// No router names a region: what a network without regions says.
    None,
    /// Each router joins its nearest orchestrator (`wuos_orchestrator::region::choose`).
    #[default]
    Nearest,
}

/// A regions spec that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad regions {spec:?}: use none or nearest")]
pub struct RegionsError {
    /// As given.
    pub spec: String,
}

impl FromStr for Regions {
    type Err = RegionsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Regions::None),
            "nearest" => Ok(Regions::Nearest),
            _ => Err(RegionsError { spec: s.into() }),
        }
    }
}

impl fmt::Display for Regions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Regions::None => "none",
            Regions::Nearest => "nearest",
        })
    }
}

impl Regions {
    /// Whether orchestrators work inside their region (`wuos_orchestrator::Config::region`).
    pub fn on(self) -> bool {
        self == Regions::Nearest
    }

    /// The region router `me` (with `role`; `runs_orchestrator`) tells its controller at a
    /// sample, from its instance's neighborhood now; `None` without regions (nothing told).
    pub fn choose(
        self,
        me: &RouterId,
        role: Role,
        runs_orchestrator: bool,
        inst: &Instance,
        now_ms: u64,
        now_unix_ns: i64,
    ) -> Option<Region> {
        match self {
            Regions::None => None,
            Regions::Nearest => {
                let n = inst.neighborhood(now_ms, now_unix_ns);
                Some(Region::from_choice(wuos_orchestrator::region::choose(
                    me,
                    role,
                    runs_orchestrator,
                    &n,
                )))
            }
        }
    }
}

/// What a router's advert names as its region: the orchestrator's router, or "" for none.
pub fn advertised(region: Option<&Region>) -> String {
    match region {
        Some(Region::Of(o)) => o.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!("nearest".parse(), Ok(Regions::Nearest));
        assert_eq!(Regions::default(), Regions::Nearest, "as the daemon: regions on");
        assert_eq!(Regions::None.to_string(), "none");
        assert_eq!(
            "closest".parse::<Regions>().unwrap_err().to_string(),
            "bad regions \"closest\": use none or nearest"
        );
        assert_eq!(advertised(Some(&Region::Shared)), "");
        assert_eq!(advertised(Some(&Region::Of(RouterId::new("foga").unwrap()))), "foga");
    }
}
