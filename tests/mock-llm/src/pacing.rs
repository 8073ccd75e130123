//! When the mock writes: the server's delays ([`Pacing`]), and a stream's
//! [`Events`], each tagged with its [`Pace`] from what it carries, so that an
//! API only says which events bear tokens and the timing follows. Pure: no
//! I/O, no clock.

use std::time::Duration;

/// When an event is written, relative to the event before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Right away (headers and events before the first token).
    Now,
    /// After [`Pacing::first_token`]: the first output-bearing event.
    FirstToken,
    /// After [`Pacing::chunk`]: every event after the first token.
    Next,
}

/// The server's delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// From reading the request to writing the first output-bearing chunk.
    pub first_token: Duration,
    /// Between consecutive chunks after the first output-bearing one.
    pub chunk: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            first_token: Duration::from_millis(100),
            chunk: Duration::from_millis(20),
        }
    }
}

impl Pacing {
    /// The delay of one event.
    pub fn delay(&self, pace: Pace) -> Duration {
        match pace {
            Pace::Now => Duration::ZERO,
            Pace::FirstToken => self.first_token,
            Pace::Next => self.chunk,
        }
    }

    /// How long generating `tokens` tokens takes, as streamed.
    pub fn generation_time(&self, tokens: usize) -> Duration {
        match tokens {
            0 => Duration::ZERO,
            n => self.first_token + self.chunk * (n as u32 - 1),
        }
    }
}

/// A stream's events in order, built so that the pacing follows from what
/// each event carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub events: Vec<(Pace, String)>,
}

impl Events {
    /// An event without generated output (role chunk, `message_start`,
    /// `ping`, finish, usage, `[DONE]`...).
    pub fn meta(&mut self, text: String) {
        self.push(Pace::Now, text);
    }

    /// An event carrying one generated token.
    pub fn output(&mut self, text: String) {
        self.push(Pace::FirstToken, text);
    }

    /// Each event with its time, counted from reading the request.
    pub fn timed(self, pacing: &Pacing) -> impl Iterator<Item = (Duration, String)> + '_ {
        let mut at = Duration::ZERO;
        self.events.into_iter().map(move |(pace, event)| {
            at += pacing.delay(pace);
            (at, event)
        })
    }

    /// Appends `text` with pace `before_first_token` until the first token
    /// has been written, [`Pace::Next`] after.
    fn push(&mut self, before_first_token: Pace, text: String) {
        // `Next` only ever follows `FirstToken`, so the last event tells.
        let generating = matches!(self.events.last(), Some((Pace::FirstToken | Pace::Next, _)));
        let pace = if generating {
            Pace::Next
        } else {
            before_first_token
        };
        self.events.push((pace, text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pace_from_their_content() {
        let mut ev = Events::default();
        ev.meta("a".into());
        ev.output("b".into());
        ev.output("c".into());
        ev.meta("d".into());
        let paces: Vec<Pace> = ev.events.iter().map(|(p, _)| *p).collect();
        assert_eq!(paces, [Pace::Now, Pace::FirstToken, Pace::Next, Pace::Next]);
    }
}
