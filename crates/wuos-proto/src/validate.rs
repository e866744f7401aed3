//! What a receiver checks before acting on a message.
//!
//! Every message that crosses a router boundary goes through one of the `check_*` functions (after
//! prost has decoded it) or one of the `decode_*` functions (raw bytes: size check, decode,
//! check). A check never panics and never allocates more than its error message; the first
//! problem found is reported, naming the field and the bad value.
//!
//! The checks are structural (ranges, lengths, presence) and need no state. What needs the
//! receiver's state — "is the sender one of my neighbors, is it up" — is checked by
//! [`crate::instance::Instance`], which reports it with the same error type so that every
//! rejection is counted under one set of [`ValidateError::reason`] labels.

use prost::Message;

use crate::{PROTOCOL_VERSION, pb};

/// Largest encoded message a router accepts (the daemon configures gRPC with the same limit).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest flooding radius an advert or a withdrawal may carry.
pub const MAX_HOP_LIMIT: u32 = 8;
/// Most adverts (and, separately, most withdrawals) in one flood request.
pub const MAX_ADVERTS_PER_FLOOD: usize = 256;
/// Longest router id, in bytes.
pub const MAX_ROUTER_ID_LEN: usize = 64;
/// Most links, and separately most services, in one advert.
pub const MAX_ITEMS_PER_ADVERT: usize = 64;
/// Longest name (interface, service, service state, intent fields), in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest free text (withdraw reason, intent error code and message), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest policy text in an intent, in bytes.
pub const MAX_POLICY_LEN: usize = 16 * 1024;
/// Most intents in one batch, and most intent ids in one ack.
pub const MAX_INTENTS_PER_BATCH: usize = 256;
/// Shortest hello or telemetry interval, in milliseconds.
pub const MIN_INTERVAL_MS: u32 = 10;
/// Longest hello or telemetry interval, in milliseconds.
pub const MAX_INTERVAL_MS: u32 = 600_000;
/// Most intervals an origin may stay quiet ([`pb::TelemetryAdvert::quiet_intervals`]).
pub const MAX_QUIET_INTERVALS: u32 = wuos_model::daemon::MAX_QUIET_INTERVALS;
/// Longest dead interval, in milliseconds.
pub const MAX_DEAD_INTERVAL_MS: u32 = 3_600_000;

/// The major version this router speaks.
const MAJOR: u32 = PROTOCOL_VERSION >> 16;

