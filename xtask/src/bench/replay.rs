//! Capture replay throughput: `llmtap --read` over a 100 MB capture made of
//! the checked-in fixture `tests/fixtures/pcap/ipv4.pcap` (one streamed
//! chat completion) repeated as back-to-back flows, each on its own client
//! port (`tests/src/bin/repeated-capture.rs`), so every copy is a call.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use super::{Binaries, Goal, Section};

const CAPTURE_BYTES: &str = "104857600";
const RSS_GOAL_MB: f64 = 128.0;

pub fn run(root: &Path, bins: &Binaries, work: &Path) -> Result<Section> {
    let capture = work.join("replay-100MB.pcap");
    let made = Command::new(&bins.repeated_capture)
        .arg(root.join("tests/fixtures/pcap/ipv4.pcap"))
        .arg(&capture)
        .arg(CAPTURE_BYTES)
        .output()
        .context("run repeated-capture")?;
    ensure!(
        made.status.success(),
        "repeated-capture failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let copies: usize = String::from_utf8_lossy(&made.stdout).trim().parse()?;
    let size = std::fs::metadata(&capture)?.len() as f64;

    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "max_rss_kb=%M"])
        .arg(&bins.llmtap)
        .arg("--read")
        .arg(&capture)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .context("run llmtap --read under /usr/bin/time")?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("llmtap --read failed: {log}");
    }
    let calls = log.lines().filter(|l| l.contains(" status=200 ")).count();
    ensure!(
        calls == copies,
        "{copies} calls in the capture, llmtap reported {calls}"
    );
    let rss_mb = log
        .lines()
        .find_map(|l| l.strip_prefix("max_rss_kb="))
        .and_then(|kb| kb.trim().parse::<f64>().ok())
        .context("no max RSS from /usr/bin/time")?
        / 1024.0;
    let mb = size / 1e6;
    let met = rss_mb < RSS_GOAL_MB;
    let body = format!(
        "## Capture replay throughput (`--read`)\n\n\
         Measured by `cargo xtask bench`: `llmtap --read` over a {mb:.0} MB capture (the fixture \
         `tests/fixtures/pcap/ipv4.pcap`, one streamed chat completion, repeated as {copies} back-to-back \
         flows on distinct client ports), metrics on, no `--print`. Every call was reported.\n\n\
         | figure | measured | goal |\n|---|---:|---:|\n\
         | throughput | {:.1} MB/s ({:.0} calls/s) | — |\n\
         | wall time | {seconds:.2} s | — |\n\
         | peak RSS | {rss_mb:.1} MB | < {RSS_GOAL_MB:.0} MB ({}) |\n",
        mb / seconds,
        copies as f64 / seconds,
        if met { "met" } else { "missed" },
    );
    Ok(Section {
        name: "capture-replay-throughput",
        body,
        goals: vec![Goal {
            figure: "Capture replay (`--read`, 100 MB) peak RSS",
            measured: format!("{rss_mb:.1} MB at {:.1} MB/s", mb / seconds),
            goal: "< 128 MB",
            met,
        }],
    })
}
