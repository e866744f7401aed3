//! The crate's modules form no cycle: no module uses (`crate::m`, `super::m`) one that uses it
//! back, directly or through others. Doc comments and test modules are not counted.

include!("../../../tools/module_cycles.rs");

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // `crate::LabEnv` and `crate::LabError` are re-exports of these.
    let g = module_graph(&src, &[("LabEnv", "env"), ("LabError", "error")]);
    assert!(g.contains_key("up") && g["up"].contains(&"plan".to_string()), "{g:#?}");
    assert_no_cycle(&g);
    assert!(!g["up"].contains(&"link".to_string()) && !g["link"].contains(&"up".to_string()));
}
