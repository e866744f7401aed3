//! What the golden tests share: run every case under `tests/NAME/` and compare its text with
//! the case's `expected.txt` (`UPDATE_GOLDEN=1` rewrites them).

use std::fs;
use std::path::{Path, PathBuf};

pub fn check_cases(name: &str, at_least: usize, run: impl Fn(&Path) -> String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name);
    let mut cases: Vec<PathBuf> = fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= at_least, "golden cases missing under {}", root.display());
    let mut failed = Vec::new();
    for dir in cases {
        let got = run(&dir);
        let expected_path = dir.join("expected.txt");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            eprintln!("--- {} differs; got:\n{got}", dir.display());
            failed.push(dir);
        }
    }
    assert!(
        failed.is_empty(),
        "golden cases differ (UPDATE_GOLDEN=1 rewrites them): {failed:?}"
    );
}
