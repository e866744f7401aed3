//! `wuos sim run`: a run with events, a policy and a report; errors and their exit codes. No
//! root needed.

mod common;

use common::{ok, run};

#[test]
fn a_run_writes_its_report_and_prints_a_summary() {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("events.jsonl");
    std::fs::write(
        &events,
        r#"{"at": "8s", "do": "crash", "router": "r6"}
{"at": "9s", "do": "apply_policy", "orchestrator": "r2", "file": "web.policy"}
"#,
    )
    .unwrap();
    std::fs::write(
        d.path().join("web.policy"),
        "service web { match tcp dport 80 to 10.255.0.20 place local when mem.used_pct < 30 otherwise datacenter hold 1s }",
    )
    .unwrap();
    let out = d.path().join("report.json");
    let stdout = ok(&[
        "sim",
        "run",
        "line:6",
        "--duration",
        "20s",
        "--events",
        events.to_str().unwrap(),
        "--orchestrators",
        "r2",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        stdout.starts_with("simulated line-6 (6 routers, 5 links) for 20.0 s, seed 1"),
        "{stdout}"
    );
    assert!(stdout.contains("events: 2 played, 2 applied"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let r = &v["result"];
    assert_eq!(r["per_router"].as_array().unwrap().len(), 6);
    assert_eq!(r["running"], 5, "r6 crashed");
    assert_eq!(r["orchestrators"][0]["placements"]["web"], "r2");
    let r1 = r["per_router"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "r1")
        .unwrap();
    assert_eq!(r1["view"]["r2"]["hops"], 1);
    assert_eq!(r1["region"], "r2", "regions by default");
    let rule = &r1["rules"][0];
    assert_eq!((&rule["service"], &rule["writer"]), (&"web".into(), &"r2".into()));
    assert_eq!(r["conflict_check"]["findings"], 0);
    assert!(v["performance"]["router_seconds_per_wall_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_input_and_unknown_names_have_their_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("events.jsonl");
    std::fs::write(&events, "{\"at\": \"1s\", \"do\": \"crash\", \"router\": \"r9\"}\n").unwrap();
    let out = run(&["sim", "run", "line:3", "--events", events.to_str().unwrap(), "--quiet"]);
    assert_eq!(out.status.code(), Some(4), "an unknown router");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("events.jsonl:1: router \"r9\" is not a router of the topology"),
        "{err}"
    );
    let out = run(&["sim", "run", "line:3", "--orchestrators", "r7", "--quiet"]);
    assert_eq!(out.status.code(), Some(4));
    for args in [
        &["sim", "run", "line:3", "--load", "heavy"][..],
        &["sim", "run", "line:3", "--duration", "soon"],
        &["sim", "run", "random:2000000"],
        &[
            "sim",
            "run",
            "line:3",
            "--hello-interval",
            "5s",
            "--dead-interval",
            "2s",
        ],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
