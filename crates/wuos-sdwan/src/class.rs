//! Traffic classes: match rules (protocol, ports, prefixes, DSCP, ingress LAN interfaces) that
//! mark packets, and the overlay the mark sends them to. Two classes may not both match one
//! packet: [`overlap`] finds the pair of rules that would.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use wuos_model::topology::Ipv4Net;

use crate::error::SdwanError;
use crate::net;

/// An IP protocol a rule can match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }

    /// Whether rules of this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// An inclusive port range, 1..=65535; written `5060` or `5060-5070`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn intersects(&self, other: &PortRange) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            let n: u64 = p.trim().parse().map_err(|_| format!("{p:?} is not a port number"))?;
            if !(1..=65535).contains(&n) {
                return Err(format!("port {n} is out of range 1-65535"));
            }
            Ok(n as u16)
        };
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("the range {lo}-{hi} runs backwards; write {hi}-{lo}"));
        }
        Ok(PortRange { lo, hi })
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Number(i64),
            Text(String),
        }
        let text = match Text::deserialize(d)? {
            Text::Number(n) => n.to_string(),
            Text::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One match rule; a field left out matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// `5060` or `5060-5070`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "5060-5070")]
    pub src_ports: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "5060")]
    pub dst_ports: Option<PortRange>,
    #[serde(default, with = "net::opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10.0.0.0/24")]
    pub src: Option<Ipv4Net>,
    #[serde(default, with = "net::opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub dst: Option<Ipv4Net>,
    /// 0..=63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u8>,
    /// LAN interfaces the packet arrives on; empty: every LAN of the site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<String>,
    /// The microservice this rule was added for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl MatchRule {
    /// Checks one rule on its own.
    pub fn check(&self) -> Result<(), String> {
        if (self.src_ports.is_some() || self.dst_ports.is_some()) && !self.proto.is_some_and(Proto::has_ports) {
            return Err("ports need proto \"tcp\" or \"udp\"".into());
        }
        if let Some(d) = self.dscp
            && d > 63
        {
            return Err(format!("dscp {d} is out of range 0-63"));
        }
        for i in &self.ingress {
            if i.is_empty() || i.len() > 15 || !i.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(format!("ingress {i:?} is not an interface name"));
            }
        }
        Ok(())
    }

    /// Whether some packet could match both rules.
    pub fn overlaps(&self, other: &MatchRule) -> bool {
        fn both<T>(a: &Option<T>, b: &Option<T>, f: impl Fn(&T, &T) -> bool) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => f(a, b),
                _ => true,
            }
        }
        both(&self.proto, &other.proto, |a, b| a == b)
            && both(&self.src_ports, &other.src_ports, PortRange::intersects)
            && both(&self.dst_ports, &other.dst_ports, PortRange::intersects)
            && both(&self.src, &other.src, Ipv4Net::overlaps)
            && both(&self.dst, &other.dst, Ipv4Net::overlaps)
            && both(&self.dscp, &other.dscp, |a, b| a == b)
            && (self.ingress.is_empty()
                || other.ingress.is_empty()
                || self.ingress.iter().any(|i| other.ingress.contains(i)))
    }
}

impl fmt::Display for MatchRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.proto {
            parts.push(p.as_str().to_string());
        }
        if let Some(s) = &self.src {
            parts.push(format!("from {s}"));
        }
        if let Some(p) = &self.src_ports {
            parts.push(format!("sport {p}"));
        }
        if let Some(d) = &self.dst {
            parts.push(format!("to {d}"));
        }
        if let Some(p) = &self.dst_ports {
            parts.push(format!("dport {p}"));
        }
        if let Some(d) = self.dscp {
            parts.push(format!("dscp {d}"));
        }
        if !self.ingress.is_empty() {
            parts.push(format!("in {}", self.ingress.join(",")));
        }
        if parts.is_empty() {
            f.write_str("any packet")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// A traffic class: its rules mark packets with its mark, and the mark's `ip rule` sends them to
/// the overlay's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrafficClass {
    pub name: String,
    /// Stable for the class's life: its mark and rule priority come from it.
    pub id: u16,
    /// The overlay its packets ride.
    pub overlay: String,
    pub rules: Vec<MatchRule>,
    /// Steered by an SLA over candidate paths (`crate::steer`); none: always its overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<crate::steer::Steering>,
}

impl TrafficClass {
    /// The packet mark (`meta mark`, `ip rule fwmark`).
    pub fn mark(&self) -> u32 {
        MARK_BASE | u32::from(self.id)
    }

