//! The common Chat Completions chunk, read without serde. The first chunk
//! of a stream is walked by the [`Scanner`]; the next ones usually repeat
//! its bytes with other strings (the content, perhaps an `obfuscation`
//! pad), and [`ChunkShape`] recognises them by comparing bytes. Whatever
//! is not plain gives `None`, and the caller decodes it with serde.
//!
//! Input: one chunk's bytes; output: its facts added to a
//! [`ResponseInfo`], exactly as `chat::decode` would add them, or `None`
//! with nothing added. It reads chunks as `chat` names their members.

use std::borrow::Cow;

use super::chat::{ChoiceKey, ChunkKey};
use crate::json::{string_end, string_text, Scanned, Scanner, Token};
use crate::providers::{MemberName, ResponseInfo};

/// String values a shape keeps track of; a chunk with more is scanned.
const MAX_STRINGS: usize = 16;

/// The largest chunk kept as a shape: each open stream keeps one, and
/// token chunks are a few hundred bytes.
const MAX_SHAPE_BYTES: usize = 4096;

/// [`ChunkShape::varying`] after a scan.
const ALL_VARYING: u16 = u16::MAX;

/// The message members `chat::Message` reads, in the order it pushes their text.
const MESSAGE_TEXTS: [&[u8]; 4] = [b"content", b"reasoning_content", b"reasoning", b"refusal"];

/// The last plain chunk of a response: its bytes, where its string values
/// are, and which of them set what. A chunk equal to it outside those
/// places, with one string token in each, is the same JSON with other
/// strings: scanning it would take the same path, so it has the same
/// effects with its own strings. Strings that did not change from the
/// scanned chunk to the next are compared as bytes from then on.
#[derive(Debug, Default)]
pub(super) struct ChunkShape {
    bytes: Vec<u8>,
    strings: Vec<Token>,
    /// Bit `i`: string `i` may change from chunk to chunk. All bits (as
    /// after a scan) until the next chunk shows which strings changed.
    varying: u16,
    /// Which string values set what; `None` until a chunk was read (or
    /// after one could not be).
    effects: Option<Effects>,
}

impl ChunkShape {
    /// Applies the plain chunk `data` to `out`, returning whether it
    /// carried output; `None` (nothing applied) if it is not plain.
    pub(super) fn apply(&mut self, data: &[u8], out: &mut ResponseInfo) -> Scanned<bool> {
        let mut values = [StringValue::default(); MAX_STRINGS];
        if let Some((effects, changed)) = self.recognise(data, &mut values) {
            let output = effects.apply(&values[..self.strings.len()], out);
            if self.varying == ALL_VARYING {
                self.varying = changed;
            }
            return output;
        }
        self.effects = None;
        let mut scanner = Scanner::new(data, std::mem::take(&mut self.strings));
        let effects = scan(&mut scanner)?;
        scanner.end()?;
        self.strings = scanner.into_strings();
        let values: Vec<_> = (self.strings.iter())
            .map(|&token| StringValue::new(data, token))
            .collect();
        let output = effects.apply(&values, out)?;
        // Kept only once applied: its strings are then known to be valid.
        if self.strings.len() <= MAX_STRINGS && data.len() <= MAX_SHAPE_BYTES {
            self.bytes.clear();
            self.bytes.extend_from_slice(data);
            self.effects = Some(effects);
            self.varying = ALL_VARYING;
        }
        Some(output)
    }

    /// This shape's effects, if `data` has it, and which of its varying
    /// strings changed; fills `values` with `data`'s string values.
    fn recognise<'x>(
        &'x self,
        data: &'x [u8],
        values: &mut [StringValue<'x>; MAX_STRINGS],
    ) -> Option<(Effects, u16)> {
        let effects = self.effects?;
        let (mut at, mut from, mut changed) = (0, 0, 0);
        for (i, (value, string)) in values.iter_mut().zip(&self.strings).enumerate() {
            if self.varying & 1 << i == 0 {
                // Compared with the bytes around it.
                *value = StringValue::new(&self.bytes, *string);
                value.known = true;
                continue;
            }
            let same = &self.bytes[from..string.start];
            if !data.get(at..)?.starts_with(same) || data.get(at + same.len()) != Some(&b'"') {
                return None;
            }
            let start = at + same.len();
            let (end, escaped) = string_end(data, start + 1)?;
            // As the scan: skipped strings with escapes are left to serde.
            if escaped && !effects.reads(i) {
                return None;
            }
            let token = Token {
                start,
                end: end + 1,
                escaped,
            };
            *value = StringValue::new(data, token);
            if value.token != &self.bytes[string.start..string.end] {
                changed |= 1 << i;
            }
            (at, from) = (end + 1, string.end);
        }
        (data.get(at..)? == &self.bytes[from..]).then_some((effects, changed))
    }
}

/// One string value of a chunk being applied.
#[derive(Clone, Copy, Debug, Default)]
struct StringValue<'a> {
    /// The token, quotes included.
    token: &'a [u8],
    escaped: bool,
    /// The same bytes were read in an earlier chunk: valid text.
    known: bool,
}

impl<'a> StringValue<'a> {
    fn new(json: &'a [u8], token: Token) -> Self {
        Self {
            token: &json[token.start..token.end],
            escaped: token.escaped,
            known: false,
        }
    }

