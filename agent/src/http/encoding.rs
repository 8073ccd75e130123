//! `Content-Encoding` decoding (gzip, deflate, br, zstd) as bytes arrive.
//!
//! Input is fed in small steps and the output drained after each. What
//! one step may inflate to is capped, and the reader can stop the decoder
//! after any step (its body's cap reached): a decompression bomb costs at
//! most its cap and one step, in memory and in CPU.

use std::io::{self, Write};

/// Compressed bytes decoded per step.
const STEP: usize = 1024;
/// Decoded bytes one step may yield: more than 4,000 times its input,
/// which no LLM API's JSON or event stream comes near, is a bomb.
const STEP_OUTPUT_MAX: usize = 4 << 20;
/// The largest zstd window decoded (2^23, 8 MiB): a frame asking for
/// more is refused rather than given that much memory per connection.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Where a decoder writes one step's output; refuses to hold more than
/// [`STEP_OUTPUT_MAX`], which stops the decoder with an error.
#[derive(Default)]
pub(crate) struct StepOutput {
    buf: Vec<u8>,
}

impl Write for StepOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = STEP_OUTPUT_MAX - self.buf.len();
        if room == 0 {
            return Err(io::Error::other(
                "one step inflated past its cap: a decompression bomb",
            ));
        }
        let n = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One message body's decompressor, writing into its own step buffer.
pub(crate) enum ContentDecoder {
    Gzip(flate2::write::GzDecoder<StepOutput>),
    Deflate(flate2::write::ZlibDecoder<StepOutput>),
    Brotli(Box<brotli::DecompressorWriter<StepOutput>>),
    Zstd(zstd::stream::write::Decoder<'static, StepOutput>),
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
        let out = StepOutput::default();
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Some(Self::Gzip(flate2::write::GzDecoder::new(out)))
        } else if coding.eq_ignore_ascii_case("deflate") {
            Some(Self::Deflate(flate2::write::ZlibDecoder::new(out)))
        } else if coding.eq_ignore_ascii_case("br") {
            Some(Self::Brotli(Box::new(brotli::DecompressorWriter::new(
                out, 4096,
            ))))
        } else if coding.eq_ignore_ascii_case("zstd") {
            let mut decoder = zstd::stream::write::Decoder::new(out).ok()?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).ok()?;
            Some(Self::Zstd(decoder))
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
            Self::Gzip(d) => &mut d.get_mut().buf,
            Self::Deflate(d) => &mut d.get_mut().buf,
            Self::Brotli(d) => &mut d.get_mut().buf,
            Self::Zstd(d) => &mut d.get_mut().buf,
        }
    }

    /// Decodes `input`, handing decoded pieces to `out` until it says to
    /// stop (returns false). An error (a bomb, a zstd window too large,
    /// bytes that are not that coding) ends the decoding.
    pub(crate) fn write(
        &mut self,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        for step in input.chunks(STEP) {
            let writer = self.writer();
            writer.write_all(step)?;
            writer.flush()?;
            let buf = self.output();
            if !buf.is_empty() {
                let more = out(buf);
                buf.clear();
                if !more {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many bytes `coding` decodes from `packed` for a reader that
    /// stops once it has `stop_after`, and whether the decoder failed.
    fn decode(coding: &str, packed: &[u8], stop_after: usize) -> (usize, bool) {
        let mut decoder = ContentDecoder::for_coding(coding).unwrap();
        let mut decoded = 0;
        let result = decoder.write(packed, &mut |piece| {
            decoded += piece.len();
            decoded < stop_after
        });
        (decoded, result.is_err())
    }

    #[test]
    fn a_bomb_stops_at_one_steps_cap_and_the_reader_can_stop_it_sooner() {
        let zeros = vec![0u8; 64 << 20];
        let zstd_bomb = zstd::encode_all(&zeros[..], 3).unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&zeros).unwrap();
        let gzip_bomb = gzip.finish().unwrap();
        drop(zeros);
        // zstd packs far more than a step may yield into its first bytes.
        let (decoded, failed) = decode("zstd", &zstd_bomb, usize::MAX);
        assert!(failed && decoded <= STEP_OUTPUT_MAX, "{decoded}");
        // gzip stays under a step's cap; the reader stops it at its own.
        let reader_cap = 1 << 20;
        let (decoded, failed) = decode("gzip", &gzip_bomb, reader_cap);
        assert!(!failed);
        assert!(
            (reader_cap..reader_cap + STEP_OUTPUT_MAX).contains(&decoded),
            "{decoded}"
        );
    }

    #[test]
    fn a_zstd_frame_asking_for_a_window_over_8_mib_is_refused() {
        let data = b"{\"choices\":[]}".repeat(1000);
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        encoder.write_all(&data).unwrap();
        let large_window = encoder.finish().unwrap();
        let (decoded, failed) = decode("zstd", &large_window, usize::MAX);
        assert!(failed && decoded == 0, "{decoded}");
        let (decoded, failed) =
            decode("zstd", &zstd::encode_all(&data[..], 3).unwrap(), usize::MAX);
        assert!(!failed && decoded == data.len());
    }
}
