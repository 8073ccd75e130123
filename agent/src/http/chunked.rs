//! Incremental `Transfer-Encoding: chunked` decoder: any split of the input
//! gives the same body pieces (concatenated).

use super::FramingError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// Skipping a chunk extension up to the line end.
    Extension { value: u64 },
    /// Saw CR after the size line; expecting LF.
    SizeLf { value: u64 },
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Inside the trailer section; `len` bytes of the current line seen.
    Trailer { len: usize },
    /// The last chunk and trailers are done.
    Done,
}

/// Decoder state of one chunked body.
#[derive(Debug)]
pub(crate) struct Chunked {
    state: State,
}

impl Chunked {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    /// Consumes bytes of `input`, handing chunk data to `data`. Returns how
    /// many bytes were used and whether the body ended.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        data: &mut dyn FnMut(&[u8]),
    ) -> Result<(usize, bool), FramingError> {
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            self.state = match self.state {
                State::Data(left) => {
                    let take = left.min((input.len() - at) as u64) as usize;
                    data(&input[at..at + take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Size { value, digits } => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < 16 => State::Size {
                        value: value << 4 | u64::from(hex(byte)),
                        digits: digits + 1,
                    },
                    b';' | b' ' | b'\t' if digits > 0 => State::Extension { value },
                    b'\r' if digits > 0 => State::SizeLf { value },
                    b'\n' if digits > 0 => after_size(value),
                    _ => return Err(FramingError::BadChunk),
                },
                State::Extension { value } => match byte {
                    b'\r' => State::SizeLf { value },
                    b'\n' => after_size(value),
                    _ => State::Extension { value },
                },
                State::SizeLf { value } => match byte {
                    b'\n' => after_size(value),
                    _ => return Err(FramingError::BadChunk),
                },
                State::DataCr => match byte {
                    b'\r' => State::DataLf,
                    b'\n' => State::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(FramingError::BadChunk),
                },
                State::DataLf => match byte {
                    b'\n' => State::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(FramingError::BadChunk),
                },
                State::Trailer { len } => match byte {
                    b'\r' => State::Trailer { len },
                    b'\n' if len == 0 => State::Done,
                    b'\n' => State::Trailer { len: 0 },
                    _ => State::Trailer { len: len + 1 },
                },
                State::Done => break,
            };
            at += 1;
            if self.state == State::Done {
                break;
            }
        }
        Ok((at, self.state == State::Done))
    }

    /// Skips `n` lost bytes if they fall inside chunk data.
    /// Whether it stopped inside a chunk's data, with bytes of it still
    /// owed (a chunk size larger than what came).
    pub(crate) fn owes_data(&self) -> bool {
        matches!(self.state, State::Data(left) if left > 0)
    }

    pub(crate) fn skip(&mut self, n: u64) -> bool {
        match self.state {
            State::Data(left) if n <= left => {
                self.state = if n == left {
                    State::DataCr
                } else {
                    State::Data(left - n)
                };
                true
            }
            _ => false,
        }
    }
}

fn after_size(value: u64) -> State {
    if value == 0 {
        State::Trailer { len: 0 }
    } else {
        State::Data(value)
    }
}

fn hex(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}
