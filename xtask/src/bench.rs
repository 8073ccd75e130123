//! `cargo xtask bench`: measures every figure of BENCHMARKS.md in one run
//! and writes them there, each between `<!-- name -->` markers, with a
//! summary of the goals and of the run (date, commit, load) at the top.
//!
//! - [`per_call`]: what capture costs one TLS call;
//! - [`client_overhead`]: what it adds to a client's end-to-end call time;
//! - [`reconstruction`]: user-space reconstruction throughput;
//! - [`resources`]: the agent's CPU and memory under load, and its losses;
//! - [`replay`]: `--read` throughput;
//! - [`bystander`]: what it costs processes it does not watch.
//!
//! Everything is built before anything is timed, and BENCHMARKS.md is only
//! written once every measurement has succeeded.

mod agent;
mod bystander;
mod client_overhead;
mod per_call;
mod reconstruction;
mod replay;
mod resources;
mod traffic;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The binaries the benchmarks run (release builds).
pub struct Binaries {
    pub llmtap: PathBuf,
    pub mock_llm: PathBuf,
    pub load_client: PathBuf,
    pub repeated_capture: PathBuf,
}

/// One goal and how this run did against it.
pub struct Goal {
    pub figure: &'static str,
    pub measured: String,
    pub goal: &'static str,
    pub met: bool,
}

/// One measured section of BENCHMARKS.md.
pub struct Section {
    /// Its marker name.
    pub name: &'static str,
    pub body: String,
    pub goals: Vec<Goal>,
}

/// The sections, by the name `--only` takes, in the order they run.
pub const SECTIONS: [&str; 6] = [
    "per-call",
    "client-overhead",
    "reconstruction",
    "resources",
    "replay",
    "bystanders",
];

/// Runs every section and writes BENCHMARKS.md; with `only`, runs that
/// section alone and prints it, leaving BENCHMARKS.md as it is (its
/// figures all come from one run).
pub fn run(root: &Path, only: Option<&str>) -> Result<()> {
    crate::apt_install(&[
        "clang",
        "llvm",
        "libbpf-dev",
        "libssl-dev",
        "openssl",
        "gcc",
        "time",
        "pkg-config",
        "python3",
        "nginx-light",
        "wrk",
    ])?;
    crate::cargo(&["build", "--release", "-p", "llmtap"])?;
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "llmtap-tests",
        "--bin",
        "mock-llm",
        "--bin",
        "load-client",
        "--bin",
        "repeated-capture",
    ])?;
    reconstruction::build()?;
    let target = target_dir(root);
    let release = target.join("release");
    let bins = Binaries {
        llmtap: release.join("llmtap"),
        mock_llm: release.join("mock-llm"),
        load_client: release.join("load-client"),
        repeated_capture: release.join("repeated-capture"),
    };
    let work = target.join("bench");
    std::fs::create_dir_all(&work)?;

    let measure = |name: &str| -> Result<Section> {
        match name {
            "per-call" => per_call::run(root, &bins.llmtap, &work),
            "client-overhead" => client_overhead::run(&bins, &work),
            "reconstruction" => reconstruction::run(&target),
            "resources" => resources::run(&bins, &work),
            "replay" => replay::run(root, &bins, &work),
            "bystanders" => bystander::run(&bins, &work),
            other => bail!("no benchmark section {other:?}: one of {SECTIONS:?}"),
        }
    };
    if let Some(name) = only {
        println!("{}", measure(name)?.body);
        return Ok(());
    }
    let started = Instant::now();
    let load_before = load_average()?;
    let sections = SECTIONS
        .map(measure)
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let summary = run_summary(&sections, &load_before, started)?;
    let benchmarks = root.join("BENCHMARKS.md");
    write_section(&benchmarks, "run", &summary)?;
    println!("{summary}");
    for section in &sections {
        write_section(&benchmarks, section.name, &section.body)?;
        println!("{}", section.body);
    }
    Ok(())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The top of BENCHMARKS.md: when and where the run was, and every goal.
fn run_summary(sections: &[Section], load_before: &str, started: Instant) -> Result<String> {
    let output = |program: &str, args: &[&str]| -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .with_context(|| format!("run {program}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = output("git", &["rev-parse", "--short", "HEAD"])?;
    let changes = [
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!BENCHMARKS.md",
    ];
    let dirty = if output("git", &changes)?.is_empty() {
        ""
    } else {
        " plus uncommitted changes"
    };
    let mut text = format!(
        "Every figure below marked *measured by `cargo xtask bench`* comes from one run of \
         `cargo xtask bench` (as root): {} UTC, commit `{commit}`{dirty}, {} minutes, on {} cores (`{}`), \
         kernel {}. The machine's 2 cores are shared with other work: load average (1/5/15 min) {} before \
         the run, {} after it.\n\n\
         | figure | measured | goal | |\n|---|---:|---:|---|\n",
        output("date", &["-u", "+%Y-%m-%d %H:%M"])?,
        (started.elapsed().as_secs_f64() / 60.0).round(),
        output("nproc", &[])?,
        output("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])?,
        output("uname", &["-r"])?,
        load_before,
        load_average()?,
    );
    for goal in sections.iter().flat_map(|s| &s.goals) {
        text += &format!(
            "| {} | {} | {} | {} |\n",
            goal.figure,
            goal.measured,
            goal.goal,
            if goal.met { "met" } else { "**missed**" }
        );
    }
    Ok(text)
}

fn load_average() -> Result<String> {
    let loadavg = std::fs::read_to_string("/proc/loadavg")?;
    Ok(loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" / "))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Replaces the section between `<!-- name -->` markers (or appends it).
fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let begin = format!("<!-- {name} -->");
    let end = format!("<!-- /{name} -->");
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
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
