//! Label hygiene for metrics whose label values come from observed traffic.
//!
//! Input: a metric family, a label name and a raw value (a model name is
//! whatever the sender put in the request). Output: the value to use — cut
//! to [`MAX_LABEL_BYTES`], control characters replaced, and, once a label of
//! a family has seen its cap of distinct values, `other` for every new one.
//! Each fold is counted per family, so an exploding label is visible without
//! exploding the scrape.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::semconv::value;

/// Longest label value kept, in bytes (cut at a character boundary).
pub const MAX_LABEL_BYTES: usize = 128;

/// Distinct values seen per (metric family, label), capped.
#[derive(Debug)]
pub struct LabelCap {
    max_values: usize,
    seen: Mutex<HashMap<(&'static str, &'static str), HashSet<String>>>,
}

/// What [`LabelCap::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted<'a> {
    /// Use this (sanitised) value.
    Kept(Cow<'a, str>),
    /// The label is full: report `other`, and count the fold.
    Folded,
}

impl LabelCap {
    /// `max_values` distinct values per label of each family (at least 1).
    pub fn new(max_values: usize) -> Self {
        LabelCap {
            max_values: max_values.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Sanitises `raw` and admits it if the label has room or knows it.
    pub fn admit<'a>(
        &self,
        family: &'static str,
        label: &'static str,
        raw: &'a str,
    ) -> Admitted<'a> {
        let clean = sanitize(raw);
        // A poisoned lock only means another recorder panicked mid-insert;
        // the set is still a valid set.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let values = seen.entry((family, label)).or_default();
        if values.contains(clean.as_ref()) {
            return Admitted::Kept(clean);
        }
        if values.len() < self.max_values {
            values.insert(clean.clone().into_owned());
            return Admitted::Kept(clean);
        }
        Admitted::Folded
    }
}

/// Cuts to [`MAX_LABEL_BYTES`], replaces control characters, and maps an
/// empty value to `unknown`.
pub fn sanitize(raw: &str) -> Cow<'_, str> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Cow::Borrowed(value::UNKNOWN);
    }
    let cut = truncate(trimmed, MAX_LABEL_BYTES);
    if cut.chars().any(char::is_control) {
        Cow::Owned(
            cut.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(cut)
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_past_the_cap_per_family_and_label() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.admit("a", "model", "m1"), Admitted::Kept("m1".into()));
        assert_eq!(cap.admit("a", "model", "m2"), Admitted::Kept("m2".into()));
        assert_eq!(cap.admit("a", "model", "m3"), Admitted::Folded);
        // Known values still pass, other labels and families have their own room.
        assert_eq!(cap.admit("a", "model", "m1"), Admitted::Kept("m1".into()));
        assert_eq!(
            cap.admit("a", "provider", "m3"),
            Admitted::Kept("m3".into())
        );
        assert_eq!(cap.admit("b", "model", "m3"), Admitted::Kept("m3".into()));
    }

    #[test]
    fn sanitizes_length_controls_and_empty() {
        assert_eq!(sanitize("  "), "unknown");
        assert_eq!(sanitize("gpt\n4\u{0}"), "gpt?4?");
        let long = "é".repeat(100); // 200 bytes
        let cut = sanitize(&long);
        assert!(cut.len() <= MAX_LABEL_BYTES && cut.chars().all(|c| c == 'é'));
        assert_eq!(cut.len(), 128);
    }

    #[test]
    fn the_same_long_value_counts_once() {
        let cap = LabelCap::new(1);
        let long = "x".repeat(500);
        assert!(matches!(cap.admit("a", "model", &long), Admitted::Kept(_)));
        assert!(matches!(
            cap.admit("a", "model", &format!("{long}y")),
            Admitted::Kept(_)
        ));
    }
}
