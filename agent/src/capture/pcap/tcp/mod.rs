//! TCP flow reassembly: decoded segments with their capture times in,
//! per-connection ordered byte chunks out, as the same
//! [`StreamEvent`]s the eBPF path produces.
//!
//! Each direction's bytes are delivered in sequence order exactly once:
//! retransmitted and overlapping bytes keep their first copy, segments
//! past a hole wait in a bounded buffer, and a hole that is not filled in
//! time (or while the buffer overflows, or when the flow ends) is skipped
//! and reported as `gap_before` on the next chunk. No byte is invented.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::decode::Segment;
use crate::stream::{
    CloseReason, ConnectionEvent, ConnectionId, ConnectionInfo, DataChunk, Direction, Side,
    StreamEvent, Transport, WallNanos,
};

/// Packets carry no process: connections from packets have this pid.
pub const NO_PID: u32 = 0;

/// Bounds on what the reassembler keeps.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Flows followed at once; past it the least recently active is abandoned.
    pub max_flows: usize,
    /// Out-of-order bytes held per direction; past it the hole is skipped.
    pub max_buffered: usize,
    /// How long a hole may wait for its retransmission before it is skipped.
    pub hole_timeout_ns: u64,
    /// A flow with no packet for this long is abandoned by [`TcpReassembler::tick`].
    pub idle_timeout_ns: u64,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_flows: 16_384,
            max_buffered: 1 << 20,
            // Above Linux's 200 ms minimum retransmission timeout, with room.
            hole_timeout_ns: 1_000_000_000,
            idle_timeout_ns: 300 * 1_000_000_000,
        }
    }
}

/// Why a flow was given up before it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbandonReason {
    /// No packet for the idle timeout.
    Idle,
    /// Too many flows at once: the least recently active went.
    FlowLimit,
    /// Its first bytes were a TLS record: nothing to read from packets.
    Tls,
}

impl AbandonReason {
    /// Every reason, in label order.
    pub const ALL: [AbandonReason; 3] = [
        AbandonReason::Idle,
        AbandonReason::FlowLimit,
        AbandonReason::Tls,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AbandonReason::Idle => "idle",
            AbandonReason::FlowLimit => "flow_limit",
            AbandonReason::Tls => "tls",
        }
    }
}

/// Running totals of this stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Flows seen opening.
    pub flows_opened: u64,
    /// Segments whose bytes had all been delivered already.
    pub duplicate_segments: u64,
    /// Bytes skipped over holes (each reported as a gap).
    pub bytes_skipped: u64,
    /// Flows given up, by reason.
    pub abandoned: HashMap<AbandonReason, u64>,
}

/// Bytes that arrived past a hole, and when.
struct Piece {
    at: WallNanos,
    bytes: Vec<u8>,
}

/// One direction of a flow. Offsets are 64-bit positions in the byte
/// stream, so sequence numbers may wrap.
#[derive(Default)]
struct Half {
    /// Sequence number of offset 0; set by the SYN or the first segment seen.
    isn: Option<u32>,
    /// Offset of the next byte to deliver.
    next: u64,
    pending: BTreeMap<u64, Piece>,
    buffered: usize,
    /// Bytes skipped since the last chunk, reported on the next one.
    gap: u64,
    /// Offset right after the last byte, once the FIN is seen.
    fin: Option<u64>,
}

impl Half {
    /// The offset of sequence number `seq`, taking the nearest wrap of it
    /// to the delivery point (segments are never 2 GiB away).
    fn offset(&self, isn: u32, seq: u32) -> i64 {
        let next_seq = isn.wrapping_add(self.next as u32);
        self.next as i64 + seq.wrapping_sub(next_seq) as i32 as i64
    }

    fn done(&self) -> bool {
        self.fin
            .is_some_and(|fin| self.next >= fin && self.pending.is_empty())
    }
}

