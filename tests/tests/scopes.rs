//! End-to-end: scopes. The agent is started with `--cgroup` or `--exe`
//! before the clients exist; clients that start later inside the scope are
//! captured from their first call (counted in `/metrics`), those outside are
//! not, and processes that come and go leave nothing behind in the agent.
//!
//! Each client asks for a model name unique to the test, and only calls of
//! that model are counted: other processes on the host (which `--exe
//! python3` also watches) cannot change the counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llmtap_tests::prometheus::{http_get, sample_sum, scraped};
use llmtap_tests::*;

const CALLS: &str = "llm_request_duration_seconds_count";

/// A cgroup the test creates (v2, or in a v1 hierarchy), removed (its
/// processes moved back to the parent) when dropped.
struct TestCgroup {
    /// Where processes go: the innermost directory made.
    path: PathBuf,
    /// The directories made for it, innermost first.
    made: Vec<PathBuf>,
}

impl TestCgroup {
    /// A cgroup v2 directory, `nested` below a test directory.
    fn create(name: &str) -> TestCgroup {
        Self::create_nested(name, &[])
    }

    fn create_nested(name: &str, nested: &[&str]) -> TestCgroup {
        let mount = cgroup2_mount();
        let fs_type = Command::new("stat")
            .args(["-fc", "%T"])
            .arg(&mount)
            .output()
            .expect("stat");
        assert_eq!(
            String::from_utf8_lossy(&fs_type.stdout).trim(),
            "cgroup2fs",
            "{} is not a cgroup v2 mount",
            mount.display()
        );
        Self::under(&mount, name, nested)
    }

