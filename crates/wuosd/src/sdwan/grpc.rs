//! The SD-WAN NBI over gRPC (`wuos.v1.SdwanNbi`, proto/wuos/v1/nbi.proto): the REST NBI's twin,
//! served on the same port (HTTP/2), the same bearer token, the same actions. Only conversions
//! live here: protocol messages to [`Action`]s and the controller's state to messages.

use tonic::{Request, Response, Status};
use wuos_model::topology::Ipv4Net;
use wuos_proto::pb;
use wuos_sdwan::sla::Sla;
use wuos_sdwan::steer::Steering;
use wuos_sdwan::{Action, ClassSpec, ErrorKind, Layout, MatchRule, Member, OverlaySpec, PortRange, Proto};

use super::controller::{Refused, SdwanHandle};

/// A field that does not parse.
fn bad(field: &str, value: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field} {value:?}: {why}"))
}

fn prefix(field: &str, s: &str) -> Result<Ipv4Net, Status> {
    s.parse::<Ipv4Net>().map_err(|e| bad(field, s, e))
}

fn opt<T>(s: &str, f: impl FnOnce(&str) -> Result<T, Status>) -> Result<Option<T>, Status> {
    if s.is_empty() { Ok(None) } else { f(s).map(Some) }
}

fn rule(r: &pb::MatchRule) -> Result<MatchRule, Status> {
    let ports = |field: &str, s: &str| opt(s, |s| s.parse::<PortRange>().map_err(|e| bad(field, s, e)));
    Ok(MatchRule {
        proto: opt(&r.proto, |s| match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "icmp" => Ok(Proto::Icmp),
            _ => Err(bad("proto", s, "use tcp, udp or icmp")),
        })?,
        src_ports: ports("src_ports", &r.src_ports)?,
        dst_ports: ports("dst_ports", &r.dst_ports)?,
        src: opt(&r.src, |s| prefix("src", s))?,
        dst: opt(&r.dst, |s| prefix("dst", s))?,
        dscp: r
            .dscp
            .map(|d| u8::try_from(d).map_err(|_| bad("dscp", &d.to_string(), "out of range 0-63")))
            .transpose()?,
        ingress: r.ingress.clone(),
        service: opt(&r.service, |s| Ok(s.to_string()))?,
    })
}

fn rules(rs: &[pb::MatchRule]) -> Result<Vec<MatchRule>, Status> {
    rs.iter().map(rule).collect()
}

fn member(m: &pb::Member) -> Result<(String, Member), Status> {
    let lans = m.lans.iter().map(|l| prefix("lans", l)).collect::<Result<_, _>>()?;
    Ok((m.site.clone(), Member { lans }))
}

