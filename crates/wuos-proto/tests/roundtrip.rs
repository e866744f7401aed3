//! Property tests of the wire format and of the receivers' robustness:
//!
//! - every message type survives encode → decode unchanged;
//! - `decode_*` never panic on arbitrary bytes, nor on valid messages with bytes flipped, and
//!   whatever they accept re-encodes to something they accept again, unchanged;
//! - an instance never panics on arbitrary (decodable) hellos and flood requests.

use proptest::collection::vec;
use proptest::num::f64 as f;
use proptest::option;
use proptest::prelude::*;
use prost::Message;
use wuos_proto::instance::{Input, Instance, InstanceConfig};
use wuos_proto::neighbor::NeighborConfig;
use wuos_proto::pb;
use wuos_proto::validate::{self, decode_envelope, decode_flood, decode_frame, decode_hello};

/// Any float but NaN (which is not equal to itself).
fn num() -> impl Strategy<Value = f64> {
    f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO | f::INFINITE
}

/// Mostly plausible percentages, sometimes anything.
fn pct() -> impl Strategy<Value = f64> {
    prop_oneof![4 => 0.0..=100.0f64, 1 => num()]
}

/// Mostly plausible quantities, sometimes anything.
fn qty() -> impl Strategy<Value = f64> {
    prop_oneof![4 => 0.0..64.0f64, 1 => num()]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9.-]{1,8}", 1 => ".{0,12}"]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![6 => "r[1-6]", 1 => "x[0-9]", 1 => ".{0,4}"]
}

fn header() -> impl Strategy<Value = pb::Header> {
    (
        prop_oneof![4 => Just(wuos_proto::PROTOCOL_VERSION), 1 => any::<u32>()],
        id(),
    )
        .prop_map(|(version, sender)| pb::Header { version, sender })
}

fn role() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0..5i32, 1 => any::<i32>()]
}

fn hello() -> impl Strategy<Value = pb::Hello> {
    (
        option::of(header()),
        role(),
        any::<u64>(),
        prop_oneof![3 => Just(1000u32), 1 => any::<u32>()],
        prop_oneof![3 => Just(3000u32), 1 => any::<u32>()],
        text(),
    )
        .prop_map(
            |(header, role, boot_id, hello_interval_ms, dead_interval_ms, interface)| pb::Hello {
                header,
                role,
                boot_id,
                hello_interval_ms,
                dead_interval_ms,
                interface,
            },
        )
}

fn hello_reply() -> impl Strategy<Value = pb::HelloReply> {
    (option::of(header()), role(), any::<u64>()).prop_map(|(header, role, boot_id)| pb::HelloReply {
        header,
        role,
        boot_id,
    })
}

fn pressure() -> impl Strategy<Value = pb::Pressure> {
    (pct(), pct()).prop_map(|(some_avg10, full_avg10)| pb::Pressure { some_avg10, full_avg10 })
}

