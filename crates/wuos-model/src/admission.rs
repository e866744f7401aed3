//! Routing protection and admission control.
//!
//! The routing domain reserves CPU cores and memory ([`Reservation`]); service
//! and control domains share what is left ([`Admission::service_cores`] is the
//! cpuset and [`Admission::service_memory`] the memory limit of their parent
//! cgroup). [`Admission::admit`] refuses a domain that does not fit and says
//! which resource is short and by how much.
//!
//! Accounting (in `docs/domains.md`):
//!
//! - memory: a service's `memory` limit is charged in full; a service without a
//!   limit is refused, since it could take the whole budget;
//! - CPU: `cpus = q` is charged `q` cores, a cpuset of `n` cores `n` cores;
//!   `share` and no CPU spec are best effort and charged nothing. The service
//!   capacity is the number of service cores, or the router's capacity minus
//!   the reserved cores if that is smaller. CPU is counted in thousandths of a
//!   core, so sums are exact;
//! - the routing domain (at most one) is checked against the reservation, not
//!   the service budget.

use std::collections::BTreeMap;
use std::fmt;

use crate::domain::{CpuSpec, DomainError, DomainKind, DomainSpec, format_cpuset};
use crate::topology::MIN_MEMORY;
use crate::units::format_bytes;

/// What a router has.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBudget {
    /// Router capacity in cores (its CPU quota in the lab; the number of
    /// online cores on a real router), at most `cpu_ids.len()`.
    pub cpus: f64,
    /// Online cores.
    pub cpu_ids: Vec<u32>,
    /// Memory in bytes.
    pub memory: u64,
}

/// What the routing domain keeps for itself (router configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    /// Cores reserved for the routing domain; at least one.
    pub routing_cores: Vec<u32>,
    /// Memory reserved for the routing domain, at least 16 MiB.
    pub routing_memory: u64,
    /// Memory reserved for the control domain (wuosd: controller, monitor, orchestrator), at
    /// least 16 MiB when set; 0: none. Never available to services.
    pub control_memory: u64,
}

/// What an admitted domain is charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Charge {
    routing: bool,
    millicores: u64,
    memory: u64,
}

/// The admitted domains of one router and what is left.
#[derive(Clone, Debug)]
pub struct Admission {
    budget: HostBudget,
    reservation: Reservation,
    service_cores: Vec<u32>,
    /// Service CPU capacity in thousandths of a core.
    service_capacity: u64,
    service_memory: u64,
    admitted: BTreeMap<String, Charge>,
}

/// Thousandths of a core, rounded.
fn millicores(cores: f64) -> u64 {
    (cores * 1000.0).round().max(0.0) as u64
}

