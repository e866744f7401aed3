//! The TOML topology file format (documented in `docs/topology.md`).
//!
//! [`parse`] turns a file's text into a validated [`Topology`]; every error
//! carries the file name, the 1-based line and column of the offending value
//! and its key path (e.g. `link[2].rate`, 0-based indices in file order).

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::topology::{
    self, Anchor, Ipv4Net, Link, LinkField, LinkParams, MAX_MTU, MIN_MTU, Node, NodeField, PoolField, Pools, Role,
    Topology, TopologyError, TopologyErrorKind,
};
use crate::units;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<String>,
    pools: Option<RawPools>,
    defaults: Option<RawDefaults>,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    link: Vec<RawLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPools {
    links: Option<Spanned<String>>,
    link_prefix: Option<Spanned<i64>>,
    loopbacks: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    link: Option<RawParams>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    rate: Option<Spanned<toml::Value>>,
    delay: Option<Spanned<toml::Value>>,
    jitter: Option<Spanned<toml::Value>>,
    loss: Option<Spanned<toml::Value>>,
    mtu: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    role: Spanned<String>,
    cpus: Option<Spanned<f64>>,
    memory: Option<Spanned<toml::Value>>,
    underlay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    a: Spanned<String>,
    b: Spanned<String>,
    rate: Option<Spanned<toml::Value>>,
    delay: Option<Spanned<toml::Value>>,
    jitter: Option<Spanned<toml::Value>>,
    loss: Option<Spanned<toml::Value>>,
    mtu: Option<Spanned<i64>>,
    underlay: Option<Spanned<String>>,
}

/// Where each value came from, to locate validation errors.
#[derive(Default)]
struct Spans {
    nodes: Vec<NodeSpans>,
    links: Vec<LinkSpans>,
    defaults: ParamSpans,
    pools: [Option<Range<usize>>; 3],
}

struct NodeSpans {
    name: Range<usize>,
    role: Range<usize>,
    cpus: Option<Range<usize>>,
    memory: Option<Range<usize>>,
    underlay: Option<Range<usize>>,
}

struct LinkSpans {
    a: Range<usize>,
    b: Range<usize>,
    params: ParamSpans,
    underlay: Option<Range<usize>>,
}

#[derive(Default)]
struct ParamSpans {
    rate: Option<Range<usize>>,
    jitter: Option<Range<usize>>,
    loss: Option<Range<usize>>,
    mtu: Option<Range<usize>>,
}

impl ParamSpans {
    fn get(&self, f: LinkField) -> Option<Range<usize>> {
        match f {
            LinkField::Rate => self.rate.clone(),
            LinkField::Jitter => self.jitter.clone(),
            LinkField::Loss => self.loss.clone(),
            LinkField::Mtu => self.mtu.clone(),
            LinkField::Pair | LinkField::A | LinkField::B | LinkField::Underlay => None,
        }
    }
}

impl Spans {
    fn locate(&self, anchor: Anchor) -> Option<Range<usize>> {
        match anchor {
            Anchor::Nodes => None,
            Anchor::Node(i, f) => {
                let n = self.nodes.get(i)?;
                Some(match f {
                    NodeField::Name => n.name.clone(),
                    NodeField::Role => n.role.clone(),
                    NodeField::Cpus => n.cpus.clone().unwrap_or_else(|| n.name.clone()),
                    NodeField::Memory => n.memory.clone().unwrap_or_else(|| n.name.clone()),
                    NodeField::Underlay => n.underlay.clone().unwrap_or_else(|| n.name.clone()),
                })
            }
            Anchor::Link(i, f) => {
                let l = self.links.get(i)?;
                Some(match f {
                    LinkField::Pair | LinkField::A => l.a.clone(),
                    LinkField::B => l.b.clone(),
                    LinkField::Underlay => l.underlay.clone().unwrap_or_else(|| l.a.clone()),
                    // A merged parameter: the link's own value, else the default it inherited.
                    _ => l
                        .params
                        .get(f)
                        .or_else(|| self.defaults.get(f))
                        .unwrap_or_else(|| l.a.clone()),
                })
            }
            Anchor::Pools(f) => self.pools[f as usize].clone(),
        }
    }
}

