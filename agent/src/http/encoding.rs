//! `Content-Encoding` decoding (gzip, deflate, br, zstd) as bytes arrive.
//!
//! Input is fed in small steps and the output drained after each, so one
//! compressed read cannot expand into an unbounded buffer.

use std::io::{self, Write};

/// Compressed bytes decoded per step; bounds the output of one step.
const STEP: usize = 1024;

/// One message body's decompressor, writing into its own buffer.
pub(crate) enum ContentDecoder {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl std::fmt::Debug for ContentDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Gzip(_) => "gzip",
            Self::Deflate(_) => "deflate",
            Self::Brotli(_) => "br",
            Self::Zstd(_) => "zstd",
        })
    }
}

impl ContentDecoder {
    /// The decoder for a `Content-Encoding` value; `None` for identity or
    /// codings we do not know (their bytes pass through unchanged).
    pub(crate) fn for_coding(coding: &str) -> Option<Self> {
        let coding = coding.trim();
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Some(Self::Gzip(flate2::write::GzDecoder::new(Vec::new())))
        } else if coding.eq_ignore_ascii_case("deflate") {
            Some(Self::Deflate(flate2::write::ZlibDecoder::new(Vec::new())))
        } else if coding.eq_ignore_ascii_case("br") {
            Some(Self::Brotli(Box::new(brotli::DecompressorWriter::new(
                Vec::new(),
                4096,
            ))))
        } else if coding.eq_ignore_ascii_case("zstd") {
            zstd::stream::write::Decoder::new(Vec::new())
                .ok()
                .map(Self::Zstd)
        } else {
            None
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Gzip(d) => d,
            Self::Deflate(d) => d,
            Self::Brotli(d) => d.as_mut(),
            Self::Zstd(d) => d,
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Gzip(d) => d.get_mut(),
            Self::Deflate(d) => d.get_mut(),
            Self::Brotli(d) => d.get_mut(),
            Self::Zstd(d) => d.get_mut(),
        }
    }

    /// Decodes `input`, handing decoded pieces to `out`.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        for step in input.chunks(STEP) {
            let writer = self.writer();
            writer.write_all(step)?;
            writer.flush()?;
            let buf = self.output();
            if !buf.is_empty() {
                out(buf);
                buf.clear();
            }
        }
        Ok(())
    }
}
