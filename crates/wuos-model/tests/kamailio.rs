//! The shipped PABX (catalog/pabx.toml) renders a configuration that Kamailio itself accepts
//! (`kamailio -c`, a syntax and module check). Needs Debian's kamailio; without it the test skips
//! with a message, except under CI=true.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use wuos_model::catalog::{InstanceDirs, load_dir};
use wuos_model::domain::NetAttach;

#[test]
fn the_pabx_config_is_accepted_by_kamailio() {
    if Command::new("kamailio").arg("-v").output().is_err() {
        let msg = "kamailio is not installed (apt-get install kamailio)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}; CI=true forbids skipping");
        }
        eprintln!("SKIP: {msg}");
        return;
    }
    let catalog = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog")).unwrap();
    let pabx = catalog.get("pabx").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dirs = InstanceDirs {
        config_dir: dir.path().display().to_string(),
        run_dir: dir.path().display().to_string(),
    };
    let net = NetAttach {
        address: "10.253.0.2".parse().unwrap(),
        prefix_len: 30,
        gateway: Some("10.253.0.1".parse().unwrap()),
    };
    let params = BTreeMap::from([(
        "static_users".to_string(),
        "2000=10.0.4.2:5060 2001=10.0.5.2".to_string(),
    )]);
    let vars = pabx.vars("pabx-1", net, &dirs, &params).unwrap();
    let (file, text) = catalog
        .render_config("pabx", &vars)
        .unwrap()
        .expect("pabx has a config template");
    assert!(text.contains("10.0.4.2:5060"), "the static users are rendered:\n{text}");
    let path = dir.path().join(file);
    std::fs::write(&path, &text).unwrap();
    let out = Command::new("kamailio")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kamailio -c refused the rendered config:\n{log}\n--- config ---\n{text}"
    );
}