/// `1500` → `1.5`, `1000` → `1`.
fn fmt_cores(m: u64) -> String {
    let s = format!("{}.{:03}", m / 1000, m % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `1500` → `1.5 cores`, `1000` → `1 core`.
fn cores_noun(m: u64) -> String {
    format!("{} {}", fmt_cores(m), if m == 1000 { "core" } else { "cores" })
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX).saturating_mul(1000)
}

impl Admission {
    /// Checks the budget and the reservation and sets the rest aside for
    /// services. A reservation of every core is allowed (a router without
    /// services: every service is then refused, saying why), but one that
    /// leaves service cores without CPU time is not. An empty reservation
    /// (no cores, no memory) is allowed too: routing then shares the router
    /// with its services, unprotected — a lab router with a fraction of a core.
    pub fn new(budget: HostBudget, reservation: Reservation) -> Result<Self, AdmissionError> {
        use AdmissionError as E;
        if budget.cpu_ids.is_empty() {
            return Err(E::NoCores);
        }
        for (i, c) in budget.cpu_ids.iter().enumerate() {
            if budget.cpu_ids[..i].contains(c) {
                return Err(E::DuplicateCore { core: *c });
            }
        }
        let online = count(budget.cpu_ids.len());
        if !budget.cpus.is_finite() || millicores(budget.cpus) < 10 || millicores(budget.cpus) > online {
            return Err(E::BadCapacity {
                cpus: budget.cpus,
                online: budget.cpu_ids.len(),
            });
        }
        if budget.memory == 0 {
            return Err(E::NoMemory);
        }
        for (i, c) in reservation.routing_cores.iter().enumerate() {
            if !budget.cpu_ids.contains(c) {
                return Err(E::ReservedCoreOffline {
                    core: *c,
                    online: format_cpuset(&budget.cpu_ids),
                });
            }
            if reservation.routing_cores[..i].contains(c) {
                return Err(E::DuplicateReservedCore { core: *c });
            }
        }
        if reservation.routing_memory != 0 && reservation.routing_memory < MIN_MEMORY {
            return Err(E::RoutingMemoryTooSmall {
                bytes: reservation.routing_memory,
            });
        }
        if reservation.control_memory != 0 && reservation.control_memory < MIN_MEMORY {
            return Err(E::ControlMemoryTooSmall {
                bytes: reservation.control_memory,
            });
        }
        if reservation.routing_memory > budget.memory {
            return Err(E::RoutingMemoryTooLarge {
                asks: reservation.routing_memory,
                total: budget.memory,
            });
        }
        let reserved_memory = reservation.routing_memory.saturating_add(reservation.control_memory);
        if reserved_memory > budget.memory {
            return Err(E::ReservationsTooLarge {
                routing: reservation.routing_memory,
                control: reservation.control_memory,
                total: budget.memory,
            });
        }
        let mut service_cores: Vec<u32> = budget
            .cpu_ids
            .iter()
            .copied()
            .filter(|c| !reservation.routing_cores.contains(c))
            .collect();
        service_cores.sort_unstable();
        let reserved = count(reservation.routing_cores.len());
        let service_capacity = count(service_cores.len()).min(millicores(budget.cpus).saturating_sub(reserved));
        if !service_cores.is_empty() && service_capacity == 0 {
            return Err(E::NoServiceCpuTime {
                cores: format_cpuset(&service_cores),
                cpus: budget.cpus,
                reserved: reservation.routing_cores.len(),
            });
        }
        let service_memory = budget.memory - reserved_memory;
        Ok(Admission {
            budget,
            reservation,
            service_cores,
            service_capacity,
            service_memory,
            admitted: BTreeMap::new(),
        })
    }

    /// The cpuset left for service and control domains (sorted; empty when
    /// the routing domain reserves every core).
    pub fn service_cores(&self) -> &[u32] {
        &self.service_cores
    }

    /// The memory budget of the services' parent cgroup, in bytes.
    pub fn service_memory(&self) -> u64 {
        self.service_memory
    }

    /// The CPU capacity of the services' parent cgroup, in cores (its quota).
    pub fn service_cpus(&self) -> f64 {
        self.service_capacity as f64 / 1000.0
    }

    /// The budget it was built from.
    pub fn budget(&self) -> &HostBudget {
        &self.budget
    }

    /// The routing reservation it was built from.
    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    /// Names of the admitted domains, sorted.
    pub fn admitted(&self) -> impl Iterator<Item = &str> {
        self.admitted.keys().map(String::as_str)
    }

    fn used(&self, routing: bool) -> (u64, u64) {
        self.admitted
            .values()
            .filter(|c| c.routing == routing)
            .fold((0, 0), |(m, b), c| (m + c.millicores, b + c.memory))
    }

    /// Admits `spec` if it is valid and fits, and charges it; otherwise
    /// changes nothing and says why. After a daemon restart, admitting every
    /// persisted domain again (in any order) rebuilds the same accounting.
    pub fn admit(&mut self, spec: &DomainSpec) -> Result<(), AdmissionError> {
        use AdmissionError as E;
        spec.validate().map_err(E::Invalid)?;
        let name = spec.name.clone();
        if self.admitted.contains_key(&name) {
            return Err(E::AlreadyAdmitted { name });
        }
        let charge = if spec.kind == DomainKind::Routing {
            self.routing_charge(spec)?
        } else {
            self.service_charge(spec)?
        };
        self.admitted.insert(name, charge);
        Ok(())
    }

    fn routing_charge(&self, spec: &DomainSpec) -> Result<Charge, AdmissionError> {
        use AdmissionError as E;
        let name = || spec.name.clone();
        if let Some((by, _)) = self.admitted.iter().find(|(_, c)| c.routing) {
            return Err(E::RoutingTaken {
                name: name(),
                by: by.clone(),
            });
        }
        let reserved = &self.reservation.routing_cores;
        let total_cpu = count(reserved.len());
        let asks_cpu = match &spec.cpu {
            Some(CpuSpec::Cores(cores)) => {
                if let Some(core) = cores.iter().find(|c| !reserved.contains(c)) {
                    return Err(E::RoutingCoreOutside {
                        name: name(),
                        core: *core,
                        reserved: format_cpuset(reserved),
                    });
                }
                count(cores.len())
            }
            Some(CpuSpec::Quota(q)) => millicores(*q),
            Some(CpuSpec::Share(_)) | None => 0,
        };
        let total_mem = self.reservation.routing_memory;
        let asks_mem = spec.memory.unwrap_or(total_mem);
        let mut short = Vec::new();
        if asks_mem > total_mem {
            short.push(Shortage::memory(Pool::Routing, asks_mem, total_mem, total_mem));
        }
        if asks_cpu > total_cpu {
            short.push(Shortage::cpu(Pool::Routing, asks_cpu, total_cpu, total_cpu));
        }
        if !short.is_empty() {
            return Err(E::Short { name: name(), short });
        }
        Ok(Charge {
            routing: true,
            millicores: asks_cpu,
            memory: asks_mem,
        })
    }

    fn service_charge(&self, spec: &DomainSpec) -> Result<Charge, AdmissionError> {
        use AdmissionError as E;
        let name = || spec.name.clone();
        if self.service_cores.is_empty() {
            return Err(E::NoServiceCores {
                name: name(),
                reserved: format_cpuset(&self.reservation.routing_cores),
            });
        }
        let asks_cpu = match &spec.cpu {
            Some(CpuSpec::Cores(cores)) => {
                for core in cores {
                    if self.reservation.routing_cores.contains(core) {
                        return Err(E::ReservedCore {
                            name: name(),
                            core: *core,
                            service_cores: format_cpuset(&self.service_cores),
                        });
                    }
                    if !self.service_cores.contains(core) {
                        return Err(E::OfflineCore {
                            name: name(),
                            core: *core,
                            online: format_cpuset(&self.budget.cpu_ids),
                        });
                    }
                }
                count(cores.len())
            }
            Some(CpuSpec::Quota(q)) => millicores(*q),
            Some(CpuSpec::Share(_)) | None => 0,
        };
        let Some(asks_mem) = spec.memory else {
            return Err(E::NoMemoryLimit {
                name: name(),
                budget: self.service_memory,
            });
        };
        let (used_cpu, used_mem) = self.used(false);
        let left_mem = self.service_memory.saturating_sub(used_mem);
        let left_cpu = self.service_capacity.saturating_sub(used_cpu);
        let mut short = Vec::new();
        if asks_mem > left_mem {
            short.push(Shortage::memory(
                Pool::Services,
                asks_mem,
                left_mem,
                self.service_memory,
            ));
        }
        if asks_cpu > left_cpu {
            short.push(Shortage::cpu(Pool::Services, asks_cpu, left_cpu, self.service_capacity));
        }
        if !short.is_empty() {
            return Err(E::Short { name: name(), short });
        }
        Ok(Charge {
            routing: false,
            millicores: asks_cpu,
            memory: asks_mem,
        })
    }

    /// Returns what `name` was charged; unknown names are ignored.
    pub fn release(&mut self, name: &str) {
        self.admitted.remove(name);
    }

    /// What is left for services: (cores, bytes).
    pub fn free(&self) -> (f64, u64) {
        let (cpu, mem) = self.used(false);
        (
            self.service_capacity.saturating_sub(cpu) as f64 / 1000.0,
            self.service_memory.saturating_sub(mem),
        )
    }
}

/// Which budget a shortage is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// What the routing domain leaves for service and control domains.
    Services,
    /// The routing reservation.
    Routing,
}

