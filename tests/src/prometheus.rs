//! A real Prometheus (Debian `prometheus`, 2.42) for tests: our own
//! instance on a free loopback port, with our own config and a temporary
//! storage directory, scraping one target every second; plus queries to its
//! HTTP API and `promtool check metrics` on a scrape.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `promtool check metrics` on a scrape's text; `Err` holds what it
/// reported.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool (apt-get install prometheus): {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && report.trim().is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// The sum of the samples of `name` in a scrape (text format) whose labels
/// include every `labels` pair; `None` when no series matches.
pub fn scraped(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(split) => split,
            None => continue,
        };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        // A leading comma so that `model` never matches `…_model`.
        let series_labels = format!(",{series_labels}");
        let matches = series_name == name
            && labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!(",{k}=\"{v}\"")));
        if matches {
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("bad sample {line:?}: {e}"));
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server scraping one target; killed when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics` every second and
    /// waits until it is ready. `bearer`: a token to scrape with.
    pub fn start(target: SocketAddr, bearer: Option<&str>) -> Self {
        Self::start_scraping_every(target, bearer, Duration::from_secs(1))
    }

    /// [`Prometheus::start`] scraping every `interval`, each scrape given
    /// as long to answer.
    pub fn start_scraping_every(
        target: SocketAddr,
        bearer: Option<&str>,
        interval: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = bearer
            .map(|t| format!("    authorization:\n      credentials: {t}\n"))
            .unwrap_or_default();
        let every = format!("{}ms", interval.as_millis());
        let config = format!(
            "global:\n  scrape_interval: {every}\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: llmtap\n    scrape_interval: {every}\n    scrape_timeout: {every}\n{auth}\
             \x20   static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("cannot run prometheus (apt-get install prometheus)");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(addr, "/-/ready").map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// Prometheus's own `/metrics` text (its scrape-error counters).
    pub fn self_metrics(&self) -> String {
        let (status, body) = http_get(self.addr, "/metrics").expect("prometheus answers");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// An instant PromQL query; returns `data.result`.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(self.addr, &path).expect("prometheus answers");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 200, "{promql}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of a query returning one sample, once it equals
    /// `expected` (waits up to `timeout` for scrapes to catch up).
    pub fn wait_for_value(&self, promql: &str, expected: f64, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.query(promql).first().and_then(|sample| {
                sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
            });
            match value {
                Some(v) if (v - expected).abs() < 1e-9 => return v,
                _ if Instant::now() >= deadline => {
                    panic!("{promql}: got {value:?}, expected {expected}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET; `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The sum of every sample of `metric` (exact name, any labels) whose
/// labels contain `labels` (e.g. `model="x"`; empty for all), in a
/// /metrics text.
pub fn sample_sum(text: &str, metric: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
