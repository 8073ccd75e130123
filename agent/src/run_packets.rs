//! The agent on packets: a pcap/pcapng file replayed as fast as it reads,
//! or a live interface captured until stopped, through the same pipeline
//! and outputs as the eBPF path (`run::Pipeline`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::capture::ebpf::KernelCounters;
use crate::capture::pcap::source::{CaptureDrops, Next, PacketFilter, PacketSource};
use crate::capture::pcap::tcp::{AbandonReason, TcpLimits};
use crate::capture::pcap::PacketStage;
use crate::export::prometheus::PacketTotals;
use crate::export::semconv::value;
use crate::export::telemetry::Telemetry;
use crate::run::{now, Outcome, OutputOptions, Pipeline};
use crate::stream::WallNanos;

/// Where packets come from.
#[derive(Clone, Debug)]
pub enum PacketInput {
    /// `--read FILE`: replay, then exit.
    File(PathBuf),
    /// `--capture pcap --iface IFACE`: capture until stopped.
    Live { iface: String },
}

#[derive(Clone, Debug)]
pub struct PacketOptions {
    pub input: PacketInput,
    pub filter: PacketFilter,
    pub output: OutputOptions,
    pub export: crate::config::ExportSettings,
}

pub async fn run(options: PacketOptions) -> anyhow::Result<Outcome> {
    match &options.input {
        PacketInput::File(path) => {
            // Before anything starts: a bad file is the one line said.
            let source = PacketSource::open_file(path, &options.filter)?;
            let telemetry = Telemetry::start(&options.export).await?;
            replay(source, &options, telemetry).await
        }
        PacketInput::Live { iface } => live(iface, &options).await,
    }
}

async fn replay(
    mut source: PacketSource<pcap::Offline>,
    options: &PacketOptions,
    telemetry: Telemetry,
) -> anyhow::Result<Outcome> {
    let mut pipeline = Pipeline::new(options.output, telemetry);
    let mut stage = PacketStage::new(source.link(), TcpLimits::default());
    let mut events = Vec::new();
    let mut last: WallNanos = 0;
    while let Next::Packet(at, frame) = source.next_packet()? {
        last = last.max(at);
        stage.push(at, frame, &mut events);
        pipeline.feed_connections(events.drain(..))?;
    }
    // What the file ends in the middle of is cut there, at its last packet.
    stage.finish(last, &mut events);
    pipeline.feed_connections(events.drain(..))?;
    observe(&pipeline, &stage, CaptureDrops::default(), 0);
    tracing::info!(
        packets = stage.packets_seen(),
        flows = stage.tcp_stats().flows_opened,
        bytes_skipped = stage.tcp_stats().bytes_skipped,
        "replayed"
    );
    pipeline.telemetry.shutdown().await;
    Ok(Outcome::Stopped)
}

/// From the capture thread.
enum Report {
    /// A frame and its capture time.
    Packet(WallNanos, Vec<u8>),
    Drops(CaptureDrops),
    Failed(anyhow::Error),
}

/// Packets queued between the capture thread and the pipeline; past it,
/// packets are dropped (and counted) rather than buffered without bound.
const QUEUED_PACKETS: usize = 65_536;

