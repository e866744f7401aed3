//! `cargo bench -p wuos-orchestrator --bench evaluate`: the cost of one policy evaluation and of
//! one telemetry sample through the orchestrator, over synthetic neighborhoods.
//!
//! Prints a table (median and min of 15 runs of a batch of iterations, per iteration) and the
//! same figures as one JSON line. State the machine when quoting the numbers.

use std::hint::black_box;
use std::time::Instant;

use wuos_orchestrator::{Config, Input, Orchestrator, Policy, RegionView, synthetic_neighborhood};

const VOIP: &str = "service voip {
  match udp dport 5060 to 10.255.0.10
  place local when mem.used_pct < 30 and cpu.used_pct < 70
  place nearby within 2 hops when mem.used_pct < 30 prefer lowest latency
  otherwise datacenter
  hold 10s
}";

/// Median and min of `runs` timings of `iters` calls of `f`, in µs per call.
fn measure(runs: usize, iters: u32, mut f: impl FnMut()) -> (f64, f64) {
    let mut per_call: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    (per_call[runs / 2], per_call[0])
}

fn main() {
    // A local router that never qualifies, so every rule is checked over every candidate.
    let policy = Policy::parse(VOIP).expect("the bench policy parses");
    let service = &policy.services[0];
    let mut rows = Vec::new();
    for n in [10usize, 100, 1000, 10_000] {
        let mut candidates = synthetic_neighborhood(n, 1);
        if let Some(local) = candidates.first_mut() {
            local.figures.mem_used_pct = Some(99.0);
        }
        let iters = (200_000 / n).max(10) as u32;
        let (eval_med, eval_min) = measure(15, iters, || {
            let e = service.evaluate(black_box(&candidates));
            black_box(e.placement);
        });
        let (explain_med, _) = measure(15, iters, || {
            let e = service.evaluate(black_box(&candidates));
            black_box(e.explanation.to_string());
        });
        // Without regions: the synthetic routers name no region, so with regions only this router
        // and the data centre would be candidates.
        let mut cfg = Config::new("r0000", "dc1");
        cfg.region = false;
        let mut orch = Orchestrator::new(cfg, policy.clone());
        let mut now = 0u64;
        let (sample_med, _) = measure(15, iters.min(2000), || {
            now += 1;
            let out = orch.handle(Input::Telemetry {
                now_ms: now,
                candidates: candidates.clone(),
                regions: RegionView::default(),
            });
            black_box(out);
        });
        rows.push((n, eval_med, eval_min, explain_med, sample_med));
    }
    println!(
        "candidates  evaluate µs (median)  evaluate µs (min)  + explanation µs  telemetry sample µs (incl. clone)"
    );
    for (n, a, b, c, d) in &rows {
        println!("{n:>10}  {a:>20.2}  {b:>17.2}  {c:>16.2}  {d:>33.2}");
    }
    let json: Vec<String> = rows
        .iter()
        .map(|(n, a, b, c, d)| {
            format!(
                "{{\"candidates\":{n},\"evaluate_us_median\":{a:.3},\"evaluate_us_min\":{b:.3},\"explain_us_median\":{c:.3},\"sample_us_median\":{d:.3}}}"
            )
        })
        .collect();
    println!(
        "{{\"bench\":\"policy_evaluate\",\"runs\":15,\"rows\":[{}]}}",
        json.join(",")
    );
}