    fn text(self) -> Scanned<Cow<'a, str>> {
        string_text(self.token, self.escaped)
    }

    /// Valid text without reading it: known, or plain ASCII.
    fn is_valid(self) -> bool {
        self.known || (!self.escaped && self.token.is_ascii())
    }
}

/// Walks a plain chunk, noting which string values set what.
fn scan(s: &mut Scanner<'_>) -> Scanned<Effects> {
    let mut effects = Effects::default();
    s.object(|s, name| match ChunkKey::from_name(name) {
        ChunkKey::Id => effects.ids.push_some(s.string_or_null()?),
        ChunkKey::Model => effects.models.push_some(s.string_or_null()?),
        ChunkKey::Choices => s.array_or_null(|s| s.object(|s, name| effects.choice(s, name))),
        ChunkKey::Usage | ChunkKey::Timings | ChunkKey::Error => s.null()?.then_some(()),
        ChunkKey::Other => s.skip_scalar(),
    })?;
    Some(effects)
}

/// What a plain chunk sets, as numbers of its string values, in the order
/// serde's visitor would set them.
#[derive(Clone, Copy, Debug, Default)]
struct Effects {
    ids: Few<2>,
    models: Few<2>,
    texts: Few<4>,
    finishes: Few<2>,
}

impl Effects {
    /// One member of a choice.
    fn choice(&mut self, s: &mut Scanner<'_>, name: &[u8]) -> Scanned<()> {
        match ChoiceKey::from_name(name) {
            ChoiceKey::Delta | ChoiceKey::Message => self.message(s),
            ChoiceKey::Text => self.texts.push_some(s.string_or_null()?),
            ChoiceKey::FinishReason => self.finishes.push_some(s.string_or_null()?),
            ChoiceKey::Other => s.skip_scalar(),
        }
    }

    /// A `delta` or `message`, as `chat::Message` reads it (a repeated
    /// member is its error, left to serde).
    fn message(&mut self, s: &mut Scanner<'_>) -> Scanned<()> {
        let mut texts = [None; 4];
        let mut seen = [false; 5];
        s.object_or_null(|s, name| {
            let member = MESSAGE_TEXTS.iter().position(|known| *known == name);
            let index = match (member, name) {
                (Some(index), _) => index,
                (None, b"tool_calls") => 4,
                // serde's field names are `str`: a bad one is its error.
                (None, _) if std::str::from_utf8(name).is_err() => return None,
                (None, _) => return s.skip_scalar(),
            };
            if std::mem::replace(&mut seen[index], true) {
                return None;
            }
            match texts.get_mut(index) {
                Some(text) => *text = s.string_or_null()?,
                None => s.null()?.then_some(())?, // tool calls: left to serde
            }
            Some(())
        })?;
        texts
            .into_iter()
            .try_for_each(|text| self.texts.push_some(text))
    }

    /// String value `i` is read (not only skipped).
    fn reads(&self, i: usize) -> bool {
        let mut read = (self.ids.iter().chain(self.models.iter()))
            .chain(self.texts.iter().chain(self.finishes.iter()));
        read.any(|read| read == i)
    }

    /// Reads the chunk's string `values` and applies them to `out`,
    /// returning whether there was output; `None` (nothing applied) if one
    /// is not valid text.
    fn apply(self, values: &[StringValue<'_>], out: &mut ResponseInfo) -> Scanned<bool> {
        // An id or model already set is not needed again: reading it would
        // only check it.
        let needless = |few: Few<2>, set: bool| set && few.iter().all(|i| values[i].is_valid());
        let ids = if needless(self.ids, out.id.is_some()) {
            [None, None]
        } else {
            self.ids.read(values)?
        };
        let models = if needless(self.models, out.model.is_some()) {
            [None, None]
        } else {
            self.models.read(values)?
        };
        let finishes = self.finishes.read(values)?;
        let texts = self.texts.read(values)?;
        out.set_id(ids.into_iter().flatten().find(|id| !id.is_empty()));
        out.set_model(models.into_iter().flatten().find(|m| !m.is_empty()));
        for reason in finishes.into_iter().flatten() {
            out.push_finish(Some(reason));
        }
        Some(
            (texts.into_iter().flatten()).fold(false, |output, text| out.push_text(&text) | output),
        )
    }
}

/// At most `N` string numbers kept without allocating; more gives up the scan.
#[derive(Clone, Copy, Debug)]
struct Few<const N: usize> {
    items: [Option<usize>; N],
}

impl<const N: usize> Default for Few<N> {
    fn default() -> Self {
        Self { items: [None; N] }
    }
}

impl<const N: usize> Few<N> {
    fn push_some(&mut self, item: Option<usize>) -> Scanned<()> {
        if let Some(item) = item {
            *self.items.iter_mut().find(|slot| slot.is_none())? = Some(item);
        }
        Some(())
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().flatten().copied()
    }

    /// The texts of these string `values`, in order.
    fn read<'a>(self, values: &[StringValue<'a>]) -> Scanned<[Option<Cow<'a, str>>; N]> {
        let mut texts = [const { None }; N];
        for (text, i) in texts.iter_mut().zip(self.iter()) {
            *text = Some(values[i].text()?);
        }
        Some(texts)
    }
}
#[cfg(test)]
mod tests;
