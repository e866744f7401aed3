//! Graphviz rendering of a topology (`dot -Tsvg`, `neato`, ...).
//!
//! Roles are drawn distinctly: edge = light-blue ellipse, fog = orange box,
//! dc = gray 3-D box, host = note. Links are labelled with their rate,
//! delay, jitter and loss when set; with an address plan, node labels show
//! the loopback.

use std::fmt::Write as _;

use crate::plan::AddressPlan;
use crate::topology::{Role, Topology};
use crate::units;

/// Quotes a string for DOT (`"` and `\` escaped, newlines as `\n`).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn style(role: Role) -> &'static str {
    match role {
        Role::Edge => "shape=ellipse, style=filled, fillcolor=lightblue",
        Role::Fog => "shape=box, style=filled, fillcolor=orange",
        Role::Dc => "shape=box3d, style=filled, fillcolor=gray",
        Role::Host => "shape=note",
    }
}

/// Renders `t` as an undirected DOT `graph`.
pub fn to_dot(t: &Topology, plan: Option<&AddressPlan>) -> String {
    let mut out = String::new();
    let name = t.name.as_deref().unwrap_or("wuos");
    // Writing to a String cannot fail.
    let _ = writeln!(out, "graph {} {{", quote(name));
    let _ = writeln!(out, "  node [fontname=\"Helvetica\"];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
    for (i, n) in t.nodes.iter().enumerate() {
        let mut label = n.name.clone();
        if let Some(lo) = plan.and_then(|p| p.loopbacks.get(i)) {
            label.push_str(&format!("\n{lo}"));
        }
        let _ = writeln!(
            out,
            "  {} [{}, label={}];",
            quote(&n.name),
            style(n.role),
            quote(&label)
        );
    }
    for l in &t.links {
        let p = &l.params;
        let mut parts = Vec::new();
        if let Some(r) = p.rate_bps {
            parts.push(units::format_rate(r));
        }
        if let Some(d) = p.delay {
            parts.push(units::format_duration(d));
        }
        if let Some(j) = p.jitter {
            parts.push(format!("±{}", units::format_duration(j)));
        }
        if let Some(loss) = p.loss_pct {
            parts.push(format!("{} loss", units::format_percent(loss)));
        }
        let attrs = if parts.is_empty() {
            String::new()
        } else {
            format!(" [label={}]", quote(&parts.join(" ")))
        };
        let _ = writeln!(out, "  {} -- {}{attrs};", quote(&l.a), quote(&l.b));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::parse;
    use crate::plan::address_plan;

    #[test]
    fn renders() {
        let t = parse(
            r#"
name = "demo"
[[node]]
name = "r1"
role = "edge"
[[node]]
name = "f1"
role = "fog"
[[node]]
name = "d1"
role = "dc"
[[node]]
name = "h1"
role = "host"
[[link]]
a = "r1"
b = "f1"
rate = "10mbit"
delay = "20ms"
jitter = "2ms"
loss = "0.5%"
[[link]]
a = "f1"
b = "d1"
[[link]]
a = "d1"
b = "h1"
"#,
            "demo.toml",
        )
        .unwrap();
        let dot = to_dot(&t, None);
        assert!(dot.starts_with("graph \"demo\" {\n"), "{dot}");
        assert!(dot.ends_with("}\n"));
        assert!(
            dot.contains("\"r1\" [shape=ellipse, style=filled, fillcolor=lightblue, label=\"r1\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"f1\" [shape=box, style=filled, fillcolor=orange"),
            "{dot}"
        );
        assert!(dot.contains("\"d1\" [shape=box3d"), "{dot}");
        assert!(dot.contains("\"h1\" [shape=note"), "{dot}");
        assert!(
            dot.contains("\"r1\" -- \"f1\" [label=\"10mbit 20ms ±2ms 0.5% loss\"];"),
            "{dot}"
        );
        assert!(dot.contains("\"f1\" -- \"d1\";"), "{dot}");

        let plan = address_plan(&t).unwrap();
        let dot = to_dot(&t, Some(&plan));
        assert!(dot.contains("label=\"r1\\n10.254.0.1\""), "{dot}");
        assert!(dot.contains("label=\"h1\\n10.254.0.4\""), "{dot}");
    }

    #[test]
    fn quotes() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
