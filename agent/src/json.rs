//! A forward-only JSON reader for hot paths: input a JSON text as bytes,
//! output its members and string values as positions ([`Token`]s) in it.
//!
//! It reads only plain shapes: objects walked member by member, arrays of
//! objects, and scalars, with only spaces between them. Anything else (a
//! nested value it was not asked to walk, an escape in a name, bad syntax)
//! makes it give up with `None`, and the caller decodes the same bytes with
//! serde_json instead. So when it succeeds serde_json accepts the bytes too,
//! and a decoder built on it must give what its serde twin gives (its
//! callers' tests compare the two).
//!
//! It notes where each string value is, so that a caller can recognise the
//! next text as the same bytes with other strings.

use std::borrow::Cow;

/// A position in one JSON text.
pub(crate) struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The string values seen so far.
    strings: Vec<Token>,
}

/// Gave up: decode with serde_json instead.
pub(crate) type Scanned<T> = Option<T>;

/// Where a string value is in its text.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Token {
    /// The opening quote.
    pub(crate) start: usize,
    /// Just past the closing quote.
    pub(crate) end: usize,
    /// It has backslash escapes.
    pub(crate) escaped: bool,
}

/// A string token's text (quotes included in `token`): borrowed if plain,
/// decoded by serde_json (which also rejects bad escapes) if escaped.
pub(crate) fn string_text(token: &[u8], escaped: bool) -> Scanned<Cow<'_, str>> {
    if escaped {
        return serde_json::from_slice::<String>(token).ok().map(Cow::Owned);
    }
    std::str::from_utf8(&token[1..token.len() - 1])
        .ok()
        .map(Cow::Borrowed)
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `bytes`; `strings` is reused to note the
    /// string values.
    pub(crate) fn new(bytes: &'a [u8], mut strings: Vec<Token>) -> Self {
        strings.clear();
        Self {
            bytes,
            at: 0,
            strings,
        }
    }

    /// The string values, in order (indexed as [`Self::string_or_null`]
    /// numbers them).
    pub(crate) fn into_strings(self) -> Vec<Token> {
        self.strings
    }

    /// The next byte that is not a space, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.at) {
            if b != b' ' {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, expected: u8) -> Scanned<()> {
        (self.peek()? == expected).then(|| self.at += 1)
    }

    /// Only spaces are left.
    pub(crate) fn end(&mut self) -> Scanned<()> {
        self.peek().is_none().then_some(())
    }

    /// An object: `each` gets every member's name (raw bytes: not UTF-8
    /// checked) and must read its value.
    pub(crate) fn object(
        &mut self,
        mut each: impl FnMut(&mut Self, &'a [u8]) -> Scanned<()>,
    ) -> Scanned<()> {
        if self.open(b'{', b'}')? {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let (end, escaped) = string_end(self.bytes, self.at)?;
            if escaped {
                return None; // rare: leave it to serde
            }
            let name = &self.bytes[self.at..end];
            self.at = end + 1;
            self.eat(b':')?;
            each(self, name)?;
            if self.closes(b'}')? {
                return Some(());
            }
        }
    }

    /// `null` (gives `false`) or an object walked as [`Self::object`].
    pub(crate) fn object_or_null(
        &mut self,
        each: impl FnMut(&mut Self, &'a [u8]) -> Scanned<()>,
    ) -> Scanned<bool> {
        if self.null()? {
            return Some(false);
        }
        self.object(each).map(|()| true)
    }

    /// `null`, or an array whose elements `each` reads.
    pub(crate) fn array_or_null(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Scanned<()>,
    ) -> Scanned<()> {
        if self.null()? {
            return Some(());
        }
        if self.open(b'[', b']')? {
            return Some(());
        }
        loop {
            each(self)?;
            if self.closes(b']')? {
                return Some(());
            }
        }
    }

    /// Consumes `open`, and `close` if it follows at once (giving `true`).
    fn open(&mut self, open: u8, close: u8) -> Scanned<bool> {
        self.eat(open)?;
        let empty = self.peek()? == close;
        self.at += usize::from(empty);
        Some(empty)
    }

    /// After a member or element: `,` (giving `false`) or `close`.
    fn closes(&mut self, close: u8) -> Scanned<bool> {
        let next = self.peek()?;
        if next != b',' && next != close {
            return None;
        }
        self.at += 1;
        Some(next == close)
    }

    /// `null`, or a string: its number among the string values (its text
    /// is left to [`string_text`], which may still give up).
    pub(crate) fn string_or_null(&mut self) -> Scanned<Option<usize>> {
        if self.null()? {
            return Some(None);
        }
        self.eat(b'"')?;
        self.string_value()?;
        Some(Some(self.strings.len() - 1))
    }

    /// Consumes `null` if it comes next.
    pub(crate) fn null(&mut self) -> Scanned<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.literal(b"null").map(|()| true)
    }

    /// A string, number, `true`, `false` or `null`, unread. Objects and
    /// arrays are not skipped: a chunk that has them where a plain one has
    /// a scalar is unusual enough to leave to serde.
    pub(crate) fn skip_scalar(&mut self) -> Scanned<()> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                // serde_json checks the escapes of what it skips: rare
                // enough here to leave to it.
                (!self.string_value()?.escaped).then_some(())
            }
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// The rest of a string value whose opening quote was consumed, noted
    /// among the string values.
    fn string_value(&mut self) -> Scanned<Token> {
        let (end, escaped) = string_end(self.bytes, self.at)?;
        let token = Token {
            start: self.at - 1,
            end: end + 1,
            escaped,
        };
        self.at = end + 1;
        self.strings.push(token);
        Some(token)
    }

    fn literal(&mut self, word: &[u8]) -> Scanned<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A number as JSON spells it: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Scanned<()> {
        if self.bytes[self.at] == b'-' {
            self.at += 1;
        }
        match self.bytes.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.digits()?;
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// One or more ASCII digits.
    fn digits(&mut self) -> Scanned<()> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }
}

