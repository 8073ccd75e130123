//! Property tests: how bytes are cut into reads, and how connections
//! interleave, never changes the records.

mod common;

use llmtap::calls::{CallTracker, Limits, LlmCall};
use llmtap::stream::{ConnectionId, StreamEvent};
use proptest::prelude::*;

/// Every fixture, every data chunk, every byte boundary.
#[test]
fn every_single_split_gives_identical_records() {
    for fixture in common::fixtures() {
        let want = common::replay(&fixture.events);
        for (index, event) in fixture.events.iter().enumerate() {
            let StreamEvent::Data(chunk) = event else {
                continue;
            };
            for at in 1..chunk.bytes.len() {
                let got = common::replay(&common::split_at(&fixture.events, index, at));
                assert_eq!(got, want, "{}: chunk {index} split at {at}", fixture.name);
            }
        }
    }
}

/// Re-cuts every data chunk into pieces of the given sizes (cycled), all
/// with the chunk's times.
fn recut(events: &[StreamEvent], sizes: &[usize]) -> Vec<StreamEvent> {
    let mut sizes = sizes.iter().cycle();
    let mut out = Vec::new();
    for event in events {
        match event {
            StreamEvent::Data(chunk) => {
                let mut rest = &chunk.bytes[..];
                while !rest.is_empty() {
                    let n = (*sizes.next().unwrap()).min(rest.len());
                    let mut piece = chunk.clone();
                    piece.bytes = rest[..n].to_vec();
                    out.push(StreamEvent::Data(piece));
                    rest = &rest[n..];
                }
            }
            e => out.push(e.clone()),
        }
    }
    out
}

fn run_interleaved(
    a: &[StreamEvent],
    b: &[StreamEvent],
    schedule: &[bool],
) -> (Vec<LlmCall>, Vec<LlmCall>) {
    let mut tracker = CallTracker::new(Limits::default());
    let (mut ia, mut ib) = (0, 0);
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    let mut turns = schedule.iter().cycle();
    while ia < a.len() || ib < b.len() {
        let pick_a = ib >= b.len() || (ia < a.len() && *turns.next().unwrap());
        if pick_a {
            out_a.extend(tracker.on_event(ConnectionId(1), &a[ia]));
            ia += 1;
        } else {
            out_b.extend(tracker.on_event(ConnectionId(2), &b[ib]));
            ib += 1;
        }
    }
    assert_eq!(tracker.open_connections(), 0);
    (out_a, out_b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_multi_splits_give_identical_records(
        pick in any::<prop::sample::Index>(),
        sizes in prop::collection::vec(1usize..48, 1..64),
    ) {
        let fixtures = common::fixtures();
        let fixture = pick.get(&fixtures);
        let want = common::replay(&fixture.events);
        prop_assert_eq!(common::replay(&recut(&fixture.events, &sizes)), want);
    }

    #[test]
    fn interleaved_connections_never_mix(
        picks in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
        schedule in prop::collection::vec(any::<bool>(), 1..64),
        sizes in prop::collection::vec(1usize..200, 1..16),
    ) {
        let fixtures = common::fixtures();
        let dir = common::golden_dir();
        let path = |f: &common::Fixture| dir.join(format!("{}.jsonl", f.name));
        let (fa, fb) = (picks.0.get(&fixtures), picks.1.get(&fixtures));
        let a = recut(&common::load(&path(fa), ConnectionId(1)), &sizes);
        let b = recut(&common::load(&path(fb), ConnectionId(2)), &sizes);
        let (got_a, got_b) = run_interleaved(&a, &b, &schedule);
        let alone_b: Vec<_> = {
            let mut tracker = CallTracker::new(Limits::default());
            b.iter().flat_map(|e| tracker.on_event(ConnectionId(2), e)).collect()
        };
        prop_assert_eq!(got_a, common::replay(&a));
        prop_assert_eq!(got_b, alone_b);
    }
}
