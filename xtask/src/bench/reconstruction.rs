//! Reconstruction throughput: runs the criterion bench
//! `agent/benches/reconstruction.rs` (one OpenAI chat stream of 1,003 SSE
//! chunks through HTTP framing, de-chunking, SSE, the provider decoder and
//! the call record, on one thread, timed in that thread's CPU time) and
//! reads its estimate back from the files criterion writes.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{Goal, Section};

const GOAL_CHUNKS_PER_S: f64 = 1e6;
const BENCH_ID: &str = "reconstruction/openai_stream_100B_reads";

/// `cargo bench` of this bench, with `extra` arguments.
fn cargo_bench(extra: &[&str]) -> Result<()> {
    let mut args = vec!["bench", "-p", "llmtap", "--bench", "reconstruction"];
    args.extend(extra);
    crate::cargo(&args)
}

/// Builds the bench (before anything is timed, so the compile doesn't load
/// the machine during the other measurements).
pub fn build() -> Result<()> {
    cargo_bench(&["--no-run"])
}

pub fn run(target: &Path) -> Result<Section> {
    let results = target.join("criterion").join(BENCH_ID);
    // A stale estimate must not pass for this run's.
    let _ = std::fs::remove_dir_all(results.join("new"));
    cargo_bench(&["--", "--noplot"])?;
    let read = |file: &str| -> Result<Value> {
        let path = results.join("new").join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("criterion wrote no {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let chunks = read("benchmark.json")?["throughput"]["Elements"]
        .as_f64()
        .context("no Elements throughput in criterion's benchmark.json")?;
    let median = &read("estimates.json")?["median"];
    let ns = |v: &Value| {
        v.as_f64()
            .context("no median in criterion's estimates.json")
    };
    let point = ns(&median["point_estimate"])?;
    let (low, high) = (
        ns(&median["confidence_interval"]["lower_bound"])?,
        ns(&median["confidence_interval"]["upper_bound"])?,
    );
    let rate = |ns_per_iteration: f64| chunks / (ns_per_iteration / 1e9);
    let met = rate(point) >= GOAL_CHUNKS_PER_S;
    let body = format!(
        "### This run\n\n\
         Measured by `cargo xtask bench`, which runs `cargo bench -p llmtap --bench reconstruction` and reads \
         criterion's median ({BENCH_ID}, {chunks:.0} SSE chunks an iteration, one thread). The bench times the \
         thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so time spent waiting for a core while other work runs \
         on the shared machine does not count; the history below is wall time.\n\n\
         | figure | measured | goal | ratio to goal |\n|---|---:|---:|---:|\n\
         | CPU time per iteration | {:.3} ms (95% CI {:.3}–{:.3}) | — | — |\n\
         | throughput | **{:.2} M SSE chunks/s/core** (95% CI {:.2}–{:.2}) | ≥ {:.0} M | {:.2}× ({}) |\n",
        point / 1e6,
        low / 1e6,
        high / 1e6,
        rate(point) / 1e6,
        rate(high) / 1e6,
        rate(low) / 1e6,
        GOAL_CHUNKS_PER_S / 1e6,
        rate(point) / GOAL_CHUNKS_PER_S,
        if met { "met" } else { "missed" },
    );
    Ok(Section {
        name: "reconstruction-throughput",
        body,
        goals: vec![Goal {
            figure: "Reconstruction throughput",
            measured: format!("{:.2} M SSE chunks/s/core", rate(point) / 1e6),
            goal: "≥ 1 M chunks/s/core",
            met,
        }],
    })
}
