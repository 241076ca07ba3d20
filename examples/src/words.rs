//! The word-counting kernel of the `wordcount` program.
//!
//! Two ways of cutting text into words are supported (see [`SplitMode`]):
//!
//! * [`SplitMode::Words`]: a word is a maximal run of characters for which
//!   [`char::is_alphanumeric`] is true, each character lowercased with
//!   [`char::to_lowercase`] (the full mapping). Bytes that are not valid UTF-8
//!   separate words, exactly as if [`String::from_utf8_lossy`] had replaced
//!   them with U+FFFD. Keys are the lowercased UTF-8 bytes.
//! * [`SplitMode::Whitespace`]: a word is a maximal run of bytes that are not
//!   ASCII whitespace (space, `\t`, `\n`, 0x0B, 0x0C, `\r`), compared byte for
//!   byte (the semantics of `wc -w`). Keys are the raw bytes.
//!
//! [`WordCounts`] is the per-worker partial; [`split_ranges`] cuts an input
//! into pieces that can be counted separately and merged.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use rustc_hash::FxHashMap;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How text is cut into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitMode {
    /// Maximal runs of alphanumeric characters (Unicode), lowercased; invalid
    /// UTF-8 separates words.
    Words,
    /// Maximal runs of bytes that are not ASCII whitespace, raw bytes (`wc -w`).
    Whitespace,
}

/// Class of a byte in [`SplitMode::Words`]: an ASCII byte that is not alphanumeric.
const SEP: u8 = 0;
/// Class: ASCII lowercase letter or digit (kept as is).
const KEEP: u8 = 1;
/// Class: ASCII uppercase letter (lowercased).
const UPPER: u8 = 2;
/// Class: a byte >= 0x80, part of a (possibly invalid) multi-byte sequence.
const NON_ASCII: u8 = 4;

/// Byte classes for [`SplitMode::Words`].
static WORD_CLASS: [u8; 256] = {
    let mut t = [SEP; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b >= 0x80 {
            NON_ASCII
        } else if b.is_ascii_uppercase() {
            UPPER
        } else if b.is_ascii_alphanumeric() {
            KEEP
        } else {
            SEP
        };
        i += 1;
    }
    t
};

/// ASCII lowercase mapping (identity for other bytes).
static ASCII_LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};

/// The six ASCII whitespace bytes of [`SplitMode::Whitespace`].
static IS_SPACE: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[0x0B] = true;
    t[0x0C] = true;
    t[b'\r' as usize] = true;
    t
};

/// Whether `b` is one of the six ASCII whitespace bytes (space, `\t`, `\n`,
/// 0x0B, 0x0C, `\r`). Note that 0x0B is included, unlike
/// [`u8::is_ascii_whitespace`].
#[inline]
pub fn is_space(b: u8) -> bool {
    IS_SPACE[b as usize]
}

/// Whether `b` is an ASCII byte that separates words in `mode`: a byte at
/// which [`split_ranges`] may cut.
#[inline]
pub fn is_ascii_separator(mode: SplitMode, b: u8) -> bool {
    match mode {
        SplitMode::Words => WORD_CLASS[b as usize] == SEP,
        SplitMode::Whitespace => IS_SPACE[b as usize],
    }
}

/// Word -> count table, the per-worker partial of word count.
///
/// Invariant: no word has a count of zero.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WordCounts {
    map: FxHashMap<Box<[u8]>, u64>,
}