fn resources() -> impl Strategy<Value = pb::Resources> {
    (
        pct(),
        qty(),
        pct(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        qty(),
        any::<u64>(),
        option::of(pressure()),
        option::of(pressure()),
        option::of(pressure()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j, k, l)| pb::Resources {
            cpu_used_pct: a,
            cpu_capacity_cores: b,
            mem_used_pct: c,
            mem_used_bytes: d,
            mem_total_bytes: e,
            disk_read_bytes_per_s: f,
            disk_write_bytes_per_s: g,
            free_cpu_cores: h,
            free_mem_bytes: i,
            cpu_pressure: j,
            mem_pressure: k,
            io_pressure: l,
        })
}

fn link() -> impl Strategy<Value = pb::LinkMetrics> {
    (
        text(),
        id(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        option::of(qty()),
        any::<bool>(),
    )
        .prop_map(|(interface, neighbor, a, b, c, d, rtt_ms, up)| pb::LinkMetrics {
            interface,
            neighbor,
            rx_bytes_per_s: a,
            tx_bytes_per_s: b,
            rx_packets_per_s: c,
            tx_packets_per_s: d,
            rtt_ms,
            up,
        })
}

fn service() -> impl Strategy<Value = pb::ServiceInstance> {
    (text(), text(), text(), 0.0..1e4f64, any::<u64>(), any::<u64>(), text()).prop_map(
        |(service, state, name, cpu_pct, memory_bytes, memory_limit, health)| pb::ServiceInstance {
            service,
            state,
            name,
            cpu_pct,
            memory_bytes,
            memory_limit,
            health,
        },
    )
}

fn advert() -> impl Strategy<Value = pb::TelemetryAdvert> {
    (
        id(),
        prop_oneof![3 => 1..4u64, 1 => any::<u64>()],
        prop_oneof![3 => 1..6u64, 1 => any::<u64>()],
        prop_oneof![3 => 0..i64::MAX, 1 => any::<i64>()],
        prop_oneof![3 => 1..4u32, 1 => any::<u32>()],
        prop_oneof![3 => Just(1000u32), 1 => any::<u32>()],
        role(),
        option::weighted(0.9, resources()),
        vec(service(), 0..3),
        vec(link(), 0..3),
    )
        .prop_map(
            |(
                origin,
                boot_id,
                sequence,
                timestamp_unix_ns,
                hop_limit,
                interval_ms,
                role,
                resources,
                services,
                links,
            )| {
                pb::TelemetryAdvert {
                    origin,
                    boot_id,
                    sequence,
                    timestamp_unix_ns,
                    hop_limit,
                    interval_ms,
                    role,
                    resources,
                    services,
                    links,
                    ..Default::default()
                }
            },
        )
}

fn withdraw() -> impl Strategy<Value = pb::Withdraw> {
    (id(), prop_oneof![3 => 1..4u64, 1 => any::<u64>()], 0..4u32, text()).prop_map(
        |(origin, boot_id, hop_limit, reason)| pb::Withdraw {
            origin,
            boot_id,
            hop_limit,
            reason,
        },
    )
}

fn flood_request() -> impl Strategy<Value = pb::FloodRequest> {
    (option::of(header()), vec(advert(), 0..4), vec(withdraw(), 0..3)).prop_map(|(header, adverts, withdrawals)| {
        pb::FloodRequest {
            header,
            adverts,
            withdrawals,
        }
    })
}

fn delta() -> impl Strategy<Value = pb::AdvertDelta> {
    (
        (id(), prop_oneof![3 => 1..4u64, 1 => any::<u64>()], 1..6u64, 0..6u64),
        prop_oneof![3 => 0..i64::MAX, 1 => any::<i64>()],
        prop_oneof![3 => 1..4u32, 1 => any::<u32>()],
        option::of(resources()),
        vec(link(), 0..3),
        vec(text(), 0..2),
        option::of(vec(service(), 0..2)),
    )
        .prop_map(
            |(
                (origin, boot_id, sequence, back),
                timestamp_unix_ns,
                hop_limit,
                resources,
                links,
                links_removed,
                services,
            )| {
                pb::AdvertDelta {
                    origin,
                    boot_id,
                    sequence,
                    base_sequence: sequence.saturating_sub(back),
                    timestamp_unix_ns,
                    hop_limit,
                    resources,
                    links,
                    links_removed,
                    services: services.map(|items| pb::ServiceList { items }),
                    demand: None,
                    placements: None,
                    sdwan: None,
                }
            },
        )
}

fn frame() -> impl Strategy<Value = pb::Frame> {
    (
        option::of(header()),
        option::weighted(0.3, hello()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        vec(advert(), 0..3),
        vec(delta(), 0..3),
        vec(withdraw(), 0..2),
        vec(id(), 0..2),
    )
        .prop_map(
            |(header, hello, (sent_us, echo_us, echo_held_us), adverts, deltas, withdrawals, need_full)| pb::Frame {
                header,
                hello,
                sent_us,
                echo_us,
                echo_held_us,
                adverts,
                deltas,
                withdrawals,
                need_full,
            },
        )
}

fn flood_reply() -> impl Strategy<Value = pb::FloodReply> {
    (option::of(header()), any::<u32>(), any::<u32>()).prop_map(|(header, accepted, rejected)| pb::FloodReply {
        header,
        accepted,
        rejected,
    })
}

fn intent_kind() -> impl Strategy<Value = pb::intent::Kind> {
    use pb::intent::Kind;
    prop_oneof![
        (text(), any::<bool>())
            .prop_map(|(service, present)| Kind::ServiceInstance(pb::ServiceInstanceIntent { service, present })),
        (text(), text(), any::<bool>(), text()).prop_map(|(service, vip, local, serving_router)| Kind::ServiceRule(
            pb::ServiceRuleIntent {
                service,
                vip,
                local,
                serving_router
            }
        )),
        (text(), text(), any::<bool>()).prop_map(|(prefix, next_hop, present)| Kind::Route(pb::RouteIntent {
            prefix,
            next_hop,
            present
        })),
        ".{0,40}".prop_map(|text| Kind::Policy(pb::PolicyIntent { text })),
    ]
}

fn intent() -> impl Strategy<Value = pb::Intent> {
    (any::<u64>(), option::of(intent_kind())).prop_map(|(id, kind)| pb::Intent { id, kind })
}

fn envelope() -> impl Strategy<Value = pb::SessionEnvelope> {
    use pb::session_envelope::Body;
    let body = prop_oneof![
        vec(intent(), 0..4).prop_map(|intents| Body::Intents(pb::IntentBatch { intents })),
        vec(any::<u64>(), 0..6).prop_map(|intent_ids| Body::Ack(pb::Ack { intent_ids })),
        (any::<u64>(), text(), ".{0,30}").prop_map(|(intent_id, code, message)| Body::Error(pb::IntentError {
            intent_id,
            code,
            message
        })),
    ];
    (option::of(header()), any::<u64>(), any::<u64>(), option::of(body)).prop_map(
        |(header, session_id, sequence, body)| pb::SessionEnvelope {
            header,
            session_id,
            sequence,
            body,
        },
    )
}

fn view_entry() -> impl Strategy<Value = pb::ViewEntry> {
    (
        option::of(advert()),
        any::<u32>(),
        any::<u64>(),
        id(),
        any::<bool>(),
        num(),
    )
        .prop_map(
            |(advert, hops, age_ms, learned_from, stale, latency_ms)| pb::ViewEntry {
                origin: advert.as_ref().map(|a| a.origin.clone()).unwrap_or_default(),
                advert,
                hops,
                age_ms,
                learned_from,
                stale,
                latency_ms,
            },
        )
}

fn neighbor_state() -> impl Strategy<Value = pb::NeighborState> {
    (id(), text(), text(), text(), option::of(num()), any::<u64>()).prop_map(
        |(id, address, interface, state, rtt_ms, last_heard_ms)| pb::NeighborState {
            id,
            address,
            interface,
            state,
            rtt_ms,
            last_heard_ms,
        },
    )
}

fn counter() -> impl Strategy<Value = pb::Counter> {
    (text(), any::<u64>()).prop_map(|(name, value)| pb::Counter { name, value })
}

fn status_reply() -> impl Strategy<Value = pb::StatusReply> {
    (
        id(),
        role(),
        any::<u64>(),
        option::of(advert()),
        vec(view_entry(), 0..3),
        vec(neighbor_state(), 0..3),
        vec(counter(), 0..3),
        any::<u64>(),
    )
        .prop_map(
            |(router_id, role, boot_id, own, view, neighbors, counters, uptime_ms)| pb::StatusReply {
                router_id,
                role,
                boot_id,
                own,
                view,
                neighbors,
                counters,
                uptime_ms,
                datapath: vec![pb::DataPathService {
                    service: "pabx".into(),
                    packets: boot_id,
                    flows: uptime_ms,
                    redirect_to: "d0".into(),
                }],
            },
        )
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: M) -> Result<(), TestCaseError> {
    let bytes = m.encode_to_vec();
    prop_assert_eq!(bytes.len(), m.encoded_len());
    prop_assert_eq!(M::decode(bytes.as_slice()).unwrap(), m);
    Ok(())
}

macro_rules! roundtrips {
    ($($name:ident: $strategy:expr;)*) => {
        proptest! {
            $(#[test] fn $name(m in $strategy) { roundtrip(m)?; })*
        }
    };
}

roundtrips! {
    roundtrip_header: header();
    roundtrip_hello: hello();
    roundtrip_hello_reply: hello_reply();
    roundtrip_pressure: pressure();
    roundtrip_resources: resources();
    roundtrip_link_metrics: link();
    roundtrip_service_instance: service();
    roundtrip_telemetry_advert: advert();
    roundtrip_withdraw: withdraw();
    roundtrip_flood_request: flood_request();
    roundtrip_flood_reply: flood_reply();
    roundtrip_advert_delta: delta();
    roundtrip_frame: frame();
    roundtrip_intent: intent();
    roundtrip_intent_batch: vec(intent(), 0..4).prop_map(|intents| pb::IntentBatch { intents });
    roundtrip_ack: vec(any::<u64>(), 0..6).prop_map(|intent_ids| pb::Ack { intent_ids });
    roundtrip_session_envelope: envelope();
    roundtrip_status_request: any::<bool>().prop_map(|omit_view| pb::StatusRequest { omit_view });
    roundtrip_view_entry: view_entry();
    roundtrip_neighbor_state: neighbor_state();
    roundtrip_counter: counter();
    roundtrip_status_reply: status_reply();
}

/// Decodes `bytes` with all three decoders; whatever one accepts it accepts again re-encoded.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = decode_hello(bytes) {
        prop_assert_eq!(decode_hello(&m.encode_to_vec()), Ok(m));
    }
    if let Ok(m) = decode_flood(bytes) {
        prop_assert_eq!(decode_flood(&m.encode_to_vec()), Ok(m));
    }
    if let Ok(m) = decode_envelope(bytes) {
        prop_assert_eq!(decode_envelope(&m.encode_to_vec()), Ok(m));
    }
    if let Ok(m) = decode_frame(bytes) {
        prop_assert_eq!(decode_frame(&m.encode_to_vec()), Ok(m));
    }
    Ok(())
}

/// Flips bytes of `bytes` at the given (wrapped) positions.
fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)]) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
    }
    bytes
}