/// Builds errors for one file.
struct Ctx<'a> {
    src: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    fn error(&self, kind: TopologyErrorKind, key: Option<String>, at: Option<usize>) -> TopologyError {
        let e = TopologyError::new(self.file, kind).with_key(key);
        match at {
            Some(offset) => {
                let (line, col) = line_col(self.src, offset);
                e.at(line, col)
            }
            None => e,
        }
    }

    fn unit<T>(
        &self,
        v: &Option<Spanned<toml::Value>>,
        key: impl FnOnce() -> String,
        parse: fn(&str) -> Result<T, units::UnitError>,
    ) -> Result<Option<T>, TopologyError> {
        let Some(v) = v else { return Ok(None) };
        let text = match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        parse(&text)
            .map(Some)
            .map_err(|e| self.error(TopologyErrorKind::Unit(e), Some(key()), Some(v.span().start)))
    }

    fn params(
        &self,
        prefix: &str,
        rate: &Option<Spanned<toml::Value>>,
        delay: &Option<Spanned<toml::Value>>,
        jitter: &Option<Spanned<toml::Value>>,
        loss: &Option<Spanned<toml::Value>>,
        mtu: &Option<Spanned<i64>>,
    ) -> Result<(LinkParams, ParamSpans), TopologyError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let mtu_value = match mtu {
            Some(m) => {
                let v = *m.get_ref();
                match u32::try_from(v) {
                    Ok(v) if (MIN_MTU..=MAX_MTU).contains(&v) => Some(v),
                    _ => {
                        let kind = TopologyErrorKind::BadMtu { mtu: v };
                        return Err(self.error(kind, Some(key("mtu")), Some(m.span().start)));
                    }
                }
            }
            None => None,
        };
        let params = LinkParams {
            rate_bps: self.unit(rate, || key("rate"), units::parse_rate)?,
            delay: self.unit(delay, || key("delay"), units::parse_duration)?,
            jitter: self.unit(jitter, || key("jitter"), units::parse_duration)?,
            loss_pct: self.unit(loss, || key("loss"), units::parse_percent)?,
            mtu: mtu_value,
        };
        let span = |v: &Option<Spanned<toml::Value>>| v.as_ref().map(Spanned::span);
        let spans = ParamSpans {
            rate: span(rate),
            jitter: span(jitter),
            loss: span(loss),
            mtu: mtu.as_ref().map(Spanned::span),
        };
        Ok((params, spans))
    }

    fn net(&self, v: &Option<Spanned<String>>, key: &str, default: Ipv4Net) -> Result<Ipv4Net, TopologyError> {
        match v {
            Some(v) => v
                .get_ref()
                .parse()
                .map_err(|k| self.error(k, Some(key.to_string()), Some(v.span().start))),
            None => Ok(default),
        }
    }

    /// Maps a `toml` error to a located [`TopologyError`].
    fn toml_error(&self, e: &toml::de::Error, syntax: bool) -> TopologyError {
        let message = one_line(e.message());
        let offset = e.span().map(|s| s.start);
        let kind;
        let key;
        if syntax {
            kind = TopologyErrorKind::Syntax { message };
            key = None;
        } else if let Some(rest) = message.strip_prefix("unknown field ") {
            let mut names = backticked(rest);
            let name = if names.is_empty() {
                String::new()
            } else {
                names.remove(0)
            };
            let suggestion = topology::closest(&name, names.iter().map(String::as_str)).map(str::to_string);
            key = Some(self.key_path(offset, &name));
            kind = TopologyErrorKind::UnknownKey {
                key: name,
                expected: names,
                suggestion,
            };
        } else if let Some(rest) = message.strip_prefix("missing field ") {
            let name = backticked(rest).into_iter().next().unwrap_or_default();
            key = Some(self.key_path(offset, &name));
            kind = TopologyErrorKind::MissingKey { key: name };
        } else {
            key = offset.and_then(|o| {
                let name = key_on_line(self.src, o)?;
                Some(self.key_path(Some(o), &name))
            });
            kind = TopologyErrorKind::Invalid { message };
        }
        self.error(kind, key, offset)
    }

    fn key_path(&self, offset: Option<usize>, name: &str) -> String {
        key_path(self.src, offset, name)
    }
}

