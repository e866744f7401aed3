//! How long issuing a lab's certificates takes: 1,000 routers by `Pki::issue_many` (one lock,
//! one index write) beside 1,000 separate `Pki::issue` calls (each rewrites the index), each in a
//! fresh PKI directory, several runs, the median reported.
//!
//! `cargo bench -p wuos-pki --bench issue [-- --n 1000 --runs 5 --dir PARENT --json OUT]`
//!
//! `--dir` is where the temporary PKI directories go (default: the system's temp dir); use a
//! directory on the disk the PKI will live on, since every key and certificate is fsynced.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wuos_model::{Role, RouterId};
use wuos_pki::{InitOptions, IssueRequest, Pki, Validity};

struct Args {
    n: usize,
    runs: usize,
    dir: PathBuf,
    json: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        n: 1000,
        runs: 3,
        dir: std::env::temp_dir(),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--n" => a.n = it.next().and_then(|v| v.parse().ok()).expect("--n takes a number"),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs takes a number"),
            "--dir" => a.dir = it.next().expect("--dir takes a directory").into(),
            "--json" => a.json = Some(it.next().expect("--json takes a file").into()),
            // `cargo bench` passes `--bench`; anything else is a filter we do not use.
            _ => {}
        }
    }
    a
}

fn requests(n: usize) -> Vec<IssueRequest> {
    let roles = Role::ALL;
    (0..n)
        .map(|i| IssueRequest {
            router: RouterId::new(format!("r{i}")).unwrap(),
            role: roles[i % roles.len()],
            capabilities: BTreeSet::new(),
            validity: Validity::days(365),
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(a: &Args, one_by_one: bool) -> Duration {
    let tmp = tempfile::tempdir_in(&a.dir).expect("a temporary directory");
    let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
    let reqs = requests(a.n);
    let started = Instant::now();
    if one_by_one {
        for r in &reqs {
            pki.issue(&r.router, r.role, &r.capabilities, r.validity).unwrap();
        }
    } else {
        pki.issue_many(&reqs).unwrap();
    }
    let took = started.elapsed();
    assert_eq!(pki.list().unwrap().len(), a.n, "every certificate is in the index");
    took
}

fn main() {
    let a = args();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "issuing {} certificates (ECDSA P-256, fsynced) in {}; {} cores; median of {} runs",
        a.n,
        a.dir.display(),
        cores,
        a.runs
    );
    let batch: Vec<Duration> = (0..a.runs).map(|_| run(&a, false)).collect();
    let single: Vec<Duration> = (0..a.runs).map(|_| run(&a, true)).collect();
    let rows = [
        ("issue_many (one index write)", batch),
        ("issue × n (index each time)", single),
    ];
    println!(
        "{:<30} {:>10} {:>12} {:>10} {:>10}",
        "how", "median", "per cert", "min", "max"
    );
    let mut json = Vec::new();
    for (name, times) in rows {
        let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        let m = median(times.clone());
        let per = m / a.n as u32;
        println!(
            "{:<30} {:>8.0}ms {:>10.0}µs {:>8.0}ms {:>8.0}ms",
            name,
            m.as_secs_f64() * 1e3,
            per.as_secs_f64() * 1e6,
            min.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        json.push(serde_json::json!({
            "how": name,
            "n": a.n,
            "runs_ms": times.iter().map(|t| t.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "median_ms": m.as_secs_f64() * 1e3,
        }));
    }
    if let Some(path) = a.json {
        let doc = serde_json::json!({ "bench": "pki_issue", "cores": cores, "dir": a.dir, "results": json });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).expect("the JSON file is written");
        println!("wrote {}", path.display());
    }
}
