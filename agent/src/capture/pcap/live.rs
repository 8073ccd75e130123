//! A live interface captured until stopped: the [`CaptureSource`] of
//! `--capture pcap`. libpcap blocks, so packets are read on a thread of
//! their own and queued to the pipeline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::libpcap::{CaptureDrops, Next, PacketFilter, PcapReader};
use super::tcp::TcpLimits;
use super::PacketStage;
use crate::capture::{CaptureReport, CaptureSource};
use crate::stream::{ConnectionEvent, WallNanos};
use crate::sys;

/// Packets queued between the capture thread and the pipeline; past it,
/// packets are dropped (and counted) rather than buffered without bound.
const QUEUED_PACKETS: usize = 65_536;

/// What the capture thread hands over.
enum Report {
    /// A frame and its capture time.
    Packet(WallNanos, Vec<u8>),
    Drops(CaptureDrops),
    Failed(anyhow::Error),
}

/// An interface being captured.
pub struct LiveSource {
    stage: PacketStage,
    rx: mpsc::Receiver<Report>,
    stop: Arc<AtomicBool>,
    breaker: pcap::BreakLoop,
    thread: Option<JoinHandle<()>>,
    drops: CaptureDrops,
    agent_drops: Arc<AtomicU64>,
}

impl LiveSource {
    /// Starts capturing on `iface`, packets matching `filter` only.
    pub fn open(iface: &str, filter: &PacketFilter) -> anyhow::Result<Self> {
        let mut reader = PcapReader::open_live(iface, filter)?;
        let breaker = reader.breaker();
        let stage = PacketStage::new(reader.link(), TcpLimits::default());
        tracing::info!(iface, filter = %reader.filter(), "capturing packets (plaintext HTTP only); stop with Ctrl-C");
        let stop = Arc::new(AtomicBool::new(false));
        let agent_drops = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(QUEUED_PACKETS);
        let thread = {
            let (stop, agent_drops) = (stop.clone(), agent_drops.clone());
            std::thread::spawn(move || capture_loop(reader, &tx, &stop, &agent_drops))
        };
        Ok(LiveSource {
            stage,
            rx,
            stop,
            breaker,
            thread: Some(thread),
            drops: CaptureDrops::default(),
            agent_drops,
        })
    }

    fn take(&mut self, report: Report, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<()> {
        match report {
            Report::Packet(at, frame) => self.stage.push(at, &frame, out),
            Report::Drops(latest) => self.drops = latest,
            Report::Failed(e) => return Err(e),
        }
        Ok(())
    }
}

impl CaptureSource for LiveSource {
    async fn read(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool> {
        match self.rx.recv().await {
            Some(report) => self.take(report, out).map(|()| true),
            None => Ok(false),
        }
    }

    fn tick(&mut self, now: WallNanos, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<bool> {
        self.stage.tick(now, out);
        Ok(true)
    }

    async fn stop(&mut self, out: &mut Vec<ConnectionEvent>) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        // libpcap waits for a packet however long: this wakes it.
        self.breaker.breakloop();
        // Whatever the thread had read is fed before the end.
        while let Some(report) = self.rx.recv().await {
            if let Err(e) = self.take(report, out) {
                // The run ends anyway; the cause is still worth a line.
                tracing::warn!("packet capture failed while stopping: {e}");
            }
        }
        if self.thread.take().is_some_and(|t| t.join().is_err()) {
            tracing::error!("the packet capture thread panicked while stopping");
        }
        self.stage
            .finish(sys::clock::realtime_ns() as WallNanos, out);
        tracing::info!(
            packets = self.stage.packets_seen(),
            dropped_by_kernel = self.drops.kernel,
            dropped_by_interface = self.drops.interface,
            dropped_by_agent = self.agent_drops.load(Ordering::Relaxed),
            bytes_skipped = self.stage.tcp_stats().bytes_skipped,
            "capture stopped"
        );
        Ok(())
    }

    fn report(&mut self) -> CaptureReport {
        self.stage.report(CaptureDrops {
            agent: self.agent_drops.load(Ordering::Relaxed),
            ..self.drops
        })
    }
}

/// Reads packets on its own thread (libpcap blocks) until `stop`, handing
/// each over at once: its time is already taken, but the pipeline should
/// see it now.
fn capture_loop(
    mut reader: PcapReader<pcap::Active>,
    tx: &mpsc::Sender<Report>,
    stop: &AtomicBool,
    agent_drops: &AtomicU64,
) {
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match reader.next_packet() {
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
            let _ = tx.try_send(Report::Drops(reader.drops()));
        }
    }
    // The final totals, for the last look at the metrics.
    let _ = tx.blocking_send(Report::Drops(reader.drops()));
}