async fn live(iface: &str, options: &PacketOptions) -> anyhow::Result<Outcome> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut source = PacketSource::open_live(iface, &options.filter)?;
    let breaker = source.breaker();
    let link = source.link();
    std::thread::spawn(crate::calls::prepare_tokenizer);
    let telemetry = Telemetry::start(&options.export).await?;
    tracing::info!("metrics on {}", telemetry.metrics_url());
    tracing::info!(iface, filter = %source.filter(), "capturing packets (plaintext HTTP only); stop with Ctrl-C");
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel(QUEUED_PACKETS);
    let agent_drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let thread = {
        let (stop, agent_drops) = (stop.clone(), agent_drops.clone());
        std::thread::spawn(move || capture_loop(source, &tx, &stop, &agent_drops))
    };
    telemetry.set_ready(true);
    let mut pipeline = Pipeline::new(options.output, telemetry);
    let mut stage = PacketStage::new(link, TcpLimits::default());
    let mut events = Vec::new();
    let mut drops = CaptureDrops::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            report = rx.recv() => match report {
                Some(Report::Packet(at, frame)) => {
                    stage.push(at, &frame, &mut events);
                    pipeline.feed_connections(events.drain(..))?;
                }
                Some(Report::Drops(latest)) => drops = latest,
                Some(Report::Failed(e)) => break Err(e),
                None => break Ok(()),
            },
            _ = tick.tick() => {
                stage.tick(now(), &mut events);
                pipeline.feed_connections(events.drain(..))?;
                observe(&pipeline, &stage, drops, agent_drops.load(Ordering::Relaxed));
            }
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
    };
    stop.store(true, Ordering::Relaxed);
    // libpcap waits for a packet however long: this wakes it.
    breaker.breakloop();
    // Whatever the thread had read is fed before the end.
    while let Some(report) = rx.recv().await {
        match report {
            Report::Packet(at, frame) => stage.push(at, &frame, &mut events),
            Report::Drops(latest) => drops = latest,
            // The run ends anyway; the cause is still worth a line.
            Report::Failed(e) => tracing::warn!("packet capture failed while stopping: {e}"),
        }
    }
    if thread.join().is_err() {
        tracing::error!("the packet capture thread panicked while stopping");
    }
    stage.finish(now(), &mut events);
    pipeline.feed_connections(events.drain(..))?;
    let agent_drops = agent_drops.load(Ordering::Relaxed);
    observe(&pipeline, &stage, drops, agent_drops);
    tracing::info!(
        packets = stage.packets_seen(),
        dropped_by_kernel = drops.kernel,
        dropped_by_interface = drops.interface,
        dropped_by_agent = agent_drops,
        bytes_skipped = stage.tcp_stats().bytes_skipped,
        "capture stopped"
    );
    pipeline.telemetry.shutdown().await;
    result.map(|()| Outcome::Stopped)
}

/// Reads packets on its own thread (libpcap blocks) until `stop`, handing
/// each over at once: its time is already taken, but the pipeline should
/// see it now.
fn capture_loop(
    mut source: PacketSource<pcap::Active>,
    tx: &mpsc::Sender<Report>,
    stop: &AtomicBool,
    agent_drops: &std::sync::atomic::AtomicU64,
) {
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match source.next_packet() {
            Ok(Next::Packet(at, frame)) => {
                if tx.try_send(Report::Packet(at, frame.to_vec())).is_err() {
                    agent_drops.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Next::End | Next::Idle) => {}
            Err(e) => {
                let _ = tx.blocking_send(Report::Failed(e));
                return;
            }
        }
        // Losses only grow with traffic, so reading them between packets is enough.
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = Instant::now();
            let _ = tx.try_send(Report::Drops(source.drops()));
        }
    }
    // The final totals, for the last look at the metrics.
    let _ = tx.blocking_send(Report::Drops(source.drops()));
}

/// Brings the metrics up to the capture's running totals.
fn observe(pipeline: &Pipeline, stage: &PacketStage, drops: CaptureDrops, agent_drops: u64) {
    pipeline.observe_with(&KernelCounters::default(), stage.open_flows());
    let abandoned = &stage.tcp_stats().abandoned;
    let health = pipeline.telemetry.health();
    health.observe_packets(&PacketTotals {
        seen: stage.packets_seen(),
        dropped: vec![
            (value::DROPPED_BY_KERNEL, drops.kernel),
            (value::DROPPED_BY_INTERFACE, drops.interface),
            (value::DROPPED_BY_AGENT, agent_drops),
        ],
        abandoned: AbandonReason::ALL
            .iter()
            .map(|r| (r.as_str(), abandoned.get(r).copied().unwrap_or(0)))
            .collect(),
    });
}