impl WordCounts {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with room for `capacity` distinct words.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            map: FxHashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Counts the words of `text` (a piece that starts and ends at word
    /// boundaries) and adds them.
    pub fn count(&mut self, mode: SplitMode, text: &[u8]) {
        match mode {
            SplitMode::Words => self.count_words(text),
            SplitMode::Whitespace => self.count_whitespace(text),
        }
    }

    /// [`SplitMode::Words`]: ASCII runs go through the class table; runs that
    /// contain a byte >= 0x80 are decoded.
    fn count_words(&mut self, text: &[u8]) {
        let mut scratch: Vec<u8> = Vec::with_capacity(64);
        let n = text.len();
        let mut i = 0;
        while i < n {
            // Skip ASCII separators.
            while i < n && WORD_CLASS[text[i] as usize] == SEP {
                i += 1;
            }
            if i == n {
                break;
            }
            // A run of bytes that are not ASCII separators.
            let start = i;
            let mut flags = 0u8;
            while i < n {
                let class = WORD_CLASS[text[i] as usize];
                if class == SEP {
                    break;
                }
                flags |= class;
                i += 1;
            }
            let run = &text[start..i];
            if flags & NON_ASCII != 0 {
                self.count_non_ascii_run(run, &mut scratch);
            } else if flags & UPPER != 0 {
                scratch.clear();
                scratch.extend(run.iter().map(|&b| ASCII_LOWER[b as usize]));
                self.add_one(&scratch);
            } else {
                self.add_one(run);
            }
        }
    }

    /// Counts the words of a run that holds no ASCII separator but at least one
    /// byte >= 0x80. Since an ASCII byte never belongs to a multi-byte sequence
    /// and always ends an invalid one, decoding the run on its own gives the
    /// same characters as decoding the whole text with `from_utf8_lossy`.
    fn count_non_ascii_run(&mut self, run: &[u8], scratch: &mut Vec<u8>) {
        scratch.clear();
        for chunk in run.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_ascii() {
                    // Within a run every ASCII byte is alphanumeric.
                    scratch.push(ASCII_LOWER[c as usize]);
                } else if c.is_alphanumeric() {
                    let mut buf = [0u8; 4];
                    for l in c.to_lowercase() {
                        scratch.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
                    }
                } else if !scratch.is_empty() {
                    self.add_one(scratch);
                    scratch.clear();
                }
            }
            // Invalid bytes (one or more U+FFFD) end the current word.
            if !chunk.invalid().is_empty() && !scratch.is_empty() {
                self.add_one(scratch);
                scratch.clear();
            }
        }
        if !scratch.is_empty() {
            self.add_one(scratch);
            scratch.clear();
        }
    }

    /// [`SplitMode::Whitespace`]: runs of non-whitespace bytes, raw.
    fn count_whitespace(&mut self, text: &[u8]) {
        let n = text.len();
        let mut i = 0;
        while i < n {
            while i < n && IS_SPACE[text[i] as usize] {
                i += 1;
            }
            if i == n {
                break;
            }
            let start = i;
            while i < n && !IS_SPACE[text[i] as usize] {
                i += 1;
            }
            self.add_one(&text[start..i]);
        }
    }

    /// Adds one occurrence of `word`, allocating only if it is new.
    #[inline]
    fn add_one(&mut self, word: &[u8]) {
        if let Some(c) = self.map.get_mut(word) {
            *c += 1;
        } else {
            self.map.insert(word.into(), 1);
        }
    }

    /// Adds `n` occurrences of an owned word (no allocation).
    fn add_owned(&mut self, word: Box<[u8]>, n: u64) {
        if n != 0 {
            *self.map.entry(word).or_insert(0) += n;
        }
    }

    /// Adds `other` into `self` (associative and commutative).
    pub fn merge(&mut self, mut other: WordCounts) {
        if self.map.len() < other.map.len() {
            std::mem::swap(&mut self.map, &mut other.map);
        }
        self.map.reserve(other.map.len());
        for (word, n) in other.map {
            *self.map.entry(word).or_insert(0) += n;
        }
    }

    /// Adds `n` occurrences of `word` (a no-op when `n` is zero).
    pub fn add(&mut self, word: &[u8], n: u64) {
        if n == 0 {
            return;
        }
        if let Some(c) = self.map.get_mut(word) {
            *c += n;
        } else {
            self.map.insert(word.into(), n);
        }
    }

    /// Number of distinct words.
    pub fn distinct(&self) -> usize {
        self.map.len()
    }

    /// Whether no word has been counted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sum of the counts: the number of words counted.
    pub fn total(&self) -> u64 {
        self.map.values().sum()
    }

    /// Count of `word` (zero if absent).
    pub fn get(&self, word: &[u8]) -> u64 {
        self.map.get(word).copied().unwrap_or(0)
    }

    /// All (word, count) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.map.iter().map(|(w, &n)| (&**w, n))
    }

    /// All (word, count) pairs sorted by count descending, then by word bytes
    /// ascending.
    pub fn sorted(&self) -> Vec<(&[u8], u64)> {
        let mut all: Vec<(&[u8], u64)> = self.iter().collect();
        all.sort_unstable_by(rank);
        all
    }

    /// The `k` first of [`sorted`](Self::sorted), in the same order, without
    /// sorting everything.
    pub fn top(&self, k: usize) -> Vec<(&[u8], u64)> {
        if k == 0 {
            return Vec::new();
        }
        let mut all: Vec<(&[u8], u64)> = self.iter().collect();
        if k < all.len() {
            all.select_nth_unstable_by(k - 1, rank);
            all.truncate(k);
        }
        all.sort_unstable_by(rank);
        all
    }

    /// The result as a sorted map (for comparisons with [`reference_counts`]).
    pub fn to_btree(&self) -> BTreeMap<Vec<u8>, u64> {
        self.iter().map(|(w, n)| (w.to_vec(), n)).collect()
    }
}

