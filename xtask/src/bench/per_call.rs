//! Per-call capture cost: `tests/bench/ssl_read_loop.c` does small
//! in-process TLS reads (no sockets) through the system libssl. It runs
//! three ways, interleaved, in one go: without llmtap; with llmtap watching
//! another process on the same libssl (this one, a bystander, has no
//! probes: they are placed per process); and watched, with full capture.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::agent::Agent;
use super::{median, Goal, Section};

const ITERATIONS: &str = "200000";
const RECORD_BYTES: &str = "64";
const ROUNDS: usize = 5;
/// A bystander's TLS calls keep their speed (within the rounds' noise).
const BYSTANDER_GOAL: f64 = 1.02;

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

    let (mut none, mut bystander, mut full) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        none.push(ns_per_iteration(&mut tls_loop(None))?);

        // llmtap watching a python3 that has loaded the same libssl.
        let mut idle = Command::new("python3")
            .args(["-c", "import ssl, time; time.sleep(600)"])
            .spawn()?;
        let agent = Agent::watch(llmtap, idle.id(), &[])?;
        bystander.push(ns_per_iteration(&mut tls_loop(None))?);
        agent.stop()?;
        idle.kill()?;
        idle.wait()?;

        full.push(ns_per_iteration(&mut tls_loop(Some(llmtap)))?);
    }
    // The ratio is taken within each round, whose three runs follow each
    // other closely, so that the shared machine's drift between rounds
    // does not fall on one side.
    let ratios: Vec<f64> = bystander.iter().zip(&none).map(|(b, n)| b / n).collect();
    let listed = ratios
        .iter()
        .map(|r| format!("{r:.3}×"))
        .collect::<Vec<_>>()
        .join(", ");
    let ratio = median(ratios);
    let (none, bystander, full) = (median(none), median(bystander), median(full));
    // Each iteration is one SSL_write and one SSL_read: two captured calls.
    let per_call = |ns: f64| ns / 2.0;
    let met = ratio <= BYSTANDER_GOAL;
    let body = format!(
        "## Per-call capture cost (SSL_read/SSL_write)\n\n\
         Measured by `cargo xtask bench` (medians of {ROUNDS} interleaved rounds of {ITERATIONS} iterations; the \
         bystander's ratio is the median of the rounds' ratios, {RECORD_BYTES}-byte records; \
         `tests/bench/ssl_read_loop.c`, an in-process TLS loop through the system libssl, each iteration one \
         SSL_write and one SSL_read).\n\n\
         | setup | ns per TLS call | ratio to no probes | goal |\n|---|---:|---:|---:|\n\
         | no probes | {:.0} | 1.00× | — |\n\
         | llmtap watching another process on the same libssl (this one has no probes) | {:.0} | {ratio:.3}× | ≤ {BYSTANDER_GOAL}× ({}) |\n\
         | llmtap watching the process (full capture: two uprobe traps and the record) | {:.0} | {:.1}× | — |\n\n\
         Capture, traps included, adds {:.0} ns per call to the watched process. The hooks are placed in watched \
         processes alone, so the probes' traps can no longer be timed apart from the capture (the rows of earlier \
         runs, \"probes attached, process not watched\", measured a bystander's cost when the probes were on the \
         library file). Each round's ratio of the bystander to no probes: {listed}.\n",
        per_call(none),
        per_call(bystander),
        if met { "met" } else { "missed" },
        per_call(full),
        full / none,
        per_call(full - none),
    );
    Ok(Section {
        name: "per-call-capture-cost",
        body,
        goals: vec![Goal {
            figure: "Per-call cost to a bystander on the same libssl",
            measured: format!("{ratio:.3}×"),
            goal: "≤ 1.02×",
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