    /// A directory in the first cgroup v1 hierarchy mounted, if any.
    fn create_v1(name: &str) -> Option<TestCgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let hierarchy = mountinfo.lines().find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            fs.starts_with("cgroup ")
                .then(|| PathBuf::from(mount.split(' ').nth(4).unwrap()))
        })?;
        Some(Self::under(&hierarchy, name, &[]))
    }

    fn under(root: &Path, name: &str, nested: &[&str]) -> TestCgroup {
        let mut path = root.join(format!("llmtap-test-{name}-{}", std::process::id()));
        let mut made = vec![path.clone()];
        for dir in nested {
            path = path.join(dir);
            made.push(path.clone());
        }
        for dir in made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        for dir in &made {
            std::fs::create_dir(dir).expect("create the test cgroup");
        }
        made.reverse();
        TestCgroup { path, made }
    }

    /// `command` run inside the cgroup: a shell joins it, then execs.
    fn wrap(&self, command: &[String]) -> Vec<String> {
        let procs = self.path.join("cgroup.procs");
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo $$ > '{}' && exec \"$@\"", procs.display()),
            "sh".into(),
        ]
        .into_iter()
        .chain(command.iter().cloned())
        .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in &self.made {
            let parent = dir.parent().expect("under the mount").join("cgroup.procs");
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(&parent, pid);
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn start(command: &[String], cert: Option<&Path>) -> Child {
    start_with_env(command, cert, &[])
}

fn start_with_env(command: &[String], cert: Option<&Path>, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    client_env(&mut cmd, cert);
    cmd.envs(env.iter().copied());
    cmd.spawn().expect("start client")
}

fn finish(child: Child, what: &str) {
    let output = child.wait_with_output().expect("wait client");
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An SDK client script (tests/clients/openai_stream.*) making `calls` to
/// `base_url`.
fn sdk(runtime: &str, script: &str, base_url: &str, model: &str, calls: u32) -> Vec<String> {
    let script = workspace_root().join("tests/clients").join(script);
    [
        runtime,
        &script.display().to_string(),
        base_url,
        "--model",
        model,
        "--calls",
        &calls.to_string(),
        "--output",
        "/dev/null",
    ]
    .map(String::from)
    .to_vec()
}

fn python_sdk(server: &MockServer, model: &str, calls: u32) -> Vec<String> {
    sdk(
        "python3",
        "openai_stream.py",
        &server.base_url(),
        model,
        calls,
    )
}

fn node_sdk(server: &MockServer, model: &str, calls: u32) -> Vec<String> {
    sdk(
        "node",
        "openai_stream.mjs",
        &server.base_url(),
        model,
        calls,
    )
}

/// The server's URL by name, so that TLS clients send `localhost` as the
/// server name (by address they send none).
fn by_name(server: &MockServer) -> String {
    server.base_url().replace("127.0.0.1", "localhost")
}

/// The system's Python (its comm is `python3`): a pyenv shim in PATH would
/// add a shell and 200 ms to every start.
fn tiny_python(base_url: &str, model: &str) -> Vec<String> {
    let script = workspace_root().join("tests/clients/tiny_stream.py");
    [
        "/usr/bin/python3",
        &script.display().to_string(),
        base_url,
        model,
    ]
    .map(String::from)
    .to_vec()
}

fn fast_server() -> MockServer {
    MockServer::start(
        true,
        &[
            "--chunks",
            "4",
            "--chunk-delay-ms",
            "5",
            "--first-token-delay-ms",
            "10",
        ],
    )
}

fn started_agent(args: &[&str]) -> (RunningAgent, SocketAddr) {
    let mut agent = RunningAgent::start(args);
    let addr = agent.metrics_addr();
    agent.wait_for_log("stop with Ctrl-C", Duration::from_secs(30));
    (agent, addr)
}

fn metrics(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    body
}

/// Calls of `model` counted in /metrics.
fn calls_of(addr: SocketAddr, model: &str) -> u64 {
    sample_sum(&metrics(addr), CALLS, &format!("model=\"{model}\"")) as u64
}

/// Waits until `model` has `expected` calls (the last ones may still be in
/// the ring buffer), then returns the count, which must then hold.
fn wait_for_calls(addr: SocketAddr, model: &str, expected: u64) -> u64 {
    wait_for_calls_within(addr, model, expected, Duration::from_secs(10))
}

fn wait_for_calls_within(addr: SocketAddr, model: &str, expected: u64, wait: Duration) -> u64 {
    let deadline = Instant::now() + wait;
    while calls_of(addr, model) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Late extras would show up now.
    std::thread::sleep(Duration::from_millis(300));
    calls_of(addr, model)
}

fn unique(model: &str) -> String {
    format!("{model}-{}", std::process::id())
}

/// Python and node started inside `cgroup` after the agent (watching
/// it with `scope`) are captured; python outside it, running meanwhile, is
/// not.
fn check_scope_captures_inside_only(cgroup: &TestCgroup, scope: &[&str]) {
    let server = fast_server();
    let (agent, addr) = started_agent(scope);
    let (inside_py, inside_node, outside) = (unique("in-py"), unique("in-node"), unique("out-py"));

    // All three at once: the outside one runs while the scope is busy.
    let cert = server.cert.as_deref();
    let clients = [
        (
            start(&cgroup.wrap(&python_sdk(&server, &inside_py, 2)), cert),
            "python inside",
        ),
        (
            start(&cgroup.wrap(&node_sdk(&server, &inside_node, 2)), cert),
            "node inside",
        ),
        (
            start(&python_sdk(&server, &outside, 2), cert),
            "python outside",
        ),
    ];
    for (child, what) in clients {
        finish(child, what);
    }
    assert_eq!(wait_for_calls(addr, &inside_py, 2), 2, "python inside");
    assert_eq!(wait_for_calls(addr, &inside_node, 2), 2, "node inside");
    assert_eq!(calls_of(addr, &outside), 0, "outside the scope");
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn a_cgroup_scope_captures_python_and_node_started_inside_it_and_nothing_outside() {
    let _serial = serial();
    let cgroup = TestCgroup::create("cg");
    check_scope_captures_inside_only(&cgroup, &["--cgroup", &cgroup.path.display().to_string()]);
}

#[test]
fn a_cgroup_v1_scope_captures_processes_started_inside_it_and_nothing_outside() {
    let _serial = serial();
    // This machine (like CI's) mounts v1 controllers beside cgroup2.
    let cgroup = TestCgroup::create_v1("v1").expect("a cgroup v1 hierarchy is mounted");
    check_scope_captures_inside_only(&cgroup, &["--cgroup", &cgroup.path.display().to_string()]);
}

/// A fake but well-formed container id, unique to this test run.
fn container_id(tag: u8) -> String {
    format!(
        "{:02x}{:08x}{}",
        tag,
        std::process::id(),
        "c0ffee".repeat(9)
    )[..64]
        .to_owned()
}

#[test]
fn a_container_scope_captures_its_processes_by_id_prefix_and_nothing_outside() {
    let _serial = serial();
    // Named as Docker's systemd driver names them: docker-<id>.scope.
    let running_id = container_id(1);
    let running = TestCgroup::create_nested("ctr", &[&format!("docker-{running_id}.scope")]);
    let empty_id = container_id(2);
    let empty = TestCgroup::create_nested("ctr2", &[&format!("cri-containerd-{empty_id}.scope")]);
    // One container has a process when the agent starts (its cgroup goes to
    // the kernel); the other has none yet (matched at exec by llmtap).
    let mut resident = start(&running.wrap(&["sleep".into(), "60".into()]), None);
    std::thread::sleep(Duration::from_millis(200));

    let server = fast_server();
    let (mut agent, addr) =
        started_agent(&["--container", &running_id[..12], "--container", &empty_id]);
    // The running container's cgroup was given to the kernel.
    agent.wait_for_log("watching a container's cgroup", Duration::from_secs(1));
    let (in_running, in_empty, outside) = (unique("ctr-a"), unique("ctr-b"), unique("ctr-out"));
    let cert = server.cert.as_deref();
    let clients = [
        (
            start(&running.wrap(&python_sdk(&server, &in_running, 1)), cert),
            "in the running container",
        ),
        (
            start(&empty.wrap(&node_sdk(&server, &in_empty, 1)), cert),
            "in the empty container",
        ),
        (start(&python_sdk(&server, &outside, 1), cert), "outside"),
    ];
    for (child, what) in clients {
        finish(child, what);
    }
    assert_eq!(wait_for_calls(addr, &in_running, 1), 1, "running container");
    assert_eq!(
        wait_for_calls(addr, &in_empty, 1),
        1,
        "container started later"
    );
    assert_eq!(calls_of(addr, &outside), 0, "outside the containers");
    let _ = resident.kill();
    let _ = resident.wait();
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn a_bad_container_id_is_one_clear_error() {
    let output = Command::new(llmtap_bin())
        .args(["--container", "not-a-container"])
        .output()
        .unwrap();
    assert_one_line_error(&output, "a container id is 1 to 64 hex digits");
}

#[test]
fn all_hooks_tls_on_a_handshake_with_an_llm_host_and_drops_connections_that_are_not_http() {
    let _serial = serial();
    let server = fast_server();
    let (agent, addr) = started_agent(&["--all", "--llm-host", "localhost", "--exe", "node"]);
    let (python, node) = (unique("all-py"), unique("all-node"));
    let cert = server.cert.as_deref();
    finish(
        start(
            &sdk("python3", "openai_stream.py", &by_name(&server), &python, 1),
            cert,
        ),
        "python",
    );
    // By address, but node is a program --exe names: hooked from its exec.
    finish(start(&node_sdk(&server, &node, 1), cert), "node by address");
    assert_eq!(wait_for_calls(addr, &python, 1), 1, "python");
    assert_eq!(wait_for_calls(addr, &node, 1), 1, "node");

    // By address the ClientHello names no host: no evidence of an LLM
    // call, so the client is not hooked, and its connection is counted.
    let not_llm = "llmtap_tls_connections_not_llm_total";
    let before = sample_sum(&metrics(addr), not_llm, "");
    let unnamed = unique("all-by-address");
    finish(
        start(&python_sdk(&server, &unnamed, 1), cert),
        "python by address",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample_sum(&metrics(addr), not_llm, "") < before + 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sample_sum(&metrics(addr), not_llm, "") >= before + 1.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        calls_of(addr, &unnamed),
        0,
        "a client not hooked reports no call"
    );

    // A plaintext TCP exchange that is not HTTP, inside this test process.
    let not_http = "llmtap_connections_not_http_total";
    let before = sample_sum(&metrics(addr), not_http, "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    use std::io::{Read, Write};
    client.write_all(b"\x00\x01binary, not http").unwrap();
    let mut buf = [0u8; 64];
    let _ = accepted.read(&mut buf).unwrap();
    drop((client, accepted));
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample_sum(&metrics(addr), not_http, "") < before + 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both ends: the writer's and the reader's socket.
    assert!(
        sample_sum(&metrics(addr), not_http, "") >= before + 2.0,
        "both ends of the binary exchange were dropped"
    );

    // Plaintext, on one keep-alive connection: a GET is no LLM call, so
    // neither it nor its response is copied; the POST after it is.
    let plain = MockServer::start(false, &["--chunks", "4", "--chunk-delay-ms", "5"]);
    let not_post = "llmtap_requests_not_post_total";
    let before = sample_sum(&metrics(addr), not_post, "");
    let model = unique("all-after-get");
    let url = format!("{}/v1/chat/completions", plain.base_url());
    let body = format!(
        r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{num_connects} ", &url])
        .args(["--next", "-sS", "-o", "/dev/null", "-w", "%{num_connects}"])
        .args(["-H", "content-type: application/json", "-d", &body, &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 0",
        "one connection"
    );
    assert!(wait_for_calls(addr, &model, 1) >= 1, "the POST is recorded");
    // From both ends: curl's socket and the server's.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample_sum(&metrics(addr), not_post, "") < before + 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let skipped = sample_sum(&metrics(addr), not_post, "") - before;
    assert!(skipped >= 2.0, "{skipped} GETs skipped");
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn under_all_a_flood_on_one_connection_does_not_crowd_llm_calls_out() {
    const CALLS: usize = 20;
    let _serial = serial();
    let server = MockServer::start(false, &["--chunks", "8", "--chunk-delay-ms", "20"]);
    // A small ring buffer, which the flood alone would keep full.
    let (agent, addr) = started_agent(&["--all", "--ring-buffer-kib", "1024"]);
    // The flood: one POST whose chunked body never ends, to a sink in this
    // (watched) process that reads it all.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_url = format!("http://{}/upload", sink.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut upload, _) = sink.accept().unwrap();
        let _ = std::io::copy(&mut upload, &mut std::io::sink());
    });
    let mut flood = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-X", "POST", "-H", "Expect:"])
        .args(["-T", "-", &sink_url])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .spawn()
        .unwrap();
    let over_share = "llmtap_exchanges_over_share_total";
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample_sum(&metrics(addr), over_share, "") < 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both ends: curl's socket and the sink's.
    assert!(
        sample_sum(&metrics(addr), over_share, "") >= 2.0,
        "the flood was not stopped"
    );

    // While it goes on, concurrent streamed calls are all recorded.
    let model = unique("all-beside-a-flood");
    let url = format!("{}/v1/chat/completions", server.base_url());
    let body = format!(
        r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let call = [
        "curl",
        "-sS",
        "-f",
        "-N",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-H",
        "content-type: application/json",
        "-d",
        &body,
        &url,
    ]
    .map(String::from);
    let calls: Vec<Child> = (0..CALLS).map(|_| start(&call, None)).collect();
    for call in calls {
        finish(call, "a call beside the flood");
    }
    assert_eq!(flood.try_wait().unwrap(), None, "the flood went on");
    // From both ends: curl's and the server's.
    let recorded = 2 * CALLS as u64;
    assert_eq!(wait_for_calls(addr, &model, recorded), recorded);
    let _ = flood.kill();
    let _ = flood.wait();
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

/// Forwards each TCP connection to `target`, every byte `one_way` late in
/// each direction: a server that far away, on loopback (this kernel has no
/// netem).
fn delayed_relay(target: SocketAddr, one_way: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(target) else {
                continue;
            };
            let (client_in, server_in) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            delay_one_way(client_in, server, one_way);
            delay_one_way(server_in, client, one_way);
        }
    });
    addr
}

fn delay_one_way(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    use std::io::{Read, Write};
    let (due_bytes, to_write) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if due_bytes
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in to_write {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[test]
fn under_all_first_calls_to_a_server_20ms_away_are_all_captured_when_held() {
    const RUNS: usize = 10;
    let _serial = serial();
    let server = fast_server();
    let relay = delayed_relay(server.addr, Duration::from_millis(20));
    let url = format!("https://localhost:{}", relay.port());
    let (agent, addr) = started_agent(&["--all", "--llm-host", "localhost"]);
    let cert = server.cert.as_deref();
    let first_calls_captured = |prefix: &str, in_terminal: bool| -> usize {
        (0..RUNS)
            .filter(|run| {
                let model = unique(&format!("{prefix}-{run}"));
                let client = tiny_python(&url, &model);
                let command = if in_terminal {
                    // `script` runs it on a terminal of its own, in a
                    // session that neither llmtap nor a watched process led.
                    let line = client.join(" ");
                    ["script", "-qec", &line, "/dev/null"]
                        .map(String::from)
                        .to_vec()
                } else {
                    client
                };
                finish(start(&command, cert), prefix);
                // The client's record (the mock server's rustls is not
                // hooked), there within a second of its exit if at all.
                wait_for_calls_within(addr, &model, 1, Duration::from_secs(2)) == 1
            })
            .count()
    };
    // Held at its ClientHello until hooked: never a first call missed.
    assert_eq!(first_calls_captured("first-held", false), RUNS);
    // Not held: hooked while its handshake goes on, which takes a round
    // trip to the server before the request can be written. A race,
    // measured and documented (docs/scopes.md), not asserted: `cargo test
    // -- --nocapture` shows it.
    let from_terminal = first_calls_captured("first-on-a-terminal", true);
    let hook_latency = metrics(addr)
        .lines()
        .filter(|line| line.starts_with("llmtap_tls_hook_latency_seconds_"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!(
        "first calls captured from a terminal, server 20 ms away: {from_terminal}/{RUNS}\n{hook_latency}"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

/// `command` run in a private mount namespace where the Kubernetes service
/// account's namespace file holds `namespace` (a tmpfs on /run, which
/// /var/run links to).
fn in_pod_mounts(namespace: &str, command: &[String]) -> Vec<String> {
    let dir = "/run/secrets/kubernetes.io/serviceaccount";
    let script = format!(
        "mount -t tmpfs none /run && mkdir -p {dir} && echo {namespace} > {dir}/namespace && exec \"$@\""
    );
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        &script,
        "sh",
    ]
    .map(String::from)
    .into_iter()
    .chain(command.iter().cloned())
    .collect()
}

#[test]
fn a_client_in_a_kubelet_named_cgroup_is_labelled_with_its_container_pod_and_namespace() {
    let _serial = serial();
    let server = fast_server();
    let pod_uid = format!("1b2c3d4e-5f60-4718-8a9b-{:012x}", std::process::id());
    let container_id = format!("{:064x}", (u64::from(std::process::id()) << 32) | 0xc0ffee);
    let cgroup = TestCgroup::create_nested(
        "k8s",
        &[
            &format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
            &format!("cri-containerd-{container_id}.scope"),
        ],
    );
    let (agent, addr) = started_agent(&["--cgroup", &cgroup.path.display().to_string()]);
    let (pod, namespace, model) = ("chat-7d9f-x2x4q", "team-a", unique("k8s"));
    let client = cgroup.wrap(&in_pod_mounts(namespace, &python_sdk(&server, &model, 1)));
    finish(
        start_with_env(
            &client,
            server.cert.as_deref(),
            &[("KUBERNETES_SERVICE_HOST", "10.0.0.1"), ("HOSTNAME", pod)],
        ),
        "python in the pod",
    );
    assert_eq!(wait_for_calls(addr, &model, 1), 1);
    let text = metrics(addr);
    let labels = [
        ("model", model.as_str()),
        ("container_id", &container_id),
        ("k8s_namespace", namespace),
        ("k8s_pod", pod),
        ("service", pod),
    ];
    let run = agent.stop();
    assert_eq!(
        scraped(&text, CALLS, &labels),
        Some(1.0),
        "no series with {labels:?} in:\n{text}\nagent:\n{}",
        run.stderr
    );
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn an_exe_scope_captures_ten_short_python_clients_started_one_after_another() {
    let _serial = serial();
    let server = fast_server();
    let (agent, addr) = started_agent(&["--exe", "python3"]);
    let model = unique("exe-loop");
    for i in 0..10 {
        let began = Instant::now();
        finish(
            start(
                &tiny_python(&server.base_url(), &model),
                server.cert.as_deref(),
            ),
            "tiny client",
        );
        // A client held at its handshake and never continued would take
        // seconds; a busy 2-core CI machine alone can take ~300 ms.
        let took = began.elapsed();
        assert!(took < Duration::from_secs(1), "client {i} took {took:?}");
    }
    assert_eq!(wait_for_calls(addr, &model, 10), 10);
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn an_exe_regex_is_matched_in_user_space_on_every_exec() {
    let _serial = serial();
    let server = fast_server();
    // Not a plain name: the kernel reports every exec and the agent
    // matches the executable's file name (python3.11) itself.
    let (agent, addr) = started_agent(&["--exe", r"python3\.[0-9]+"]);
    // A fresh agent's first call waits for the tokenizer tables (most of a
    // second in a debug build), and the execs queued meanwhile are matched
    // too late: warm it up first, as a long-running agent is.
    let warm = unique("exe-regex-warm-up");
    for _ in 0..10 {
        finish(
            start(
                &tiny_python(&server.base_url(), &warm),
                server.cert.as_deref(),
            ),
            "warm-up",
        );
        if calls_of(addr, &warm) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let model = unique("exe-regex");
    for _ in 0..3 {
        finish(
            start(
                &tiny_python(&server.base_url(), &model),
                server.cert.as_deref(),
            ),
            "tiny client",
        );
    }
    let calls = wait_for_calls(addr, &model, 3);
    let run = agent.stop();
    assert_eq!(calls, 3, "{}", run.stderr);
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn an_exe_scope_hooks_nodes_static_openssl_and_pythons_libssl_at_exec() {
    let _serial = serial();
    let server = fast_server();
    let (agent, addr) = started_agent(&["--exe", "node", "--exe", "python3"]);
    let (py, node) = (unique("exe-py"), unique("exe-node"));
    let cert = server.cert.as_deref();
    let clients = [
        (start(&python_sdk(&server, &py, 2), cert), "python"),
        (start(&node_sdk(&server, &node, 2), cert), "node"),
    ];
    for (child, what) in clients {
        finish(child, what);
    }
    assert_eq!(wait_for_calls(addr, &py, 2), 2, "python");
    assert_eq!(wait_for_calls(addr, &node, 2), 2, "node");
    // node's own executable was hooked after its exec, within 100 ms.
    let text = metrics(addr);
    let latency = "llmtap_tls_hook_latency_seconds";
    let hooked = sample_sum(&text, &format!("{latency}_count"), "");
    assert!(hooked >= 1.0, "node's executable was hooked at exec");
    assert_eq!(
        sample_sum(&text, &format!("{latency}_bucket"), "le=\"0.1\""),
        hooked,
        "every hook within 100 ms of exec: {}",
        text.lines()
            .filter(|l| l.starts_with(latency))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn a_libssl_loaded_late_by_a_watched_process_is_hooked_then() {
    let _serial = serial();
    let server = fast_server();
    // A private copy of libssl (a file, so an inode, no process used yet),
    // which Python's `ssl` module loads only when imported.
    let libs = tempfile::tempdir().unwrap();
    for lib in ["libssl.so.3", "libcrypto.so.3"] {
        std::fs::copy(
            Path::new("/usr/lib/x86_64-linux-gnu").join(lib),
            libs.path().join(lib),
        )
        .expect("copy the system's OpenSSL 3");
    }
    let (agent, addr) = started_agent(&["--exe", "python3"]);
    let model = unique("late-ssl");
    let tiny = workspace_root().join("tests/clients/tiny_stream.py");
    // Started without libssl mapped; it imports ssl after a while, then
    // waits past the agent's once-a-second look at each process's maps.
    let script = format!(
        "import time, runpy, sys\ntime.sleep(0.5)\nimport ssl\n\
         print(next(l.split()[-1] for l in open('/proc/self/maps') if 'libssl' in l), flush=True)\n\
         time.sleep(1.5)\n\
         sys.argv = ['tiny', '{}', '{model}']\nrunpy.run_path('{}', run_name='__main__')\n",
        server.base_url(),
        tiny.display()
    );
    let mut client = Command::new("/usr/bin/python3");
    client
        .args(["-c", &script])
        .env("LD_LIBRARY_PATH", libs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    client_env(&mut client, server.cert.as_deref());
    let output = client.output().expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Not the system's libssl, which the agent hooked at its start.
    let mapped = String::from_utf8_lossy(&output.stdout);
    assert!(
        mapped
            .trim()
            .starts_with(&libs.path().display().to_string()),
        "python mapped {mapped}"
    );
    assert_eq!(
        wait_for_calls(addr, &model, 1),
        1,
        "captured through the late libssl"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

/// `llmtap_bpf_map_entries`, by map, once the agent has refreshed it.
fn map_entries(addr: SocketAddr) -> BTreeMap<String, u64> {
    std::thread::sleep(Duration::from_millis(1500));
    let text = metrics(addr);
    let entries = bpf_map_gauges(&text);
    assert!(entries.len() >= 6, "map gauges missing: {text}");
    entries
}

/// Runs `count` TLS calls, each in its own short process (curl), inside
/// the cgroup.
fn short_processes(cgroup: &TestCgroup, server: &MockServer, count: u32, model: &str) {
    let body = format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#);
    let script = format!(
        "for i in $(seq {count}); do curl -sS -N -o /dev/null --http1.1 -H 'content-type: application/json' -d '{body}' {}/v1/chat/completions || exit 1; done",
        server.base_url()
    );
    let command = cgroup.wrap(&["/bin/sh".into(), "-c".into(), script]);
    finish(start(&command, server.cert.as_deref()), "curl loop");
}

#[test]
fn two_hundred_short_processes_leave_no_map_entries_or_memory_behind() {
    let _serial = serial();
    let server = fast_server();
    let cgroup = TestCgroup::create("churn");
    let (agent, addr) = started_agent(&["--cgroup", &cgroup.path.display().to_string()]);
    let model = unique("churn");
    // Warm up: first calls fill caches, label sets and the tokenizer.
    short_processes(&cgroup, &server, 20, &model);
    assert_eq!(wait_for_calls(addr, &model, 20), 20);
    let before = map_entries(addr);
    let rss_before = memory_kib(agent.pid(), "VmRSS");

    short_processes(&cgroup, &server, 200, &model);
    assert_eq!(
        wait_for_calls(addr, &model, 220),
        220,
        "every call captured"
    );
    let after = map_entries(addr);
    let rss_after = memory_kib(agent.pid(), "VmRSS");
    assert_eq!(after, before, "kernel map entries grew");
    for (map, entries) in &after {
        assert!(*entries <= 1, "{map} keeps {entries} entries");
    }
    assert!(
        rss_after <= rss_before + 2048,
        "agent RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn tls_processes_are_counted_by_stack_hooked_or_not() {
    let _serial = serial();
    let (agent, addr) = started_agent(&["--exe", "python3", "--exe", "sleep"]);
    let gauge = |labels: &str| sample_sum(&metrics(addr), "llmtap_tls_processes", labels);
    let hooked = r#"stack="openssl",state="hooked""#;
    let unhooked = r#"stack="none",state="unhooked""#;
    // Other python3 or sleep processes on the host count too: compare.
    let before = (gauge(hooked), gauge(unhooked));
    // libssl is mapped by the import, after the exec: seen on a later look.
    let python = start(
        &[
            "/usr/bin/python3".into(),
            "-c".into(),
            "import ssl, time; time.sleep(5)".into(),
        ],
        None,
    );
    let sleeper = start(&["sleep".into(), "5".into()], None);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut now = before;
    while (now.0 <= before.0 || now.1 <= before.1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = (gauge(hooked), gauge(unhooked));
    }
    assert!(
        now.0 > before.0,
        "python with libssl not counted hooked: {now:?} vs {before:?}"
    );
    assert!(
        now.1 > before.1,
        "sleep not counted unhooked: {now:?} vs {before:?}"
    );
    finish(python, "python");
    finish(sleeper, "sleep");
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `unified/` below it on
/// hybrid hosts), as util-linux's findmnt tells.
fn cgroup2_mount() -> PathBuf {
    let out = Command::new("findmnt")
        .args(["-n", "-t", "cgroup2", "-o", "TARGET"])
        .output()
        .expect("findmnt runs");
    let text = String::from_utf8(out.stdout).expect("a path");
    PathBuf::from(text.lines().next().expect("cgroup2 is mounted"))
}