/// Order of [`WordCounts::sorted`]: count descending, then word ascending.
fn rank(a: &(&[u8], u64), b: &(&[u8], u64)) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0))
}

/// A word serialized with `serialize_bytes`.
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A word deserialized from a byte string (or a sequence of bytes, or a string).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.as_bytes().to_vec()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.into_bytes()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(ByteBuf(v))
            }
        }
        deserializer.deserialize_byte_buf(V)
    }
}

/// Serialized as a sequence of `(word, count)` pairs, the word as a byte
/// string (`serialize_bytes`), in no particular order.
impl Serialize for WordCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.map.len()))?;
        for (word, &n) in &self.map {
            seq.serialize_element(&(BytesRef(word), n))?;
        }
        seq.end()
    }
}

/// Reads a sequence of `(word, count)` pairs; repeated words are summed and
/// zero counts dropped.
impl<'de> Deserialize<'de> for WordCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WordCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of (word bytes, count) pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WordCounts, A::Error> {
                let mut wc = WordCounts::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some((ByteBuf(word), n)) = seq.next_element::<(ByteBuf, u64)>()? {
                    wc.add_owned(word.into_boxed_slice(), n);
                }
                Ok(wc)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

/// Cuts `text` into about `pieces` ranges of similar size whose boundaries
/// never fall inside a word, for `mode`.
///
/// Each cut is made just before an ASCII byte that is a separator in `mode`
/// (see [`is_ascii_separator`]), searching forward from each ideal boundary.
/// An ASCII byte is never part of a multi-byte UTF-8 sequence and always ends
/// an invalid one, so decoding the pieces separately equals decoding the whole.
///
/// The ranges are contiguous, non-overlapping, cover the whole text and none
/// is empty. There are fewer than `pieces` if the text has few cut points (a
/// text without separator is one range); an empty text gives no range.
/// `pieces == 0` is treated as 1.
pub fn split_ranges(mode: SplitMode, text: &[u8], pieces: usize) -> Vec<Range<usize>> {
    let n = text.len();
    if n == 0 {
        return Vec::new();
    }
    let pieces = pieces.max(1);
    let mut out = Vec::with_capacity(pieces);
    let mut start = 0usize;
    for k in 1..pieces {
        let ideal = (n as u128 * k as u128 / pieces as u128) as usize;
        let from = ideal.max(start + 1);
        if from >= n {
            break;
        }
        let found = match mode {
            SplitMode::Words => text[from..].iter().position(|&b| WORD_CLASS[b as usize] == SEP),
            SplitMode::Whitespace => text[from..].iter().position(|&b| IS_SPACE[b as usize]),
        };
        match found {
            Some(off) => {
                let cut = from + off;
                out.push(start..cut);
                start = cut;
            }
            None => break,
        }
    }
    out.push(start..n);
    out
}

/// Obviously-correct slow reference used by tests: decodes with
/// [`String::from_utf8_lossy`] and iterates chars ([`SplitMode::Words`]) or
/// splits on the six ASCII whitespace bytes ([`SplitMode::Whitespace`]).
pub fn reference_counts(mode: SplitMode, text: &[u8]) -> BTreeMap<Vec<u8>, u64> {
    let mut out: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    match mode {
        SplitMode::Words => {
            let decoded = String::from_utf8_lossy(text);
            let mut word = String::new();
            for c in decoded.chars() {
                if c.is_alphanumeric() {
                    word.extend(c.to_lowercase());
                } else if !word.is_empty() {
                    *out.entry(std::mem::take(&mut word).into_bytes()).or_insert(0) += 1;
                }
            }
            if !word.is_empty() {
                *out.entry(word.into_bytes()).or_insert(0) += 1;
            }
        }
        SplitMode::Whitespace => {
            for w in text.split(|&b| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')) {
                if !w.is_empty() {
                    *out.entry(w.to_vec()).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(mode: SplitMode, text: &[u8]) -> WordCounts {
        let mut wc = WordCounts::new();
        wc.count(mode, text);
        wc
    }

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<Vec<u8>, u64> {
        pairs.iter().map(|&(w, n)| (w.as_bytes().to_vec(), n)).collect()
    }

    fn check(mode: SplitMode, text: &[u8], expected: &[(&str, u64)]) {
        let expected = map(expected);
        assert_eq!(counts(mode, text).to_btree(), expected, "count {text:?}");
        assert_eq!(reference_counts(mode, text), expected, "reference {text:?}");
    }

    fn check_raw(mode: SplitMode, text: &[u8], expected: &[(&[u8], u64)]) {
        let expected: BTreeMap<Vec<u8>, u64> = expected.iter().map(|&(w, n)| (w.to_vec(), n)).collect();
        assert_eq!(counts(mode, text).to_btree(), expected, "count {text:?}");
        assert_eq!(reference_counts(mode, text), expected, "reference {text:?}");
    }

    use SplitMode::{Whitespace, Words};

    #[test]
    fn ascii_and_case() {
        check(
            Words,
            b"The cat and the CAT, tHe end.",
            &[("the", 3), ("cat", 2), ("and", 1), ("end", 1)],
        );
        check(
            Whitespace,
            b"The cat and the CAT, tHe end.",
            &[
                ("The", 1),
                ("cat", 1),
                ("and", 1),
                ("the", 1),
                ("CAT,", 1),
                ("tHe", 1),
                ("end.", 1),
            ],
        );
        check(Words, b"", &[]);
        check(Whitespace, b"", &[]);
        check(Words, b"  ...  ", &[]);
        check(Whitespace, b" \t\n ", &[]);
    }

    #[test]
    fn digits_underscores_apostrophes() {
        check(
            Words,
            b"abc123 123 don't snake_case x1_y2",
            &[
                ("abc123", 1),
                ("123", 1),
                ("don", 1),
                ("t", 1),
                ("snake", 1),
                ("case", 1),
                ("x1", 1),
                ("y2", 1),
            ],
        );
        check(
            Whitespace,
            b"don't snake_case",
            &[("don't", 1), ("snake_case", 1)],
        );
    }

    #[test]
    fn unicode_words() {
        check(
            Words,
            "Straße STRASSE straße".as_bytes(),
            &[("straße", 2), ("strasse", 1)],
        );
        // 'İ' lowercases to "i\u{307}" (two chars).
        let w = counts(Words, "İstanbul istanbul".as_bytes());
        assert_eq!(w.get("i\u{307}stanbul".as_bytes()), 1);
        assert_eq!(w.get(b"istanbul"), 1);
        check(Words, "İstanbul".as_bytes(), &[("i\u{307}stanbul", 1)]);
        // Per-char lowercasing: a final capital sigma gives 'σ', not 'ς'.
        check(Words, "ΟΔΟΣ οδοσ".as_bytes(), &[("οδοσ", 2)]);
        check(
            Words,
            "中文 中文，日本語".as_bytes(),
            &[("中文", 2), ("日本語", 1)],
        );
        check(Words, "café—Café".as_bytes(), &[("café", 2)]);
        // Non-ASCII digits are alphanumeric.
        check(Words, "x٣y".as_bytes(), &[("x٣y", 1)]);
    }

    #[test]
    fn invalid_utf8() {
        check(Words, b"ab\xffcd", &[("ab", 1), ("cd", 1)]);
        check(Words, b"ab\xc3cd", &[("ab", 1), ("cd", 1)]);
        // A valid char is not glued across an invalid byte.
        check(Words, "é\u{0}".as_bytes(), &[("é", 1)]);
        check(Words, b"\xc3\xa9\xff\xc3\xa9", &[("é", 2)]);
        check(Words, b"\xc3\xc3\xa9x", &[("éx", 1)]);
        // Truncated multibyte sequences, at the end and in the middle.
        check(Words, b"caf\xc3\xa9 caf\xc3", &[("café", 1), ("caf", 1)]);
        check(Words, b"a\xe4\xb8b\xe4\xb8\xad", &[("a", 1), ("b中", 1)]);
        check(Words, b"\xf0\x9f", &[]);
        // Surrogates and overlong encodings are invalid.
        check(Words, b"a\xed\xa0\x80b\xc0\xafc", &[("a", 1), ("b", 1), ("c", 1)]);
        // Whitespace mode keeps raw bytes.
        check_raw(Whitespace, b"ab\xffcd \xc3", &[(b"ab\xffcd", 1), (b"\xc3", 1)]);
    }

    #[test]
    fn nul_bytes() {
        check(Words, b"a\0b\0\0a", &[("a", 2), ("b", 1)]);
        check_raw(Whitespace, b"a\0b a", &[(b"a\0b", 1), (b"a", 1)]);
    }

    #[test]
    fn six_whitespace_bytes() {
        let text = b"a b\tc\nd\x0be\x0cf\rg";
        check(
            Whitespace,
            text,
            &[
                ("a", 1),
                ("b", 1),
                ("c", 1),
                ("d", 1),
                ("e", 1),
                ("f", 1),
                ("g", 1),
            ],
        );
        check(
            Words,
            text,
            &[
                ("a", 1),
                ("b", 1),
                ("c", 1),
                ("d", 1),
                ("e", 1),
                ("f", 1),
                ("g", 1),
            ],
        );
        assert!(is_space(0x0B) && !0x0Bu8.is_ascii_whitespace());
    }

    #[test]
    fn non_breaking_space() {
        let text = "a\u{a0}b a".as_bytes();
        check(Whitespace, text, &[("a\u{a0}b", 1), ("a", 1)]);
        check(Words, text, &[("a", 2), ("b", 1)]);
    }

    #[test]
    fn add_get_total_merge() {
        let mut a = counts(Words, b"x y y z z z");
        assert_eq!(a.distinct(), 3);
        assert_eq!(a.total(), 6);
        assert_eq!(a.get(b"z"), 3);
        assert_eq!(a.get(b"w"), 0);
        a.add(b"w", 5);
        a.add(b"v", 0);
        assert_eq!(a.get(b"w"), 5);
        assert_eq!(a.get(b"v"), 0);
        assert_eq!(a.distinct(), 4);
        let b = counts(Words, b"x q");
        let mut ab = a.clone();
        ab.merge(b.clone());
        let mut ba = b;
        ba.merge(a);
        assert_eq!(ab, ba);
        assert_eq!(ab.get(b"x"), 2);
        assert_eq!(ab.get(b"q"), 1);
        assert_eq!(ab.total(), 13);
    }

    #[test]
    fn sorted_and_top_with_ties() {
        let mut wc = WordCounts::new();
        for (w, n) in [("d", 2), ("b", 3), ("a", 2), ("c", 3), ("e", 1), ("f", 2)] {
            wc.add(w.as_bytes(), n);
        }
        let expected: Vec<(&[u8], u64)> =
            vec![(b"b", 3), (b"c", 3), (b"a", 2), (b"d", 2), (b"f", 2), (b"e", 1)];
        assert_eq!(wc.sorted(), expected);
        for k in 0..10 {
            assert_eq!(wc.top(k), expected[..k.min(expected.len())], "k = {k}");
        }
        assert!(WordCounts::new().top(3).is_empty());
    }

    #[test]
    fn serde_round_trip() {
        let mut wc = counts(Words, "hello World, héllo wörld 中文 hello".as_bytes());
        wc.add(b"\xff\x00raw", 7);
        let bytes = postcard::to_allocvec(&wc).unwrap();
        let back: WordCounts = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, wc);
        // Words go through serialize_bytes: a length then the raw bytes.
        let single = {
            let mut w = WordCounts::new();
            w.add(b"abc", 2);
            w
        };
        assert_eq!(
            postcard::to_allocvec(&single).unwrap(),
            [1, 3, b'a', b'b', b'c', 2]
        );
        let json = serde_json::to_string(&wc).unwrap();
        let back: WordCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, wc);
        let empty: WordCounts =
            postcard::from_bytes(&postcard::to_allocvec(&WordCounts::new()).unwrap()).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn split_ranges_basics() {
        assert!(split_ranges(Words, b"", 4).is_empty());
        assert_eq!(split_ranges(Words, b"abc", 0), vec![0..3]);
        let long = vec![b'x'; 1000];
        assert_eq!(split_ranges(Words, &long, 8), vec![0..1000]);
        assert_eq!(split_ranges(Whitespace, &long, 8), vec![0..1000]);
        let text = b"aaaa bbbb cccc dddd";
        let r = split_ranges(Whitespace, text, 4);
        assert_eq!(r, vec![0..4, 4..9, 9..14, 14..19]);
        // '.' separates in Words mode but not in Whitespace mode.
        let text = b"aaaa.bbbb.cccc dddd";
        assert_eq!(split_ranges(Whitespace, text, 4), vec![0..14, 14..19]);
        assert_eq!(split_ranges(Words, text, 4), vec![0..4, 4..9, 9..14, 14..19]);
    }

    /// Pieces of the mixed alphabet.
    fn mixed_text() -> impl Strategy<Value = Vec<u8>> {
        let pieces: Vec<&'static [u8]> = vec![
            b"a",
            b"b",
            b"Z",
            b"Q",
            b"7",
            b" ",
            b" ",
            b"\t",
            b"\n",
            b"\x0b",
            b".",
            b"_",
            b"'",
            "é".as_bytes(),
            "É".as_bytes(),
            "İ".as_bytes(),
            "ß".as_bytes(),
            "Σ".as_bytes(),
            "中".as_bytes(),
            "\u{a0}".as_bytes(),
            "—".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xe4\xb8",
            b"\xa9",
        ];
        prop::collection::vec(prop::sample::select(pieces), 0..120).prop_map(|v| v.concat())
    }

    fn any_mode() -> impl Strategy<Value = SplitMode> {
        prop_oneof![Just(Words), Just(Whitespace)]
    }

    fn check_split(mode: SplitMode, text: &[u8], p: usize) -> Result<(), TestCaseError> {
        let ranges = split_ranges(mode, text, p);
        let mut next = 0;
        for r in &ranges {
            prop_assert_eq!(r.start, next);
            prop_assert!(r.start < r.end);
            next = r.end;
        }
        prop_assert_eq!(next, text.len());
        prop_assert!(ranges.len() <= p.max(1));
        let mut merged = WordCounts::new();
        for r in ranges {
            let mut part = WordCounts::new();
            part.count(mode, &text[r]);
            merged.merge(part);
        }
        prop_assert_eq!(merged, counts(mode, text));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn count_matches_reference_bytes(
            mode in any_mode(),
            text in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assert_eq!(counts(mode, &text).to_btree(), reference_counts(mode, &text));
        }

        #[test]
        fn count_matches_reference_mixed(mode in any_mode(), text in mixed_text()) {
            prop_assert_eq!(counts(mode, &text).to_btree(), reference_counts(mode, &text));
        }

        #[test]
        fn count_matches_reference_strings(mode in any_mode(), text in any::<String>()) {
            let text = text.into_bytes();
            prop_assert_eq!(counts(mode, &text).to_btree(), reference_counts(mode, &text));
        }

        #[test]
        fn split_then_merge_equals_whole(mode in any_mode(), text in mixed_text(), p in 1usize..16) {
            check_split(mode, &text, p)?;
        }

        #[test]
        fn split_then_merge_equals_whole_bytes(
            mode in any_mode(),
            text in prop::collection::vec(any::<u8>(), 0..300),
            p in 1usize..16,
        ) {
            check_split(mode, &text, p)?;
        }

        #[test]
        fn serde_round_trip_any(text in mixed_text()) {
            let wc = counts(Whitespace, &text);
            let back: WordCounts = postcard::from_bytes(&postcard::to_allocvec(&wc).unwrap()).unwrap();
            prop_assert_eq!(back, wc);
        }

        #[test]
        fn top_is_prefix_of_sorted(text in mixed_text(), k in 0usize..20) {
            let wc = counts(Words, &text);
            let sorted = wc.sorted();
            prop_assert_eq!(wc.top(k), sorted[..k.min(sorted.len())].to_vec());
            prop_assert_eq!(wc.total(), reference_counts(Words, &text).values().sum::<u64>());
        }
    }
}
