// Included by the crates' `tests/modules.rs` (`include!`): finds cycles among a crate's top-level
// modules. A module is a file `src/NAME.rs` or a directory `src/NAME/` (all its files count); it
// uses another when its code (doc comments, comments and `#[cfg(test)]` parts left out) names
// `crate::OTHER` (or, for a file module, `super::OTHER`). `reexports` maps names re-exported at
// the crate root to their modules.

/// `module -> modules it uses`, from the sources in `src`.
fn module_graph(src: &std::path::Path, reexports: &[(&str, &str)]) -> std::collections::BTreeMap<String, Vec<String>> {
    use std::collections::BTreeMap;
    fn sources(p: &std::path::Path, out: &mut String) {
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            entries.sort();
            for e in entries {
                sources(&e, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") && p.file_stem().is_none_or(|s| s != "tests") {
            let text = std::fs::read_to_string(p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for l in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" || !(path.is_dir() || path.extension().is_some_and(|x| x == "rs")) {
            continue;
        }
        let mut code = String::new();
        sources(&path, &mut code);
        modules.entry(name).or_default().push_str(&code);
    }
    let mut g = BTreeMap::new();
    for (name, code) in &modules {
        let mut uses: Vec<String> = Vec::new();
        for prefix in ["crate::", "super::"] {
            for (i, _) in code.match_indices(prefix) {
                let rest = &code[i + prefix.len()..];
                let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let m = &rest[..end];
                let m = reexports.iter().find(|(r, _)| *r == m).map_or(m, |(_, to)| *to);
                if modules.contains_key(m) && m != name && !uses.iter().any(|u| u == m) {
                    uses.push(m.to_string());
                }
            }
        }
        uses.sort();
        g.insert(name.clone(), uses);
    }
    g
}

/// Panics with the first cycle found.
fn assert_no_cycle(g: &std::collections::BTreeMap<String, Vec<String>>) {
    fn visit<'a>(
        g: &'a std::collections::BTreeMap<String, Vec<String>>,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) {
        if done.contains(&m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m);
            panic!("module cycle: {}", cycle.join(" -> "));
        }
        path.push(m);
        for next in &g[m] {
            visit(g, next, path, done);
        }
        path.pop();
        done.push(m);
    }
    let mut done = Vec::new();
    for m in g.keys() {
        visit(g, m, &mut Vec::new(), &mut done);
    }
}