fn instance() -> Instance {
    let mut c = InstanceConfig::new("r1", pb::Role::Edge, 1);
    c.neighbors = ["r2", "r3", "r4"]
        .iter()
        .map(|n| NeighborConfig {
            id: (*n).into(),
            address: String::new(),
            interface: String::new(),
        })
        .collect();
    Instance::new(c)
}

proptest! {
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..600)) {
        decode_all(&bytes)?;
    }

    #[test]
    fn decoders_never_panic_on_damaged_messages(
        hello in hello(),
        flood in flood_request(),
        env in envelope(),
        f in frame(),
        flips in vec((any::<usize>(), 1..=255u8), 0..4),
        cut in any::<usize>(),
    ) {
        for bytes in [hello.encode_to_vec(), flood.encode_to_vec(), env.encode_to_vec(), f.encode_to_vec()] {
            decode_all(&bytes)?;
            let damaged = mutate(bytes.clone(), &flips);
            decode_all(&damaged)?;
            decode_all(&damaged[..cut % (damaged.len() + 1)])?;
        }
    }

    #[test]
    fn what_check_frame_accepts_an_instance_takes_whole(f in frame(), hellos in vec(hello(), 0..4)) {
        let mut i = instance();
        for n in ["r2", "r3", "r4"] {
            i.process(Input::LinkOpened { now_ms: 0, neighbor: n.into() });
        }
        for h in &hellos {
            let from = h.header.as_ref().map(|h| h.sender.clone()).unwrap_or_default();
            let hf = pb::Frame { header: h.header.clone(), hello: Some(h.clone()), ..Default::default() };
            let _ = i.on_frame(10, &from, &hf, None);
        }
        let from = f.header.as_ref().map(|h| h.sender.clone()).unwrap_or_default();
        let valid = validate::check_frame(&f).is_ok();
        let before = i.counters().rejected_total();
        let (_, r) = i.on_frame(20, &from, &f, Some(0.1));
        match r {
            Ok(()) => {
                if valid {
                    prop_assert_eq!(i.counters().rejected_total(), before, "a valid frame has no invalid item");
                }
            }
            Err(e) => prop_assert!(
                !valid || matches!(e.reason(), "unknown_neighbor" | "not_up"),
                "{e}"
            ),
        }
        let _ = i.status(30, 0);
    }
}

