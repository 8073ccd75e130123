//! The third-party `rotel` OTLP receiver (PyPI `rotel`, which ships the
//! `rotel-agent` binary) as an independent check of what llmtap sends. It
//! has no file exporter: it runs with the `blackhole` exporter and
//! `--debug-log traces --debug-log-verbosity detailed`, which prints every
//! received span (name, ids, attributes, events) to its stdout, captured in
//! a file the test reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::prometheus::free_port;

/// `rotel-agent` from the installed Python package.
pub fn rotel_agent() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the rotel package is missing (pip install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running rotel-agent; killed when dropped.
pub struct Rotel {
    child: Child,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Rotel {
    /// Starts rotel on two free loopback ports and waits until it listens.
    pub fn start() -> Self {
        let port = || format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_on(port(), port())
    }

    /// Starts rotel on these addresses (again, after a stop) and waits
    /// until it listens.
    pub fn start_on(grpc_addr: SocketAddr, http_addr: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(rotel_agent())
            .arg("start")
            .arg(format!("--otlp-grpc-endpoint={grpc_addr}"))
            .arg(format!("--otlp-http-endpoint={http_addr}"))
            .args(["--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg(format!(
                "--log-file={}",
                dir.path().join("rotel.log").display()
            ))
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("rotel-agent starts");
        let rotel = Rotel {
            child,
            grpc_addr,
            http_addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while [grpc_addr, http_addr]
            .iter()
            .any(|a| std::net::TcpStream::connect(a).is_err())
        {
            assert!(
                Instant::now() < deadline,
                "rotel did not listen: {}",
                rotel.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rotel
    }

    /// Everything rotel printed so far (stdout, then stderr).
    pub fn output(&self) -> String {
        ["stdout", "stderr"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the output contains every needle (or `timeout` passes)
    /// and returns it.
    pub fn wait_for_output(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if needles.iter().all(|n| output.contains(n)) || Instant::now() >= deadline {
                return output;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