/// Which resource is short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Memory, in bytes.
    Memory,
    /// CPU, in thousandths of a core.
    Cpu,
}

/// One resource a domain asks more of than is left:
/// `memory short by 96MiB (asks 256MiB, 160MiB of 512MiB left for services)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortage {
    /// The resource.
    pub resource: Resource,
    /// The budget.
    pub pool: Pool,
    /// What the domain asks.
    pub asks: u64,
    /// What is left of the budget.
    pub left: u64,
    /// The whole budget.
    pub total: u64,
}

impl Shortage {
    fn memory(pool: Pool, asks: u64, left: u64, total: u64) -> Self {
        Shortage {
            resource: Resource::Memory,
            pool,
            asks,
            left,
            total,
        }
    }

    fn cpu(pool: Pool, asks: u64, left: u64, total: u64) -> Self {
        Shortage {
            resource: Resource::Cpu,
            ..Shortage::memory(pool, asks, left, total)
        }
    }

    /// How much is missing (bytes, or thousandths of a core).
    pub fn short_by(&self) -> u64 {
        self.asks.saturating_sub(self.left)
    }
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = match self.pool {
            Pool::Services => "left for services",
            Pool::Routing => "in the routing reservation",
        };
        match self.resource {
            Resource::Memory => write!(
                f,
                "memory short by {} (asks {}, {} of {} {pool})",
                format_bytes(self.short_by()),
                format_bytes(self.asks),
                format_bytes(self.left),
                format_bytes(self.total)
            ),
            Resource::Cpu => write!(
                f,
                "CPU short by {} (asks {}, {} of {} {pool})",
                cores_noun(self.short_by()),
                cores_noun(self.asks),
                fmt_cores(self.left),
                cores_noun(self.total)
            ),
        }
    }
}