/// Why a message was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ValidateError {
    /// More bytes than [`MAX_MESSAGE_BYTES`].
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The message kind.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid protobuf encoding of the expected message.
    #[error("{what} does not decode: {message}")]
    Decode {
        /// The message kind.
        what: &'static str,
        /// prost's explanation.
        message: String,
    },
    /// A message without its header.
    #[error("{what} has no header")]
    MissingHeader {
        /// The message kind.
        what: &'static str,
    },
    /// A major version other than ours.
    #[error("unsupported protocol version {} (this router speaks {MAJOR}.x)", version_string(*.version))]
    Version {
        /// The version the sender announced.
        version: u32,
    },
    /// A router id that is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("{field} {value:?} is not a valid router id (1-64 characters of A-Z a-z 0-9 . _ -)")]
    RouterId {
        /// Where it was found, e.g. `header sender`.
        field: &'static str,
        /// The id (shortened if very long).
        value: String,
    },
    /// A boot id of 0 (unset).
    #[error("{context}: boot_id is 0")]
    BootId {
        /// The message, e.g. `hello from "r2"`.
        context: String,
    },
    /// An integer outside its range.
    #[error("{context}: {field} {value} is outside {min}-{max}")]
    Range {
        /// The message.
        context: String,
        /// The field name.
        field: &'static str,
        /// The value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A dead interval not longer than the hello interval.
    #[error("{context}: dead_interval_ms {dead} is not longer than hello_interval_ms {hello}")]
    DeadInterval {
        /// The message.
        context: String,
        /// The dead interval.
        dead: u32,
        /// The hello interval.
        hello: u32,
    },
    /// A percentage that is not a finite number in 0-100.
    #[error("{context}: {field} {value} is outside 0-100")]
    Percentage {
        /// The message.
        context: String,
        /// The field name.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A quantity that is negative, infinite or NaN.
    #[error("{context}: {field} {value} is not a finite number of 0 or more")]
    Number {
        /// The message.
        context: String,
        /// The field name.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A required field left unset.
    #[error("{context} has no {field}")]
    Missing {
        /// The message.
        context: String,
        /// The field name.
        field: &'static str,
    },
    /// Too many entries in a repeated field.
    #[error("{context} has {count} {field}, more than {max}")]
    TooMany {
        /// The message.
        context: String,
        /// The field name.
        field: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A string longer than its bound.
    #[error("{context}: {field} is {len} bytes long, more than {max}")]
    TooLong {
        /// The message.
        context: String,
        /// The field name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name with a control character in it.
    #[error("{context}: {field} {value:?} contains a control character")]
    ControlChar {
        /// The message.
        context: String,
        /// The field name.
        field: &'static str,
        /// The value (shortened if very long).
        value: String,
    },
    /// A hello or flood from a router that is not one of our configured neighbors.
    #[error("{sender:?} is not a configured neighbor of this router")]
    UnknownNeighbor {
        /// Who sent it.
        sender: String,
    },
    /// A frame on a link whose hello has not arrived (or whose neighbor was declared down).
    #[error("a frame from {sender:?} before its hello on this link")]
    NotUp {
        /// Who sent it.
        sender: String,
    },
    /// A reply signed by a router other than the neighbor we sent the request to.
    #[error("reply from neighbor {expected:?} is signed by {got:?}")]
    SenderMismatch {
        /// The configured neighbor.
        expected: String,
        /// The sender in the reply's header.
        got: String,
    },
}

impl ValidateError {
    /// A short stable label for counting rejections (a Prometheus label value).
    pub fn reason(&self) -> &'static str {
        match self {
            ValidateError::TooLarge { .. } => "too_large",
            ValidateError::Decode { .. } => "decode",
            ValidateError::MissingHeader { .. } => "missing_header",
            ValidateError::Version { .. } => "version",
            ValidateError::RouterId { .. } => "router_id",
            ValidateError::BootId { .. } => "boot_id",
            ValidateError::Range { .. } => "range",
            ValidateError::DeadInterval { .. } => "dead_interval",
            ValidateError::Percentage { .. } => "percentage",
            ValidateError::Number { .. } => "number",
            ValidateError::Missing { .. } => "missing",
            ValidateError::TooMany { .. } => "too_many",
            ValidateError::TooLong { .. } => "too_long",
            ValidateError::ControlChar { .. } => "control_char",
            ValidateError::UnknownNeighbor { .. } => "unknown_neighbor",
            ValidateError::SenderMismatch { .. } => "sender_mismatch",
            ValidateError::NotUp { .. } => "not_up",
        }
    }

    /// Every label [`reason`](Self::reason) can return, for pre-registering metrics.
    pub const REASONS: [&'static str; 17] = [
        "too_large",
        "decode",
        "missing_header",
        "version",
        "router_id",
        "boot_id",
        "range",
        "dead_interval",
        "percentage",
        "number",
        "missing",
        "too_many",
        "too_long",
        "control_char",
        "unknown_neighbor",
        "sender_mismatch",
        "not_up",
    ];
}

/// `"1.0"` for 65536: major in the high 16 bits, minor in the low 16.
pub fn version_string(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xffff)
}

/// The header every message of ours carries.
pub fn header(sender: &str) -> pb::Header {
    pb::Header {
        version: PROTOCOL_VERSION,
        sender: sender.to_owned(),
    }
}

/// Whether `id` is a router id: 1-64 characters of `A-Z a-z 0-9 . _ -`.
pub fn is_router_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ROUTER_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a router id found in `field`.
pub fn check_router_id(field: &'static str, id: &str) -> Result<(), ValidateError> {
    if is_router_id(id) {
        Ok(())
    } else {
        Err(ValidateError::RouterId {
            field,
            value: shorten(id),
        })
    }
}

/// The header is present, of our major version, from a valid router id.
pub fn check_header(h: Option<&pb::Header>) -> Result<&pb::Header, ValidateError> {
    check_header_of("message", h)
}

fn check_header_of<'a>(what: &'static str, h: Option<&'a pb::Header>) -> Result<&'a pb::Header, ValidateError> {
    let h = h.ok_or(ValidateError::MissingHeader { what })?;
    if h.version >> 16 != MAJOR {
        return Err(ValidateError::Version { version: h.version });
    }
    check_router_id("header sender", &h.sender)?;
    Ok(h)
}

/// A hello: header, boot id set, sane hello and dead intervals, bounded interface name.
pub fn check_hello(m: &pb::Hello) -> Result<(), ValidateError> {
    let h = check_header_of("hello", m.header.as_ref())?;
    let ctx = || format!("hello from {:?}", h.sender);
    if m.boot_id == 0 {
        return Err(ValidateError::BootId { context: ctx() });
    }
    range(
        ctx,
        "hello_interval_ms",
        m.hello_interval_ms,
        MIN_INTERVAL_MS,
        MAX_INTERVAL_MS,
    )?;
    if m.dead_interval_ms <= m.hello_interval_ms {
        return Err(ValidateError::DeadInterval {
            context: ctx(),
            dead: m.dead_interval_ms,
            hello: m.hello_interval_ms,
        });
    }
    range(
        ctx,
        "dead_interval_ms",
        m.dead_interval_ms,
        MIN_INTERVAL_MS,
        MAX_DEAD_INTERVAL_MS,
    )?;
    name(ctx, "interface", &m.interface, true)
}

/// A hello reply: header and boot id set.
pub fn check_hello_reply(m: &pb::HelloReply) -> Result<(), ValidateError> {
    let h = check_header_of("hello reply", m.header.as_ref())?;
    if m.boot_id == 0 {
        return Err(ValidateError::BootId {
            context: format!("hello reply from {:?}", h.sender),
        });
    }
    Ok(())
}

/// A telemetry advert: valid origin, boot id set, hop limit in 1..=[`MAX_HOP_LIMIT`], interval in
/// 10..=600000 ms, resources present with percentages in 0-100 and other quantities finite and
/// not negative, at most [`MAX_ITEMS_PER_ADVERT`] links and services, bounded names.
///
/// The role is not checked: a later minor version may add roles, which this version shows as
/// unknown numbers.
pub fn check_advert(a: &pb::TelemetryAdvert) -> Result<(), ValidateError> {
    check_router_id("advert origin", &a.origin)?;
    let ctx = || format!("advert from {:?}", a.origin);
    if a.boot_id == 0 {
        return Err(ValidateError::BootId { context: ctx() });
    }
    range(ctx, "sequence", a.sequence, 1, u64::MAX)?;
    if a.timestamp_unix_ns < 0 {
        return Err(ValidateError::Number {
            context: ctx(),
            field: "timestamp_unix_ns",
            value: a.timestamp_unix_ns as f64,
        });
    }
    range(ctx, "hop_limit", a.hop_limit, 1, MAX_HOP_LIMIT)?;
    range(ctx, "interval_ms", a.interval_ms, MIN_INTERVAL_MS, MAX_INTERVAL_MS)?;
    range(ctx, "quiet_intervals", a.quiet_intervals, 0, MAX_QUIET_INTERVALS)?;
    let r = a.resources.as_ref().ok_or_else(|| ValidateError::Missing {
        context: ctx(),
        field: "resources",
    })?;
    check_resources(ctx, r)?;
    check_links(ctx, &a.links)?;
    name(ctx, "control_address", &a.control_address, true)?;
    check_demand(ctx, &a.demand)?;
    check_services(ctx, &a.services)?;
    if !a.region.is_empty() {
        check_router_id("advert region", &a.region)?;
    }
    check_placements(ctx, &a.placements)?;
    if let Some(s) = &a.sdwan {
        check_sdwan(ctx, s)?;
    }
    Ok(())
}

fn check_sdwan(ctx: impl Fn() -> String + Copy, s: &pb::SdwanEdgeState) -> Result<(), ValidateError> {
    too_many(ctx, "sdwan tunnels", s.items.len(), MAX_ITEMS_PER_ADVERT)?;
    for t in &s.items {
        name(ctx, "sdwan tunnel name", &t.name, false)?;
    }
    too_many(ctx, "sdwan paths", s.paths.len(), MAX_ITEMS_PER_ADVERT)?;
    for p in &s.paths {
        name(ctx, "sdwan path overlay", &p.overlay, false)?;
        name(ctx, "sdwan path underlay", &p.underlay, false)?;
        name(ctx, "sdwan path site", &p.site, false)?;
        if let Some(rtt) = p.rtt_ms {
            number(ctx, "sdwan path rtt_ms", rtt)?;
        }
        pct(ctx, "sdwan path loss_pct", p.loss_pct)?;
        number(ctx, "sdwan path jitter_ms", p.jitter_ms)?;
    }
    too_many(ctx, "sdwan steering", s.steering.len(), MAX_ITEMS_PER_ADVERT)?;
    for c in &s.steering {
        name(ctx, "sdwan steering class", &c.class_name, false)?;
        name(ctx, "sdwan steering site", &c.site, false)?;
        too_many(ctx, "sdwan steering paths", c.paths.len(), MAX_ITEMS_PER_ADVERT)?;
        for p in &c.paths {
            name(ctx, "sdwan steering path", p, false)?;
        }
    }
    for (field, listed, total) in [
        ("sdwan paths_total", s.paths.len(), s.paths_total),
        ("sdwan steering_total", s.steering.len(), s.steering_total),
    ] {
        if (total as usize) < listed {
            return Err(ValidateError::Range {
                context: ctx(),
                field,
                value: u64::from(total),
                min: listed as u64,
                max: u64::from(u32::MAX),
            });
        }
    }
    if s.tunnels_up > s.tunnels {
        return Err(ValidateError::Range {
            context: ctx(),
            field: "sdwan tunnels_up",
            value: u64::from(s.tunnels_up),
            min: 0,
            max: u64::from(s.tunnels),
        });
    }
    Ok(())
}

fn check_placements(ctx: impl Fn() -> String + Copy, placements: &[pb::Placement]) -> Result<(), ValidateError> {
    too_many(ctx, "placements", placements.len(), MAX_ITEMS_PER_ADVERT)?;
    for p in placements {
        name(ctx, "placement service", &p.service, false)?;
        if !p.serving_router.is_empty() {
            check_router_id("placement serving_router", &p.serving_router)?;
        }
        name(ctx, "placement vip", &p.vip, true)?;
    }
    Ok(())
}

fn check_resources(ctx: impl Fn() -> String + Copy, r: &pb::Resources) -> Result<(), ValidateError> {
    pct(ctx, "cpu_used_pct", r.cpu_used_pct)?;
    pct(ctx, "mem_used_pct", r.mem_used_pct)?;
    number(ctx, "cpu_capacity_cores", r.cpu_capacity_cores)?;
    number(ctx, "free_cpu_cores", r.free_cpu_cores)?;
    for (field, p) in [
        ("cpu_pressure", &r.cpu_pressure),
        ("mem_pressure", &r.mem_pressure),
        ("io_pressure", &r.io_pressure),
    ] {
        if let Some(p) = p {
            pct(ctx, field, p.some_avg10)?;
            pct(ctx, field, p.full_avg10)?;
        }
    }
    Ok(())
}

fn check_links(ctx: impl Fn() -> String + Copy, links: &[pb::LinkMetrics]) -> Result<(), ValidateError> {
    too_many(ctx, "links", links.len(), MAX_ITEMS_PER_ADVERT)?;
    for l in links {
        name(ctx, "link interface", &l.interface, true)?;
        if !l.neighbor.is_empty() {
            check_router_id("link neighbor", &l.neighbor)?;
        }
        if let Some(rtt) = l.rtt_ms {
            number(ctx, "link rtt_ms", rtt)?;
        }
    }
    Ok(())
}

fn check_demand(ctx: impl Fn() -> String + Copy, demand: &[pb::ServiceDemand]) -> Result<(), ValidateError> {
    too_many(ctx, "demand", demand.len(), MAX_ITEMS_PER_ADVERT)?;
    for d in demand {
        name(ctx, "demand service", &d.service, false)?;
        number(ctx, "demand flows_per_s", d.flows_per_s)?;
    }
    Ok(())
}

fn check_services(ctx: impl Fn() -> String + Copy, services: &[pb::ServiceInstance]) -> Result<(), ValidateError> {
    too_many(ctx, "services", services.len(), MAX_ITEMS_PER_ADVERT)?;
    for s in services {
        name(ctx, "service", &s.service, false)?;
        name(ctx, "service state", &s.state, true)?;
        name(ctx, "service domain name", &s.name, true)?;
        name(ctx, "service health", &s.health, true)?;
        number(ctx, "service cpu_pct", s.cpu_pct)?;
    }
    Ok(())
}

/// An advert delta: valid origin, boot id set, `1 ≤ base_sequence ≤ sequence`, hop limit in
/// 1..=[`MAX_HOP_LIMIT`], and what it carries checked like an advert's. The advert it rebuilds is
/// checked again as a whole ([`check_advert`]).
pub fn check_delta(d: &pb::AdvertDelta) -> Result<(), ValidateError> {
    check_router_id("delta origin", &d.origin)?;
    let ctx = || format!("delta from {:?}", d.origin);
    if d.boot_id == 0 {
        return Err(ValidateError::BootId { context: ctx() });
    }
    range(ctx, "sequence", d.sequence, 1, u64::MAX)?;
    range(ctx, "base_sequence", d.base_sequence, 1, d.sequence)?;
    if d.timestamp_unix_ns < 0 {
        return Err(ValidateError::Number {
            context: ctx(),
            field: "timestamp_unix_ns",
            value: d.timestamp_unix_ns as f64,
        });
    }
    range(ctx, "hop_limit", d.hop_limit, 1, MAX_HOP_LIMIT)?;
    if let Some(r) = &d.resources {
        check_resources(ctx, r)?;
    }
    check_links(ctx, &d.links)?;
    too_many(ctx, "links_removed", d.links_removed.len(), MAX_ITEMS_PER_ADVERT)?;
    for i in &d.links_removed {
        name(ctx, "links_removed", i, true)?;
    }
    if let Some(s) = &d.services {
        check_services(ctx, &s.items)?;
    }
    if let Some(dm) = &d.demand {
        check_demand(ctx, &dm.items)?;
    }
    if let Some(p) = &d.placements {
        check_placements(ctx, &p.items)?;
    }
    if let Some(s) = &d.sdwan {
        check_sdwan(ctx, s)?;
    }
    Ok(())
}

/// The parts of a frame that concern it as a whole: the header, the number of items, the hello
/// when there is one, and the origins it asks for. [`crate::instance::Instance::on_frame`]
/// rejects a frame that fails these, and then checks each item on its own.
pub fn check_frame_head(m: &pb::Frame) -> Result<&pb::Header, ValidateError> {
    let h = check_header_of("frame", m.header.as_ref())?;
    let ctx = || format!("frame from {:?}", h.sender);
    let items = m.adverts.len() + m.deltas.len() + m.withdrawals.len();
    too_many(ctx, "adverts, deltas and withdrawals", items, MAX_ADVERTS_PER_FLOOD)?;
    too_many(ctx, "need_full", m.need_full.len(), MAX_ADVERTS_PER_FLOOD)?;
    for o in &m.need_full {
        check_router_id("need_full origin", o)?;
    }
    if let Some(hello) = &m.hello {
        check_hello(hello)?;
        let inner = hello.header.as_ref().map(|h| h.sender.as_str()).unwrap_or_default();
        if inner != h.sender {
            return Err(ValidateError::SenderMismatch {
                expected: h.sender.clone(),
                got: inner.to_owned(),
            });
        }
    }
    Ok(h)
}

/// A whole frame, every item included: the first problem found.
pub fn check_frame(m: &pb::Frame) -> Result<(), ValidateError> {
    check_frame_head(m)?;
    m.withdrawals.iter().try_for_each(check_withdraw)?;
    m.adverts.iter().try_for_each(check_advert)?;
    m.deltas.iter().try_for_each(check_delta)
}

/// A withdrawal: valid origin, boot id set, hop limit in 1..=[`MAX_HOP_LIMIT`], bounded reason.
pub fn check_withdraw(w: &pb::Withdraw) -> Result<(), ValidateError> {
    check_router_id("withdraw origin", &w.origin)?;
    let ctx = || format!("withdraw of {:?}", w.origin);
    if w.boot_id == 0 {
        return Err(ValidateError::BootId { context: ctx() });
    }
    range(ctx, "hop_limit", w.hop_limit, 1, MAX_HOP_LIMIT)?;
    text(ctx, "reason", &w.reason, MAX_TEXT_LEN)
}

/// The parts of a flood request that concern the request as a whole: the header and the number
/// of adverts and withdrawals. [`crate::instance::Instance::on_flood`] rejects a request that
/// fails these, and then checks each advert and withdrawal on its own.
pub fn check_flood_request(m: &pb::FloodRequest) -> Result<&pb::Header, ValidateError> {
    let h = check_header_of("flood request", m.header.as_ref())?;
    let ctx = || format!("flood request from {:?}", h.sender);
    too_many(ctx, "adverts", m.adverts.len(), MAX_ADVERTS_PER_FLOOD)?;
    too_many(ctx, "withdrawals", m.withdrawals.len(), MAX_ADVERTS_PER_FLOOD)?;
    Ok(h)
}

/// A whole flood request, every advert and withdrawal included: the first problem found.
pub fn check_flood(m: &pb::FloodRequest) -> Result<(), ValidateError> {
    check_flood_request(m)?;
    m.withdrawals.iter().try_for_each(check_withdraw)?;
    m.adverts.iter().try_for_each(check_advert)
}

/// A flood reply: its header.
pub fn check_flood_reply(m: &pb::FloodReply) -> Result<(), ValidateError> {
    check_header_of("flood reply", m.header.as_ref()).map(drop)
}

/// A controller-orchestrator session envelope: header, session id set, sequence from 1, a body,
/// and bounded intents, acks and errors. Whether the sequence follows the previous one is the
/// session's business, not this stateless check's.
pub fn check_envelope(m: &pb::SessionEnvelope) -> Result<(), ValidateError> {
    use pb::intent::Kind;
    use pb::session_envelope::Body;

    let h = check_header_of("session envelope", m.header.as_ref())?;
    let ctx = || format!("session envelope from {:?}", h.sender);
    range(ctx, "session_id", m.session_id, 1, u64::MAX)?;
    range(ctx, "sequence", m.sequence, 1, u64::MAX)?;
    match m.body.as_ref() {
        None => Err(ValidateError::Missing {
            context: ctx(),
            field: "body",
        }),
        Some(Body::Intents(batch)) => {
            too_many(ctx, "intents", batch.intents.len(), MAX_INTENTS_PER_BATCH)?;
            for i in &batch.intents {
                let ictx = || format!("intent {}", i.id);
                range(ictx, "id", i.id, 1, u64::MAX)?;
                match i.kind.as_ref() {
                    None => {
                        return Err(ValidateError::Missing {
                            context: ictx(),
                            field: "kind",
                        });
                    }
                    Some(Kind::ServiceInstance(s)) => name(ictx, "service", &s.service, false)?,
                    Some(Kind::ServiceRule(s)) => {
                        name(ictx, "service", &s.service, false)?;
                        name(ictx, "vip", &s.vip, true)?;
                        name(ictx, "serving_router", &s.serving_router, true)?;
                    }
                    Some(Kind::Route(r)) => {
                        name(ictx, "prefix", &r.prefix, false)?;
                        name(ictx, "next_hop", &r.next_hop, true)?;
                    }
                    Some(Kind::Policy(p)) => text(ictx, "text", &p.text, MAX_POLICY_LEN)?,
                    Some(Kind::SdwanPiece(p)) => {
                        name(ictx, "key", &p.key, false)?;
                        if p.config_json.len() > MAX_MESSAGE_BYTES {
                            return Err(ValidateError::TooLong {
                                context: ictx(),
                                field: "config_json",
                                len: p.config_json.len(),
                                max: MAX_MESSAGE_BYTES,
                            });
                        }
                    }
                }
            }
            Ok(())
        }
        Some(Body::Ack(ack)) => {
            too_many(ctx, "intent_ids", ack.intent_ids.len(), MAX_INTENTS_PER_BATCH)?;
            if ack.intent_ids.contains(&0) {
                return Err(ValidateError::Range {
                    context: ctx(),
                    field: "intent_ids",
                    value: 0,
                    min: 1,
                    max: u64::MAX,
                });
            }
            Ok(())
        }
        Some(Body::Error(e)) => {
            name(ctx, "error code", &e.code, false)?;
            text(ctx, "error message", &e.message, MAX_TEXT_LEN)
        }
    }
}

/// Decodes and checks a hello from untrusted bytes.
pub fn decode_hello(b: &[u8]) -> Result<pb::Hello, ValidateError> {
    let m = decode::<pb::Hello>("hello", b)?;
    check_hello(&m)?;
    Ok(m)
}

/// Decodes and checks a flood request (every advert and withdrawal) from untrusted bytes.
pub fn decode_flood(b: &[u8]) -> Result<pb::FloodRequest, ValidateError> {
    let m = decode::<pb::FloodRequest>("flood request", b)?;
    check_flood(&m)?;
    Ok(m)
}

/// Decodes and checks a frame (every item) from untrusted bytes.
pub fn decode_frame(b: &[u8]) -> Result<pb::Frame, ValidateError> {
    let m = decode::<pb::Frame>("frame", b)?;
    check_frame(&m)?;
    Ok(m)
}

/// Decodes and checks a session envelope from untrusted bytes.
pub fn decode_envelope(b: &[u8]) -> Result<pb::SessionEnvelope, ValidateError> {
    let m = decode::<pb::SessionEnvelope>("session envelope", b)?;
    check_envelope(&m)?;
    Ok(m)
}

fn decode<M: Message + Default>(what: &'static str, b: &[u8]) -> Result<M, ValidateError> {
    if b.len() > MAX_MESSAGE_BYTES {
        return Err(ValidateError::TooLarge {
            what,
            len: b.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    M::decode(b).map_err(|e| ValidateError::Decode {
        what,
        message: e.to_string(),
    })
}

fn range<T: Into<u64> + Copy>(
    ctx: impl Fn() -> String,
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ValidateError> {
    let (value, min, max) = (value.into(), min.into(), max.into());
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidateError::Range {
            context: ctx(),
            field,
            value,
            min,
            max,
        })
    }
}

fn pct(ctx: impl Fn() -> String, field: &'static str, value: f64) -> Result<(), ValidateError> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(ValidateError::Percentage {
            context: ctx(),
            field,
            value,
        })
    }
}

fn number(ctx: impl Fn() -> String, field: &'static str, value: f64) -> Result<(), ValidateError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ValidateError::Number {
            context: ctx(),
            field,
            value,
        })
    }
}

