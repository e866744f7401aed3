//! The crate's modules form no cycle: no module uses (`crate::m`, `super::m`) one that uses it
//! back, directly or through others. Doc comments and test modules are not counted.

use std::collections::BTreeMap;
use std::path::Path;

/// `module -> modules it uses`, from the sources in `src/`.
fn graph() -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|x| x == "rs") && name != "lib" {
            files.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    // `crate::LabEnv` and `crate::LabError` are re-exports of these.
    let reexports = [("LabEnv", "env"), ("LabError", "error")];
    let mut g = BTreeMap::new();
    for (name, text) in &files {
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut uses: Vec<String> = Vec::new();
        for prefix in ["crate::", "super::"] {
            for (i, _) in code.match_indices(prefix) {
                let rest = &code[i + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let m = &rest[..end];
                let m = reexports.iter().find(|(r, _)| *r == m).map_or(m, |(_, to)| *to);
                if files.contains_key(m) && m != name && !uses.iter().any(|u| u == m) {
                    uses.push(m.to_string());
                }
            }
        }
        uses.sort();
        g.insert(name.clone(), uses);
    }
    g
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let g = graph();
    assert!(g.contains_key("up") && g["up"].contains(&"plan".to_string()), "{g:#?}");
    // Depth-first search for a back edge.
    fn visit<'a>(g: &'a BTreeMap<String, Vec<String>>, m: &'a str, path: &mut Vec<&'a str>, done: &mut Vec<&'a str>) {
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
        visit(&g, m, &mut Vec::new(), &mut done);
    }
    assert!(!g["up"].contains(&"link".to_string()) && !g["link"].contains(&"up".to_string()));
}
