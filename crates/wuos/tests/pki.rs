//! `wuos pki …` through the binary, in a temporary directory (no root needed): what it prints,
//! what it writes, and its exit codes for bad input (3), a missing CA (4) and an existing one (5).

mod common;

use common::{ok, run};

fn code_and_stderr(args: &[&str]) -> (Option<i32>, String) {
    let out = run(args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn init_issue_rotate_revoke_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();

    let out = ok(&["pki", "init", "--dir", d]);
    assert!(
        out.contains("ca.pem") && out.contains("crl.pem"),
        "init names its files: {out}"
    );
    let (code, err) = code_and_stderr(&["pki", "init", "--dir", d]);
    assert_eq!(code, Some(5), "an existing CA is a conflict: {err}");
    assert!(err.contains("--force"), "{err}");

    let out = ok(&[
        "pki",
        "issue",
        "fog1",
        "--role",
        "fog",
        "--may",
        "orchestrator,controller",
        "--days",
        "30",
        "--dir",
        d,
    ]);
    assert!(
        out.contains("issued fog1 (fog, may orchestrator,controller) serial "),
        "{out}"
    );
    assert!(
        out.contains("routers/fog1.pem") && out.contains("routers/fog1.key"),
        "{out}"
    );
    ok(&["pki", "issue", "fog1", "--role", "fog", "--dir", d]);
    ok(&["pki", "issue", "e1", "--role", "edge", "--dir", d]);

    let list: serde_json::Value = serde_json::from_str(&ok(&["pki", "list", "--json", "--dir", d])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(
        list[0]["capabilities"],
        serde_json::json!(["orchestrator", "controller"])
    );
    let first = list[0]["serial"].as_str().unwrap().to_string();

    let out = ok(&["pki", "revoke", "fog1", "--superseded", "--dir", d]);
    assert_eq!(
        out.matches("revoked fog1").count(),
        1,
        "only the older fog1 certificate: {out}"
    );
    assert!(out.contains(&first), "{out}");
    let out = ok(&["pki", "revoke", &first, "--dir", d]);
    assert!(out.contains("nothing to revoke"), "{out}");

    let table = ok(&["pki", "list", "--dir", d]);
    assert_eq!(table.lines().count(), 4, "a header and three certificates: {table}");
    assert_eq!(table.matches("revoked 2").count(), 1, "{table}");
    assert_eq!(table.matches(" valid").count(), 2, "{table}");
}

#[test]
fn bad_input_and_missing_things_have_their_exit_codes_and_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let missing = tmp.path().join("none");
    let (code, err) = code_and_stderr(&[
        "pki",
        "issue",
        "r1",
        "--role",
        "edge",
        "--dir",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no CA in") && err.contains("wuos pki init"), "{err}");

    ok(&["pki", "init", "--dir", d]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["pki", "issue", "r 1", "--role", "edge"],
            "router id \"r 1\" is not valid",
        ),
        (&["pki", "issue", "r1", "--role", "Edge"], "did you mean \"edge\""),
        (
            &["pki", "issue", "r1", "--role", "edge", "--may", "root"],
            "unknown capability \"root\"",
        ),
        (&["pki", "issue", "r1", "--role", "edge", "--days", "0"], "--days"),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().copied().chain(["--dir", d]).collect();
        let (code, err) = code_and_stderr(&args);
        assert_eq!(code, Some(3), "{args:?} is bad input: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    }
    let (code, err) = code_and_stderr(&["pki", "revoke", "r9", "--dir", d]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("\"r9\""), "{err}");
}
