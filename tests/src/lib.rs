//! Helpers for the end-to-end tests: run the real agent against real
//! clients and the mock LLM server, and read back what each side saw.
//!
//! The tests load BPF programs into the running kernel, so they need root
//! and run one at a time ([`serial`]).

pub mod capture_file;
pub mod llamacpp;
pub mod otlp_receiver;
pub mod prometheus;
pub mod rotel;
pub mod stack;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

fn debug_binary(name: &str) -> PathBuf {
    let path = workspace_root().join("target/debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build with `cargo build --workspace --bins` (cargo xtask test does)",
        path.display()
    );
    path
}

pub fn llmtap_bin() -> PathBuf {
    debug_binary("llmtap")
}

pub fn mock_llm_bin() -> PathBuf {
    debug_binary("mock-llm")
}

/// A copy of the `llmtap` binary that any user can run, wherever the
/// checkout lives (it may sit under a directory only root can enter).
pub fn llmtap_for_any_user() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the tempdir");
    let binary = dir.path().join("llmtap");
    std::fs::copy(llmtap_bin(), &binary).expect("copy llmtap");
    (dir, binary)
}

/// The Go client (tests/clients/go_stream, on net/http and crypto/tls),
/// built into `dir` as `name`, stripped of symbols or not.
pub fn build_go_client(dir: &tempfile::TempDir, name: &str, stripped: bool) -> PathBuf {
    let binary = dir.path().join(name);
    let mut go = Command::new("go");
    go.arg("build")
        .env("GO111MODULE", "off")
        .env("GOCACHE", dir.path().join("gocache"))
        .current_dir(workspace_root().join("tests/clients/go_stream"));
    if stripped {
        go.arg("-ldflags=-s -w");
    }
    let status = go.arg("-o").arg(&binary).arg(".").status().expect("run go");
    assert!(status.success(), "building the Go client (needs golang-go)");
    binary
}

/// Holds the lock that makes end-to-end tests run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The path of a client script in `tests/clients`.
pub fn client_script(name: &str) -> String {
    workspace_root()
        .join("tests/clients")
        .join(name)
        .display()
        .to_string()
}

/// Environment for a client process: trust only the test's certificate and
/// talk to loopback directly. This machine sets several such variables
/// globally; each is replaced or removed here.
pub fn client_env(command: &mut Command, cert: Option<&Path>) {
    for var in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command
        .env("NO_PROXY", "*")
        .env("OPENAI_API_KEY", "sk-test");
    if let Some(cert) = cert {
        command
            .env("SSL_CERT_FILE", cert)
            .env("NODE_EXTRA_CA_CERTS", cert)
            .env("CURL_CA_BUNDLE", cert);
    }
}

/// One write the mock server made.
#[derive(Clone, Debug)]
pub struct SentChunk {
    pub connection: u64,
    pub wall_ns: u64,
    pub bytes: Vec<u8>,
}

