//! llmtap as the benchmarks drive it: started on a PID and waited for until
//! it watches, read through its `/metrics` and its `/proc` entry, stopped
//! with SIGINT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Loading the programs and attaching takes a few seconds at most.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Agent {
    child: Child,
    metrics_addr: SocketAddr,
    /// Everything it logged so far.
    log: Arc<Mutex<String>>,
}

impl Agent {
    /// `llmtap --pid PID EXTRA…`, once it logs that it watches.
    pub fn watch(llmtap: &Path, pid: u32, extra: &[&str]) -> Result<Agent> {
        let pid = pid.to_string();
        Agent::start(llmtap, &[&["--pid", pid.as_str()], extra].concat())
    }

    /// `llmtap ARGS…` with its metrics on a free loopback port, once it
    /// logs that it watches.
    pub fn start(llmtap: &Path, args: &[&str]) -> Result<Agent> {
        let mut child = Command::new(llmtap)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start llmtap")?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().context("piped stderr")?;
        let filled = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = filled.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut agent = Agent {
            child,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !agent.log().contains("watching ") {
            if let Some(status) = agent.child.try_wait()? {
                bail!("llmtap exited ({status}) before watching:\n{}", agent.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "llmtap not watching after {START_TIMEOUT:?}:\n{}",
                    agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        agent.metrics_addr = agent
            .log()
            .lines()
            .find_map(|l| l.split_once("metrics on http://"))
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .with_context(|| format!("no metrics address logged:\n{}", agent.log()))?;
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// One scrape of `/metrics`.
    pub fn metrics(&self) -> Result<Metrics> {
        let mut http = TcpStream::connect_timeout(&self.metrics_addr, Duration::from_secs(5))?;
        http.set_read_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: the whole body, then the server closes.
        http.write_all(b"GET /metrics HTTP/1.0\r\nHost: llmtap\r\n\r\n")?;
        let mut response = String::new();
        http.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("no HTTP head from /metrics")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!("/metrics answered {head:?}");
        }
        Ok(Metrics(body.to_owned()))
    }

    /// Scrapes until `name` (summed over its series) reaches `at_least`, or
    /// `timeout` passes; returns the last scrape either way.
    pub fn scrape_until(&self, name: &str, at_least: f64, timeout: Duration) -> Result<Metrics> {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics()?;
            if metrics.sum(name) >= at_least || Instant::now() > deadline {
                return Ok(metrics);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// CPU time the agent has used, user and system, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the parenthesised command: state is field 3, so
        // utime (14) and stime (15) are at 11 and 12 from there.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc/PID/stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / clock_ticks_per_second()?)
    }

    /// The agent's peak resident set so far (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")?;
        Ok(kb * 1024.0 / 1e6)
    }

    /// Whether the agent is still running.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// SIGINT, then waits for it to detach and exit.
    pub fn stop(mut self) -> Result<()> {
        crate::run(Command::new("kill").args(["-INT", &self.pid().to_string()]))?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    /// A failed benchmark must not leave the agent and its probes behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_second() -> Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// One `/metrics` scrape (Prometheus text format).
pub struct Metrics(String);

impl Metrics {
    /// The sum of every series of `name` (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