struct Flow {
    id: ConnectionId,
    /// The endpoint whose bytes are egress: the client when its SYN (or the
    /// server's SYN-ACK) was seen, else the first sender.
    client: SocketAddr,
    halves: [Half; 2],
    last_seen: WallNanos,
    /// Given up: its packets are swallowed until it ends.
    abandoned: bool,
}

type FlowKey = (SocketAddr, SocketAddr);

fn flow_key(a: SocketAddr, b: SocketAddr) -> FlowKey {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Reassembles every TCP flow of a capture.
pub struct TcpReassembler {
    limits: TcpLimits,
    next_id: u64,
    flows: HashMap<FlowKey, Flow>,
    stats: TcpStats,
}

impl TcpReassembler {
    /// A reassembler within `limits`.
    pub fn new(limits: TcpLimits) -> Self {
        TcpReassembler {
            limits,
            next_id: 0,
            flows: HashMap::new(),
            stats: TcpStats::default(),
        }
    }

    /// Its running totals.
    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Flows followed now.
    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// Feeds one segment captured at `at`; appends the events it causes.
    pub fn push(&mut self, segment: &Segment<'_>, at: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let key = flow_key(segment.src, segment.dst);
        let opening = segment.syn && !segment.ack;
        if let Some(flow) = self.flows.get(&key) {
            // A new SYN on the same addresses: the old connection is over.
            let reused = opening
                && flow.client == segment.src
                && flow.halves[0]
                    .isn
                    .is_some_and(|isn| isn != segment.seq.wrapping_add(1));
            if reused {
                self.end(key, at, CloseReason::Closed, out);
            }
        }
        if !self.flows.contains_key(&key) {
            // Pure ACKs and stray FINs/RSTs of flows we do not know start nothing.
            if !segment.syn && segment.payload.is_empty() {
                return;
            }
            self.open(key, segment, at, out);
        }
        let limits = self.limits;
        let flow = self.flows.get_mut(&key).expect("opened above");
        flow.last_seen = at;
        if segment.rst {
            self.end(key, at, CloseReason::Reset, out);
            return;
        }
        let direction = if segment.src == flow.client {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let half = &mut flow.halves[slot(direction)];
        let isn = *half
            .isn
            .get_or_insert(segment.seq.wrapping_add(segment.syn as u32));
        let start = half.offset(isn, segment.seq.wrapping_add(segment.syn as u32));
        let end = start + segment.payload.len() as i64;
        if segment.fin {
            half.fin = Some(end.max(0) as u64);
        }
        if !flow.abandoned && !segment.payload.is_empty() {
            let id = flow.id;
            let mut emit = |c: DataChunk| out.push((id, StreamEvent::Data(c)));
            let duplicate = !receive(half, start, segment.payload, at, direction, &mut emit);
            self.stats.duplicate_segments += duplicate as u64;
            if half.buffered > limits.max_buffered {
                self.stats.bytes_skipped += skip_hole(half, at, direction, &mut emit);
            }
        }
        if flow.halves.iter().all(Half::done) {
            self.end(key, at, CloseReason::Closed, out);
        }
    }

    /// Skips holes that waited too long and abandons idle flows, as of `now`.
    pub fn tick(&mut self, now: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let hole_horizon = now.saturating_sub(self.limits.hole_timeout_ns);
        let mut finished = Vec::new();
        for (key, flow) in &mut self.flows {
            for (slot, half) in flow.halves.iter_mut().enumerate() {
                let stale = half
                    .pending
                    .values()
                    .next()
                    .is_some_and(|p| p.at < hole_horizon);
                if stale {
                    let id = flow.id;
                    let direction = DIRECTIONS[slot];
                    self.stats.bytes_skipped += skip_hole(half, now, direction, &mut |c| {
                        out.push((id, StreamEvent::Data(c)))
                    });
                }
            }
            // Both FINs seen and the missing bytes still not retransmitted.
            let tail_lost =
                flow.last_seen < hole_horizon && flow.halves.iter().all(|h| h.fin.is_some());
            if tail_lost || flow.halves.iter().all(Half::done) {
                finished.push(*key);
            }
        }
        finished.sort();
        for key in finished {
            self.end(key, now, CloseReason::Closed, out);
        }
        let idle_horizon = now.saturating_sub(self.limits.idle_timeout_ns);
        let idle: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last_seen < idle_horizon)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.abandon_key(key, AbandonReason::Idle, now, out);
        }
    }

    /// Gives up connection `id`: it ends now, and its later packets are
    /// swallowed until its FIN or RST.
    pub fn abandon(
        &mut self,
        id: ConnectionId,
        reason: AbandonReason,
        at: WallNanos,
        out: &mut Vec<ConnectionEvent>,
    ) {
        let key = self.flows.iter().find(|(_, f)| f.id == id).map(|(k, _)| *k);
        if let Some(key) = key {
            let flow = self.flows.get_mut(&key).expect("found above");
            if !flow.abandoned {
                flow.abandoned = true;
                *self.stats.abandoned.entry(reason).or_default() += 1;
                out.push((
                    id,
                    StreamEvent::Closed {
                        at,
                        reason: CloseReason::Evicted,
                    },
                ));
            }
        }
    }

    /// Ends every flow (the capture is over), skipping what is missing.
    pub fn close_all(&mut self, at: WallNanos, out: &mut Vec<ConnectionEvent>) {
        let mut keys: Vec<(ConnectionId, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.id, *k)).collect();
        keys.sort();
        for (_, key) in keys {
            self.end(key, at, CloseReason::Evicted, out);
        }
    }

    fn open(
        &mut self,
        key: FlowKey,
        segment: &Segment<'_>,
        at: WallNanos,
        out: &mut Vec<ConnectionEvent>,
    ) {
        if self.flows.len() >= self.limits.max_flows {
            let oldest = self
                .flows
                .iter()
                .min_by_key(|(_, f)| f.last_seen)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.abandon_key(oldest, AbandonReason::FlowLimit, at, out);
            }
        }
        let (client, server, side) = match (segment.syn, segment.ack) {
            (true, false) => (segment.src, segment.dst, Side::Client),
            (true, true) => (segment.dst, segment.src, Side::Client),
            _ => (segment.src, segment.dst, Side::Unknown),
        };
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        self.stats.flows_opened += 1;
        out.push((
            id,
            StreamEvent::Opened(ConnectionInfo {
                id,
                pid: NO_PID,
                comm: None,
                fd: None,
                local: Some(client),
                peer: Some(server),
                side,
                transport: Transport::Tcp,
            }),
        ));
        self.flows.insert(
            key,
            Flow {
                id,
                client,
                halves: [Half::default(), Half::default()],
                last_seen: at,
                abandoned: false,
            },
        );
    }

    fn abandon_key(
        &mut self,
        key: FlowKey,
        reason: AbandonReason,
        at: WallNanos,
        out: &mut Vec<ConnectionEvent>,
    ) {
        let abandoned = self.flows.get(&key).is_some_and(|f| f.abandoned);
        if !abandoned {
            *self.stats.abandoned.entry(reason).or_default() += 1;
        }
        self.end(key, at, CloseReason::Evicted, out);
    }

    /// Removes a flow: what waits past holes is delivered (the holes as
    /// gaps), then the close, unless it was abandoned and closed already.
    fn end(
        &mut self,
        key: FlowKey,
        at: WallNanos,
        reason: CloseReason,
        out: &mut Vec<ConnectionEvent>,
    ) {
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        if flow.abandoned {
            return;
        }
        let id = flow.id;
        for (slot, half) in flow.halves.iter_mut().enumerate() {
            let mut emit = |c| out.push((id, StreamEvent::Data(c)));
            while !half.pending.is_empty() {
                self.stats.bytes_skipped += skip_hole(half, at, DIRECTIONS[slot], &mut emit);
            }
            // Bytes lost before the FIN: an empty chunk carries their count.
            let tail = half.fin.map_or(0, |fin| fin.saturating_sub(half.next));
            self.stats.bytes_skipped += tail;
            half.gap += tail;
            if half.gap > 0 {
                half.next += tail;
                deliver(half, at, at, &[], DIRECTIONS[slot], &mut emit);
            }
        }
        out.push((id, StreamEvent::Closed { at, reason }));
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

/// Takes the bytes of one segment starting at offset `start`: delivers
/// what is next in order (and what it lets through from the buffer),
/// buffers what lies past a hole. Returns false if every byte was old.
fn receive(
    half: &mut Half,
    start: i64,
    payload: &[u8],
    at: WallNanos,
    direction: Direction,
    emit: &mut impl FnMut(DataChunk),
) -> bool {
    let end = start + payload.len() as i64;
    let next = half.next as i64;
    if end <= next {
        return false;
    }
    let (start, payload) = if start < next {
        (half.next, &payload[(next - start) as usize..])
    } else {
        (start as u64, payload)
    };
    if start > half.next {
        return buffer(half, start, payload, at);
    }
    deliver(half, at, at, payload, direction, emit);
    drain(half, at, direction, emit);
    true
}

/// Buffers bytes past a hole where no earlier copy is (first copy wins).
/// Returns false if every byte was buffered already.
fn buffer(half: &mut Half, start: u64, payload: &[u8], at: WallNanos) -> bool {
    let end = start + payload.len() as u64;
    let mut uncovered = Vec::new();
    let mut cursor = start;
    for (&piece_start, piece) in half.pending.range(..end) {
        let piece_end = piece_start + piece.bytes.len() as u64;
        if piece_end <= cursor {
            continue;
        }
        if piece_start > cursor {
            uncovered.push(cursor..piece_start);
        }
        cursor = piece_end;
        if cursor >= end {
            break;
        }
    }
    if cursor < end {
        uncovered.push(cursor..end);
    }
    let any = !uncovered.is_empty();
    for range in uncovered {
        let bytes = payload[(range.start - start) as usize..(range.end - start) as usize].to_vec();
        half.buffered += bytes.len();
        half.pending.insert(range.start, Piece { at, bytes });
    }
    any
}

/// Emits one chunk at the delivery point.
fn deliver(
    half: &mut Half,
    sent: WallNanos,
    available: WallNanos,
    bytes: &[u8],
    direction: Direction,
    emit: &mut impl FnMut(DataChunk),
) {
    half.next += bytes.len() as u64;
    emit(DataChunk {
        direction,
        tid: None,
        // The packet's time; a buffered piece becomes readable only when
        // its hole is filled (or skipped), which `available` says.
        call_start: sent,
        call_end: available,
        gap_before: std::mem::take(&mut half.gap),
        bytes: bytes.to_vec(),
    });
}

/// Delivers the buffered pieces that now follow on in order.
fn drain(half: &mut Half, now: WallNanos, direction: Direction, emit: &mut impl FnMut(DataChunk)) {
    while let Some(entry) = half.pending.first_entry() {
        if *entry.key() > half.next {
            break;
        }
        let piece_start = *entry.key();
        let piece = entry.remove();
        half.buffered -= piece.bytes.len();
        let skip = (half.next - piece_start) as usize;
        if skip < piece.bytes.len() {
            deliver(half, piece.at, now, &piece.bytes[skip..], direction, emit);
        }
    }
}

/// Gives up on the first hole: its size becomes the next chunk's gap, and
/// what waited behind it is delivered. Returns the bytes skipped.
fn skip_hole(
    half: &mut Half,
    now: WallNanos,
    direction: Direction,
    emit: &mut impl FnMut(DataChunk),
) -> u64 {
    let Some(&first) = half.pending.keys().next() else {
        return 0;
    };
    let skipped = first.saturating_sub(half.next);
    half.gap += skipped;
    half.next = half.next.max(first);
    drain(half, now, direction, emit);
    skipped
}

#[cfg(test)]
mod tests;
