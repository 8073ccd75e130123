//! Agent resources: llmtap's CPU (user + system time from /proc/PID/stat
//! over a window, as a share of one core) and peak RSS (VmHWM) while it
//! watches the load client, idle first (the baseline), then
//! - holding 1,000 slow streams open at once;
//! - at about 20,000 captured events/s, where events are the records the
//!   agent read from its ring buffer (`llmtap_events_read_total`, one per
//!   captured read, write, connect or close) over the window, with the
//!   kernel's drops (`llmtap_events_lost_total`) required to stay at 0;
//! - the same load through a 4 KiB ring buffer, which overflows: the
//!   drops must show in `llmtap_events_lost_total` while the agent keeps
//!   reading.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::agent::Agent;
use super::traffic::{LoadClient, MockLlm, Pacing};
use super::{Binaries, Goal, Section};

const WINDOW: Duration = Duration::from_secs(10);
const RSS_GOAL_MB: f64 = 64.0;

const OPEN_STREAMS: usize = 1000;
/// Streams that stay open well past the window: a chunk a second for two minutes.
const SLOW: Pacing = Pacing {
    first_token_ms: 100,
    chunk_ms: 1000,
    chunks: 120,
};

const RATE_GOAL: f64 = 20_000.0;
const RATE_STREAMS: usize = 400;
/// 400 streams of a chunk every 20 ms: 20,000 chunks/s, for 30 s.
const FAST: Pacing = Pacing {
    first_token_ms: 100,
    chunk_ms: 20,
    chunks: 1500,
};
const TINY_RING_KIB: &str = "4";

/// What one window showed.
struct Window {
    cpu_percent: f64,
    peak_rss_mb: f64,
    events_per_s: f64,
    lost: f64,
    open_streams: f64,
}

/// Measures the agent over [`WINDOW`] from now.
fn window(agent: &Agent) -> Result<Window> {
    let (cpu, metrics, started) = (agent.cpu_seconds()?, agent.metrics()?, Instant::now());
    std::thread::sleep(WINDOW);
    let (cpu_end, metrics_end) = (agent.cpu_seconds()?, agent.metrics()?);
    let seconds = started.elapsed().as_secs_f64();
    let delta = |name: &str| metrics_end.sum(name) - metrics.sum(name);
    Ok(Window {
        cpu_percent: (cpu_end - cpu) / seconds * 100.0,
        peak_rss_mb: agent.peak_rss_mb()?,
        events_per_s: delta("llmtap_events_read_total") / seconds,
        lost: delta("llmtap_events_lost_total"),
        open_streams: metrics_end.sum("llmtap_open_streams"),
    })
}

/// Starts a load client under a fresh agent and measures a window once
/// every stream is open; also returns the idle window measured before the
/// client connected when `idle_first`.
fn loaded(
    bins: &Binaries,
    mock: &MockLlm,
    streams: usize,
    agent_args: &[&str],
    idle_first: bool,
) -> Result<(Option<Window>, Window, Agent)> {
    // The streams start together, so their chunks come in bursts: the
    // hardest case for the ring buffer.
    let mut client = LoadClient::start(&bins.load_client, mock, streams, 1, Duration::ZERO)?;
    let agent = Agent::watch(&bins.llmtap, client.pid(), agent_args)?;
    let idle = idle_first.then(|| window(&agent)).transpose()?;
    client.go()?;
    client.wait_streaming()?;
    // Past the burst of handshakes and first tokens.
    std::thread::sleep(Duration::from_secs(2));
    let loaded = window(&agent)?;
    // The streams would last long past the window: cut them.
    drop(client);
    Ok((idle, loaded, agent))
}

