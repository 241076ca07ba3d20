//! Cutting text into words and counting them into a [`Tally`], 16 bytes at
//! a time: the bulk of [`Tally::add_words`].

use super::*;
use crate::split::is_space;

/// Class of a byte in [`WordRule::Alphanumeric`]: an ASCII byte that is not alphanumeric.
pub(super) const SEP: u8 = 0;
/// Class: ASCII lowercase letter or digit (kept as is).
pub(super) const KEEP: u8 = 1;
/// Class: ASCII uppercase letter (lowercased).
pub(super) const UPPER: u8 = 2;
/// Class: a byte >= 0x80, part of a (possibly invalid) multi-byte sequence.
pub(super) const NON_ASCII: u8 = 4;

/// Byte classes for [`WordRule::Alphanumeric`].
pub(super) static WORD_CLASS: [u8; 256] = {
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
pub(super) static ASCII_LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};

impl Tally {
    /// Counts the words of `text` (a piece that starts and ends at word
    /// boundaries) and adds them.
    pub fn add_words(&mut self, rule: WordRule, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        if self.lens.is_empty() {
            self.grow();
        }
        let table = self;
        // The bulk, then the last few bytes copied into a buffer padded with
        // spaces (a separator in both rules), so that the same scan can read
        // 16 bytes at every position.
        let mut tail = [b' '; 32];
        let mut batch = Batch::new();
        match rule {
            WordRule::Alphanumeric => {
                let mut scratch = Vec::new();
                let i = scan_words(table, &mut batch, text, 0, &mut scratch);
                tail[..text.len() - i].copy_from_slice(&text[i..]);
                scan_words(table, &mut batch, &tail, 0, &mut scratch);
            }
            WordRule::Whitespace => {
                let i = scan_whitespace(table, &mut batch, text, 0);
                tail[..text.len() - i].copy_from_slice(&text[i..]);
                scan_whitespace(table, &mut batch, &tail, 0);
            }
        }
        batch.flush(table);
    }
}

/// Zero-padding masks of inline keys: `KEY_MASK[len]` keeps the first `len` bytes.
pub(super) static KEY_MASK: [u128; INLINE + 1] = {
    let mut t = [0u128; INLINE + 1];
    let mut len = 1;
    while len <= INLINE {
        t[len] = u128::MAX >> (8 * (16 - len));
        len += 1;
    }
    t
};

/// The inline value of the first `len` (at most `INLINE`) of the 16 bytes
/// `lo`, `hi` (little-endian).
#[inline(always)]
pub(super) fn inline_value(lo: u64, hi: u64, len: usize) -> u128 {
    (u128::from(hi) << 64 | u128::from(lo)) & KEY_MASK[len] | (len as u128) << 120
}

/// Inline keys found by a scan, waiting to be counted: their slots are
/// prefetched when they are pushed, so that the cache misses of a batch
/// overlap instead of following one another.
pub(super) struct Batch {
    keys: [u128; BATCH],
    hashes: [u64; BATCH],
    len: usize,
}

/// Keys in a [`Batch`].
pub(super) const BATCH: usize = 64;

impl Batch {
    fn new() -> Batch {
        Batch {
            keys: [0; BATCH],
            hashes: [0; BATCH],
            len: 0,
        }
    }

    /// Adds one occurrence of the inline key of inline value `key`.
    #[inline(always)]
    fn push(&mut self, table: &mut Tally, key: u128) {
        let hash = hash_inline(key);
        prefetch(table.slots.as_slice(), table.slot_of(hash));
        let k = self.len;
        self.keys[k] = key;
        self.hashes[k] = hash;
        self.len = k + 1;
        if k + 1 == BATCH {
            self.flush(table);
        }
    }

    /// Counts the keys of the batch.
    #[inline(always)]
    fn flush(&mut self, table: &mut Tally) {
        let n = self.len.min(BATCH);
        table.add_inlines(&self.keys[..n], &self.hashes[..n]);
        self.len = 0;
    }
}

/// Adds `n` (not zero) occurrences of `word`.
#[inline]
pub(super) fn add_word(table: &mut Tally, word: &[u8], n: u64) {
    let hash = hash_word(word);
    let k = shard_of(hash);
    while table.shard_mut(k).add_hashed(word, hash, n).is_err() {
        table.grow();
    }
}

// ---------------------------------------------------------------------------
// Tokenizing, 16 bytes at a time with SWAR (SIMD within a register) masks: each
// function below maps 8 bytes to a word whose byte `i` has its top bit set when
// byte `i` of the input belongs to the class, and every other bit clear.
// ---------------------------------------------------------------------------

pub(super) const LO: u64 = 0x0101_0101_0101_0101;
pub(super) const HI: u64 = 0x8080_8080_8080_8080;

/// Top bit of each byte of `x` that is one of the six ASCII whitespace bytes.
#[inline(always)]
pub(super) fn swar_space(x: u64) -> u64 {
    let low7 = x & !HI;
    let z = x ^ (0x20 * LO);
    // A byte of `z` is zero (the byte is a space) iff neither its low 7 bits
    // nor its top bit are set. No carry crosses bytes: 0x7F + 0x7F < 0x100.
    let space = !(((z & !HI) + !HI) | z) & HI;
    // 0x09 <= byte <= 0x0D, for bytes below 0x80.
    let control = (low7 + (0x80 - 0x09) * LO) & !(low7 + (0x80 - 0x0E) * LO) & !x & HI;
    space | control
}