/// The mock LLM server, running as its own process.
pub struct MockServer {
    child: Child,
    pub addr: SocketAddr,
    pub cert: Option<PathBuf>,
    send_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl MockServer {
    /// Starts `mock-llm` on a free loopback port, with TLS or not, and extra
    /// flags (chunk count, delays).
    pub fn start(tls: bool, extra: &[&str]) -> MockServer {
        Self::start_on("127.0.0.1:0", tls, extra)
    }

    /// [`MockServer::start`] on another address (`[::1]:0` for IPv6).
    pub fn start_on(listen: &str, tls: bool, extra: &[&str]) -> MockServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let send_log = dir.path().join("sent.jsonl");
        let cert = dir.path().join("cert.pem");
        let mut command = Command::new(mock_llm_bin());
        command
            .args(["--listen", listen, "--send-log"])
            .arg(&send_log)
            .args(extra)
            .stdout(Stdio::piped());
        if tls {
            command.arg("--tls").arg("--cert-out").arg(&cert);
        }
        let mut child = command.spawn().expect("start mock-llm");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut ready)
            .expect("mock-llm ready line");
        let ready: Value = serde_json::from_str(&ready).expect("ready line is JSON");
        let addr = ready["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening address");
        MockServer {
            child,
            addr,
            cert: tls.then_some(cert),
            send_log,
            _dir: dir,
        }
    }

    /// The mock over TLS: `chunks` output tokens per call, the first after
    /// `first_token_ms`, then one every `chunk_ms`.
    pub fn paced_tls(chunks: u64, first_token_ms: u64, chunk_ms: u64) -> MockServer {
        MockServer::start(
            true,
            &[
                "--chunks",
                &chunks.to_string(),
                "--first-token-delay-ms",
                &first_token_ms.to_string(),
                "--chunk-delay-ms",
                &chunk_ms.to_string(),
            ],
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Everything the server wrote so far, in order.
    pub fn sent(&self) -> Vec<SentChunk> {
        let log = std::fs::read_to_string(&self.send_log).unwrap_or_default();
        log.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("send log line is JSON");
                SentChunk {
                    connection: v["conn"].as_u64().expect("conn"),
                    wall_ns: v["wall_ns"].as_u64().expect("wall_ns"),
                    bytes: v["data"].as_str().expect("data").as_bytes().to_vec(),
                }
            })
            .collect()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the agent printed, and how it ended.
pub struct AgentRun {
    pub status: ExitStatus,
    pub lines: Vec<Value>,
    pub stderr: String,
}

/// Runs `llmtap --print --print-payload --capture-content [args] --
/// command...` to completion.
/// The command shares the agent's stdout: keep it quiet (curl `-o`, the
/// SDK clients' `--output`, see [`ClientReport`]).
pub fn run_agent_on_command(args: &[&str], command: &[&str], cert: Option<&Path>) -> AgentRun {
    run_agent(Command::new(llmtap_bin()), args, command, cert)
}

/// A command prefix that runs a program at real-time priority. Tests that
/// check chunk spacing run the client this way so that it reads each chunk
/// as it arrives even on a busy machine: they measure the agent's
/// timestamps, not the scheduler.
pub const REAL_TIME: [&str; 3] = ["chrt", "--fifo", "10"];

/// [`run_agent_on_command`] with the agent, and so the command it starts,
/// at real-time priority ([`REAL_TIME`]). The agent is the one prefixed so
/// that the command's own executable is hooked before it is released.
pub fn run_agent_on_command_in_real_time(
    args: &[&str],
    command: &[&str],
    cert: Option<&Path>,
) -> AgentRun {
    run_agent_on_command_under(&REAL_TIME, args, command, cert)
}

/// [`run_agent_on_command`] with the agent started by `wrapper`, a command
/// prefix that changes how it runs ([`REAL_TIME`], `setpriv …`); the
/// command it starts inherits that too.
pub fn run_agent_on_command_under(
    wrapper: &[&str],
    args: &[&str],
    command: &[&str],
    cert: Option<&Path>,
) -> AgentRun {
    let (program, wrapper_args) = wrapper.split_first().expect("a wrapper command");
    let mut agent = Command::new(program);
    agent.args(wrapper_args).arg(llmtap_bin());
    run_agent(agent, args, command, cert)
}

fn run_agent(mut agent: Command, args: &[&str], command: &[&str], cert: Option<&Path>) -> AgentRun {
    agent
        .args([
            "--print",
            "--print-payload",
            "--capture-content",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .arg("--")
        .args(command);
    client_env(&mut agent, cert);
    let output = agent.output().expect("run llmtap");
    AgentRun {
        status: output.status,
        lines: json_lines(&output.stdout),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A streamed chat completion request body for curl.
pub fn chat_body(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Say hello to llmtap."}],
    })
    .to_string()
}

/// One streamed call with curl: `$url`, `$body` and `$tp` (a traceparent)
/// set by the surrounding script. `-f`: an HTTP error fails the script.
pub const CURL_CALL: &str = "curl -sS -f -N --max-time 20 -o /dev/null \
    -H 'content-type: application/json' -H 'authorization: Bearer sk-test' \
    -H \"traceparent: $tp\" -d \"$body\" \"$url/v1/chat/completions\"";

/// A file for an SDK client script's JSON report (its `--output`).
pub struct ClientReport {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ClientReport {
    pub fn new() -> ClientReport {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("report.json");
        ClientReport { _dir: dir, path }
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// The report's `calls` array.
    pub fn calls(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.path).expect("the client wrote its report");
        let report: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("client report {text:?}: {e}"));
        report["calls"].as_array().expect("calls").clone()
    }
}

impl Default for ClientReport {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks that a run failed with exactly one line on stderr containing
/// `needle`.
pub fn assert_one_line_error(output: &std::process::Output, needle: &str) {
    assert!(!output.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
}

/// A memory figure of process `pid` from `/proc/PID/status`, in KiB:
/// `VmRSS` (resident now), `VmHWM` (its peak), `RssAnon` (the anonymous
/// part: heap, stacks; not the mapped executable, some 40 MiB in a debug
/// build, which does not grow with traffic).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// `llmtap_bpf_map_entries` by map, in a scrape.
pub fn bpf_map_gauges(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("llmtap_bpf_map_entries{map=\""))
        .filter_map(|l| {
            let (map, value) = l.split_once("\"} ")?;
            Some((map.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The `"type":"call"` lines the agent printed.
pub fn call_lines(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "call").collect()
}

/// `llm_request_duration_seconds_count` summed over the series of `model`,
/// in a scrape.
pub fn calls_counted(text: &str, model: &str) -> Option<f64> {
    prometheus::scraped(
        text,
        "llm_request_duration_seconds_count",
        &[("model", model)],
    )
}

/// The `exporter="otlp"` value of a self-health counter, in a scrape.
pub fn otlp_counter(text: &str, name: &str) -> f64 {
    prometheus::scraped(text, name, &[("exporter", "otlp")]).unwrap_or(0.0)
}

pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A child process driven line by line: it waits for lines on its stdin
/// (each lets it take a step) and reports on its stdout. Killed when dropped.
pub struct HeldProcess {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl HeldProcess {
    /// Starts `command` with its stdin and stdout piped to the test.
    pub fn spawn(mut command: Command) -> HeldProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        HeldProcess {
            stdin: child.stdin.take().expect("piped"),
            stdout: BufReader::new(child.stdout.take().expect("piped")),
            child,
        }
    }

    /// A shell for the agent to watch by PID. It waits for a line on stdin,
    /// runs `script` (in a subshell, so a failing call ends only that, with
    /// `args` as `$1`, `$2`, …), prints `exit STATUS`, and waits again: it
    /// outlives the calls, and so does the agent watching it. Its children
    /// are watched because llmtap follows forks.
    pub fn shell(script: &str, args: &[String], cert: &Path) -> HeldProcess {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "read go; ( {script} ); echo \"exit $?\"; read done"
            ))
            .arg("sh")
            .args(args);
        client_env(&mut command, Some(cert));
        HeldProcess::spawn(command)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to its stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").expect("the held process reads its stdin");
    }

    /// The next line it prints; fails when it ended instead.
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read the held process");
        assert!(!line.is_empty(), "the held process ended");
        line.trim_end().to_owned()
    }

    /// Lets a [`HeldProcess::shell`]'s script run; returns what it printed
    /// once it succeeded.
    pub fn run(&mut self) -> Vec<String> {
        self.send("go");
        let mut printed = Vec::new();
        loop {
            let line = self.next_line();
            if let Some(status) = line.strip_prefix("exit ") {
                assert_eq!(status, "0", "the script failed: {printed:?}");
                return printed;
            }
            printed.push(line);
        }
    }
}

impl Drop for HeldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's `/metrics` text (which must answer 200).
pub fn scrape(addr: SocketAddr) -> String {
    let (status, text) = prometheus::http_get(addr, "/metrics").expect("the agent serves /metrics");
    assert_eq!(status, 200, "{text}");
    text
}

/// Scrapes until `done` holds for the scrape (or `timeout` passes); returns
/// the last scrape.
pub fn scrape_until(addr: SocketAddr, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(addr);
        if done(&text) || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A long-running agent (for `--pid` runs), stopped with SIGINT.
pub struct RunningAgent {
    child: Child,
    /// Read all along, so a chatty `--print` never fills the pipe.
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: std::sync::mpsc::Receiver<String>,
    stderr_seen: String,
}

impl RunningAgent {
    pub fn start(args: &[&str]) -> RunningAgent {
        Self::start_with(Command::new(llmtap_bin()), args)
    }

    /// [`RunningAgent::start`] on a command the caller prepared: llmtap
    /// with its own environment, or behind a wrapper that execs it
    /// (`setpriv … llmtap`).
    pub fn start_with(mut agent: Command, args: &[&str]) -> RunningAgent {
        let mut child = agent
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start llmtap");
        let mut stdout = child.stdout.take().expect("piped");
        let stdout = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stdout.read_to_end(&mut all);
            all
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RunningAgent {
            child,
            stdout: Some(stdout),
            stderr: rx,
            stderr_seen: String::new(),
        }
    }

    /// `llmtap --capture pcap --iface lo --port PORT --print
    /// --print-payload --capture-content`, once it captures.
    pub fn capturing_packets_on_lo(port: u16) -> RunningAgent {
        let port = port.to_string();
        let mut agent = RunningAgent::start(&[
            "--capture",
            "pcap",
            "--iface",
            "lo",
            "--port",
            &port,
            "--print",
            "--print-payload",
            "--capture-content",
        ]);
        agent.wait_for_log("capturing packets", Duration::from_secs(20));
        agent
    }

    /// Starts the agent with `args` and waits until it watches; returns it
    /// with its metrics address.
    pub fn attached(args: &[&str]) -> (RunningAgent, SocketAddr) {
        let mut agent = RunningAgent::start(args);
        agent.wait_for_log("stop with Ctrl-C", Duration::from_secs(30));
        let addr = agent.metrics_addr();
        (agent, addr)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the agent with SIGKILL, as a crash or an OOM kill would: no
    /// clean detach.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Where the agent serves `/metrics` (it logs the bound address at
    /// startup, which is how a `127.0.0.1:0` port is learnt).
    pub fn metrics_addr(&mut self) -> SocketAddr {
        const LOGGED: &str = "metrics on http://";
        self.wait_for_log(LOGGED, Duration::from_secs(20));
        self.stderr_seen
            .lines()
            .find_map(|line| line.split_once(LOGGED))
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in:\n{}", self.stderr_seen))
    }

    /// Waits until the agent logs a line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr_seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push_str(&line);
                    self.stderr_seen.push('\n');
                }
                Err(_) => panic!(
                    "llmtap did not log {needle:?} in {timeout:?}; it logged:\n{}",
                    self.stderr_seen
                ),
            }
        }
    }

    /// Sends SIGINT and collects the output.
    pub fn stop(mut self) -> AgentRun {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait llmtap");
        let stdout = self
            .stdout
            .take()
            .expect("stopped once")
            .join()
            .expect("stdout reader");
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_seen.push_str(&line);
            self.stderr_seen.push('\n');
        }
        AgentRun {
            status,
            lines: json_lines(&stdout),
            stderr: std::mem::take(&mut self.stderr_seen),
        }
    }
}

impl Drop for RunningAgent {
    /// A failed test must not leave the agent (and its probes) behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One read or write the agent printed.
#[derive(Clone, Debug)]
pub struct CapturedChunk {
    pub egress: bool,
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes: Vec<u8>,
}

/// One connection the agent printed.
#[derive(Clone, Debug, Default)]
pub struct CapturedConnection {
    pub open: Value,
    pub chunks: Vec<CapturedChunk>,
    pub closed: bool,
}

impl CapturedConnection {
    pub fn bytes(&self, egress: bool) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|c| c.egress == egress)
            .flat_map(|c| c.bytes.iter().copied())
            .collect()
    }

    pub fn ingress_chunks(&self) -> impl Iterator<Item = &CapturedChunk> {
        self.chunks.iter().filter(|c| !c.egress)
    }
}

/// Groups the agent's `--print --print-payload` lines by connection.
/// The connections whose request is a chat completion.
pub fn chat_connections(
    connections: &BTreeMap<u64, CapturedConnection>,
) -> Vec<&CapturedConnection> {
    connections
        .values()
        .filter(|c| c.bytes(true).starts_with(b"POST /v1/chat/completions"))
        .collect()
}

/// Fails if a connection's bytes start with a TLS record: ciphertext that
/// leaked through the socket probes.
pub fn assert_no_tls_ciphertext(connections: &BTreeMap<u64, CapturedConnection>) {
    for conn in connections.values() {
        assert!(
            !conn.bytes(true).starts_with(&[0x16, 0x03]),
            "TLS ciphertext was captured"
        );
    }
}

pub fn connections(lines: &[Value]) -> BTreeMap<u64, CapturedConnection> {
    let mut out: BTreeMap<u64, CapturedConnection> = BTreeMap::new();
    for line in lines {
        let Some(id) = line["connection"].as_u64() else {
            continue;
        };
        let conn = out.entry(id).or_default();
        match line["type"].as_str() {
            Some("open") => conn.open = line.clone(),
            Some("close") => conn.closed = true,
            Some("data") => conn.chunks.push(CapturedChunk {
                egress: line["direction"] == "egress",
                start_ns: line["start_ns"].as_u64().expect("start_ns"),
                end_ns: line["time_ns"].as_u64().expect("time_ns"),
                bytes: base64::engine::general_purpose::STANDARD
                    .decode(line["payload"].as_str().expect("payload (--print-payload)"))
                    .expect("base64"),
            }),
            _ => {}
        }
    }
    out
}

/// Checks that a connection's ingress bytes are exactly what the server
/// sent on one of its connections, in order, and, given a tolerance, that
/// each server write reached the client with the server's spacing (within
/// `tolerance_ns`). Returns the largest spacing error seen.
pub fn assert_matches_server(
    captured: &CapturedConnection,
    sent: &[SentChunk],
    tolerance_ns: Option<u64>,
) -> u64 {
    let received = captured.bytes(false);
    let by_connection = sent
        .iter()
        .fold(BTreeMap::<u64, Vec<&SentChunk>>::new(), |mut m, c| {
            m.entry(c.connection).or_default().push(c);
            m
        });
    let writes = by_connection
        .values()
        .find(|writes| writes.iter().flat_map(|w| w.bytes.iter().copied()).eq(received.iter().copied()))
        .unwrap_or_else(|| {
            panic!(
                "the client's received bytes match no server connection byte for byte.\nreceived:\n{}\nsent:\n{}",
                String::from_utf8_lossy(&received),
                by_connection
                    .values()
                    .map(|w| String::from_utf8_lossy(&w.iter().flat_map(|c| c.bytes.clone()).collect::<Vec<_>>()).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            )
        });

    // When did the client's read return with the last byte of each write?
    let mut read_end_offsets = Vec::new();
    let mut offset = 0usize;
    for chunk in captured.ingress_chunks() {
        offset += chunk.bytes.len();
        read_end_offsets.push((offset, chunk.end_ns));
    }
    let mut written = 0usize;
    let arrivals: Vec<(u64, u64)> = writes
        .iter()
        .map(|w| {
            written += w.bytes.len();
            let read_at = read_end_offsets
                .iter()
                .find(|(end, _)| *end >= written)
                .map(|(_, at)| *at)
                .expect("every written byte was read");
            (w.wall_ns, read_at)
        })
        .collect();
    let mut worst = 0;
    for pair in arrivals.windows(2) {
        let server_gap = pair[1].0.abs_diff(pair[0].0);
        let client_gap = pair[1].1.abs_diff(pair[0].1);
        worst = worst.max(server_gap.abs_diff(client_gap));
    }
    if let Some(tolerance_ns) = tolerance_ns {
        assert!(
            worst <= tolerance_ns,
            "chunk spacing seen by the agent differs from the server's by {worst} ns (> {tolerance_ns})"
        );
    }
    worst
}

/// llmtap's BPF programs and maps still loaded after waiting up to
/// `timeout` for them to go: the kernel frees them shortly after the last
/// reference closes, not at once.
pub fn llmtap_bpf_objects_left(timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = llmtap_bpf_objects();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The BPF programs and maps process `pid` holds, as (`prog` or `map`, id),
/// from its file descriptors: other agents on the host do not count.
pub fn bpf_objects_of(pid: u32) -> Vec<(&'static str, String)> {
    let fdinfo = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("the agent runs");
    let mut objects: Vec<(&'static str, String)> = fdinfo
        .flatten()
        .filter_map(|fd| {
            let info = std::fs::read_to_string(fd.path()).ok()?;
            info.lines().find_map(|line| {
                let (kind, id) = match line.split_once(':')? {
                    ("prog_id", id) => ("prog", id),
                    ("map_id", id) => ("map", id),
                    _ => return None,
                };
                Some((kind, id.trim().to_owned()))
            })
        })
        .collect();
    objects.sort();
    objects.dedup();
    objects
}

/// Names of the loaded BPF programs and maps that are llmtap's.
pub fn llmtap_bpf_objects() -> Vec<String> {
    const OURS: &[&str] = &[
        "socket_sent",
        "socket_received",
        "ssl_return",
        "ssl_read_entry",
        "on_fork",
        "watched_pids",
        "active_ssl_call",
        "socket_states",
        "ssl_fds",
    ];
    let mut found = Vec::new();
    for kind in ["prog", "map"] {
        let output = Command::new("bpftool")
            .args([kind, "list", "--json"])
            .output()
            .expect("bpftool (installed by cargo xtask setup)");
        let list: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        for item in list.as_array().into_iter().flatten() {
            if let Some(name) = item["name"].as_str().filter(|n| OURS.contains(n)) {
                found.push(format!("{kind} {name}"));
            }
        }
    }
    found
}

/// Checks a call record against the Go test client's own report (its
/// `--output` file): the same tokens, and the first token seen by the agent
/// (the read that returned it) at most 5 ms before the client saw it.
pub fn assert_matches_go_report(call: &Value, report: &Path) {
    let client: Value = serde_json::from_str(&std::fs::read_to_string(report).expect("go report"))
        .expect("go report JSON");
    assert_eq!(call["output_tokens"], client["output_tokens"]);
    assert_eq!(call["input_tokens"], client["input_tokens"]);
    let agent_first = call["first_output_ns"].as_u64().expect("first_output_ns");
    let client_first = client["first_token_ns"].as_u64().expect("first_token_ns");
    assert!(
        agent_first <= client_first,
        "{agent_first} after {client_first}"
    );
    assert!(
        client_first - agent_first < 5_000_000,
        "{agent_first} vs {client_first}"
    );
}