/// Writes valid messages as seed inputs for the fuzz targets into `fuzz/seeds/<target>/`:
/// `cargo test -p wuos-proto --test roundtrip -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run by hand when the messages change"]
fn write_fuzz_seeds() {
    use pb::intent::Kind;
    use pb::session_envelope::Body;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let h = || Some(validate::header("r2"));
    let hello = pb::Hello {
        header: h(),
        role: pb::Role::Fog as i32,
        boot_id: 42,
        hello_interval_ms: 1000,
        dead_interval_ms: 3000,
        interface: "eth0".into(),
    };
    let pressure = Some(pb::Pressure {
        some_avg10: 1.5,
        full_avg10: 0.25,
    });
    let advert = pb::TelemetryAdvert {
        origin: "r3".into(),
        boot_id: 7,
        sequence: 12,
        timestamp_unix_ns: 1_700_000_000_000_000_000,
        hop_limit: 2,
        interval_ms: 1000,
        role: pb::Role::Edge as i32,
        resources: Some(pb::Resources {
            cpu_used_pct: 37.5,
            cpu_capacity_cores: 2.0,
            mem_used_pct: 61.0,
            mem_used_bytes: 160 << 20,
            mem_total_bytes: 256 << 20,
            disk_read_bytes_per_s: 4096,
            disk_write_bytes_per_s: 8192,
            free_cpu_cores: 1.25,
            free_mem_bytes: 96 << 20,
            cpu_pressure: pressure,
            mem_pressure: pressure,
            io_pressure: pressure,
        }),
        services: vec![pb::ServiceInstance {
            service: "web".into(),
            state: "running".into(),
            name: "web-1".into(),
            cpu_pct: 3.5,
            memory_bytes: 12 << 20,
            memory_limit: 64 << 20,
            health: "healthy".into(),
        }],
        links: vec![pb::LinkMetrics {
            interface: "eth1".into(),
            neighbor: "r2".into(),
            rx_bytes_per_s: 1000,
            tx_bytes_per_s: 2000,
            rx_packets_per_s: 10,
            tx_packets_per_s: 20,
            rtt_ms: Some(0.5),
            up: true,
        }],
        ..Default::default()
    };
    let flood = pb::FloodRequest {
        header: h(),
        adverts: vec![
            advert.clone(),
            pb::TelemetryAdvert {
                origin: "r4".into(),
                ..advert
            },
        ],
        withdrawals: vec![pb::Withdraw {
            origin: "r5".into(),
            boot_id: 3,
            hop_limit: 1,
            reason: "neighbor lost".into(),
        }],
    };
    let envelope = |sequence, body| pb::SessionEnvelope {
        header: h(),
        session_id: 9,
        sequence,
        body: Some(body),
    };
    let intents = vec![
        pb::Intent {
            id: 1,
            kind: Some(Kind::ServiceInstance(pb::ServiceInstanceIntent {
                service: "web".into(),
                present: true,
            })),
        },
        pb::Intent {
            id: 2,
            kind: Some(Kind::ServiceRule(pb::ServiceRuleIntent {
                service: "web".into(),
                vip: "10.255.0.1".into(),
                local: false,
                serving_router: String::new(),
            })),
        },
        pb::Intent {
            id: 3,
            kind: Some(Kind::Route(pb::RouteIntent {
                prefix: "10.1.0.0/16".into(),
                next_hop: "10.0.0.1".into(),
                present: true,
            })),
        },
        pb::Intent {
            id: 4,
            kind: Some(Kind::Policy(pb::PolicyIntent {
                text: "prefer r3 for web".into(),
            })),
        },
    ];
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("decode_hello", "hello", hello.encode_to_vec()),
        ("decode_flood", "flood", flood.encode_to_vec()),
        (
            "decode_frame",
            "frame",
            pb::Frame {
                header: h(),
                hello: Some(hello.clone()),
                sent_us: 1_000,
                echo_us: 900,
                echo_held_us: 40,
                adverts: flood.adverts.clone(),
                deltas: vec![pb::AdvertDelta {
                    origin: "r6".into(),
                    boot_id: 2,
                    sequence: 5,
                    base_sequence: 4,
                    timestamp_unix_ns: 5,
                    hop_limit: 1,
                    links_removed: vec!["eth1".into()],
                    ..Default::default()
                }],
                withdrawals: flood.withdrawals.clone(),
                need_full: vec!["r7".into()],
            }
            .encode_to_vec(),
        ),
        (
            "decode_envelope",
            "intents",
            envelope(1, Body::Intents(pb::IntentBatch { intents })).encode_to_vec(),
        ),
        (
            "decode_envelope",
            "ack",
            envelope(
                2,
                Body::Ack(pb::Ack {
                    intent_ids: vec![1, 2, 3],
                }),
            )
            .encode_to_vec(),
        ),
        (
            "decode_envelope",
            "error",
            envelope(
                3,
                Body::Error(pb::IntentError {
                    intent_id: 4,
                    code: "bad_policy".into(),
                    message: "unknown router r9".into(),
                }),
            )
            .encode_to_vec(),
        ),
    ];
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    // Every seed passes its decoder.
    for (target, decode) in [
        (
            "decode_hello",
            (|b: &[u8]| decode_hello(b).map(drop)) as fn(&[u8]) -> Result<(), _>,
        ),
        ("decode_flood", |b| decode_flood(b).map(drop)),
        ("decode_frame", |b| decode_frame(b).map(drop)),
        ("decode_envelope", |b| decode_envelope(b).map(drop)),
    ] {
        for f in std::fs::read_dir(root.join(target)).unwrap() {
            assert_eq!(decode(&std::fs::read(f.unwrap().path()).unwrap()), Ok(()));
        }
    }
}

/// The JSON form (serde derives from the build): what a daemon produces reads back the same.
fn json_roundtrip<M>(m: M) -> Result<(), TestCaseError>
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(&m).unwrap();
    let back: M = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
    prop_assert_eq!(back, m);
    Ok(())
}

proptest! {
    #[test]
    fn json_roundtrip_header(m in header()) { json_roundtrip(m)?; }
    #[test]
    fn json_roundtrip_intent(m in intent()) { json_roundtrip(m)?; }
    #[test]
    fn json_roundtrip_envelope(m in envelope()) { json_roundtrip(m)?; }
    #[test]
    fn json_roundtrip_hello_with_a_known_role(mut m in hello(), r in 0..5i32) {
        m.role = r;
        json_roundtrip(m)?;
    }
}
