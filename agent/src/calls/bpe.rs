//! `o200k_base`, the byte-pair encoding of OpenAI's current models, held
//! compactly: every token's bytes in one buffer and a hash table of ranks
//! (about 4 MB). tiktoken-rs keeps three copies of the 200,000 tokens as
//! small vectors (about 45 MB), which alone would take most of the agent's
//! 64 MB budget. The tokens are those of tiktoken: the unit tests compare
//! the two.
//!
//! Input: text. Output: the byte length of each of its tokens, in order.
//! Special tokens are not recognised (like tiktoken's `encode_ordinary`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

use base64::Engine;
use hashbrown::{DefaultHashBuilder, HashTable};
use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};

/// OpenAI's token list, one `base64(bytes) rank` line per token in rank
/// order, as published with tiktoken (MIT licence); sha256
/// 446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d.
const RANKS: &str = include_str!("../../assets/o200k_base.tiktoken");

/// `o200k_base`'s pre-split pattern, ending with the given branches for
/// runs of spaces.
macro_rules! o200k_pattern {
    ($($spaces:literal),+) => {
        concat!(
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            "|",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            "|",
            r"\p{N}{1,3}",
            "|",
            r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
            "|",
            r"\s*[\r\n]+",
            $("|", $spaces),+
        )
    };
}

/// How `o200k_base` pre-splits text into pieces before merging bytes.
/// Its `\s+(?!\S)` needs a look-ahead, which the `regex` crate does not
/// have: [`SPLIT`] leaves it out and [`Bpe::pieces`] applies it.
#[cfg(test)]
const PATTERN: &str = o200k_pattern!(r"\s+(?!\S)", r"\s+");

/// [`PATTERN`] without its look-ahead branch.
const SPLIT: &str = o200k_pattern!(r"\s+");

type Rank = u32;

pub(super) struct Bpe {
    /// Every token's bytes, in rank order.
    bytes: Vec<u8>,
    /// Token `r` is `bytes[starts[r]..starts[r + 1]]`.
    starts: Vec<u32>,
    /// Ranks, hashed by their token's bytes.
    ranks: HashTable<Rank>,
    hasher: DefaultHashBuilder,
    split: Regex,
}

impl Bpe {
    pub(super) fn o200k_base() -> Bpe {
        let lines = RANKS.lines().count();
        let mut bytes = Vec::with_capacity(2 << 20);
        let mut starts = Vec::with_capacity(lines + 1);
        for (rank, line) in RANKS.lines().enumerate() {
            let (token, listed) = line.split_once(' ').expect("`token rank` lines");
            debug_assert_eq!(listed.parse(), Ok(rank), "ranks run in line order");
            starts.push(bytes.len() as u32);
            base64::engine::general_purpose::STANDARD
                .decode_vec(token, &mut bytes)
                .expect("base64 tokens");
        }
        starts.push(bytes.len() as u32);
        bytes.shrink_to_fit();
        let hasher = DefaultHashBuilder::default();
        let token = |r: Rank| &bytes[starts[r as usize] as usize..starts[r as usize + 1] as usize];
        let mut ranks = HashTable::with_capacity(lines);
        for rank in 0..lines as Rank {
            ranks.insert_unique(hasher.hash_one(token(rank)), rank, |&r| {
                hasher.hash_one(token(r))
            });
        }
        Bpe {
            bytes,
            starts,
            ranks,
            hasher,
            split: Regex::new(SPLIT).expect("the o200k_base pattern compiles"),
        }
    }

    fn token(&self, rank: Rank) -> &[u8] {
        let r = rank as usize;
        &self.bytes[self.starts[r] as usize..self.starts[r + 1] as usize]
    }

    fn rank(&self, piece: &[u8]) -> Option<Rank> {
        let hash = self.hasher.hash_one(piece);
        self.ranks.find(hash, |&r| self.token(r) == piece).copied()
    }

    /// Calls `token_len` with the byte length of each token of `text`.
    pub(super) fn tokens(&self, text: &str, mut token_len: impl FnMut(usize)) {
        for piece in self.pieces(text) {
            let piece = piece.as_bytes();
            if self.rank(piece).is_some() {
                token_len(piece.len());
            } else {
                self.merge(piece, &mut token_len);
            }
        }
    }

