//! Observed client overhead: what llmtap adds to a client's end-to-end call
//! time. The load client keeps 200 streaming chat completions going at once
//! over TLS (system OpenSSL) against the mock server with realistic timing,
//! in rounds alternating without and with `llmtap --pid` watching it (which
//! side goes first alternates too, so drift falls on both), and reports each
//! round's p50 and p99. The figures are the medians over rounds. A watched
//! round counts only if llmtap recorded every one of its calls.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};

use super::agent::Agent;
use super::traffic::{LoadClient, LoadReport, MockLlm, Pacing};
use super::{median, Binaries, Goal, Section};

const CONNECTIONS: usize = 200;
const CALLS_PER_CONNECTION: usize = 5;
/// The first calls spread over about one call's time, so that the 200
/// streams run side by side without their chunks all landing in the same
/// millisecond, as independent clients' would not.
const STAGGER: Duration = Duration::from_millis(400);
/// Rounds on each side, after one unmeasured warm-up.
const ROUNDS: usize = 7;
/// The mock server's defaults: an API that answers in about a third of a second.
const PACING: Pacing = Pacing {
    first_token_ms: 100,
    chunk_ms: 20,
    chunks: 12,
};
const GOAL_PERCENT: f64 = 1.0;

pub fn run(bins: &Binaries, work: &Path) -> Result<Section> {
    let mock = MockLlm::start(&bins.mock_llm, work, "overhead", PACING)?;
    round(bins, &mock, false)?;
    let (mut bare, mut watched) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let watched_first = i % 2 == 1;
        for watch in [watched_first, !watched_first] {
            let report = round(bins, &mock, watch)?;
            if watch { &mut watched } else { &mut bare }.push(report);
        }
    }
    let calls = bare[0].calls;
    let p50 = (
        median(bare.iter().map(|r| r.p50_ms).collect()),
        median(watched.iter().map(|r| r.p50_ms).collect()),
    );
    let p99 = (
        median(bare.iter().map(|r| r.p99_ms).collect()),
        median(watched.iter().map(|r| r.p99_ms).collect()),
    );
    let added = |(without, with): (f64, f64)| (with / without - 1.0) * 100.0;
    let row = |name: &str, (without, with): (f64, f64)| {
        let added = added((without, with));
        format!(
            "| {name} | {without:.1} ms | {with:.1} ms | {:.3}× ({added:+.2}%) | < {GOAL_PERCENT}% added ({}) |\n",
            with / without,
            if added < GOAL_PERCENT { "met" } else { "missed" },
        )
    };
    let goal = |figure, times| Goal {
        figure,
        measured: format!("{:+.2}%", added(times)),
        goal: "< 1% added",
        met: added(times) < GOAL_PERCENT,
    };
    let rounds = |reports: &[LoadReport], pick: fn(&LoadReport) -> f64| {
        reports
            .iter()
            .map(|r| format!("{:.1}", pick(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = format!(
        "## Observed client overhead\n\n\
         Measured by `cargo xtask bench`: `load-client` (`tests/src/bin/load-client.rs`: tokio, TLS through the \
         system libssl) keeps {CONNECTIONS} streaming chat completions going at once against `mock-llm --tls` \
         ({}), {CALLS_PER_CONNECTION} calls one after another on each warm connection, the connections' first calls \
         spread over {} ms so the streams' chunks do not all arrive in the same instant: {calls} calls a round. A call's \
         time runs from the start of its request write to the read completing its response. {ROUNDS} rounds \
         without llmtap and {ROUNDS} with `llmtap --pid <client>` (default settings: metrics on, one log line \
         per call), alternating, after one warm-up round; figures are the medians of the rounds' percentiles. \
         In every watched round llmtap recorded all {calls} calls (`llm_request_duration_seconds_count`) \
         and lost no event.\n\n\
         | percentile | no agent | llmtap watching | ratio (added) | goal |\n|---|---:|---:|---:|---:|\n\
         {}{}\n\
         Per round, no agent: p50 {} ms; p99 {} ms. Watched: p50 {} ms; p99 {} ms.\n",
        PACING.describe(),
        STAGGER.as_millis(),
        row("p50", p50),
        row("p99", p99),
        rounds(&bare, |r| r.p50_ms),
        rounds(&bare, |r| r.p99_ms),
        rounds(&watched, |r| r.p50_ms),
        rounds(&watched, |r| r.p99_ms),
    );
    Ok(Section {
        name: "observed-client-overhead",
        body,
        goals: vec![
            goal("Observed client overhead, p50 end-to-end time", p50),
            goal("Observed client overhead, p99 end-to-end time", p99),
        ],
    })
}

/// One round of the load client, watched by llmtap or not.
fn round(bins: &Binaries, mock: &MockLlm, watched: bool) -> Result<LoadReport> {
    let mut client = LoadClient::start(
        &bins.load_client,
        mock,
        CONNECTIONS,
        CALLS_PER_CONNECTION,
        STAGGER,
    )?;
    let agent = watched
        .then(|| Agent::watch(&bins.llmtap, client.pid(), &[]))
        .transpose()?;
    client.go()?;
    let report = client.report()?;
    if let Some(agent) = agent {
        // The agent may be a moment behind the client's last read.
        let metrics = agent.scrape_until(
            "llm_request_duration_seconds_count",
            report.calls as f64,
            Duration::from_secs(15),
        )?;
        let recorded = metrics.sum("llm_request_duration_seconds_count");
        let lost = metrics.sum("llmtap_events_lost_total");
        ensure!(
            recorded == report.calls as f64 && lost == 0.0,
            "llmtap recorded {recorded} of {} calls, lost {lost} events: the round is void",
            report.calls
        );
        agent.stop()?;
    }
    client.finish()?;
    Ok(report)
}