fn too_many(ctx: impl Fn() -> String, field: &'static str, count: usize, max: usize) -> Result<(), ValidateError> {
    if count <= max {
        Ok(())
    } else {
        Err(ValidateError::TooMany {
            context: ctx(),
            field,
            count,
            max,
        })
    }
}

/// A name: at most [`MAX_NAME_LEN`] bytes, no control characters, empty only if `may_be_empty`.
fn name(ctx: impl Fn() -> String, field: &'static str, value: &str, may_be_empty: bool) -> Result<(), ValidateError> {
    if value.is_empty() && !may_be_empty {
        return Err(ValidateError::Missing { context: ctx(), field });
    }
    text(&ctx, field, value, MAX_NAME_LEN)?;
    if value.chars().any(char::is_control) {
        return Err(ValidateError::ControlChar {
            context: ctx(),
            field,
            value: shorten(value),
        });
    }
    Ok(())
}

fn text(ctx: impl Fn() -> String, field: &'static str, value: &str, max: usize) -> Result<(), ValidateError> {
    if value.len() <= max {
        Ok(())
    } else {
        Err(ValidateError::TooLong {
            context: ctx(),
            field,
            len: value.len(),
            max,
        })
    }
}

/// At most 80 characters of `s`, for error messages.
fn shorten(s: &str) -> String {
    const KEEP: usize = 80;
    match s.char_indices().nth(KEEP) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> pb::Hello {
        pb::Hello {
            header: Some(header("r2")),
            role: pb::Role::Edge as i32,
            boot_id: 7,
            hello_interval_ms: 1000,
            dead_interval_ms: 3000,
            interface: "eth0".into(),
        }
    }

    fn advert() -> pb::TelemetryAdvert {
        pb::TelemetryAdvert {
            quiet_intervals: 0,
            origin: "r3".into(),
            boot_id: 1,
            sequence: 1,
            timestamp_unix_ns: 1_700_000_000_000_000_000,
            hop_limit: 2,
            interval_ms: 1000,
            role: pb::Role::Fog as i32,
            resources: Some(pb::Resources {
                cpu_used_pct: 12.5,
                cpu_capacity_cores: 2.0,
                mem_used_pct: 40.0,
                free_cpu_cores: 1.75,
                cpu_pressure: Some(pb::Pressure {
                    some_avg10: 1.0,
                    full_avg10: 0.0,
                }),
                ..Default::default()
            }),
            control_address: "10.0.0.1:7470".into(),
            demand: vec![pb::ServiceDemand {
                service: "web".into(),
                flows_per_s: 2.5,
                packets: 100,
            }],
            services: vec![pb::ServiceInstance {
                service: "web".into(),
                state: "running".into(),
                name: "web-1".into(),
                cpu_pct: 12.5,
                memory_bytes: 40 << 20,
                memory_limit: 64 << 20,
                health: "healthy".into(),
            }],
            links: vec![pb::LinkMetrics {
                interface: "eth1".into(),
                neighbor: "r2".into(),
                rtt_ms: Some(0.4),
                up: true,
                ..Default::default()
            }],
            region: "r9".into(),
            placements: vec![pb::Placement {
                service: "web".into(),
                serving_router: "r3".into(),
                vip: "10.255.0.1".into(),
            }],
            sdwan: Some(pb::SdwanEdgeState {
                generation: 4,
                tunnels: 2,
                tunnels_up: 1,
                failed_ops: 0,
                items: vec![
                    pb::TunnelState {
                        name: "wo1-inet".into(),
                        up: false,
                    },
                    pb::TunnelState {
                        name: "wo1-mpls".into(),
                        up: true,
                    },
                ],
                paths: vec![pb::PathState {
                    overlay: "wan".into(),
                    underlay: "mpls".into(),
                    site: "e2".into(),
                    up: true,
                    rtt_ms: Some(4.2),
                    loss_pct: 0.0,
                    jitter_ms: 0.3,
                }],
                paths_total: 1,
                steering: vec![pb::SteerState {
                    class_name: "voip".into(),
                    site: "e2".into(),
                    paths: vec!["wan/mpls".into()],
                    met: Some(true),
                }],
                steering_total: 1,
            }),
        }
    }

    fn withdraw() -> pb::Withdraw {
        pb::Withdraw {
            origin: "r3".into(),
            boot_id: 1,
            hop_limit: 1,
            reason: "neighbor lost".into(),
        }
    }

    fn flood() -> pb::FloodRequest {
        pb::FloodRequest {
            header: Some(header("r2")),
            adverts: vec![advert()],
            withdrawals: vec![withdraw()],
        }
    }

    fn envelope(body: pb::session_envelope::Body) -> pb::SessionEnvelope {
        pb::SessionEnvelope {
            header: Some(header("ctl")),
            session_id: 1,
            sequence: 1,
            body: Some(body),
        }
    }

    fn reason<T>(r: Result<T, ValidateError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        }
    }

    #[test]
    fn versions_are_printed_major_dot_minor() {
        assert_eq!(version_string(PROTOCOL_VERSION), "2.7");
        assert_eq!(version_string((2 << 16) | 3), "2.3");
    }

    #[test]
    fn router_ids() {
        for ok in ["r1", "edge-1.lab_A", &"x".repeat(64)] {
            assert!(is_router_id(ok), "{ok}");
        }
        for bad in ["", "r 1", "r/1", "é", &"x".repeat(65)] {
            assert!(!is_router_id(bad), "{bad}");
        }
    }

    #[test]
    fn headers() {
        let h = header("r1");
        assert_eq!(check_header(Some(&h)), Ok(&h));
        assert_eq!(reason(check_header(None)), "missing_header");
        let minor = pb::Header {
            version: PROTOCOL_VERSION | 7,
            ..h.clone()
        };
        assert!(check_header(Some(&minor)).is_ok(), "a newer minor version is accepted");
        let v1 = pb::Header {
            version: (1 << 16) | 1,
            ..h.clone()
        };
        let e = check_header(Some(&v1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported protocol version 1.1 (this router speaks 2.x)"
        );
        let v0 = pb::Header {
            version: 0,
            ..h.clone()
        };
        assert_eq!(reason(check_header(Some(&v0))), "version");
        let bad = pb::Header {
            sender: "a b".into(),
            ..h
        };
        let e = check_header(Some(&bad)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "header sender \"a b\" is not a valid router id (1-64 characters of A-Z a-z 0-9 . _ -)"
        );
    }

    #[test]
    fn hellos() {
        assert_eq!(check_hello(&hello()), Ok(()));
        type Edit = fn(&mut pb::Hello);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (|h| h.header = None, "missing_header", "hello has no header"),
            (|h| h.boot_id = 0, "boot_id", "hello from \"r2\": boot_id is 0"),
            (
                |h| h.hello_interval_ms = 5,
                "range",
                "hello from \"r2\": hello_interval_ms 5 is outside 10-600000",
            ),
            (
                |h| h.dead_interval_ms = 1000,
                "dead_interval",
                "hello from \"r2\": dead_interval_ms 1000 is not longer than hello_interval_ms 1000",
            ),
            (
                |h| h.dead_interval_ms = 4_000_000,
                "range",
                "hello from \"r2\": dead_interval_ms 4000000 is outside 10-3600000",
            ),
            (
                |h| h.interface = "x".repeat(65),
                "too_long",
                "hello from \"r2\": interface is 65 bytes long, more than 64",
            ),
            (
                |h| h.interface = "eth\n0".into(),
                "control_char",
                "hello from \"r2\": interface \"eth\\n0\" contains a control character",
            ),
        ];
        for (edit, want, msg) in cases {
            let mut h = hello();
            edit(&mut h);
            let e = check_hello(&h).unwrap_err();
            assert_eq!((e.reason(), e.to_string().as_str()), (want, msg));
        }
    }

    #[test]
    fn hello_replies() {
        let r = pb::HelloReply {
            header: Some(header("r2")),
            role: 0,
            boot_id: 3,
        };
        assert_eq!(check_hello_reply(&r), Ok(()));
        assert_eq!(
            reason(check_hello_reply(&pb::HelloReply {
                boot_id: 0,
                ..r.clone()
            })),
            "boot_id"
        );
        assert_eq!(
            reason(check_hello_reply(&pb::HelloReply { header: None, ..r })),
            "missing_header"
        );
    }

    #[test]
    fn adverts() {
        assert_eq!(check_advert(&advert()), Ok(()));
        let mut unknown_role = advert();
        unknown_role.role = 99;
        assert_eq!(
            check_advert(&unknown_role),
            Ok(()),
            "unknown roles pass (later minor versions)"
        );
        type Edit = fn(&mut pb::TelemetryAdvert);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                |a| a.origin = String::new(),
                "router_id",
                "advert origin \"\" is not a valid router id (1-64 characters of A-Z a-z 0-9 . _ -)",
            ),
            (|a| a.boot_id = 0, "boot_id", "advert from \"r3\": boot_id is 0"),
            (
                |a| a.sequence = 0,
                "range",
                "advert from \"r3\": sequence 0 is outside 1-18446744073709551615",
            ),
            (
                |a| a.timestamp_unix_ns = -5,
                "number",
                "advert from \"r3\": timestamp_unix_ns -5 is not a finite number of 0 or more",
            ),
            (
                |a| a.hop_limit = 0,
                "range",
                "advert from \"r3\": hop_limit 0 is outside 1-8",
            ),
            (
                |a| a.hop_limit = 9,
                "range",
                "advert from \"r3\": hop_limit 9 is outside 1-8",
            ),
            (
                |a| a.interval_ms = 9,
                "range",
                "advert from \"r3\": interval_ms 9 is outside 10-600000",
            ),
            (
                |a| a.interval_ms = 600_001,
                "range",
                "advert from \"r3\": interval_ms 600001 is outside 10-600000",
            ),
            (|a| a.resources = None, "missing", "advert from \"r3\" has no resources"),
            (
                |a| a.resources.as_mut().unwrap().mem_used_pct = 130.0,
                "percentage",
                "advert from \"r3\": mem_used_pct 130 is outside 0-100",
            ),
            (
                |a| a.resources.as_mut().unwrap().cpu_used_pct = f64::NAN,
                "percentage",
                "advert from \"r3\": cpu_used_pct NaN is outside 0-100",
            ),
            (
                |a| a.resources.as_mut().unwrap().cpu_used_pct = -0.5,
                "percentage",
                "advert from \"r3\": cpu_used_pct -0.5 is outside 0-100",
            ),
            (
                |a| a.resources.as_mut().unwrap().cpu_capacity_cores = f64::INFINITY,
                "number",
                "advert from \"r3\": cpu_capacity_cores inf is not a finite number of 0 or more",
            ),
            (
                |a| a.resources.as_mut().unwrap().free_cpu_cores = -1.0,
                "number",
                "advert from \"r3\": free_cpu_cores -1 is not a finite number of 0 or more",
            ),
            (
                |a| {
                    a.resources.as_mut().unwrap().io_pressure = Some(pb::Pressure {
                        some_avg10: 0.0,
                        full_avg10: 101.0,
                    })
                },
                "percentage",
                "advert from \"r3\": io_pressure 101 is outside 0-100",
            ),
            (
                |a| a.sdwan.as_mut().unwrap().paths[0].loss_pct = 101.0,
                "percentage",
                "advert from \"r3\": sdwan path loss_pct 101 is outside 0-100",
            ),
            (
                |a| a.sdwan.as_mut().unwrap().paths[0].rtt_ms = Some(f64::NAN),
                "number",
                "advert from \"r3\": sdwan path rtt_ms NaN is not a finite number of 0 or more",
            ),
            (
                |a| {
                    let s = a.sdwan.as_mut().unwrap();
                    s.paths = vec![s.paths[0].clone(); 65];
                },
                "too_many",
                "advert from \"r3\" has 65 sdwan paths, more than 64",
            ),
            (
                |a| a.sdwan.as_mut().unwrap().steering_total = 0,
                "range",
                "advert from \"r3\": sdwan steering_total 0 is outside 1-4294967295",
            ),
            (
                |a| a.sdwan.as_mut().unwrap().steering[0].class_name = String::new(),
                "missing",
                "advert from \"r3\" has no sdwan steering class",
            ),
            (
                |a| a.links = vec![pb::LinkMetrics::default(); 65],
                "too_many",
                "advert from \"r3\" has 65 links, more than 64",
            ),
            (
                |a| a.services = vec![a.services[0].clone(); 65],
                "too_many",
                "advert from \"r3\" has 65 services, more than 64",
            ),
            (
                |a| a.links[0].interface = "i".repeat(65),
                "too_long",
                "advert from \"r3\": link interface is 65 bytes long, more than 64",
            ),
            (
                |a| a.links[0].neighbor = "no way".into(),
                "router_id",
                "link neighbor \"no way\" is not a valid router id (1-64 characters of A-Z a-z 0-9 . _ -)",
            ),
            (
                |a| a.links[0].rtt_ms = Some(-1.0),
                "number",
                "advert from \"r3\": link rtt_ms -1 is not a finite number of 0 or more",
            ),
            (
                |a| a.services[0].service = String::new(),
                "missing",
                "advert from \"r3\" has no service",
            ),
            (
                |a| a.services[0].state = "up\u{7}".into(),
                "control_char",
                "advert from \"r3\": service state \"up\\u{7}\" contains a control character",
            ),
        ];
        for (edit, want, msg) in cases {
            let mut a = advert();
            edit(&mut a);
            let e = check_advert(&a).unwrap_err();
            assert_eq!((e.reason(), e.to_string().as_str()), (want, msg));
        }
    }

    #[test]
    fn withdrawals() {
        assert_eq!(check_withdraw(&withdraw()), Ok(()));
        type Edit = fn(&mut pb::Withdraw);
        let cases: Vec<(Edit, &str)> = vec![
            (|w| w.origin = "?".into(), "router_id"),
            (|w| w.boot_id = 0, "boot_id"),
            (|w| w.hop_limit = 0, "range"),
            (|w| w.hop_limit = MAX_HOP_LIMIT + 1, "range"),
            (|w| w.reason = "x".repeat(MAX_TEXT_LEN + 1), "too_long"),
        ];
        for (edit, want) in cases {
            let mut w = withdraw();
            edit(&mut w);
            assert_eq!(reason(check_withdraw(&w)), want);
        }
    }

    #[test]
    fn floods() {
        assert_eq!(check_flood(&flood()), Ok(()));
        let mut f = flood();
        f.header = None;
        assert_eq!(reason(check_flood(&f)), "missing_header");
        let mut f = flood();
        f.adverts = vec![advert(); MAX_ADVERTS_PER_FLOOD + 1];
        let e = check_flood(&f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "flood request from \"r2\" has 257 adverts, more than 256"
        );
        let mut f = flood();
        f.withdrawals = vec![withdraw(); MAX_ADVERTS_PER_FLOOD + 1];
        assert_eq!(reason(check_flood(&f)), "too_many");
        let mut f = flood();
        f.adverts[0].hop_limit = 0;
        assert_eq!(reason(check_flood(&f)), "range");
        assert!(
            check_flood_request(&f).is_ok(),
            "items are not checked by check_flood_request"
        );
        let mut f = flood();
        f.withdrawals[0].boot_id = 0;
        assert_eq!(reason(check_flood(&f)), "boot_id");
        let reply = pb::FloodReply {
            header: Some(header("r2")),
            accepted: 1,
            rejected: 0,
        };
        assert_eq!(check_flood_reply(&reply), Ok(()));
        assert_eq!(reason(check_flood_reply(&pb::FloodReply::default())), "missing_header");
    }

    #[test]
    fn envelopes() {
        use pb::intent::Kind;
        use pb::session_envelope::Body;
        let intent = |id, kind| pb::Intent { id, kind: Some(kind) };
        let batch = |intents| Body::Intents(pb::IntentBatch { intents });
        let good = [
            batch(vec![
                intent(
                    1,
                    Kind::ServiceInstance(pb::ServiceInstanceIntent {
                        service: "web".into(),
                        present: true,
                    }),
                ),
                intent(
                    2,
                    Kind::ServiceRule(pb::ServiceRuleIntent {
                        service: "web".into(),
                        vip: "10.255.0.1".into(),
                        local: true,
                        serving_router: "r1".into(),
                    }),
                ),
                intent(
                    3,
                    Kind::Route(pb::RouteIntent {
                        prefix: "10.0.0.0/24".into(),
                        next_hop: "10.0.1.1".into(),
                        present: true,
                    }),
                ),
                intent(4, Kind::Policy(pb::PolicyIntent { text: "a\nb".into() })),
            ]),
            Body::Ack(pb::Ack { intent_ids: vec![1, 2] }),
            Body::Error(pb::IntentError {
                intent_id: 1,
                code: "no_capacity".into(),
                message: "r3 has no free memory".into(),
            }),
        ];
        for body in good {
            assert_eq!(check_envelope(&envelope(body)), Ok(()));
        }
        let mut e = envelope(Body::Ack(pb::Ack::default()));
        e.header = None;
        assert_eq!(reason(check_envelope(&e)), "missing_header");
        let mut e = envelope(Body::Ack(pb::Ack::default()));
        e.session_id = 0;
        assert_eq!(reason(check_envelope(&e)), "range");
        let mut e = envelope(Body::Ack(pb::Ack::default()));
        e.sequence = 0;
        assert_eq!(reason(check_envelope(&e)), "range");
        let mut e = envelope(Body::Ack(pb::Ack::default()));
        e.body = None;
        assert_eq!(
            check_envelope(&e).unwrap_err().to_string(),
            "session envelope from \"ctl\" has no body"
        );
        let bad = [
            (batch(vec![pb::Intent { id: 1, kind: None }]), "missing"),
            (
                batch(vec![intent(0, Kind::Policy(pb::PolicyIntent::default()))]),
                "range",
            ),
            (
                batch(vec![intent(1, Kind::Policy(pb::PolicyIntent::default())); 257]),
                "too_many",
            ),
            (
                batch(vec![intent(
                    1,
                    Kind::Policy(pb::PolicyIntent {
                        text: "p".repeat(MAX_POLICY_LEN + 1),
                    }),
                )]),
                "too_long",
            ),
            (
                batch(vec![intent(
                    1,
                    Kind::ServiceInstance(pb::ServiceInstanceIntent::default()),
                )]),
                "missing",
            ),
            (
                batch(vec![intent(
                    1,
                    Kind::Route(pb::RouteIntent {
                        prefix: "10.0.0.0/8\t".into(),
                        ..Default::default()
                    }),
                )]),
                "control_char",
            ),
            (Body::Ack(pb::Ack { intent_ids: vec![0] }), "range"),
            (
                Body::Ack(pb::Ack {
                    intent_ids: vec![1; 257],
                }),
                "too_many",
            ),
            (
                Body::Error(pb::IntentError {
                    intent_id: 1,
                    code: String::new(),
                    message: String::new(),
                }),
                "missing",
            ),
        ];
        for (body, want) in bad {
            assert_eq!(reason(check_envelope(&envelope(body))), want);
        }
    }

    #[test]
    fn decoders() {
        let bytes = hello().encode_to_vec();
        assert_eq!(decode_hello(&bytes), Ok(hello()));
        assert_eq!(reason(decode_hello(&[0xff, 0xff])), "decode");
        assert_eq!(reason(decode_hello(&[])), "missing_header");
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        let e = decode_flood(&big).unwrap_err();
        assert_eq!(
            e.to_string(),
            "flood request is 65537 bytes, more than the 65536 allowed"
        );
        let bytes = flood().encode_to_vec();
        assert_eq!(decode_flood(&bytes), Ok(flood()));
        let env = envelope(pb::session_envelope::Body::Ack(pb::Ack { intent_ids: vec![9] }));
        assert_eq!(decode_envelope(&env.encode_to_vec()), Ok(env));
        assert_eq!(reason(decode_envelope(&[0x08])), "decode");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let mut h = header("r1");
        h.sender = "x y".repeat(1000);
        let msg = check_header(Some(&h)).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains("..."));
    }

    #[test]
    fn every_reason_is_listed() {
        let all = [
            ValidateError::UnknownNeighbor { sender: "x".into() }.reason(),
            ValidateError::SenderMismatch {
                expected: "a".into(),
                got: "b".into(),
            }
            .reason(),
        ];
        for r in all {
            assert!(ValidateError::REASONS.contains(&r));
        }
    }
}
