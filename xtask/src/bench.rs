//! `cargo xtask bench`: measures what capture costs the observed process
//! and writes the figures, with the commands behind them, to BENCHMARKS.md.
//!
//! Per-call capture cost: `tests/bench/ssl_read_loop.c` does small in-process
//! TLS reads (no sockets) through the system libssl. It runs three ways,
//! interleaved, in one go: without llmtap; with llmtap's probes attached but
//! the process not watched (each probe exits at the in-kernel PID check: the
//! cost of the uprobe traps alone); and watched, with full capture.
//!
//! Capture replay throughput: see [`replay`].

mod replay;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const ITERATIONS: &str = "200000";
const RECORD_BYTES: &str = "64";
const ROUNDS: usize = 3;

pub fn run(root: &Path) -> Result<()> {
    crate::apt_install(&[
        "clang",
        "llvm",
        "libbpf-dev",
        "libssl-dev",
        "openssl",
        "gcc",
    ])?;
    crate::cargo(&["build", "--release", "-p", "llmtap"])?;
    let work = root.join("target/bench");
    std::fs::create_dir_all(&work)?;
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
    let llmtap = root.join("target/release/llmtap");
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
        let idle = Command::new("sleep").arg("600").spawn()?;
        let agent = start_agent(&llmtap, &idle)?;
        bare.push(ns_per_iteration(&mut tls_loop(None))?);
        stop(agent, idle)?;

        full.push(ns_per_iteration(&mut tls_loop(Some(&llmtap)))?);
    }
    let (none, bare, full) = (median(none), median(bare), median(full));
    // Each iteration is one SSL_write and one SSL_read: two captured calls.
    let per_call = |ns: f64| ns / 2.0;
    let report = format!(
        "## Per-call capture cost (SSL_read/SSL_write)\n\n\
         Measured by `cargo xtask bench` (median of {ROUNDS} interleaved rounds of {ITERATIONS} iterations, \
         {RECORD_BYTES}-byte records; `tests/bench/ssl_read_loop.c`, an in-process TLS loop through the system libssl, \
         each iteration one SSL_write and one SSL_read).\n\n\
         | setup | ns per TLS call | ratio |\n|---|---:|---:|\n\
         | no probes | {:.0} | 1.00× of no probes |\n\
         | llmtap probes attached, process not watched (bare uprobe + uretprobe, exit at the PID check) | {:.0} | {:.2}× of no probes |\n\
         | llmtap watching the process (full capture) | {:.0} | {:.2}× of bare probes |\n\n\
         Capture adds {:.0} ns per call over the bare probes; the probes themselves (two traps per call) cost \
         {:.0} ns per call on this VM.\n",
        per_call(none),
        per_call(bare),
        bare / none,
        per_call(full),
        full / bare,
        per_call(full - bare),
        per_call(bare - none),
    );
    println!("{report}");
    let benchmarks = root.join("BENCHMARKS.md");
    write_section(&benchmarks, "per-call-capture-cost", &report)?;

    let report = replay::run(root, &llmtap, &work)?;
    println!("{report}");
    write_section(&benchmarks, "capture-replay-throughput", &report)
}

fn start_agent(llmtap: &Path, target: &Child) -> Result<Child> {
    let agent = Command::new(llmtap)
        .args(["--pid", &target.id().to_string()])
        .stderr(Stdio::null())
        .spawn()?;
    // Loading and attaching takes well under this.
    std::thread::sleep(Duration::from_secs(3));
    Ok(agent)
}

fn stop(mut agent: Child, mut idle: Child) -> Result<()> {
    crate::run(Command::new("kill").args(["-INT", &agent.id().to_string()]))?;
    agent.wait()?;
    idle.kill()?;
    idle.wait()?;
    Ok(())
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Replaces the section between `<!-- name -->` markers (or appends it).
fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let begin = format!("<!-- {name} -->");
    let end = format!("<!-- /{name} -->");
    let current = std::fs::read_to_string(path)
        .unwrap_or_else(|_| "# Benchmarks\n\nEvery figure here is written by `cargo xtask bench`, measured in one run.\n".into());
    let section = format!("{begin}\n{body}{end}");
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &current[..b], &current[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", current.trim_end()),
    };
    std::fs::write(path, updated)?;
    Ok(())
}
