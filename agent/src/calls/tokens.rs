//! Token estimates with a real tokenizer (`o200k_base`), for responses and
//! requests without usage, and for each output chunk's share.
//!
//! The BPE tables take a while to build: they are built once, on first use,
//! with a table of every token's length in bytes (so splitting a text's
//! tokens among chunks allocates nothing per token).

use std::sync::LazyLock;

use tiktoken_rs::{o200k_base_singleton, CoreBPE, Rank};

fn bpe() -> &'static CoreBPE {
    o200k_base_singleton()
}

/// Byte length of every ordinary token, indexed by rank.
static TOKEN_LEN: LazyLock<Vec<u16>> = LazyLock::new(|| {
    // o200k_base ranks run below 200,000; unknown ranks decode to nothing.
    (0..200_000)
        .map(|rank| bpe().decode_bytes(&[rank]).map_or(0, |b| b.len() as u16))
        .collect()
});

/// Builds the tables now (they take a while), so that the first call
/// without usage does not wait for them.
pub fn prepare() {
    LazyLock::force(&TOKEN_LEN);
}

/// Tokens in `text`.
pub(super) fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len() as u64
}

/// Tokenizes `text` once and splits the tokens among chunks: chunk `i` owns
/// the bytes before `ends[i]` and from `ends[i - 1]`, and a token belongs to
/// the chunk holding its first byte. Returns the total and fills `counts`.
pub(super) fn count_split(text: &str, ends: &[usize], counts: &mut Vec<u32>) -> u64 {
    counts.clear();
    counts.resize(ends.len(), 0);
    if text.is_empty() {
        return 0;
    }
    let tokens = bpe().encode_ordinary(text);
    let lengths = &*TOKEN_LEN;
    let mut offset = 0;
    let mut chunk = 0;
    for &token in &tokens {
        while chunk < ends.len() && offset >= ends[chunk] {
            chunk += 1;
        }
        if let Some(n) = counts.get_mut(chunk) {
            *n += 1;
        }
        offset += token_len(lengths, token);
    }
    tokens.len() as u64
}

fn token_len(lengths: &[u16], token: Rank) -> usize {
    lengths.get(token as usize).map_or(0, |&n| usize::from(n))
}