/// The typed form of a protocol action.
pub fn action(a: &pb::NbiAction) -> Result<Action, Status> {
    use pb::nbi_action::Kind;
    let kind = a
        .kind
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("an action without a kind"))?;
    let site_change = |c: &pb::SiteChange| -> Result<(String, String, Member), Status> {
        let (site, m) = member(c.member.as_ref().ok_or_else(|| Status::invalid_argument("no member"))?)?;
        Ok((c.overlay.clone(), site, m))
    };
    Ok(match kind {
        Kind::CreateOverlay(o) => Action::CreateOverlay(OverlaySpec {
            name: o.name.clone(),
            layout: match o.layout.as_str() {
                "" | "full_mesh" => Layout::FullMesh,
                "hub_and_spoke" => Layout::HubAndSpoke { hub: o.hub.clone() },
                "partial" => Layout::Partial {
                    pairs: o.pairs.iter().map(|p| (p.a.clone(), p.b.clone())).collect(),
                },
                other => return Err(bad("layout", other, "use full_mesh, hub_and_spoke or partial")),
            },
            sites: o.sites.iter().map(member).collect::<Result<_, _>>()?,
            underlays: o.underlays.clone(),
        }),
        Kind::DeleteOverlay(n) => Action::DeleteOverlay { name: n.name.clone() },
        Kind::AddSite(c) => {
            let (overlay, site, member) = site_change(c)?;
            Action::AddSite { overlay, site, member }
        }
        Kind::RemoveSite(c) => {
            let (overlay, site, _) = site_change(c)?;
            Action::RemoveSite { overlay, site }
        }
        Kind::CreateClass(c) => Action::CreateClass(ClassSpec {
            name: c.name.clone(),
            overlay: c.overlay.clone(),
            rules: rules(&c.rules)?,
            steering: c.steering.as_ref().map(steering),
        }),
        Kind::DeleteClass(n) => Action::DeleteClass { name: n.name.clone() },
        Kind::AssignClass(a) => Action::AssignClass {
            class: a.class.clone(),
            overlay: a.overlay.clone(),
        },
        Kind::AddService(s) => Action::AddService {
            class: s.class.clone(),
            service: s.service.clone(),
            rules: rules(&s.rules)?,
        },
        Kind::RemoveService(s) => Action::RemoveService {
            class: s.class.clone(),
            service: s.service.clone(),
        },
        Kind::SetSteering(s) => Action::SetSteering {
            class: s.class.clone(),
            steering: s.steering.as_ref().map(steering),
        },
    })
}

/// A class's steering (its SLA's limits are checked with the action).
fn steering(s: &pb::Steering) -> Steering {
    let sla = s.sla.unwrap_or_default();
    Steering {
        sla: Sla {
            max_latency_ms: sla.max_latency_ms,
            max_loss_pct: sla.max_loss_pct,
            max_jitter_ms: sla.max_jitter_ms,
        },
        prefer: s.prefer.clone(),
        balance: s.balance,
        sticky: s.sticky,
    }
}

fn steering_pb(s: &Steering) -> pb::Steering {
    pb::Steering {
        sla: Some(pb::Sla {
            max_latency_ms: s.sla.max_latency_ms,
            max_loss_pct: s.sla.max_loss_pct,
            max_jitter_ms: s.sla.max_jitter_ms,
        }),
        prefer: s.prefer.clone(),
        balance: s.balance,
        sticky: s.sticky,
    }
}

fn rule_pb(r: &MatchRule) -> pb::MatchRule {
    let s = |x: Option<String>| x.unwrap_or_default();
    pb::MatchRule {
        proto: s(r.proto.map(|p| p.as_str().to_string())),
        src_ports: s(r.src_ports.map(|p| p.to_string())),
        dst_ports: s(r.dst_ports.map(|p| p.to_string())),
        src: s(r.src.map(|p| p.to_string())),
        dst: s(r.dst.map(|p| p.to_string())),
        dscp: r.dscp.map(u32::from),
        ingress: r.ingress.clone(),
        service: s(r.service.clone()),
    }
}

fn refused(r: Refused) -> Status {
    let msg = r.message();
    match &r {
        Refused::Action { error, .. } => match error.kind() {
            ErrorKind::NotFound => Status::not_found(msg),
            ErrorKind::Conflict => Status::failed_precondition(msg),
            ErrorKind::Invalid => Status::invalid_argument(msg),
        },
        Refused::Store(_) => Status::unavailable(msg),
    }
}

fn stopped() -> Status {
    Status::unavailable("the SD-WAN controller is stopping")
}

pub struct NbiSvc {
    pub handle: SdwanHandle,
}