    /// The overlays the class may use: its own and those its steering prefers.
    pub fn overlays(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.overlay.as_str()).chain(self.steering.iter().flat_map(|s| {
            s.prefer
                .iter()
                .map(|p| p.split_once('/').map_or(p.as_str(), |(o, _)| o))
        }))
    }
}

/// Marks are `MARK_BASE | class id`, so they do not collide with small marks of other tools.
pub const MARK_BASE: u32 = 0x5700_0000;

/// The first pair of rules, one of `class` and one of another class, that overlap.
pub fn overlap<'a>(class: &TrafficClass, others: impl IntoIterator<Item = &'a TrafficClass>) -> Result<(), SdwanError> {
    for other in others {
        if other.name == class.name {
            continue;
        }
        for (i, r) in class.rules.iter().enumerate() {
            for (j, o) in other.rules.iter().enumerate() {
                if r.overlaps(o) {
                    return Err(SdwanError::ClassOverlap {
                        class: class.name.clone(),
                        rule: i,
                        rule_text: r.to_string(),
                        other: other.name.clone(),
                        other_rule: j,
                        other_text: o.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> MatchRule {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn ports_parse_and_refuse_what_is_out_of_range() {
        assert_eq!("5060".parse::<PortRange>().unwrap(), PortRange { lo: 5060, hi: 5060 });
        assert_eq!(
            "5000-5100".parse::<PortRange>().unwrap(),
            PortRange { lo: 5000, hi: 5100 }
        );
        assert_eq!(
            "70000".parse::<PortRange>().unwrap_err(),
            "port 70000 is out of range 1-65535"
        );
        assert!("0".parse::<PortRange>().unwrap_err().contains("out of range"));
        assert!("9-3".parse::<PortRange>().unwrap_err().contains("backwards"));
        assert!(
            serde_json::from_str::<MatchRule>(r#"{"proto":"udp","dst_ports":70000}"#)
                .unwrap_err()
                .to_string()
                .contains("port 70000 is out of range")
        );
        assert!(
            serde_json::from_str::<MatchRule>(r#"{"dst":"10.0.0.1/24"}"#)
                .unwrap_err()
                .to_string()
                .contains("host bits")
        );
        assert!(serde_json::from_str::<MatchRule>(r#"{"port":1}"#).is_err());
    }

    #[test]
    fn rules_check_ports_need_a_protocol() {
        assert!(
            rule(r#"{"dst_ports":"5060"}"#)
                .check()
                .unwrap_err()
                .contains("ports need")
        );
        assert!(rule(r#"{"proto":"icmp","dst_ports":"5060"}"#).check().is_err());
        assert!(rule(r#"{"dscp":64}"#).check().unwrap_err().contains("0-63"));
        assert!(rule(r#"{"proto":"udp","dst_ports":"5060","dscp":46}"#).check().is_ok());
    }

    #[test]
    fn overlap_needs_every_field_to_intersect() {
        let sip = rule(r#"{"proto":"udp","dst_ports":"5060"}"#);
        let iperf = rule(r#"{"proto":"tcp","dst_ports":"5201"}"#);
        let udp_range = rule(r#"{"proto":"udp","dst_ports":"5000-5100"}"#);
        let to_lan = rule(r#"{"dst":"10.1.0.0/16"}"#);
        let other_lan = rule(r#"{"dst":"10.2.0.0/16"}"#);
        let in_eth1 = rule(r#"{"proto":"udp","dst_ports":"5060","ingress":["eth1"]}"#);
        let in_eth2 = rule(r#"{"proto":"udp","dst_ports":"5060","ingress":["eth2"]}"#);
        assert!(!sip.overlaps(&iperf));
        assert!(sip.overlaps(&udp_range));
        assert!(sip.overlaps(&to_lan), "no prefix on one side matches every prefix");
        assert!(!to_lan.overlaps(&other_lan));
        assert!(!in_eth1.overlaps(&in_eth2));
        assert!(in_eth1.overlaps(&sip));
        let a = TrafficClass {
            name: "voip".into(),
            id: 1,
            overlay: "o1".into(),
            rules: vec![iperf.clone(), sip.clone()],
            steering: None,
        };
        let b = TrafficClass {
            name: "media".into(),
            id: 2,
            overlay: "o2".into(),
            rules: vec![udp_range],
            steering: None,
        };
        let e = overlap(&a, [&b]).unwrap_err().to_string();
        assert!(
            e.contains("class \"voip\" rule 1 (udp dport 5060) overlaps class \"media\" rule 0 (udp dport 5000-5100)"),
            "{e}"
        );
    }
}
