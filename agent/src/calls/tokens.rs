//! Token estimates with a real tokenizer (`o200k_base`, see [`Bpe`]), for
//! responses and requests without usage, and for each output chunk's share.
//!
//! The tables are built once, on first use (or ahead with [`prepare`]).

use std::sync::LazyLock;

use super::bpe::Bpe;

static BPE: LazyLock<Bpe> = LazyLock::new(Bpe::o200k_base);

/// Builds the tables now, so that the first call without usage does not
/// wait for them.
pub fn prepare() {
    LazyLock::force(&BPE);
}

/// Tokens in `text`.
pub(super) fn count(text: &str) -> u64 {
    let mut tokens = 0;
    BPE.tokens(text, |_| tokens += 1);
    tokens
}

/// Tokenizes `text` once and splits the tokens among chunks: chunk `i` owns
/// the bytes before `ends[i]` and from `ends[i - 1]`, and a token belongs to
/// the chunk holding its first byte. Returns the total and fills `counts`.
pub(super) fn count_split(text: &str, ends: &[usize], counts: &mut Vec<u32>) -> u64 {
    counts.clear();
    counts.resize(ends.len(), 0);
    let mut offset = 0;
    let mut chunk = 0;
    let mut tokens = 0;
    BPE.tokens(text, |len| {
        while chunk < ends.len() && offset >= ends[chunk] {
            chunk += 1;
        }
        if let Some(n) = counts.get_mut(chunk) {
            *n += 1;
        }
        offset += len;
        tokens += 1;
    });
    tokens
}