/// Where the string starting at `start` (after its opening quote) ends:
/// the closing quote's index, and whether it has escapes. `None` at a raw
/// control byte, which serde_json rejects in strings.
pub(crate) fn string_end(bytes: &[u8], start: usize) -> Scanned<(usize, bool)> {
    let mut escaped = false;
    let mut at = start;
    loop {
        at += find_string_stop(bytes.get(at..)?)?;
        match bytes[at] {
            b'"' => return Some((at, escaped)),
            b'\\' => {
                escaped = true;
                at += 2;
            }
            _ => return None,
        }
    }
}

/// The first `"`, `\` or raw control byte. Strings on the hot path are
/// short (names, ids, a token or two): eight bytes at a time in a register beats
/// `memchr`, whose SIMD setup costs more than such a string.
fn find_string_stop(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        if let Some(stop) = string_stop_in(word.try_into().expect("eight bytes")) {
            return Some(at + stop);
        }
        at += 8;
    }
    let rest = words.remainder();
    let mut padded = [b'a'; 8];
    padded[..rest.len()].copy_from_slice(rest);
    string_stop_in(padded).map(|stop| at + stop)
}

/// [`find_string_stop`] in one word.
fn string_stop_in(word: [u8; 8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let x = u64::from_le_bytes(word);
    // The high bit of each byte of `x` below `n` (n <= 0x80); only the
    // lowest is exact, which is the one used.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let stops = below(x ^ (ONES * u64::from(b'"')), 1)
        | below(x ^ (ONES * u64::from(b'\\')), 1)
        | below(x, 0x20);
    (stops != 0).then(|| stops.trailing_zeros() as usize / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(json: &str) -> Option<()> {
        let mut scanner = Scanner::new(json.as_bytes(), Vec::new());
        scanner.skip_scalar()?;
        scanner.end()
    }

    #[test]
    fn scalars_are_skipped_as_json_spells_them() {
        for good in [
            "0", "-0", "12", "-3.25", "1e9", "2E-3", "1.5e+10", "true", "false", "null", "\"\"",
            " \"é\" ",
        ] {
            assert_eq!(skips(good), Some(()), "{good}");
            assert!(serde_json::from_str::<serde_json::Value>(good).is_ok());
        }
        for bad in [
            "01",
            "-",
            "1.",
            ".5",
            "+1",
            "1e",
            "nul",
            "truex",
            "\"a",
            "\"\u{1}\"",
            "\"\\x\"",
            "\"a\\\"b\"",
            "{}",
            "[]",
        ] {
            assert_eq!(skips(bad), None, "{bad}");
        }
    }

    #[test]
    fn string_values_are_numbered_and_read_borrowed_unless_escaped() {
        let json = br#"{"a":"plain","n":1,"b":"a\nb","c":null,"d":"x"}"#;
        let mut scanner = Scanner::new(json, Vec::new());
        let mut read = Vec::new();
        scanner
            .object(|s, name| match name {
                b"n" | b"d" => s.skip_scalar(),
                _ => {
                    read.push(s.string_or_null()?);
                    Some(())
                }
            })
            .unwrap();
        assert_eq!(read, [Some(0), Some(1), None]);
        let strings = scanner.into_strings();
        assert_eq!(strings.len(), 3);
        let text = |t: Token| string_text(&json[t.start..t.end], t.escaped);
        assert!(matches!(text(strings[0]), Some(Cow::Borrowed("plain"))));
        assert!(matches!(text(strings[1]), Some(Cow::Owned(t)) if t == "a\nb"));
        assert_eq!(&json[strings[2].start..strings[2].end], br#""x""#);
    }

    #[test]
    fn invalid_utf8_in_a_read_string_gives_up() {
        let json = b"\"\xff\"";
        let mut scanner = Scanner::new(json, Vec::new());
        assert_eq!(scanner.string_or_null(), Some(Some(0)));
        let token = scanner.into_strings()[0];
        assert_eq!(
            string_text(&json[token.start..token.end], token.escaped),
            None
        );
    }

    #[test]
    fn objects_give_each_member_and_need_their_commas() {
        let mut names = Vec::new();
        let mut scanner = Scanner::new(br#" { "a" : 1 , "b":"x" } "#, Vec::new());
        scanner
            .object(|s, name| {
                names.push(name.to_vec());
                s.skip_scalar()
            })
            .unwrap();
        scanner.end().unwrap();
        assert_eq!(names, [b"a".to_vec(), b"b".to_vec()]);

        for bad in [
            r#"{"a":1 "b":2}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a\u0062":1}"#,
            "{",
        ] {
            let mut scanner = Scanner::new(bad.as_bytes(), Vec::new());
            assert_eq!(scanner.object(|s, _| s.skip_scalar()), None, "{bad}");
        }
    }

    #[test]
    fn raw_control_bytes_give_up() {
        for json in [&b"{\"a\":\n1}"[..], b"{\"a\":\"\t\"}", b"{\"a\x1f\":1}"] {
            let mut scanner = Scanner::new(json, Vec::new());
            assert_eq!(scanner.object(|s, _| s.skip_scalar()), None);
        }
    }

    #[test]
    fn finds_the_first_quote_backslash_or_control_byte() {
        let text = b"abcdefgh\"ijk\x7f\xffmnop\\qrs\tuvwxyz0123456789";
        for start in 0..text.len() {
            let expected = text[start..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            assert_eq!(find_string_stop(&text[start..]), expected, "{start}");
        }
        // Bytes that borrow next to a match: the lowest match still wins.
        assert_eq!(find_string_stop(b"\x21\"\x01\\aaaaaa"), Some(1));
        assert_eq!(find_string_stop(b"\x20\x1f\x21\"aaaa"), Some(1));
        assert_eq!(find_string_stop(&[0xa2; 20]), None);
        for byte in 0..=255u8 {
            let stops = byte == b'"' || byte == b'\\' || byte < 0x20;
            assert_eq!(find_string_stop(&[byte; 11]), stops.then_some(0), "{byte}");
        }
    }

    #[test]
    fn trailing_bytes_give_up() {
        let mut scanner = Scanner::new(b"{} x", Vec::new());
        scanner.object(|s, _| s.skip_scalar()).unwrap();
        assert_eq!(scanner.end(), None);
    }
}
