//! One direction's HTTP/2 frame reader: the client preface, then 9-byte
//! frame headers and their payloads. DATA payloads are passed on as they
//! arrive (they can be 16 MiB); every other payload is buffered whole, up
//! to a cap.

use super::super::http::{ChunkTime, FramingError};
use super::PREFACE;

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const CONTINUATION: u8 = 0x9;

pub(super) const END_STREAM: u8 = 0x1;
pub(super) const ACK: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
pub(super) const PADDED: u8 = 0x8;
pub(super) const PRIORITY: u8 = 0x20;

/// A frame's 9-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub(super) fn parse(bytes: &[u8; 9]) -> Self {
        Self {
            len: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What the reader found, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    /// A whole frame other than DATA, with its raw payload.
    Frame {
        header: FrameHeader,
        payload: &'a [u8],
        /// The chunk that carried the frame's first byte.
        first_byte: ChunkTime,
    },
    /// DATA payload bytes of `stream`, padding removed.
    Data { stream: u32, bytes: &'a [u8] },
    /// The DATA frame lost bytes to a capture gap.
    DataGap { stream: u32 },
    /// A DATA frame is over.
    DataEnd { stream: u32, end_stream: bool },
}

#[derive(Debug)]
enum Pos {
    /// Bytes of the client preface matched so far.
    Preface(usize),
    /// Reading a frame header into `buf`.
    Header,
    /// Buffering a non-DATA payload into `buf`.
    Payload(FrameHeader),
    /// Waiting for a padded DATA frame's pad-length byte.
    PadLength(FrameHeader),
    /// Inside a DATA frame: data bytes, then padding bytes, left.
    Data {
        header: FrameHeader,
        data: u32,
        pad: u32,
    },
}

/// Reads the frames of one direction.
#[derive(Debug)]
pub(super) struct FrameReader {
    pos: Pos,
    buf: Vec<u8>,
    max_payload: usize,
    /// The chunk that carried the current frame's first byte.
    first_byte: ChunkTime,
}

impl FrameReader {
    /// A reader that expects the client preface first, or frames at once.
    pub(super) fn new(preface: bool, max_payload: usize) -> Self {
        Self {
            pos: if preface {
                Pos::Preface(0)
            } else {
                Pos::Header
            },
            buf: Vec::new(),
            max_payload,
            first_byte: ChunkTime::default(),
        }
    }

    /// Frames one chunk. `gap` bytes were lost before it: only a DATA
    /// payload can skip them.
    pub(super) fn feed(
        &mut self,
        gap: u64,
        bytes: &[u8],
        time: ChunkTime,
        on: &mut dyn FnMut(Piece<'_>) -> Result<(), FramingError>,
    ) -> Result<(), FramingError> {
        if gap > 0 {
            self.skip_gap(gap, on)?;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let used = match &mut self.pos {
                Pos::Preface(matched) => {
                    let take = (PREFACE.len() - *matched).min(rest.len());
                    if rest[..take] != PREFACE[*matched..*matched + take] {
                        return Err(FramingError::Http2("bad client preface"));
                    }
                    *matched += take;
                    if *matched == PREFACE.len() {
                        self.pos = Pos::Header;
                    }
                    take
                }
                Pos::Header => {
                    if self.buf.is_empty() {
                        self.first_byte = time;
                    }
                    let take = (9 - self.buf.len()).min(rest.len());
                    self.buf.extend_from_slice(&rest[..take]);
                    if let Ok(raw) = <&[u8; 9]>::try_from(self.buf.as_slice()) {
                        let header = FrameHeader::parse(raw);
                        self.buf.clear();
                        self.start(header, on)?;
                    }
                    take
                }
                Pos::Payload(header) => {
                    let header = *header;
                    let take = (header.len as usize - self.buf.len()).min(rest.len());
                    self.buf.extend_from_slice(&rest[..take]);
                    if self.buf.len() == header.len as usize {
                        self.pos = Pos::Header;
                        let payload = std::mem::take(&mut self.buf);
                        on(Piece::Frame {
                            header,
                            payload: &payload,
                            first_byte: self.first_byte,
                        })?;
                    }
                    take
                }
                Pos::PadLength(header) => {
                    let header = *header;
                    let pad = u32::from(rest[0]);
                    let data = (header.len - 1)
                        .checked_sub(pad)
                        .ok_or(FramingError::Http2("padding longer than the frame"))?;
                    self.pos = Pos::Data { header, data, pad };
                    self.data_done(on)?;
                    1
                }
                Pos::Data { header, data, pad } => {
                    let stream = header.stream;
                    let take;
                    if *data > 0 {
                        take = (*data as usize).min(rest.len());
                        *data -= take as u32;
                        on(Piece::Data {
                            stream,
                            bytes: &rest[..take],
                        })?;
                    } else {
                        take = (*pad as usize).min(rest.len());
                        *pad -= take as u32;
                    }
                    self.data_done(on)?;
                    take
                }
            };
            rest = &rest[used..];
        }
        Ok(())
    }

    /// A frame header was read: where its payload goes.
    fn start(
        &mut self,
        header: FrameHeader,
        on: &mut dyn FnMut(Piece<'_>) -> Result<(), FramingError>,
    ) -> Result<(), FramingError> {
        if header.kind == DATA {
            self.pos = if header.has(PADDED) {
                if header.len == 0 {
                    return Err(FramingError::Http2("padded DATA frame without padding"));
                }
                Pos::PadLength(header)
            } else {
                Pos::Data {
                    header,
                    data: header.len,
                    pad: 0,
                }
            };
            return self.data_done(on);
        }
        if header.len as usize > self.max_payload {
            return Err(FramingError::Http2("frame larger than the cap"));
        }
        self.pos = Pos::Payload(header);
        if header.len == 0 {
            self.pos = Pos::Header;
            on(Piece::Frame {
                header,
                payload: &[],
                first_byte: self.first_byte,
            })?;
        }
        Ok(())
    }

    /// Ends the DATA frame if nothing of it is left.
    fn data_done(
        &mut self,
        on: &mut dyn FnMut(Piece<'_>) -> Result<(), FramingError>,
    ) -> Result<(), FramingError> {
        if let Pos::Data {
            header,
            data: 0,
            pad: 0,
        } = self.pos
        {
            self.pos = Pos::Header;
            on(Piece::DataEnd {
                stream: header.stream,
                end_stream: header.has(END_STREAM),
            })?;
        }
        Ok(())
    }

    fn skip_gap(
        &mut self,
        gap: u64,
        on: &mut dyn FnMut(Piece<'_>) -> Result<(), FramingError>,
    ) -> Result<(), FramingError> {
        let Pos::Data { header, data, pad } = &mut self.pos else {
            return Err(FramingError::Gap(gap));
        };
        if gap > u64::from(*data) + u64::from(*pad) {
            return Err(FramingError::Gap(gap));
        }
        let stream = header.stream;
        let from_data = gap.min(u64::from(*data)) as u32;
        *data -= from_data;
        *pad -= (gap - u64::from(from_data)) as u32;
        on(Piece::DataGap { stream })?;
        self.data_done(on)
    }
}
