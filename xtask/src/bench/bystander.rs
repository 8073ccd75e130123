//! Cost to bystanders: what llmtap takes from processes it does not watch.
//! An unrelated nginx (nginx-light, TLS through the system libssl) serves a
//! 2 KiB file to `wrk` over HTTPS and over plain HTTP, on loopback, in
//! rounds alternating between no agent, llmtap watching one idle process
//! (a Python that has loaded the same libssl), and `llmtap --all`. A
//! setup's ratio is the median of its rounds' ratios to the no-agent run
//! of the same round.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::agent::Agent;
use super::{median, Binaries, Goal, Section};

/// Measured rounds of each setup, after one unmeasured warm-up: loopback
/// throughput on a small shared VM moves by ±10% between runs, against
/// goals 2% apart, so nine.
const ROUNDS: usize = 9;
const WRK_ARGS: [&str; 4] = ["-t1", "-c16", "-d5s", "--latency"];
const FILE_BYTES: usize = 2048;
const WATCHING_ONE_GOAL: f64 = 0.98;
const ALL_GOAL: f64 = 0.95;
/// The two kinds of traffic, in the order of the URLs, with the names of
/// their goals: watching one idle process, and `--all`.
const TRAFFIC: [(&str, [&str; 2]); 2] = [
    (
        "HTTPS",
        [
            "Bystander HTTPS, llmtap watching one idle process",
            "Bystander HTTPS, llmtap --all",
        ],
    ),
    (
        "plain HTTP",
        [
            "Bystander plain HTTP, llmtap watching one idle process",
            "Bystander plain HTTP, llmtap --all",
        ],
    ),
];

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    NoAgent,
    WatchingOneIdleProcess,
    All,
}

const SETUPS: [Setup; 3] = [Setup::NoAgent, Setup::WatchingOneIdleProcess, Setup::All];

