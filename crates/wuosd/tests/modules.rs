//! The daemon's modules form no cycle: components use the handles of the ones they talk to, never
//! back. Doc comments and test modules are not counted.

include!("../../../tools/module_cycles.rs");

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = module_graph(&src, &[]);
    assert!(g["daemon"].contains(&"controller".to_string()), "{g:#?}");
    assert!(g["controller"].contains(&"domains".to_string()), "{g:#?}");
    assert_no_cycle(&g);
}
