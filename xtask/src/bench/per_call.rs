//! Per-call capture cost: `tests/bench/ssl_read_loop.c` does small
//! in-process TLS reads (no sockets) through the system libssl. It runs
//! three ways, interleaved, in one go: without llmtap; with llmtap's probes
//! attached but the process not watched (each probe exits at the in-kernel
//! PID check: the cost of the uprobe traps alone); and watched, with full
//! capture.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::agent::Agent;
use super::{median, Goal, Section};

const ITERATIONS: &str = "200000";
const RECORD_BYTES: &str = "64";
const ROUNDS: usize = 5;
const GOAL_RATIO: f64 = 1.3;

pub fn run(root: &Path, llmtap: &Path, work: &Path) -> Result<Section> {
    let program = work.join("ssl_read_loop");
    crate::run(
        Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&program)
            .arg(root.join("tests/bench/ssl_read_loop.c"))
            .args(["-lssl", "-lcrypto"]),
    )?;
    let (cert, key) = (work.join("cert.pem"), work.join("key.pem"));
    crate::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()),
    )?;
    // The loop, run directly or under `llmtap --`.
    let tls_loop = |under: Option<&Path>| {
        let mut cmd = match under {
            Some(agent) => {
                let mut cmd = Command::new(agent);
                cmd.arg("--").arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        cmd.arg(&cert).arg(&key).args([ITERATIONS, RECORD_BYTES]);
        cmd
    };

    let (mut none, mut bare, mut full) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        none.push(ns_per_iteration(&mut tls_loop(None))?);

        // Probes attached, this process not watched: they exit at once.
        let mut idle = Command::new("sleep").arg("600").spawn()?;
        let agent = Agent::watch(llmtap, idle.id(), &[])?;
        bare.push(ns_per_iteration(&mut tls_loop(None))?);
        agent.stop()?;
        idle.kill()?;
        idle.wait()?;

        full.push(ns_per_iteration(&mut tls_loop(Some(llmtap)))?);
    }
    // The ratio is taken within each round, whose three runs follow each
    // other closely, so that the shared machine's drift between rounds
    // does not fall on one side.
    let ratios: Vec<f64> = full.iter().zip(&bare).map(|(f, b)| f / b).collect();
    let listed = ratios
        .iter()
        .map(|r| format!("{r:.2}×"))
        .collect::<Vec<_>>()
        .join(", ");
    let ratio = median(ratios);
    let (none, bare, full) = (median(none), median(bare), median(full));
    // Each iteration is one SSL_write and one SSL_read: two captured calls.
    let per_call = |ns: f64| ns / 2.0;
    let met = ratio <= GOAL_RATIO;
    let body = format!(
        "## Per-call capture cost (SSL_read/SSL_write)\n\n\
         Measured by `cargo xtask bench` (medians of {ROUNDS} interleaved rounds of {ITERATIONS} iterations; the ratio to the bare probes is the median of \
         the rounds' ratios, \
         {RECORD_BYTES}-byte records; `tests/bench/ssl_read_loop.c`, an in-process TLS loop through the system libssl, \
         each iteration one SSL_write and one SSL_read).\n\n\
         | setup | ns per TLS call | ratio | goal |\n|---|---:|---:|---:|\n\
         | no probes | {:.0} | 1.00× of no probes | — |\n\
         | llmtap probes attached, process not watched (bare uprobe + uretprobe, exit at the PID check) | {:.0} | {:.2}× of no probes | — |\n\
         | llmtap watching the process (full capture) | {:.0} | {ratio:.2}× of bare probes | ≤ {GOAL_RATIO}× of bare probes ({}) |\n\n\
         Capture adds {:.0} ns per call over the bare probes; the probes themselves (two traps per call) cost \
         {:.0} ns per call on this VM. Each round's ratio of full capture to bare probes: {listed}.\n",
        per_call(none),
        per_call(bare),
        bare / none,
        per_call(full),
        if met { "met" } else { "missed" },
        per_call(full - bare),
        per_call(bare - none),
    );
    Ok(Section {
        name: "per-call-capture-cost",
        body,
        goals: vec![Goal {
            figure: "Per-call capture cost: full capture vs bare uprobe",
            measured: format!("{ratio:.2}×"),
            goal: "≤ 1.3×",
            met,
        }],
    })
}

fn ns_per_iteration(command: &mut Command) -> Result<f64> {
    let output = command
        .stderr(Stdio::null())
        .output()
        .context("run the TLS loop")?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.split("\"ns_per_iteration\":").nth(1))
        .and_then(|v| v.trim_end_matches('}').parse().ok())
        .with_context(|| format!("no ns_per_iteration in {stdout:?}"))
}