pub fn run(bins: &Binaries, work: &Path) -> Result<Section> {
    let nginx = Nginx::start(&work.join("bystander"))?;
    let idle = Killed(
        Command::new("python3")
            .args(["-c", "import ssl, time; time.sleep(10**6)"])
            .spawn()
            .context("start the idle python3")?,
    );
    let urls = [
        format!("https://{}/file", nginx.https),
        format!("http://{}/file", nginx.http),
    ];
    for url in &urls {
        wrk(url)?;
    }
    // requests per second, by [url][setup], one per round.
    let mut rates = [[vec![], vec![], vec![]], [vec![], vec![], vec![]]];
    for round in 0..ROUNDS {
        // The order rotates: drift falls on all three.
        for step in 0..SETUPS.len() {
            let setup = SETUPS[(round + step) % SETUPS.len()];
            let agent = match setup {
                Setup::NoAgent => None,
                Setup::WatchingOneIdleProcess => {
                    Some(Agent::watch(&bins.llmtap, idle.0.id(), &[])?)
                }
                Setup::All => Some(Agent::start(&bins.llmtap, &["--all"])?),
            };
            for (url, by_setup) in urls.iter().zip(&mut rates) {
                by_setup[setup as usize].push(wrk(url)?);
            }
            if let Some(agent) = agent {
                agent.stop()?;
            }
        }
    }
    let mut table = String::new();
    let mut goals = Vec::new();
    for ((traffic, figures), by_setup) in TRAFFIC.into_iter().zip(&rates) {
        let [none, one, all] = by_setup.clone().map(median);
        // Each round against its own no-agent run: drift between rounds
        // falls out.
        let paired_ratio = |setup: Setup| {
            median(
                by_setup[setup as usize]
                    .iter()
                    .zip(&by_setup[Setup::NoAgent as usize])
                    .map(|(rate, none)| rate / none)
                    .collect(),
            )
        };
        let one_ratio = paired_ratio(Setup::WatchingOneIdleProcess);
        let all_ratio = paired_ratio(Setup::All);
        table += &format!(
            "| {traffic} | {} | {} | **{one_ratio:.3}×** | {} | **{all_ratio:.3}×** |\n",
            rate(none),
            rate(one),
            rate(all),
        );
        let targets = [(one_ratio, WATCHING_ONE_GOAL), (all_ratio, ALL_GOAL)];
        for (figure, (ratio, at_least)) in figures.into_iter().zip(targets) {
            goals.push(Goal {
                figure,
                measured: format!("{ratio:.3}×"),
                goal: if at_least == ALL_GOAL {
                    "≥ 0.95×"
                } else {
                    "≥ 0.98×"
                },
                met: ratio >= at_least,
            });
        }
    }
    let rounds = |by_setup: &[Vec<f64>; 3], setup: Setup| {
        by_setup[setup as usize]
            .iter()
            .map(|r| rate(*r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut per_round = String::new();
    for ((traffic, _), by_setup) in TRAFFIC.into_iter().zip(&rates) {
        per_round += &format!(
            "{traffic}, per round: no agent {}; watching one idle process {}; --all {}.\n",
            rounds(by_setup, Setup::NoAgent),
            rounds(by_setup, Setup::WatchingOneIdleProcess),
            rounds(by_setup, Setup::All),
        );
    }
    let body = format!(
        "## Cost to bystanders\n\n\
         Measured by `cargo xtask bench`: an unrelated nginx (Debian's nginx-light, one worker, TLS through the \
         system libssl) serves a {FILE_BYTES}-byte file on loopback to `wrk {}`, over HTTPS and over plain HTTP. \
         {ROUNDS} rounds of three setups, alternating (the order rotates each round), after one warm-up: no agent; \
         `llmtap --pid P` watching one idle `python3` that has loaded the same libssl; `llmtap --all` (wrk connects by \
         address, so its handshakes name no LLM API host and nothing is hooked). Rates are the medians of the \
         rounds' requests per second; \
         a ratio is the median of the rounds' ratios to that round's run with no agent.\n\n\
         | traffic | no agent | watching one idle process | ratio | `--all` | ratio |\n\
         |---|---:|---:|---:|---:|---:|\n{table}\n{per_round}",
        WRK_ARGS.join(" "),
    );
    Ok(Section {
        name: "bystanders",
        body,
        goals,
    })
}

fn rate(requests_per_second: f64) -> String {
    format!("{:.1}k req/s", requests_per_second / 1000.0)
}

/// One `wrk` run against `url`: its requests per second.
fn wrk(url: &str) -> Result<f64> {
    let out = Command::new("wrk")
        .args(WRK_ARGS)
        .arg(url)
        .output()
        .context("run wrk (apt install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk {url} failed or saw errors: {text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec from wrk: {text}"))
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx in the foreground with a configuration of its own, serving
/// `/file` over HTTPS and plain HTTP on free loopback ports; stopped with
/// its workers when dropped.
struct Nginx {
    child: Child,
    https: SocketAddr,
    http: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (a SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(dir: &Path) -> Result<Nginx> {
        let site = dir.join("site");
        std::fs::create_dir_all(&site)?;
        std::fs::write(site.join("file"), "x".repeat(FILE_BYTES))?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        crate::run(
            Command::new("openssl")
                .args(["req", "-x509", "-nodes", "-newkey", "ec"])
                .args(["-pkeyopt", "ec_paramgen_curve:P-256"])
                .args(["-days", "1", "-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null()),
        )?;
        let (https, http) = (free_port()?, free_port()?);
        let config = dir.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "worker_processes 1;\n\
                 pid {dir}/nginx.pid;\n\
                 error_log {dir}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n\
                 access_log off;\n\
                 server {{\n\
                 listen {https} ssl;\n\
                 listen {http};\n\
                 ssl_certificate {cert};\n\
                 ssl_certificate_key {key};\n\
                 root {site};\n\
                 }}\n\
                 }}\n",
                dir = dir.display(),
                cert = cert.display(),
                key = key.display(),
                site = site.display(),
            ),
        )?;
        let nginx = Nginx {
            child: Command::new("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&config)
                .args(["-g", "daemon off;"])
                .spawn()
                .context("start nginx (apt install nginx-light)")?,
            https,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while [https, http]
            .iter()
            .any(|addr| TcpStream::connect(addr).is_err())
        {
            if Instant::now() > deadline {
                bail!("nginx not listening on {https} and {http} after 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
