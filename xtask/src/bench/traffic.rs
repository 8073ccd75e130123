//! The traffic the agent benchmarks watch: the mock LLM server over TLS
//! (`tests/src/bin/mock-llm.rs`, rustls: not hooked, not watched) and the
//! load client (`tests/src/bin/load-client.rs`, the system OpenSSL: what
//! llmtap captures), each as its own process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// How the mock server streams: the first token after `first_token_ms`,
/// then one chunk every `chunk_ms`, `chunks` content chunks in all.
#[derive(Clone, Copy)]
pub struct Pacing {
    pub first_token_ms: u64,
    pub chunk_ms: u64,
    pub chunks: usize,
}

impl Pacing {
    pub fn describe(&self) -> String {
        format!(
            "{} content chunks, first token after {} ms, then one chunk every {} ms",
            self.chunks, self.first_token_ms, self.chunk_ms
        )
    }
}

/// `mock-llm --tls`, killed when dropped.
pub struct MockLlm {
    child: Child,
    pub addr: String,
    pub ca: PathBuf,
}

impl MockLlm {
    pub fn start(mock_llm: &Path, work: &Path, name: &str, pacing: Pacing) -> Result<MockLlm> {
        let ca = work.join(format!("{name}-ca.pem"));
        let mut child = Command::new(mock_llm)
            .arg("--tls")
            .arg("--cert-out")
            .arg(&ca)
            .args(["--first-token-delay-ms", &pacing.first_token_ms.to_string()])
            .args(["--chunk-delay-ms", &pacing.chunk_ms.to_string()])
            .args(["--chunks", &pacing.chunks.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start mock-llm")?;
        let ready = Lines::of(&mut child)?.next_json(Duration::from_secs(30))?;
        let addr = ready["listening"]
            .as_str()
            .with_context(|| format!("mock-llm ready line {ready}"))?
            .to_owned();
        Ok(MockLlm { child, addr, ca })
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the load client measured.
pub struct LoadReport {
    pub calls: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `load-client --stdin-gate`: started idle, so an agent can attach before
/// it connects, and kept alive after its report until [`LoadClient::finish`]
/// so the agent can be read while it still watches. Killed when dropped.
pub struct LoadClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
}

impl LoadClient {
    pub fn start(
        load_client: &Path,
        mock: &MockLlm,
        connections: usize,
        calls_per_connection: usize,
        stagger: Duration,
    ) -> Result<LoadClient> {
        let mut child = Command::new(load_client)
            .args(["--addr", &mock.addr])
            .arg("--ca")
            .arg(&mock.ca)
            .args(["--connections", &connections.to_string()])
            .args(["--calls-per-connection", &calls_per_connection.to_string()])
            .args(["--stagger-ms", &stagger.as_millis().to_string()])
            .arg("--stdin-gate")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start load-client")?;
        let stdin = child.stdin.take();
        let stdout = Lines::of(&mut child)?;
        Ok(LoadClient {
            child,
            stdin,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it connect and start its calls.
    pub fn go(&mut self) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("load-client already finished")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits until every connection has a stream open.
    pub fn wait_streaming(&mut self) -> Result<()> {
        self.wait_for("streaming", Duration::from_secs(120))
            .map(drop)
    }

    /// Waits for the client's report; every call must have succeeded.
    pub fn report(&mut self) -> Result<LoadReport> {
        let report = self.wait_for("calls", Duration::from_secs(600))?;
        ensure!(report["failed"] == 0, "load-client calls failed: {report}");
        let number = |key: &str| {
            report[key]
                .as_f64()
                .with_context(|| format!("no {key} in {report}"))
        };
        Ok(LoadReport {
            calls: number("calls")? as u64,
            p50_ms: number("p50_ms")?,
            p99_ms: number("p99_ms")?,
        })
    }

    /// Closes its stdin and waits for it to exit.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "load-client failed: {status}");
        Ok(())
    }

    fn wait_for(&mut self, key: &str, timeout: Duration) -> Result<Value> {
        loop {
            let line = self.stdout.next_json(timeout)?;
            if line.get(key).is_some() {
                return Ok(line);
            }
        }
    }
}

impl Drop for LoadClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's stdout, read on a thread so reads can time out.
struct Lines(Receiver<String>);

impl Lines {
    fn of(child: &mut Child) -> Result<Lines> {
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Lines(rx))
    }

    /// The next line, as JSON.
    fn next_json(&mut self, timeout: Duration) -> Result<Value> {
        match self.0.recv_timeout(timeout) {
            Ok(line) => serde_json::from_str(&line).with_context(|| format!("not JSON: {line:?}")),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("no line within {timeout:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the process exited"),
        }
    }
}