#[tonic::async_trait]
impl pb::sdwan_nbi_server::SdwanNbi for NbiSvc {
    async fn apply(&self, req: Request<pb::ApplyRequest>) -> Result<Response<pb::ApplyReply>, Status> {
        let actions = req
            .get_ref()
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| action(a).map_err(|s| Status::new(s.code(), format!("action {i}: {}", s.message()))))
            .collect::<Result<Vec<_>, _>>()?;
        match self.handle.act(actions).await {
            Ok(Ok(generation)) => Ok(Response::new(pb::ApplyReply { generation })),
            Ok(Err(r)) => Err(refused(r)),
            Err(_) => Err(stopped()),
        }
    }

    async fn get_desired(&self, _: Request<pb::ReadRequest>) -> Result<Response<pb::Desired>, Status> {
        let (generation, d) = self.handle.desired().await.map_err(|_| stopped())?;
        let members = |sites: &std::collections::BTreeMap<String, Member>| {
            sites
                .iter()
                .map(|(s, m)| pb::Member {
                    site: s.clone(),
                    lans: m.lans.iter().map(ToString::to_string).collect(),
                })
                .collect()
        };
        Ok(Response::new(pb::Desired {
            generation,
            overlays: d
                .overlays
                .values()
                .map(|o| {
                    let (layout, hub, pairs) = match &o.layout {
                        Layout::FullMesh => ("full_mesh", String::new(), Vec::new()),
                        Layout::HubAndSpoke { hub } => ("hub_and_spoke", hub.clone(), Vec::new()),
                        Layout::Partial { pairs } => (
                            "partial",
                            String::new(),
                            pairs
                                .iter()
                                .map(|(a, b)| pb::SitePair {
                                    a: a.clone(),
                                    b: b.clone(),
                                })
                                .collect(),
                        ),
                    };
                    pb::OverlayInfo {
                        name: o.name.clone(),
                        id: u32::from(o.id),
                        layout: layout.into(),
                        hub,
                        pairs,
                        sites: members(&o.sites),
                        underlays: o.underlays.clone(),
                    }
                })
                .collect(),
            classes: d
                .classes
                .values()
                .map(|c| pb::ClassInfo {
                    name: c.name.clone(),
                    id: u32::from(c.id),
                    overlay: c.overlay.clone(),
                    rules: c.rules.iter().map(rule_pb).collect(),
                    steering: c.steering.as_ref().map(steering_pb),
                })
                .collect(),
        }))
    }

    async fn get_state(&self, _: Request<pb::ReadRequest>) -> Result<Response<pb::SdwanState>, Status> {
        let s = self.handle.status().await.map_err(|_| stopped())?;
        Ok(Response::new(pb::SdwanState {
            generation: s.generation,
            edges: s
                .edges
                .into_iter()
                .map(|(site, e)| pb::EdgeInfo {
                    site,
                    in_sync: e.in_sync,
                    synced_generation: e.synced_generation,
                    pending: e.pending as u32,
                    error: e.error.unwrap_or_default(),
                    tunnels: e
                        .tunnels
                        .into_iter()
                        .map(|t| pb::TunnelInfo {
                            name: t.name,
                            overlay: t.overlay,
                            underlay: t.underlay,
                            vni: t.vni,
                            peers: t.peers,
                        })
                        .collect(),
                    classes: e.classes.into_iter().collect(),
                    unreachable: e.unreachable,
                    paths: e
                        .advertised
                        .iter()
                        .flat_map(|a| a.paths.clone())
                        .map(Into::into)
                        .collect(),
                    steering: e
                        .advertised
                        .iter()
                        .flat_map(|a| a.steering.clone())
                        .map(Into::into)
                        .collect(),
                })
                .collect(),
        }))
    }
}

/// The gRPC NBI as axum routes, each call checked against `token`.
pub fn routes(handle: SdwanHandle, token: std::sync::Arc<str>) -> axum::Router {
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        let ok = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| super::nbi::same_token(t.trim(), &token));
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "this NBI needs the metadata `authorization: Bearer TOKEN` (the lab's: `wuos sdwan token`)",
            ))
        }
    };
    let svc = pb::sdwan_nbi_server::SdwanNbiServer::with_interceptor(NbiSvc { handle }, check);
    tonic::service::Routes::new(svc).prepare().into_axum_router()
}