    /// The pieces [`PATTERN`] splits `text` into. Where only `\s+` matched
    /// (a run of spaces without a line break), `\s+(?!\S)` would have
    /// stopped before the run's last character when text follows, leaving
    /// it to lead the next piece.
    fn pieces<'t>(&self, text: &'t str) -> impl Iterator<Item = &'t str> + use<'_, 't> {
        let mut at = 0;
        std::iter::from_fn(move || {
            // The pattern matches every character, so each piece starts
            // where the last one ended: an anchored search needs no
            // backward pass to find where it starts.
            let rest = text.get(at..).filter(|rest| !rest.is_empty())?;
            let input = Input::new(text).range(at..).anchored(Anchored::Yes);
            let Some(found) = self.split.find(input) else {
                // o200k matches from any character; a pattern that did not
                // would count that character alone instead of stopping.
                let one = rest.chars().next().map_or(1, char::len_utf8);
                at += one;
                return Some(&rest[..one]);
            };
            let mut piece = &rest[..found.len()];
            let spaces_only =
                piece.chars().all(char::is_whitespace) && !piece.ends_with(['\r', '\n']);
            if spaces_only && found.end() < text.len() {
                if let Some((last, _)) = piece.char_indices().last().filter(|&(i, _)| i > 0) {
                    piece = &piece[..last];
                }
            }
            at += piece.len();
            Some(piece)
        })
    }

    /// Byte-pair merging of a piece that is not itself a token: merges the
    /// adjacent parts whose joined bytes have the lowest rank (the leftmost
    /// on ties) until no joined pair is a token. A heap keeps long pieces
    /// at O(n log n). Every single byte is a token, so parts start as bytes.
    fn merge(&self, piece: &[u8], token_len: &mut impl FnMut(usize)) {
        const GONE: usize = usize::MAX;
        let n = piece.len();
        // `end[start]`: where the part starting at `start` ends (GONE once
        // merged into the part before it); `prev[start]`: that part's start.
        let mut end: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut candidates = BinaryHeap::with_capacity(n);
        let offer = |candidates: &mut BinaryHeap<_>, start: usize, pair_end: usize| {
            if let Some(rank) = self.rank(&piece[start..pair_end]) {
                candidates.push(Reverse((rank, start, pair_end)));
            }
        };
        for start in 0..n.saturating_sub(1) {
            offer(&mut candidates, start, start + 2);
        }
        while let Some(Reverse((_, start, pair_end))) = candidates.pop() {
            let right = end[start];
            // Stale unless both parts are still as they were when offered.
            if right == GONE || right >= n || end[right] != pair_end {
                continue;
            }
            end[start] = pair_end;
            end[right] = GONE;
            if pair_end < n {
                prev[pair_end] = start;
                offer(&mut candidates, start, end[pair_end]);
            }
            if start > 0 {
                offer(&mut candidates, prev[start], pair_end);
            }
        }
        let mut start = 0;
        while start < n {
            token_len(end[start] - start);
            start = end[start];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use tiktoken_rs::CoreBPE;

    use super::*;

    static OURS: LazyLock<Bpe> = LazyLock::new(Bpe::o200k_base);

    fn tiktoken() -> &'static CoreBPE {
        tiktoken_rs::o200k_base_singleton()
    }

    /// Each token's byte length, ours and tiktoken's.
    fn both(text: &str) -> (Vec<usize>, Vec<usize>) {
        let mut ours = Vec::new();
        OURS.tokens(text, |len| ours.push(len));
        let theirs = tiktoken()
            .encode_ordinary(text)
            .iter()
            .map(|&t| tiktoken().decode_bytes(&[t]).expect("known rank").len())
            .collect();
        (ours, theirs)
    }

    #[test]
    fn the_pattern_and_every_token_are_tiktokens() {
        assert_eq!(PATTERN, tiktoken_rs::O200K_BASE_PAT_STR);
        assert_eq!(OURS.starts.len() - 1, 199_998);
        for rank in 0..199_998 {
            assert_eq!(
                OURS.token(rank),
                tiktoken().decode_bytes(&[rank]).unwrap(),
                "rank {rank}"
            );
            assert_eq!(OURS.rank(OURS.token(rank)), Some(rank));
        }
    }

    #[test]
    fn splits_text_as_tiktoken_does() {
        let texts = [
            "Hello, world! The quick brown fox jumps over the lazy dog.",
            "fn main() {\n    println!(\"{}\", 42_000.5e-3);\n}\n\n\n\t\t  ",
            "Ünïcödé: 日本語のテキスト, 中文文本, 한국어, emoji 🦀🚀👩‍👩‍👧‍👦, RTL עברית",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "I'm sure they'll've DONE it; WE'RE here.   \r\n\r\n  x",
            "https://example.com/path?query=1&b=%20 base64: SGVsbG8gd29ybGQhIFRoaXMgaXMgbG9uZw==",
            "",
        ];
        for text in texts {
            let (ours, theirs) = both(text);
            assert_eq!(ours, theirs, "{text:?}");
        }
        // A piece far past a hundred bytes (tiktoken's heap path).
        let long = "x".repeat(5000) + &"🦀".repeat(300);
        let (ours, theirs) = both(&long);
        assert_eq!(ours, theirs);
    }

    proptest! {
        #[test]
        fn any_text_splits_as_tiktoken_does(text in "\\PC{0,200}") {
            let (ours, theirs) = both(&text);
            prop_assert_eq!(ours, theirs);
        }

        /// Runs of (Unicode) spaces, where `\s+(?!\S)` is applied by hand.
        #[test]
        fn any_spacing_splits_as_tiktoken_does(text in "[ \t\r\nab1.\u{a0}\u{2003}\u{3000}]{0,120}") {
            let (ours, theirs) = both(&text);
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn any_words_split_as_tiktoken_does(text in "[a-zA-Z0-9 .,;:'!?()\\[\\]{}\n\t_-]{0,300}") {
            let (ours, theirs) = both(&text);
            prop_assert_eq!(ours, theirs);
        }
    }
}