pub fn run(bins: &Binaries, work: &Path) -> Result<Section> {
    let slow = MockLlm::start(&bins.mock_llm, work, "open-streams", SLOW)?;
    let (idle, open, agent) = loaded(bins, &slow, OPEN_STREAMS, &[], true)?;
    let idle = idle.expect("asked for");
    agent.stop()?;
    drop(slow);

    let fast = MockLlm::start(&bins.mock_llm, work, "event-rate", FAST)?;
    let (_, rate, agent) = loaded(bins, &fast, RATE_STREAMS, &[], false)?;
    agent.stop()?;
    let (_, overflow, mut agent) = loaded(
        bins,
        &fast,
        RATE_STREAMS,
        &["--ring-buffer-kib", TINY_RING_KIB],
        false,
    )?;
    ensure!(
        overflow.lost > 0.0,
        "a {TINY_RING_KIB} KiB ring buffer at {:.0} events/s lost nothing: overflow not shown",
        overflow.events_per_s
    );
    ensure!(
        agent.running()? && overflow.events_per_s > 0.0,
        "the agent stopped reading after its ring buffer overflowed"
    );
    let warned = agent.log().contains("the ring buffer was full");
    agent.stop()?;

    let row = |name: &str, w: &Window, goal: &str| {
        format!(
            "| {name} | {:.0} | {:.0} | {:.1}% | {:.1} MB ({:.2}× of idle) | {:.0} | {goal} |\n",
            w.open_streams,
            w.events_per_s,
            w.cpu_percent,
            w.peak_rss_mb,
            w.peak_rss_mb / idle.peak_rss_mb,
            w.lost,
        )
    };
    let met = |w: &Window| w.peak_rss_mb <= RSS_GOAL_MB && w.lost == 0.0;
    let verdict = |w: &Window| {
        format!(
            "≤ {RSS_GOAL_MB:.0} MB, 0 lost ({})",
            if met(w) { "met" } else { "missed" }
        )
    };
    let goal = |figure, w: &Window| Goal {
        figure,
        measured: format!(
            "{:.1} MB, {:.0} lost, {:.1}% CPU",
            w.peak_rss_mb, w.lost, w.cpu_percent
        ),
        goal: "≤ 64 MB RSS, 0 lost",
        met: met(w),
    };
    let body = format!(
        "## Agent resources\n\n\
         Measured by `cargo xtask bench`: `llmtap --pid <load-client>` (default settings) while the load client \
         streams over TLS from `mock-llm --tls`. CPU is the agent's user + system time from `/proc/PID/stat` over a \
         {}-second window, as a share of one core; peak RSS is its `VmHWM` at the window's end. Events are the \
         records the agent read from its ring buffer over the window (`llmtap_events_read_total`: one per captured \
         read, write, connect or close); lost are the kernel's drops (`llmtap_events_lost_total`). Open streams is \
         `llmtap_open_streams` at the window's end.\n\n\
         | load | open streams | events/s | CPU (one core) | peak RSS | lost | goal |\n\
         |---|---:|---:|---:|---:|---:|---:|\n\
         {}{}{}\
         | {RATE_STREAMS} fast streams, `--ring-buffer-kib {TINY_RING_KIB}` (forced overflow) | {:.0} | {:.0} | {:.1}% | {:.1} MB | {:.0} | losses counted in `/metrics`, agent keeps reading (met) |\n\n\
         Event rate: {:.2}× the {RATE_GOAL:.0}/s goal. Loads: {OPEN_STREAMS} streams of {}; \
         {RATE_STREAMS} streams of {}. With the 4 KiB ring buffer the agent {} the overflow on stderr \
         (\"the ring buffer was full\") and counted every dropped record in `llmtap_events_lost_total`.\n",
        WINDOW.as_secs(),
        row("idle (watching, before the client connects): baseline", &idle, "—"),
        row(&format!("{OPEN_STREAMS} concurrent open streams"), &open, &verdict(&open)),
        row(&format!("{RATE_STREAMS} fast streams"), &rate, &verdict(&rate)),
        overflow.open_streams,
        overflow.events_per_s,
        overflow.cpu_percent,
        overflow.peak_rss_mb,
        overflow.lost,
        rate.events_per_s / RATE_GOAL,
        SLOW.describe(),
        FAST.describe(),
        if warned { "also logged" } else { "did not log" },
    );
    Ok(Section {
        name: "agent-resources",
        body,
        goals: vec![
            goal("Agent at 1,000 concurrent open streams", &open),
            goal("Agent at ~20,000 events/s", &rate),
            Goal {
                figure: "Captured event rate of that load",
                measured: format!("{:.0} events/s", rate.events_per_s),
                goal: "~20,000 events/s",
                met: rate.events_per_s >= RATE_GOAL * 0.9,
            },
            Goal {
                figure: "Ring buffer overflow (4 KiB buffer, same load)",
                measured: format!("{:.0} records lost, counted", overflow.lost),
                goal: "counted in /metrics, not silent",
                met: true,
            },
        ],
    })
}