/// For [`WordRule::Alphanumeric`]: (ASCII bytes that are not alphanumeric, bytes
/// >= 0x80, `x` with its ASCII uppercase letters lowercased).
#[inline(always)]
pub(super) fn swar_word(x: u64) -> (u64, u64, u64) {
    let high = x & HI;
    let low7 = x & !HI;
    // Letters of either case become lowercase; other bytes may change too,
    // which is why only `letter` bytes take the folded value.
    let folded = low7 | (0x20 * LO);
    let letter = (folded + (0x80 - b'a' as u64) * LO) & !(folded + (0x80 - b'z' as u64 - 1) * LO) & !x & HI;
    let digit = (low7 + (0x80 - b'0' as u64) * LO) & !(low7 + (0x80 - b'9' as u64 - 1) * LO) & !x & HI;
    let separator = !(letter | digit | high) & HI;
    // Setting bit 5 of a letter lowercases it (0x80 >> 2 == 0x20).
    (separator, high, x | letter >> 2)
}

/// The top bits of the 8 bytes of a SWAR mask, as bits 0 to 7.
#[inline(always)]
pub(super) fn movemask(m: u64) -> u32 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

/// The 16 bytes at `i`, as two little-endian words.
#[inline(always)]
pub(super) fn load16(buf: &[u8], i: usize) -> (u64, u64) {
    let w: &[u8; 16] = buf[i..i + 16].try_into().expect("16 bytes");
    let (a, b) = w.split_at(8);
    (
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    )
}

/// Counts whitespace-separated tokens of `buf` starting at `i`, while 16 bytes
/// can be read at the current position; returns where it stopped (a token
/// start or a whitespace byte, at most 15 bytes before the end).
pub(super) fn scan_whitespace(table: &mut Tally, batch: &mut Batch, buf: &[u8], mut i: usize) -> usize {
    while i + 16 <= buf.len() {
        let (w0, w1) = load16(buf, i);
        let space = movemask(swar_space(w0)) | movemask(swar_space(w1)) << 8;
        if space & 1 != 0 {
            // In whitespace: to the next token (or 16 bytes on).
            i += (!space).trailing_zeros().min(16) as usize;
            continue;
        }
        if space == 0 {
            // A token of 16 bytes or more.
            let end = buf[i + 16..]
                .iter()
                .position(|&b| is_space(b))
                .map_or(buf.len(), |p| i + 16 + p);
            add_word(table, &buf[i..end], 1);
            i = end;
            continue;
        }
        // At most 15 (= INLINE): a whitespace byte is among the 16.
        let len = space.trailing_zeros() as usize;
        batch.push(table, inline_value(w0, w1, len));
        // The next token in these 16 bytes, if any.
        let next = !space & (0xFFFF << len) & 0xFFFF;
        i += if next != 0 {
            next.trailing_zeros() as usize
        } else {
            16
        };
    }
    i
}

/// Counts the words of a run of `buf` that holds no ASCII separator (in Alphanumeric
/// rule) but may hold bytes >= 0x80 or uppercase letters.
pub(super) fn count_run(table: &mut Tally, run: &[u8], scratch: &mut Vec<u8>) {
    if !run.is_ascii() {
        count_non_ascii_run(table, run, scratch);
    } else if run.iter().any(u8::is_ascii_uppercase) {
        scratch.clear();
        scratch.extend(run.iter().map(|&b| ASCII_LOWER[b as usize]));
        add_word(table, scratch, 1);
    } else {
        add_word(table, run, 1);
    }
}

/// Counts the words of a run that holds no ASCII separator but at least one
/// byte >= 0x80. Since an ASCII byte never belongs to a multi-byte sequence
/// and always ends an invalid one, decoding the run on its own gives the
/// same characters as decoding the whole text with `from_utf8_lossy`.
#[inline(never)]
pub(super) fn count_non_ascii_run(table: &mut Tally, run: &[u8], scratch: &mut Vec<u8>) {
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
                add_word(table, scratch, 1);
                scratch.clear();
            }
        }
        // Invalid bytes (one or more U+FFFD) end the current word.
        if !chunk.invalid().is_empty() && !scratch.is_empty() {
            add_word(table, scratch, 1);
            scratch.clear();
        }
    }
    if !scratch.is_empty() {
        add_word(table, scratch, 1);
        scratch.clear();
    }
}

/// Counts the words ([`WordRule::Alphanumeric`]) of `buf` starting at `i`, while 16
/// bytes can be read at the current position; returns where it stopped (a
/// word start or a separator, at most 15 bytes before the end).
pub(super) fn scan_words(
    table: &mut Tally,
    batch: &mut Batch,
    buf: &[u8],
    mut i: usize,
    scratch: &mut Vec<u8>,
) -> usize {
    while i + 16 <= buf.len() {
        let (w0, w1) = load16(buf, i);
        let (sep0, high0, lower0) = swar_word(w0);
        let (sep1, high1, lower1) = swar_word(w1);
        let sep = movemask(sep0) | movemask(sep1) << 8;
        if sep & 1 != 0 {
            i += (!sep).trailing_zeros().min(16) as usize;
            continue;
        }
        if sep == 0 {
            // A run of 16 bytes or more.
            let end = buf[i + 16..]
                .iter()
                .position(|&b| WORD_CLASS[b as usize] == SEP)
                .map_or(buf.len(), |p| i + 16 + p);
            count_run(table, &buf[i..end], scratch);
            i = end;
            continue;
        }
        let len = sep.trailing_zeros() as usize;
        let high = movemask(high0) | movemask(high1) << 8;
        if high & ((1 << len) - 1) != 0 {
            count_non_ascii_run(table, &buf[i..i + len], scratch);
        } else {
            batch.push(table, inline_value(lower0, lower1, len));
        }
        let next = !sep & (0xFFFF << len) & 0xFFFF;
        i += if next != 0 {
            next.trailing_zeros() as usize
        } else {
            16
        };
    }
    i
}