/// `name` prefixed with the path of the table that contains `offset`
/// (e.g. `link[2].rate`), found from the nearest table header above it.
pub(crate) fn key_path(src: &str, offset: Option<usize>, name: &str) -> String {
    let Some(offset) = offset else {
        return name.to_string();
    };
    let offset = offset.min(src.len());
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let header = src[..line_end].lines().filter_map(parse_header).next_back();
    let Some((path, array)) = header else {
        return name.to_string();
    };
    // On the header line itself the unknown key may be part of the header.
    if parse_header(&src[line_start..line_end]).is_some()
        && let Some(pos) = path.iter().position(|p| p == name)
    {
        return path[..=pos].join(".");
    }
    let mut prefix = path.join(".");
    if array {
        let n = src[..line_end]
            .lines()
            .filter_map(parse_header)
            .filter(|(p, a)| *a && *p == path)
            .count();
        prefix.push_str(&format!("[{}]", n.saturating_sub(1)));
    }
    format!("{prefix}.{name}")
}

/// `[a.b]` → `(["a", "b"], false)`, `[[link]]` → `(["link"], true)`.
pub(crate) fn parse_header(line: &str) -> Option<(Vec<String>, bool)> {
    let line = line.trim();
    let line = line.split('#').next()?.trim();
    let (inner, array) = if let Some(s) = line.strip_prefix("[[") {
        (s.strip_suffix("]]")?, true)
    } else {
        (line.strip_prefix('[')?.strip_suffix(']')?, false)
    };
    let path: Vec<String> = inner
        .split('.')
        .map(|p| p.trim().trim_matches('"').to_string())
        .collect();
    path.iter().all(|p| !p.is_empty()).then_some((path, array))
}

/// The bare key of the `key = value` line containing `offset`, if the offset
/// is in the value.
pub(crate) fn key_on_line(src: &str, offset: usize) -> Option<String> {
    let offset = offset.min(src.len());
    let start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let eq = src[start..offset].find('=')?;
    let key = src[start..start + eq].trim().trim_matches('"');
    (!key.is_empty()).then(|| key.to_string())
}