fn join(short: &[Shortage]) -> String {
    short.iter().map(Shortage::to_string).collect::<Vec<_>>().join(" and ")
}

/// A budget or reservation that does not make sense, or a domain that is
/// refused. `Display` is one sentence, with a fix where there is one.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// `cpu_ids` is empty.
    #[error("the router has no online cores; fix: list its cores in cpu_ids")]
    NoCores,
    /// A core listed twice in `cpu_ids`.
    #[error("core {core} is listed twice among the online cores; fix: list each core once")]
    DuplicateCore {
        /// The core.
        core: u32,
    },
    /// `cpus` not in 0.01..=online cores.
    #[error("router capacity {cpus} cores is not a number from 0.01 to the {online} online cores; fix: correct it")]
    BadCapacity {
        /// The value given.
        cpus: f64,
        /// Online cores.
        online: usize,
    },
    /// `memory` is 0.
    #[error("the router has no memory; fix: give its memory in bytes")]
    NoMemory,
    /// A reserved core that is not online.
    #[error("reserved core {core} is not online (online: {online}); fix: reserve online cores")]
    ReservedCoreOffline {
        /// The core.
        core: u32,
        /// The online cores, as a cpuset list.
        online: String,
    },
    /// A reserved core listed twice.
    #[error("reserved core {core} is listed twice; fix: list each core once")]
    DuplicateReservedCore {
        /// The core.
        core: u32,
    },
    /// Routing memory below the minimum.
    #[error("the routing reservation of {} memory is below the 16MiB minimum; fix: reserve at least \"16MiB\"", format_bytes(*bytes))]
    RoutingMemoryTooSmall {
        /// The value given.
        bytes: u64,
    },
    /// Control memory below the minimum.
    #[error("the control reservation of {} memory is below the 16MiB minimum; fix: reserve at least \"16MiB\"", format_bytes(*bytes))]
    ControlMemoryTooSmall {
        /// The value given.
        bytes: u64,
    },
    /// Routing and control memory together above the router's.
    #[error(
        "the routing ({}) and control ({}) reservations are more than the router's {} of memory; fix: reserve less",
        format_bytes(*routing),
        format_bytes(*control),
        format_bytes(*total)
    )]
    ReservationsTooLarge {
        /// The routing reservation.
        routing: u64,
        /// The control reservation.
        control: u64,
        /// The router's memory.
        total: u64,
    },
    /// Routing memory above the router's.
    #[error(
        "the routing reservation of {} memory is more than the router's {}; fix: reserve less",
        format_bytes(*asks),
        format_bytes(*total)
    )]
    RoutingMemoryTooLarge {
        /// The reservation.
        asks: u64,
        /// The router's memory.
        total: u64,
    },
    /// Service cores exist but the capacity is all reserved.
    #[error(
        "the reservation leaves cores {cores} to services but no CPU time (router capacity {cpus} cores, routing \
         reserves {reserved}); fix: reserve every core for routing, or fewer cores, or give the router more CPU"
    )]
    NoServiceCpuTime {
        /// The cores left to services.
        cores: String,
        /// Router capacity.
        cpus: f64,
        /// Reserved cores.
        reserved: usize,
    },
    /// The spec itself is invalid.
    #[error("cannot admit an invalid spec: {0}")]
    Invalid(DomainError),
    /// A domain of that name is already admitted.
    #[error("cannot admit {name}: a domain with this name is already admitted; fix: release it first or rename it")]
    AlreadyAdmitted {
        /// The name.
        name: String,
    },
    /// One or more resources are short.
    #[error("cannot admit {name}: {}", join(short))]
    Short {
        /// The domain.
        name: String,
        /// What is short, memory first.
        short: Vec<Shortage>,
    },
    /// A service or control domain without a memory limit.
    #[error(
        "cannot admit {name}: it has no memory limit to charge against the {} service budget; fix: set memory",
        format_bytes(*budget)
    )]
    NoMemoryLimit {
        /// The domain.
        name: String,
        /// The service memory budget.
        budget: u64,
    },
    /// A service cpuset naming a reserved core.
    #[error(
        "cannot admit {name}: core {core} is reserved for the routing domain; fix: use the service cores {service_cores}"
    )]
    ReservedCore {
        /// The domain.
        name: String,
        /// The core.
        core: u32,
        /// The service cores, as a cpuset list.
        service_cores: String,
    },
    /// A cpuset naming a core that is not online.
    #[error("cannot admit {name}: core {core} is not online (online: {online}); fix: use an online core")]
    OfflineCore {
        /// The domain.
        name: String,
        /// The core.
        core: u32,
        /// The online cores, as a cpuset list.
        online: String,
    },
    /// Every core is reserved for routing.
    #[error(
        "cannot admit {name}: the routing domain reserves every core ({reserved}), none is left for services; \
         fix: reserve fewer cores on this router, or place the service elsewhere"
    )]
    NoServiceCores {
        /// The domain.
        name: String,
        /// The reserved cores.
        reserved: String,
    },
    /// A second routing domain.
    #[error("cannot admit {name}: the router already has a routing domain ({by}); fix: release it first")]
    RoutingTaken {
        /// The domain.
        name: String,
        /// The routing domain already admitted.
        by: String,
    },
    /// A routing cpuset outside the reservation.
    #[error(
        "cannot admit {name}: core {core} is outside the routing reservation ({reserved}); fix: pin the routing \
         domain to reserved cores"
    )]
    RoutingCoreOutside {
        /// The domain.
        name: String,
        /// The core.
        core: u32,
        /// The reserved cores.
        reserved: String,
    },
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::domain::{Isolation, NetAttach, RestartPolicy};

    const MIB: u64 = 1 << 20;

    fn budget(cpus: f64, ids: &[u32], memory: u64) -> HostBudget {
        HostBudget {
            cpus,
            cpu_ids: ids.to_vec(),
            memory,
        }
    }

    fn reservation(cores: &[u32], memory: u64) -> Reservation {
        Reservation {
            routing_cores: cores.to_vec(),
            routing_memory: memory,
            control_memory: 0,
        }
    }

    /// 4 cores, 1 GiB; routing keeps core 0 and 512 MiB.
    fn router() -> Admission {
        Admission::new(budget(4.0, &[0, 1, 2, 3], 1024 * MIB), reservation(&[0], 512 * MIB)).unwrap()
    }

    fn service(name: &str, cpu: Option<CpuSpec>, memory: Option<u64>) -> DomainSpec {
        DomainSpec {
            name: name.into(),
            kind: DomainKind::Service,
            isolation: Isolation::Container,
            cpu,
            memory,
            net: Some(NetAttach {
                address: Ipv4Addr::new(10, 0, 4, 2),
                prefix_len: 30,
                gateway: None,
            }),
            argv: vec!["true".into()],
            env: vec![],
            health: None,
            restart: RestartPolicy::Never,
            service: None,
        }
    }

    fn routing(cpu: Option<CpuSpec>, memory: Option<u64>) -> DomainSpec {
        DomainSpec {
            kind: DomainKind::Routing,
            net: None,
            ..service("routing", cpu, memory)
        }
    }

    #[test]
    fn budget_split() {
        let a = router();
        assert_eq!(a.service_cores(), &[1, 2, 3]);
        assert_eq!(a.service_memory(), 512 * MIB);
        assert_eq!(a.service_cpus(), 3.0);
        assert_eq!(a.free(), (3.0, 512 * MIB));
        // A lab router limited to 2.5 cores: services get 1.5 of cores 1-3.
        let a = Admission::new(budget(2.5, &[3, 2, 1, 0], 1024 * MIB), reservation(&[0], 512 * MIB)).unwrap();
        assert_eq!((a.service_cores(), a.service_cpus()), (&[1, 2, 3][..], 1.5));
        // Routing may take every core: then no service fits.
        let mut a = Admission::new(budget(2.0, &[0, 1], 1024 * MIB), reservation(&[0, 1], 512 * MIB)).unwrap();
        assert!(a.service_cores().is_empty());
        let e = a.admit(&service("pabx-1", None, Some(64 * MIB))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit pabx-1: the routing domain reserves every core (0-1), none is left for services; fix: \
             reserve fewer cores on this router, or place the service elsewhere"
        );
    }

    #[test]
    fn budget_errors() {
        let new = |b: HostBudget, r: Reservation| Admission::new(b, r).unwrap_err();
        let r = || reservation(&[0], 64 * MIB);
        assert_eq!(new(budget(1.0, &[], MIB << 10), r()), AdmissionError::NoCores);
        assert_eq!(
            new(budget(2.0, &[0, 1, 1], MIB << 10), r()),
            AdmissionError::DuplicateCore { core: 1 }
        );
        for cpus in [0.0, 0.001, 3.0, f64::NAN, -1.0] {
            let e = new(budget(cpus, &[0, 1], MIB << 10), r());
            assert!(matches!(e, AdmissionError::BadCapacity { .. }), "{cpus}: {e}");
        }
        assert_eq!(new(budget(2.0, &[0, 1], 0), r()), AdmissionError::NoMemory);
        // No reservation at all: routing shares the router, services may use everything.
        let open = Admission::new(budget(2.0, &[0, 1], MIB << 10), reservation(&[], 0)).unwrap();
        assert_eq!(open.service_cores(), &[0, 1]);
        assert_eq!(open.service_memory(), MIB << 10);
        let e = new(budget(2.0, &[0, 1], MIB << 10), reservation(&[7], 64 * MIB));
        assert_eq!(
            e.to_string(),
            "reserved core 7 is not online (online: 0-1); fix: reserve online cores"
        );
        assert_eq!(
            new(budget(2.0, &[0, 1], MIB << 10), reservation(&[1, 1], 64 * MIB)),
            AdmissionError::DuplicateReservedCore { core: 1 }
        );
        let e = new(budget(2.0, &[0, 1], MIB << 10), reservation(&[0], MIB));
        assert!(e.to_string().contains("1MiB memory is below the 16MiB minimum"), "{e}");
        let e = new(budget(2.0, &[0, 1], 256 * MIB), reservation(&[0], 512 * MIB));
        assert_eq!(
            e.to_string(),
            "the routing reservation of 512MiB memory is more than the router's 256MiB; fix: reserve less"
        );
        // A router limited to 1 core with core 0 reserved leaves core 1 idle.
        let e = new(budget(1.0, &[0, 1], 256 * MIB), reservation(&[0], 64 * MIB));
        assert!(
            e.to_string()
                .starts_with("the reservation leaves cores 1 to services but no CPU time (router capacity 1 cores"),
            "{e}"
        );
    }

    #[test]
    fn fits_and_release() {
        let mut a = router();
        a.admit(&service("pabx-1", Some(CpuSpec::Quota(0.5)), Some(128 * MIB)))
            .unwrap();
        a.admit(&service("echo-1", Some(CpuSpec::Cores(vec![2, 3])), Some(64 * MIB)))
            .unwrap();
        a.admit(&service("best-effort", Some(CpuSpec::Share(50)), Some(16 * MIB)))
            .unwrap();
        a.admit(&service("any", None, Some(16 * MIB))).unwrap();
        assert_eq!(a.free(), (0.5, 288 * MIB));
        assert_eq!(
            a.admitted().collect::<Vec<_>>(),
            ["any", "best-effort", "echo-1", "pabx-1"]
        );
        let e = a.admit(&service("pabx-1", None, Some(16 * MIB))).unwrap_err();
        assert!(matches!(e, AdmissionError::AlreadyAdmitted { .. }), "{e}");
        a.release("echo-1");
        a.release("never-admitted");
        assert_eq!(a.free(), (2.5, 352 * MIB));
        // Exactly what is left fits.
        a.admit(&service("big", Some(CpuSpec::Quota(2.5)), Some(352 * MIB)))
            .unwrap();
        assert_eq!(a.free(), (0.0, 0));
    }

    #[test]
    fn memory_short() {
        let mut a = router();
        a.admit(&service("a", None, Some(352 * MIB))).unwrap();
        let e = a.admit(&service("pabx-1", None, Some(256 * MIB))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit pabx-1: memory short by 96MiB (asks 256MiB, 160MiB of 512MiB left for services)"
        );
        let AdmissionError::Short { short, .. } = &e else {
            panic!("expected a shortage, got {e}")
        };
        assert_eq!((short[0].resource, short[0].short_by()), (Resource::Memory, 96 * MIB));
        // Nothing was charged.
        assert_eq!(a.free(), (3.0, 160 * MIB));
        let e = a.admit(&service("nolimit", None, None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit nolimit: it has no memory limit to charge against the 512MiB service budget; fix: set memory"
        );
    }

    #[test]
    fn cpu_short() {
        let mut a = router();
        a.admit(&service("a", Some(CpuSpec::Quota(1.5)), Some(16 * MIB)))
            .unwrap();
        a.admit(&service("b", Some(CpuSpec::Cores(vec![1])), Some(16 * MIB)))
            .unwrap();
        let e = a
            .admit(&service("c", Some(CpuSpec::Quota(1.0)), Some(16 * MIB)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit c: CPU short by 0.5 cores (asks 1 core, 0.5 of 3 cores left for services)"
        );
        // Both short: both are named.
        let e = a
            .admit(&service("d", Some(CpuSpec::Cores(vec![1, 2, 3])), Some(600 * MIB)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit d: memory short by 120MiB (asks 600MiB, 480MiB of 512MiB left for services) and CPU short \
             by 2.5 cores (asks 3 cores, 0.5 of 3 cores left for services)"
        );
        // Tenths add up exactly.
        let mut a = router();
        for i in 0..30 {
            a.admit(&service(&format!("s{i}"), Some(CpuSpec::Quota(0.1)), Some(16 * MIB)))
                .unwrap();
        }
        assert_eq!(a.free().0, 0.0);
    }

    #[test]
    fn reserved_and_offline_cores() {
        let mut a = router();
        let e = a
            .admit(&service("pabx-1", Some(CpuSpec::Cores(vec![1, 0])), Some(16 * MIB)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit pabx-1: core 0 is reserved for the routing domain; fix: use the service cores 1-3"
        );
        let e = a
            .admit(&service("pabx-1", Some(CpuSpec::Cores(vec![9])), Some(16 * MIB)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit pabx-1: core 9 is not online (online: 0-3); fix: use an online core"
        );
    }

    #[test]
    fn routing_domain_uses_the_reservation() {
        let mut a = router();
        // Routing's memory does not come out of the service budget.
        a.admit(&routing(Some(CpuSpec::Cores(vec![0])), None)).unwrap();
        assert_eq!(a.free(), (3.0, 512 * MIB));
        let e = a.admit(&DomainSpec {
            name: "routing-2".into(),
            ..routing(None, None)
        });
        assert_eq!(
            e.unwrap_err().to_string(),
            "cannot admit routing-2: the router already has a routing domain (routing); fix: release it first"
        );
        a.release("routing");
        let e = a.admit(&routing(Some(CpuSpec::Cores(vec![0, 1])), None)).unwrap_err();
        assert!(
            e.to_string().contains(
                "core 1 is outside the routing reservation (0); fix: pin the routing domain to reserved cores"
            ),
            "{e}"
        );
        let e = a
            .admit(&routing(Some(CpuSpec::Quota(2.0)), Some(1024 * MIB)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot admit routing: memory short by 512MiB (asks 1GiB, 512MiB of 512MiB in the routing reservation) \
             and CPU short by 1 core (asks 2 cores, 1 of 1 core in the routing reservation)"
        );
        a.admit(&routing(Some(CpuSpec::Quota(1.0)), Some(512 * MIB))).unwrap();
    }

    #[test]
    fn invalid_spec_is_refused() {
        let mut a = router();
        let e = a
            .admit(&service("pabx-1", Some(CpuSpec::Quota(0.0)), Some(16 * MIB)))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot admit an invalid spec: domain pabx-1: cpu: bad cpus 0"),
            "{e}"
        );
    }
}