/// Everything between pairs of backticks.
pub(crate) fn backticked(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

pub(crate) fn one_line(s: &str) -> String {
    let s = s
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number");
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Parses and validates a topology file. `file` is only used in error messages.
pub fn parse(src: &str, file: &str) -> Result<Topology, TopologyError> {
    let cx = Ctx { src, file };
    // Parse once as plain TOML so syntax errors are told apart from schema errors.
    if let Err(e) = toml::from_str::<toml::Table>(src) {
        return Err(cx.toml_error(&e, true));
    }
    let raw: RawFile = toml::from_str(src).map_err(|e| cx.toml_error(&e, false))?;
    let mut spans = Spans::default();

    let mut pools = Pools::default();
    if let Some(p) = &raw.pools {
        pools.links = cx.net(&p.links, "pools.links", pools.links)?;
        pools.loopbacks = cx.net(&p.loopbacks, "pools.loopbacks", pools.loopbacks)?;
        if let Some(lp) = &p.link_prefix {
            let v = *lp.get_ref();
            pools.link_prefix_len = match v {
                30 | 31 => v as u8,
                _ => {
                    let kind = TopologyErrorKind::BadLinkPrefix { value: v };
                    let key = Some("pools.link_prefix".to_string());
                    return Err(cx.error(kind, key, Some(lp.span().start)));
                }
            };
        }
        let span = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
        spans.pools[PoolField::Links as usize] = span(&p.links);
        spans.pools[PoolField::LinkPrefix as usize] = p.link_prefix.as_ref().map(Spanned::span);
        spans.pools[PoolField::Loopbacks as usize] = span(&p.loopbacks);
    }

    let mut defaults = LinkParams::default();
    if let Some(d) = raw.defaults.as_ref().and_then(|d| d.link.as_ref()) {
        let (p, s) = cx.params("defaults.link", &d.rate, &d.delay, &d.jitter, &d.loss, &d.mtu)?;
        // Defaults are checked on their own too, so an error points at them.
        if let Err((field, kind)) = topology::check_params(&p) {
            let at = s.get(field).map(|r| r.start);
            return Err(cx.error(
                kind,
                Anchor::Link(0, field)
                    .key()
                    .map(|k| k.replacen("link[0]", "defaults.link", 1)),
                at,
            ));
        }
        defaults = p;
        spans.defaults = s;
    }

    let mut nodes = Vec::with_capacity(raw.node.len());
    for (i, n) in raw.node.iter().enumerate() {
        let role: Role = n
            .role
            .get_ref()
            .parse()
            .map_err(|k| cx.error(k, Anchor::Node(i, NodeField::Role).key(), Some(n.role.span().start)))?;
        let memory = cx.unit(&n.memory, || format!("node[{i}].memory"), units::parse_bytes)?;
        nodes.push(Node {
            name: n.name.get_ref().clone(),
            role,
            cpus: n.cpus.as_ref().map(|c| *c.get_ref()),
            memory,
            underlay: n.underlay.as_ref().map(|u| u.get_ref().clone()),
        });
        spans.nodes.push(NodeSpans {
            name: n.name.span(),
            role: n.role.span(),
            cpus: n.cpus.as_ref().map(Spanned::span),
            memory: n.memory.as_ref().map(Spanned::span),
            underlay: n.underlay.as_ref().map(Spanned::span),
        });
    }

    let mut links = Vec::with_capacity(raw.link.len());
    for (i, l) in raw.link.iter().enumerate() {
        let (own, s) = cx.params(&format!("link[{i}]"), &l.rate, &l.delay, &l.jitter, &l.loss, &l.mtu)?;
        let mut params = defaults.clone();
        params.merge(&own);
        links.push(Link {
            a: l.a.get_ref().clone(),
            b: l.b.get_ref().clone(),
            params,
            underlay: l.underlay.as_ref().map(|u| u.get_ref().clone()),
        });
        spans.links.push(LinkSpans {
            a: l.a.span(),
            b: l.b.span(),
            params: s,
            underlay: l.underlay.as_ref().map(Spanned::span),
        });
    }

    let t = Topology {
        name: raw.name,
        nodes,
        links,
        pools,
    };
    topology::check(&t).map_err(|(mut anchor, kind)| {
        // Overlapping pools: point at whichever of the two the file sets.
        if matches!(kind, TopologyErrorKind::PoolOverlap { .. }) && spans.locate(anchor).is_none() {
            anchor = Anchor::Pools(PoolField::Loopbacks);
        }
        cx.error(kind, anchor.key(), spans.locate(anchor).map(|r| r.start))
    })?;
    Ok(t)
}

/// Reads and parses a topology file; the path is used as the file name in errors.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path)
        .map_err(|e| TopologyError::new(&file, TopologyErrorKind::Io { message: e.to_string() }))?;
    parse(&src, &file)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Two connected nodes on lines 1-7, a link r1-r2 on lines 8-10;
    /// `extra` starts on line 11.
    fn base(extra: &str) -> String {
        format!(
            "[[node]]\nname = \"r1\"\nrole = \"edge\"\n\n[[node]]\nname = \"r2\"\nrole = \"edge\"\n\
             [[link]]\na = \"r1\"\nb = \"r2\"\n{extra}"
        )
    }

    /// Parses `src` expecting an error at `line:col` with `key`; returns the message.
    #[track_caller]
    fn err_at(src: &str, line: usize, col: usize, key: &str) -> String {
        let e = parse(src, "t.toml").expect_err("should fail");
        let msg = e.to_string();
        assert_eq!(
            (e.line(), e.column(), e.key()),
            (Some(line), Some(col), Some(key)),
            "{msg}"
        );
        assert!(msg.starts_with(&format!("t.toml:{line}:{col}: {key}: ")), "{msg}");
        assert!(msg.contains("; fix: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        msg
    }

    #[test]
    fn full_example() {
        let src = r#"
name = "demo"

[pools]
links = "10.1.0.0/24"
link_prefix = 30
loopbacks = "10.254.1.0/24"

[defaults.link]
delay = "1ms"
mtu = 1400

[[node]]
name = "r1"
role = "dc"
cpus = 0.5
memory = "256MiB"

[[node]]
name = "r2"
role = "fog"
cpus = 2

[[node]]
name = "h-1_x"
role = "host"
memory = 33554432

[[link]]
a = "r1"
b = "r2"
rate = "10mbit"
delay = "20ms"
jitter = "2ms"
loss = "0.5%"
mtu = 9000

[[link]]
a = "r2"
b = "h-1_x"
rate = 1000000
"#;
        let t = parse(src, "demo.toml").unwrap();
        assert_eq!(t.name.as_deref(), Some("demo"));
        assert_eq!(t.pools.links.to_string(), "10.1.0.0/24");
        assert_eq!(t.pools.link_prefix_len, 30);
        assert_eq!(t.pools.loopbacks.to_string(), "10.254.1.0/24");
        assert_eq!(
            t.nodes[0],
            Node {
                name: "r1".into(),
                role: Role::Dc,
                cpus: Some(0.5),
                memory: Some(256 << 20),
                underlay: None
            }
        );
        assert_eq!(t.nodes[1].cpus, Some(2.0));
        assert_eq!(t.nodes[2].memory, Some(32 << 20));
        assert_eq!(t.nodes[2].role, Role::Host);
        assert_eq!(
            t.links[0].params,
            LinkParams {
                rate_bps: Some(10_000_000),
                delay: Some(Duration::from_millis(20)),
                jitter: Some(Duration::from_millis(2)),
                loss_pct: Some(0.5),
                mtu: Some(9000),
            }
        );
        // Defaults fill in what the link leaves out.
        assert_eq!(
            t.links[1].params,
            LinkParams {
                rate_bps: Some(1_000_000),
                delay: Some(Duration::from_millis(1)),
                mtu: Some(1400),
                ..Default::default()
            }
        );
        t.validate().unwrap();
    }

    #[test]
    fn minimal_and_defaults() {
        let t = parse("[[node]]\nname = \"solo\"\nrole = \"edge\"\n", "x").unwrap();
        assert_eq!(t.name, None);
        assert_eq!(t.pools, Pools::default());
        assert!(t.links.is_empty());
        let t = parse(&base(""), "x").unwrap();
        assert_eq!(t.links[0].params, LinkParams::default());
    }

    #[test]
    fn docs_example_parses() {
        let doc = include_str!("../../../docs/topology.md");
        let start = doc.find("```toml\n").expect("docs/topology.md has a toml example") + 8;
        let len = doc[start..].find("```").unwrap();
        let t = parse(&doc[start..start + len], "docs/topology.md").unwrap();
        assert!(t.nodes.len() >= 3);
        assert!(t.links.iter().any(|l| l.params.needs_impairment()));
    }

    #[test]
    fn syntax_error() {
        let e = parse("[[node]]\nname = \"r1\nrole = \"edge\"\n", "t.toml").unwrap_err();
        assert_eq!((e.line(), e.column(), e.key()), (Some(2), Some(11), None));
        assert!(matches!(e.kind(), TopologyErrorKind::Syntax { .. }));
        assert!(e.to_string().starts_with("t.toml:2:11: invalid basic string"), "{e}");
        let e = parse("[[node]]\nname = 'r1'\nname = 'r2'\n", "t.toml").unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(3), Some(1)), "{e}");
    }

    #[test]
    fn unknown_keys() {
        let msg = err_at(&base("colour = \"red\"\n"), 11, 1, "link[0].colour");
        assert!(
            msg.contains(
                "unknown key \"colour\"; fix: remove it (allowed here: a, b, rate, delay, jitter, loss, mtu, underlay)"
            ),
            "{msg}"
        );
        let msg = err_at(&base("dleay = \"1ms\"\n"), 11, 1, "link[0].dleay");
        assert!(msg.contains("did you mean \"delay\"?"), "{msg}");
        err_at(
            &format!("{}[[node]]\nname = \"r3\"\nrole = \"edge\"\nram = 1\n", base("")),
            14,
            1,
            "node[2].ram",
        );
        let msg = err_at(
            &format!("[pools]\nlink = \"10.0.0.0/16\"\n{}", base("")),
            2,
            1,
            "pools.link",
        );
        assert!(msg.contains("did you mean \"links\"?"), "{msg}");
        let msg = err_at(&format!("[poools]\n{}", base("")), 1, 2, "poools");
        assert!(msg.contains("did you mean \"pools\"?"), "{msg}");
        err_at(&format!("[defaults.lnk]\n{}", base("")), 1, 11, "defaults.lnk");
        err_at(
            &format!("[defaults.link]\nrat = \"1mbit\"\n{}", base("")),
            2,
            1,
            "defaults.link.rat",
        );
        err_at(&format!("names = \"x\"\n{}", base("")), 1, 1, "names");
    }

    #[test]
    fn missing_and_mistyped_keys() {
        let msg = err_at("[[node]]\nname = \"r1\"\n", 1, 1, "node[0].role");
        assert!(msg.contains("missing required key \"role\""), "{msg}");
        let src = format!("{}[[link]]\na = \"r1\"\n", base(""));
        let msg = err_at(&src, 11, 1, "link[1].b");
        assert!(msg.contains("missing required key \"b\""), "{msg}");
        let msg = err_at(&base("mtu = \"1500\"\n"), 11, 7, "link[0].mtu");
        assert!(msg.contains("expected an integer"), "{msg}");
        let src = "[[node]]\nname = \"r1\"\nrole = \"edge\"\ncpus = \"two\"\n";
        let msg = err_at(src, 4, 8, "node[0].cpus");
        assert!(msg.contains("expected a number"), "{msg}");
        err_at("[[node]]\nname = 1\nrole = \"edge\"\n", 2, 8, "node[0].name");
        err_at("name = 5\n", 1, 8, "name");
    }

    #[test]
    fn empty_topology() {
        for src in ["", "name = \"x\"\n", "[pools]\n"] {
            let e = parse(src, "t.toml").unwrap_err();
            assert_eq!((e.line(), e.column(), e.key()), (None, None, Some("node")));
            assert_eq!(e.kind(), &TopologyErrorKind::Empty);
            assert_eq!(
                e.to_string(),
                "t.toml: node: the topology has no nodes; fix: add at least one [[node]] table"
            );
        }
    }

    #[test]
    fn node_errors() {
        let msg = err_at("[[node]]\nname = \"r1\"\nrole = \"rooter\"\n", 3, 8, "node[0].role");
        assert!(
            msg.contains("bad role \"rooter\"; fix: use edge, fog, dc or host"),
            "{msg}"
        );
        let msg = err_at("[[node]]\nname = \"r1\"\nrole = \"fgo\"\n", 3, 8, "node[0].role");
        assert!(msg.contains("did you mean \"fog\"?"), "{msg}");
        let msg = err_at("[[node]]\nname = \"R1\"\nrole = \"edge\"\n", 2, 8, "node[0].name");
        assert!(
            msg.contains("bad node name \"R1\": it must start with a lowercase letter or a digit"),
            "{msg}"
        );
        let msg = err_at(
            "[[node]]\nname = \"router-number-1\"\nrole = \"edge\"\n",
            2,
            8,
            "node[0].name",
        );
        assert!(msg.contains("longer than 12"), "{msg}");
        let msg = err_at("[[node]]\nname = \"r.1\"\nrole = \"edge\"\n", 2, 8, "node[0].name");
        assert!(msg.contains("a-z, 0-9, '-' and '_'"), "{msg}");
        let src = "[[node]]\nname = \"r1\"\nrole = \"edge\"\n[[node]]\nname = \"r1\"\nrole = \"fog\"\n";
        let msg = err_at(src, 5, 8, "node[1].name");
        assert!(
            msg.contains("duplicate node name \"r1\" (already used by node[0])"),
            "{msg}"
        );
        let msg = err_at(
            "[[node]]\nname = \"r1\"\nrole = \"edge\"\ncpus = 0\n",
            4,
            8,
            "node[0].cpus",
        );
        assert!(msg.contains("bad cpus 0"), "{msg}");
        err_at(
            "[[node]]\nname = \"r1\"\nrole = \"edge\"\ncpus = -1.5\n",
            4,
            8,
            "node[0].cpus",
        );
        let msg = err_at(
            "[[node]]\nname = \"r1\"\nrole = \"edge\"\nmemory = \"256MB\"\n",
            4,
            10,
            "node[0].memory",
        );
        assert!(
            msg.contains("bad size \"256MB\"; fix: use a number with KiB, MiB"),
            "{msg}"
        );
        let msg = err_at(
            "[[node]]\nname = \"r1\"\nrole = \"edge\"\nmemory = \"1MiB\"\n",
            4,
            10,
            "node[0].memory",
        );
        assert!(msg.contains("memory 1MiB is below the 16MiB minimum"), "{msg}");
    }

    #[test]
    fn link_errors() {
        let src = base("[[link]]\na = \"r2\"\nb = \"r3\"\n");
        let msg = err_at(&src, 13, 5, "link[1].b");
        assert!(
            msg.ends_with("link refers to unknown node \"r3\"; fix: did you mean \"r1\"?"),
            "{msg}"
        );
        let src = base("[[link]]\na = \"core\"\nb = \"r1\"\n");
        let msg = err_at(&src, 12, 5, "link[1].a");
        assert!(
            msg.contains("unknown node \"core\"; fix: use the name of a [[node]]"),
            "{msg}"
        );
        let src = base("[[link]]\na = \"r2\"\nb = \"r2\"\n");
        let msg = err_at(&src, 13, 5, "link[1].b");
        assert!(msg.contains("link connects node \"r2\" to itself"), "{msg}");
        let src = base("[[link]]\na = \"r2\"\nb = \"r1\"\n");
        let msg = err_at(&src, 12, 5, "link[1]");
        assert!(
            msg.contains("duplicate link between \"r2\" and \"r1\" (already linked by link[0])"),
            "{msg}"
        );
    }

    #[test]
    fn underlay_labels() {
        let t = parse(&base("underlay = \"mpls\"\n"), "t.toml").unwrap();
        assert_eq!(t.links[0].underlay.as_deref(), Some("mpls"));
        assert_eq!(t.link_underlay(0), Some("mpls"));
        let msg = err_at(&base("underlay = \"MPLS-1\"\n"), 11, 12, "link[0].underlay");
        assert!(
            msg.contains("bad underlay name \"MPLS-1\": it must start with a lowercase letter"),
            "{msg}"
        );
        let src = "[[node]]\nname = \"p1\"\nrole = \"edge\"\nunderlay = \"averylongname\"\n";
        let msg = err_at(src, 4, 12, "node[0].underlay");
        assert!(msg.contains("longer than 8"), "{msg}");
        // A provider router's links are its underlay's.
        let src = "[[node]]\nname = \"p1\"\nrole = \"edge\"\nunderlay = \"inet\"\n\
                   [[node]]\nname = \"e1\"\nrole = \"edge\"\n[[link]]\na = \"e1\"\nb = \"p1\"\n";
        let t = parse(src, "t.toml").unwrap();
        assert_eq!(
            (t.links[0].underlay.as_deref(), t.link_underlay(0)),
            (None, Some("inet"))
        );
    }

    #[test]
    fn link_param_errors() {
        let msg = err_at(&base("rate = \"10mbits\"\n"), 11, 8, "link[0].rate");
        assert!(
            msg.ends_with(
                "bad rate \"10mbits\"; fix: use a number with bit, kbit, mbit or gbit (e.g. \"10mbit\"), \
                 or a bare number of bits/s"
            ),
            "{msg}"
        );
        err_at(&base("rate = true\n"), 11, 8, "link[0].rate");
        err_at(&base("rate = 0\n"), 11, 8, "link[0].rate");
        let msg = err_at(&base("delay = \"20\"\n"), 11, 9, "link[0].delay");
        assert!(msg.contains("bad duration \"20\""), "{msg}");
        err_at(&base("delay = 20\n"), 11, 9, "link[0].delay");
        err_at(
            &base("delay = \"5ms\"\njitter = \"1 fortnight\"\n"),
            12,
            10,
            "link[0].jitter",
        );
        let msg = err_at(&base("loss = 0.5\n"), 11, 8, "link[0].loss");
        assert!(msg.contains("bad percentage \"0.5\""), "{msg}");
        err_at(&base("loss = \"150%\"\n"), 11, 8, "link[0].loss");
        let msg = err_at(&base("delay = \"1ms\"\njitter = \"2ms\"\n"), 12, 10, "link[0].jitter");
        assert!(msg.contains("jitter 2ms is larger than delay 1ms"), "{msg}");
        let msg = err_at(&base("jitter = \"2ms\"\n"), 11, 10, "link[0].jitter");
        assert!(msg.contains("larger than delay 0"), "{msg}");
        let msg = err_at(&base("mtu = 100\n"), 11, 7, "link[0].mtu");
        assert!(msg.contains("mtu 100 is outside 576..=9000"), "{msg}");
        err_at(&base("mtu = 9001\n"), 11, 7, "link[0].mtu");
        err_at(&base("mtu = -1\n"), 11, 7, "link[0].mtu");
        base("mtu = 576\n")
            .parse::<String>()
            .map(|s| parse(&s, "x").unwrap())
            .unwrap();
    }

    #[test]
    fn defaults_errors() {
        // Bad values in [defaults.link] point at the default.
        let src = format!("[defaults.link]\ndelay = \"fast\"\n{}", base(""));
        err_at(&src, 2, 9, "defaults.link.delay");
        let src = format!("[defaults.link]\njitter = \"3ms\"\n{}", base(""));
        err_at(&src, 2, 10, "defaults.link.jitter");
        // A link whose own delay is below the inherited jitter: the key names
        // the link, the location is the inherited value.
        let src = format!(
            "[defaults.link]\ndelay = \"5ms\"\njitter = \"3ms\"\n{}",
            base("delay = \"1ms\"\n")
        );
        let msg = err_at(&src, 3, 10, "link[0].jitter");
        assert!(msg.contains("jitter 3ms is larger than delay 1ms"), "{msg}");
    }

    #[test]
    fn unreachable_node() {
        let src = format!(
            "{}[[node]]\nname = \"r3\"\nrole = \"edge\"\n[[node]]\nname = \"r4\"\nrole = \"edge\"\n",
            base("")
        );
        let msg = err_at(&src, 12, 8, "node[2].name");
        assert!(
            msg.contains("node \"r3\" is not connected to \"r1\" (unreachable: r3, r4); fix: add links"),
            "{msg}"
        );
    }

    #[test]
    fn pool_errors() {
        let src = format!(
            "[pools]\nlinks = \"10.0.0.0/32\"\n{}",
            base("[[link]]\na = \"r2\"\nb = \"r1x\"\n")
        );
        // Unknown node is found before the pool size.
        err_at(&src, 15, 5, "link[1].b");
        let src = format!(
            "[pools]\nlinks = \"10.0.0.0/31\"\n{}[[node]]\nname = \"r3\"\nrole = \"edge\"\n[[link]]\na = \"r2\"\nb = \"r3\"\n",
            base("")
        );
        let msg = err_at(&src, 2, 9, "pools.links");
        assert!(
            msg.contains("pool 10.0.0.0/31 has room for 1 links but the topology needs 2"),
            "{msg}"
        );
        let src = format!("[pools]\nloopbacks = \"10.254.0.0/31\"\n{}", base(""));
        let msg = err_at(&src, 2, 13, "pools.loopbacks");
        assert!(
            msg.contains("has room for 1 loopbacks but the topology needs 2"),
            "{msg}"
        );
        let src = format!("[pools]\nlinks = \"10.0.0.1/16\"\n{}", base(""));
        let msg = err_at(&src, 2, 9, "pools.links");
        assert!(msg.contains("bad network \"10.0.0.1/16\": host bits are set"), "{msg}");
        let src = format!("[pools]\nloopbacks = \"10.254.0.0\"\n{}", base(""));
        err_at(&src, 2, 13, "pools.loopbacks");
        let src = format!("[pools]\nlink_prefix = 29\n{}", base(""));
        let msg = err_at(&src, 2, 15, "pools.link_prefix");
        assert!(
            msg.contains("link_prefix 29 is not supported; fix: use 31 (the default) or 30"),
            "{msg}"
        );
        let src = format!("[pools]\nlinks = \"10.0.0.0/8\"\n{}", base(""));
        let msg = err_at(&src, 2, 9, "pools.links");
        assert!(msg.contains("reserved for service addresses"), "{msg}");
        let src = format!("[pools]\nlinks = \"10.254.0.0/24\"\n{}", base(""));
        let msg = err_at(&src, 2, 9, "pools.links");
        assert!(msg.contains("overlap"), "{msg}");
        let src = format!("[pools]\nloopbacks = \"10.0.4.0/24\"\n{}", base(""));
        let msg = err_at(&src, 2, 13, "pools.loopbacks");
        assert!(msg.contains("pools 10.0.0.0/16 and 10.0.4.0/24 overlap"), "{msg}");
    }

    #[test]
    fn locations_count_characters() {
        // A multi-byte character before the value: columns are in characters.
        let src = "[[node]] # é\nname = \"r1\"\nrole = \"edgé\"\n";
        err_at(src, 3, 8, "node[0].role");
        assert_eq!(line_col("aé\nb", 3), (1, 3));
        assert_eq!(line_col("aé\nb", 4), (2, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn load_files() {
        let dir = std::env::temp_dir().join(format!("wuos-model-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lab.toml");
        std::fs::write(&path, base("rate = \"nope\"\n")).unwrap();
        let e = load(&path).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:11:8: link[0].rate: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, base("")).unwrap();
        assert_eq!(load(&path).unwrap().links.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
        let e = load(&dir.join("missing.toml")).unwrap_err();
        assert!(matches!(e.kind(), TopologyErrorKind::Io { .. }));
        assert_eq!((e.line(), e.key()), (None, None));
        assert!(e.to_string().contains("missing.toml: cannot read the file: "), "{e}");
    }
}
