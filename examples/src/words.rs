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

use std::alloc::Layout;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;

use memmap2::MmapMut;
use rayon::prelude::*;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
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

// ---------------------------------------------------------------------------
// Hashing and keys.
//
// A key of at most `INLINE` (15) bytes is handled as one `u128`, its *inline
// value*: the bytes in little-endian order, zero-padded, with the length in
// byte 15. Its hash is one folded multiply of the two halves. Longer keys go
// through a slower loop over 8-byte words. A key's hash depends only on its
// bytes, whichever path computed it.
// ---------------------------------------------------------------------------

/// Longest key stored inside its slot; longer keys live in the shard's arena.
const INLINE: usize = 15;

/// Byte 15 of a slot's key for a key that lives in the arena (inline keys
/// have their length there, at most `INLINE`).
const LONG: u8 = 0xFF;

const SEED0: u64 = 0x243f_6a88_85a3_08d3;
const SEED1: u64 = 0x1319_8a2e_0370_7344;
const SEED2: u64 = 0xa409_3822_299f_31d0;
const SEED3: u64 = 0x082e_fa98_ec4e_6c89;

/// The 128-bit product of `a` and `b`, its halves xored.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Hash of an inline key, from its inline value.
#[inline(always)]
fn hash_inline(key: u128) -> u64 {
    fold_mul(key as u64 ^ SEED0, (key >> 64) as u64 ^ SEED1)
}

/// Hash of a key of more than `INLINE` bytes.
#[inline(never)]
fn hash_long(word: &[u8]) -> u64 {
    debug_assert!(word.len() > INLINE);
    let mut h = SEED2 ^ word.len() as u64;
    let mut words = word.chunks_exact(8);
    for w in &mut words {
        h = fold_mul(h ^ u64::from_le_bytes(w.try_into().expect("8 bytes")), SEED3);
    }
    // The last 8 bytes (overlapping what came before: the length is hashed).
    let last = u64::from_le_bytes(word[word.len() - 8..].try_into().expect("8 bytes"));
    fold_mul(h ^ last ^ SEED0, SEED1)
}

/// The inline value of a key of at most `INLINE` bytes, read without a loop
/// or a copy: overlapping loads of its first and last bytes.
#[inline(always)]
fn inline_key(word: &[u8]) -> u128 {
    let len = word.len();
    debug_assert!(len <= INLINE);
    let (lo, hi) = if len >= 8 {
        let lo = u64::from_le_bytes(word[..8].try_into().expect("8 bytes"));
        // Bytes 8.. of the word: the last 8 bytes, shifted down past those
        // that `lo` holds (by 8 * (16 - len) bits, 8 to 64).
        let last = u64::from_le_bytes(word[len - 8..].try_into().expect("8 bytes"));
        (lo, (last >> 8) >> (8 * (INLINE - len)))
    } else if len >= 4 {
        let first = u32::from_le_bytes(word[..4].try_into().expect("4 bytes"));
        let last = u32::from_le_bytes(word[len - 4..].try_into().expect("4 bytes"));
        (u64::from(first) | u64::from(last) << (8 * (len - 4)), 0)
    } else if len > 0 {
        let (a, b, c) = (word[0], word[len / 2], word[len - 1]);
        (
            u64::from(a) | u64::from(b) << (8 * (len / 2)) | u64::from(c) << (8 * (len - 1)),
            0,
        )
    } else {
        (0, 0)
    };
    u128::from(lo) | u128::from(hi) << 64 | (len as u128) << 120
}

/// Hash of any key.
#[inline]
fn hash_word(word: &[u8]) -> u64 {
    if word.len() <= INLINE {
        hash_inline(inline_key(word))
    } else {
        hash_long(word)
    }
}

/// Number of shards of a table (a power of two): the top `SHARD_BITS` bits of a
/// key's hash pick its shard (its low bits, the slot); merges and decoding run
/// shard by shard in parallel.
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// Tables smaller than this are merged on one thread.
const PARALLEL_MIN: usize = 1 << 14;

/// Encoded tables smaller than this are decoded on one thread.
const PARALLEL_MIN_BYTES: usize = 1 << 17;

#[inline(always)]
fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARD_BITS)) as usize
}

/// One entry of an open-addressing table: 24 bytes, all zero when empty.
#[derive(Debug, Clone, Copy, Default, bytemuck::Zeroable)]
#[repr(C)]
struct Slot {
    /// An inline key: its inline value, little-endian. A long key: its offset
    /// in the arena (8 bytes), its length (7 bytes), then `LONG`.
    key: [u8; 16],
    /// Zero for an empty slot (no stored word has a count of zero).
    count: u64,
}

impl Slot {
    #[inline(always)]
    fn is_long(&self) -> bool {
        self.key[15] == LONG
    }

    /// Where a long key's bytes lie in the arena.
    #[inline]
    fn long_range(&self) -> Range<usize> {
        let v = u128::from_le_bytes(self.key);
        let start = v as u64 as usize;
        start..start + ((v >> 64) as u64 & 0x00FF_FFFF_FFFF_FFFF) as usize
    }
}

/// The slots of a table, all empty (zero) at first. Small ones come from the
/// global allocator. Large ones (2 MiB or more) get an anonymous mapping of
/// their own, aligned to 2 MiB, with transparent huge pages asked for before
/// they are first written:
/// - fresh memory is mapped 2 MiB at a time instead of 4 KiB (one fault
///   instead of 512 when a table is built), and lookups spread over tens of
///   MB rarely miss the TLB: counting 300 MB of text went about 10 % faster;
/// - the kernel hands the pages out zeroed, so they are not written twice;
/// - a dropped table goes back to the system at once, whatever the
///   allocator's thresholds, so a worker's table is gone before the
///   coordinator builds the merged one.
struct Slots {
    ptr: NonNull<Slot>,
    len: usize,
    /// The mapping that holds a large table's slots, from `ptr` on.
    mapping: Option<MmapMut>,
}

// SAFETY: `Slots` owns its memory, as a `Box<[Slot]>` would.
unsafe impl Send for Slots {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Slots {}

/// Huge-page size on x86-64 and arm64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

impl Slots {
    /// `len` empty slots.
    fn zeroed(len: usize) -> Slots {
        let size = len
            .checked_mul(std::mem::size_of::<Slot>())
            .expect("table too large");
        if size == 0 {
            return Slots::default();
        }
        if size >= HUGE_PAGE {
            return Self::mapped(size, len);
        }
        let layout = Self::layout(len);
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr.cast::<Slot>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        Slots {
            ptr,
            len,
            mapping: None,
        }
    }

    /// The heap allocation of `len` slots (less than `HUGE_PAGE` bytes).
    fn layout(len: usize) -> Layout {
        Layout::array::<Slot>(len).expect("table too large")
    }

    /// `len` empty slots (`size` bytes) in a mapping of their own, starting
    /// on a huge-page boundary.
    fn mapped(size: usize, len: usize) -> Slots {
        let Some(mut mapping) = size
            .checked_add(HUGE_PAGE)
            .and_then(|whole| MmapMut::map_anon(whole).ok())
        else {
            std::alloc::handle_alloc_error(Layout::from_size_align(size, HUGE_PAGE).expect("table too large"))
        };
        // (Not `align_offset`, which may fail to align.)
        let offset = mapping.as_ptr().addr().wrapping_neg() % HUGE_PAGE;
        // Only a hint; without huge pages the slots work the same.
        #[cfg(target_os = "linux")]
        let _ = mapping.advise_range(memmap2::Advice::HugePage, offset, size);
        // SAFETY: `offset` is below `HUGE_PAGE`, so `offset + size` bytes lie
        // in the mapping; its bytes are zero, which is an empty `Slot`, and
        // the address is aligned (to 2 MiB, more than a `Slot` needs).
        let ptr = unsafe { NonNull::new_unchecked(mapping.as_mut_ptr().add(offset).cast::<Slot>()) };
        Slots {
            ptr,
            len,
            mapping: Some(mapping),
        }
    }

    fn as_slice(&self) -> &[Slot] {
        // SAFETY: `ptr` holds `len` initialized slots (zeroed, and `Slot` is
        // `Zeroable`, or written since), or is dangling and `len` is zero.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [Slot] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            ptr: NonNull::dangling(),
            len: 0,
            mapping: None,
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // A mapping unmaps itself.
        if self.len > 0 && self.mapping.is_none() {
            // SAFETY: allocated by `zeroed` with this very layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), Self::layout(self.len)) };
        }
    }
}

impl Clone for Slots {
    fn clone(&self) -> Self {
        let mut copy = Slots::zeroed(self.as_slice().len());
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        copy
    }
}

/// Fewest slots of a shard that holds anything.
const MIN_SLOTS: usize = 16;

/// Most occupied slots for `capacity` slots.
#[inline]
fn limit_of(capacity: usize) -> usize {
    capacity / 4 * 3
}

/// Asks the CPU to start loading the cache lines of `slots[i]`, if any.
#[inline(always)]
fn prefetch(slots: &[Slot], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = slots.as_ptr().wrapping_add(i) as *const i8;
        // A slot may straddle two cache lines.
        let last = first.wrapping_add(std::mem::size_of::<Slot>() - 1);
        // SAFETY: a prefetch is only a hint: it never faults, whatever the
        // address (computed here without dereferencing anything), and SSE is
        // part of the x86_64 baseline.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slots, i);
}

/// The bytes of the key of an occupied slot of a shard whose long keys are in `arena`.
#[inline]
fn key_of<'a>(slot: &'a Slot, arena: &'a [u8]) -> &'a [u8] {
    if slot.is_long() {
        &arena[slot.long_range()]
    } else {
        &slot.key[..slot.key[15] as usize]
    }
}

/// The hash of the key of an occupied slot of a shard whose long keys are in `arena`.
#[inline]
fn hash_of(slot: &Slot, arena: &[u8]) -> u64 {
    if slot.is_long() {
        hash_long(&arena[slot.long_range()])
    } else {
        hash_inline(u128::from_le_bytes(slot.key))
    }
}

/// Stores a slot whose key (of hash `hash`) is not in `slots`, where there is
/// room (`slots` is a power of two long and not full).
#[inline]
fn put_new(slots: &mut [Slot], slot: Slot, hash: u64) {
    let mask = slots.len() - 1;
    let mut i = hash as usize & mask;
    while slots[i].count != 0 {
        i = (i + 1) & mask;
    }
    slots[i] = slot;
}

/// A shard with no room for one more word: the table grows, then the
/// operation goes on.
#[derive(Debug)]
struct Full;

/// One shard of a table, to read: its region of the table's slots (linear
/// probing over a power of two of them, at most 3/4 occupied) and the bytes
/// of its long keys.
#[derive(Clone, Copy)]
struct ShardRef<'a> {
    slots: &'a [Slot],
    len: usize,
    arena: &'a [u8],
}

impl<'a> ShardRef<'a> {
    /// Occupied slots.
    fn occupied(self) -> impl Iterator<Item = &'a Slot> {
        self.slots.iter().filter(|s| s.count != 0)
    }

    /// Count of `word`, whose hash is `hash` (zero if absent).
    fn get(self, word: &[u8], hash: u64) -> u64 {
        if self.slots.is_empty() {
            return 0;
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.count == 0 {
                return 0;
            }
            if key_of(slot, self.arena) == word {
                return slot.count;
            }
            i = (i + 1) & mask;
        }
    }

    /// Appends this shard in its wire form (see [`WordCounts`]'s `Serialize`):
    /// the number of words, then each word's length, bytes and count.
    fn encode(self, out: &mut Vec<u8>) {
        // At most 10 bytes for each number, 16 for an inline word.
        out.reserve(10 + self.len * 36);
        put_varint(out, self.len as u64);
        for slot in self.occupied() {
            if slot.is_long() {
                let word = &self.arena[slot.long_range()];
                put_varint(out, word.len() as u64);
                out.extend_from_slice(word);
            } else {
                // All 16 bytes, then cut back to the word: a fixed-size copy
                // is cheaper than a call to copy a few bytes.
                let len = usize::from(slot.key[15]);
                // At most INLINE (15): its LEB128 form is the byte itself.
                out.push(len as u8);
                out.extend_from_slice(&slot.key);
                out.truncate(out.len() - 16 + len);
            }
            put_varint(out, slot.count);
        }
    }
}

/// One shard of a table, to add to: as [`ShardRef`], with room for
/// [`limit_of`] its slots. Adding a word it has no room for fails with
/// [`Full`] and changes nothing.
struct ShardMut<'a> {
    slots: &'a mut [Slot],
    len: &'a mut usize,
    arena: &'a mut Vec<u8>,
}

impl ShardMut<'_> {
    /// Stores a slot whose key is not in the shard, if there is room.
    #[inline]
    fn insert_new(&mut self, slot: Slot, hash: u64) -> Result<(), Full> {
        if *self.len >= limit_of(self.slots.len()) {
            return Err(Full);
        }
        put_new(self.slots, slot, hash);
        *self.len += 1;
        Ok(())
    }

    /// Adds `n` (not zero) to the count of the inline key of inline value
    /// `key` and hash `hash`.
    #[inline(always)]
    fn add_inline(&mut self, key: u128, hash: u64, n: u64) -> Result<(), Full> {
        if self.slots.is_empty() {
            return Err(Full);
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.count == 0 {
                break;
            }
            if u128::from_le_bytes(slot.key) == key {
                // Saturating: a worker gone wrong may send any count.
                slot.count = slot.count.saturating_add(n);
                return Ok(());
            }
            i = (i + 1) & mask;
        }
        if *self.len >= limit_of(self.slots.len()) {
            return Err(Full);
        }
        self.slots[i] = Slot {
            key: key.to_le_bytes(),
            count: n,
        };
        *self.len += 1;
        Ok(())
    }

    /// Adds `n` (not zero) to the count of the long key `word` of hash `hash`.
    #[inline(never)]
    fn add_long(&mut self, word: &[u8], hash: u64, n: u64) -> Result<(), Full> {
        if !self.slots.is_empty() {
            let mask = self.slots.len() - 1;
            let mut i = hash as usize & mask;
            loop {
                let slot = &self.slots[i];
                if slot.count == 0 {
                    break;
                }
                if slot.is_long()
                    && slot.long_range().len() == word.len()
                    && self.arena[slot.long_range()] == *word
                {
                    self.slots[i].count = self.slots[i].count.saturating_add(n);
                    return Ok(());
                }
                i = (i + 1) & mask;
            }
        }
        let start = self.arena.len() as u128;
        let key = start | (word.len() as u128) << 64 | u128::from(LONG) << 120;
        self.insert_new(
            Slot {
                key: key.to_le_bytes(),
                count: n,
            },
            hash,
        )?;
        self.arena.extend_from_slice(word);
        Ok(())
    }

    /// Adds `n` (not zero) to the count of `word`, whose hash is `hash`.
    #[inline]
    fn add_hashed(&mut self, word: &[u8], hash: u64, n: u64) -> Result<(), Full> {
        if word.len() <= INLINE {
            self.add_inline(inline_key(word), hash, n)
        } else {
            self.add_long(word, hash, n)
        }
    }

    /// Adds the counts of the occupied slots of `other` (the same shard of
    /// another table) from slot `from` on. On [`Full`], the slot to go on
    /// from once the table has grown.
    fn merge_from(&mut self, other: ShardRef<'_>, from: usize) -> Result<(), usize> {
        // Slots taken 64 at a time: the occupied ones are picked without a
        // branch, their slots here prefetched, then they are added.
        let mut picked = [0u8; 64];
        let mut hashes = [0u64; 64];
        for (b, block) in other.slots[from..].chunks(64).enumerate() {
            let base = from + b * 64;
            let mut n = 0;
            for (k, slot) in block.iter().enumerate() {
                picked[n] = k as u8;
                n += usize::from(slot.count != 0);
            }
            let mask = self.slots.len().wrapping_sub(1);
            for (&k, hash) in picked[..n].iter().zip(&mut hashes) {
                *hash = hash_of(&block[k as usize], other.arena);
                prefetch(self.slots, *hash as usize & mask);
            }
            for (&k, &hash) in picked[..n].iter().zip(&hashes) {
                let slot = &block[k as usize];
                let added = if slot.is_long() {
                    self.add_long(&other.arena[slot.long_range()], hash, slot.count)
                } else {
                    self.add_inline(u128::from_le_bytes(slot.key), hash, slot.count)
                };
                if added.is_err() {
                    return Err(base + k as usize);
                }
            }
        }
        Ok(())
    }
}

/// One shard's part of a table's wire form: its number of words, then each
/// word's length, bytes and count, numbers in LEB128.
struct Section<'a> {
    index: usize,
    words: usize,
    /// The words.
    bytes: &'a [u8],
}

impl<'a> Section<'a> {
    /// Reads the number of words of shard `index`'s section.
    fn open(index: usize, mut bytes: &'a [u8]) -> Result<Self, String> {
        let words = take_varint(&mut bytes).map_err(|what| format!("shard {index}: {what}"))?;
        // Every word takes at least two bytes (its length and its count), so a
        // lying word count cannot make a decoder reserve more than the input
        // (and slots are allocated only once every word has been read).
        if words > bytes.len() as u64 / 2 {
            return Err(format!(
                "shard {index}: {words} words cannot fit in {} bytes",
                bytes.len()
            ));
        }
        Ok(Section {
            index,
            words: words as usize,
            bytes,
        })
    }

    /// Calls `each(word, count)` on each word, in order; fails on bytes that
    /// do not parse, after `each` saw the words before them.
    fn parse(&self, mut each: impl FnMut(&'a [u8], u64)) -> Result<(), String> {
        let fail = |what: &str| format!("shard {}: {what}", self.index);
        let mut bytes = self.bytes;
        for _ in 0..self.words {
            let len = take_varint(&mut bytes).map_err(fail)?;
            let Some((word, rest)) = usize::try_from(len)
                .ok()
                .and_then(|len| bytes.split_at_checked(len))
            else {
                return Err(fail("a word runs past the end"));
            };
            bytes = rest;
            each(word, take_varint(&mut bytes).map_err(fail)?);
        }
        if !bytes.is_empty() {
            return Err(fail(&format!("{} bytes after the last word", bytes.len())));
        }
        Ok(())
    }

    /// The hashes of the words whose count is not zero, in order, for
    /// [`add_checked`](Self::add_checked); an error if the bytes do not parse
    /// or a word belongs to another shard.
    fn check(&self) -> Result<Vec<u64>, String> {
        let mut hashes = Vec::with_capacity(self.words);
        let mut misfiled = None;
        self.parse(|word, n| {
            let hash = hash_word(word);
            if shard_of(hash) != self.index {
                misfiled.get_or_insert(shard_of(hash));
            } else if n != 0 {
                hashes.push(hash);
            }
        })?;
        match misfiled {
            Some(shard) => Err(format!("shard {}: holds a word of shard {shard}", self.index)),
            None => Ok(hashes),
        }
    }

    /// Checks and adds every word of the section to `shard`, which has room
    /// for [`words`](Self::words) more words; fails at the first word that
    /// does not parse or belongs to another shard, the words before it added.
    fn add_all(&self, shard: &mut ShardMut<'_>) -> Result<(), String> {
        let mut wrong = None;
        self.parse(|word, n| {
            if wrong.is_some() {
                return;
            }
            let hash = hash_word(word);
            if shard_of(hash) != self.index {
                wrong = Some(format!(
                    "shard {}: holds a word of shard {}",
                    self.index,
                    shard_of(hash)
                ));
            } else if n != 0 && shard.add_hashed(word, hash, n).is_err() {
                // Not with the room made for every word the section declares.
                wrong = Some(format!("shard {}: more words than it declares", self.index));
            }
        })?;
        wrong.map_or(Ok(()), Err)
    }

    /// Adds the words of a section that [`check`](Self::check) passed, with
    /// the hashes it returned, from word `from` on (counting words whose
    /// count is not zero). On [`Full`], the word to go on from once the table
    /// has grown.
    fn add_checked(&self, shard: &mut ShardMut<'_>, hashes: &[u64], from: usize) -> Result<(), usize> {
        let (mut i, mut stopped) = (0, None);
        // Checked: parsing cannot fail, and there is a hash for each word.
        let _ = self.parse(|word, n| {
            if n == 0 || stopped.is_some() {
                return;
            }
            i += 1;
            if i > from
                && let Some(&hash) = hashes.get(i - 1)
                && shard.add_hashed(word, hash, n).is_err()
            {
                stopped = Some(i - 1);
            }
        });
        stopped.map_or(Ok(()), Err)
    }
}

/// Appends `v` in LEB128: 7 bits a byte, low bits first, the high bit set on
/// every byte but the last.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 `u64` from the front of `bytes` and moves past it.
fn take_varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = bytes.split_first() else {
            return Err("truncated");
        };
        *bytes = rest;
        // The tenth byte holds the 64th bit only.
        if shift == 63 && b > 1 {
            return Err("a number over 64 bits");
        }
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("a number over 64 bits")
}

/// Zero-padding masks of inline keys: `KEY_MASK[len]` keeps the first `len` bytes.
static KEY_MASK: [u128; INLINE + 1] = {
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
fn inline_value(lo: u64, hi: u64, len: usize) -> u128 {
    (u128::from(hi) << 64 | u128::from(lo)) & KEY_MASK[len] | (len as u128) << 120
}

/// Inline keys found by a scan, waiting to be counted: their slots are
/// prefetched when they are pushed, so that the cache misses of a batch
/// overlap instead of following one another.
struct Batch {
    keys: [u128; BATCH],
    hashes: [u64; BATCH],
    len: usize,
}

/// Keys in a [`Batch`].
const BATCH: usize = 64;

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
    fn push(&mut self, table: &mut WordCounts, key: u128) {
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
    fn flush(&mut self, table: &mut WordCounts) {
        let n = self.len.min(BATCH);
        table.add_inlines(&self.keys[..n], &self.hashes[..n]);
        self.len = 0;
    }
}

/// Adds `n` (not zero) occurrences of `word`.
#[inline]
fn add_word(table: &mut WordCounts, word: &[u8], n: u64) {
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

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Top bit of each byte of `x` that is one of the six ASCII whitespace bytes.
#[inline(always)]
fn swar_space(x: u64) -> u64 {
    let low7 = x & !HI;
    let z = x ^ (0x20 * LO);
    // A byte of `z` is zero (the byte is a space) iff neither its low 7 bits
    // nor its top bit are set. No carry crosses bytes: 0x7F + 0x7F < 0x100.
    let space = !(((z & !HI) + !HI) | z) & HI;
    // 0x09 <= byte <= 0x0D, for bytes below 0x80.
    let control = (low7 + (0x80 - 0x09) * LO) & !(low7 + (0x80 - 0x0E) * LO) & !x & HI;
    space | control
}

/// For [`SplitMode::Words`]: (ASCII bytes that are not alphanumeric, bytes
/// >= 0x80, `x` with its ASCII uppercase letters lowercased).
#[inline(always)]
fn swar_word(x: u64) -> (u64, u64, u64) {
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
fn movemask(m: u64) -> u32 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

/// The 16 bytes at `i`, as two little-endian words.
#[inline(always)]
fn load16(buf: &[u8], i: usize) -> (u64, u64) {
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
fn scan_whitespace(table: &mut WordCounts, batch: &mut Batch, buf: &[u8], mut i: usize) -> usize {
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
                .position(|&b| IS_SPACE[b as usize])
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

/// Counts the words of a run of `buf` that holds no ASCII separator (in Words
/// mode) but may hold bytes >= 0x80 or uppercase letters.
fn count_run(table: &mut WordCounts, run: &[u8], scratch: &mut Vec<u8>) {
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
fn count_non_ascii_run(table: &mut WordCounts, run: &[u8], scratch: &mut Vec<u8>) {
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

/// Counts the words ([`SplitMode::Words`]) of `buf` starting at `i`, while 16
/// bytes can be read at the current position; returns where it stopped (a
/// word start or a separator, at most 15 bytes before the end).
fn scan_words(
    table: &mut WordCounts,
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

/// Word -> count table, the per-worker partial of word count.
///
/// A hash table of its own: 64 shards (picked by the top bits of a key's hash)
/// of open addressing with linear probing, laid side by side in one block of
/// slots (huge pages asked for when large); each 24-byte slot holds a count and
/// the key itself with its length when it has at most 15 bytes (longer keys
/// live in the shard's byte arena), so that a lookup usually touches one cache
/// line and counting allocates nothing per word. The tokenizers read 16 bytes
/// at a time and prefetch the slots of the next 64 words while they count.
/// Merges and decoding work shard by shard, in parallel for large tables.
///
/// The hash is not keyed, and the shards grow together: text crafted so that
/// many of its words fall in one shard makes every shard as large as that one
/// (and its probes long), and a table decoded from such a partial is refused
/// (see [`WordCounts::merge_encoded`]). Hashing spreads the words of ordinary
/// text evenly.
///
/// Invariant: no word has a count of zero.
#[derive(Clone, Default)]
pub struct WordCounts {
    /// `SHARDS` regions of `1 << region_bits` slots each, region `k` for
    /// shard `k`; none before the first word. All shards grow together.
    slots: Slots,
    region_bits: u32,
    /// Words in each shard: empty, or `SHARDS` numbers.
    lens: Vec<usize>,
    /// The bytes of each shard's long keys, one after the other: as `lens`.
    arenas: Vec<Vec<u8>>,
}

impl WordCounts {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with room for `capacity` distinct words.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut table = Self::default();
        if capacity > 0 {
            // Shards fill unevenly: some slack over an even share.
            table.reserve(capacity / SHARDS + capacity / SHARDS / 8 + 1);
        }
        table
    }

    /// Slots of each shard: zero before the first word.
    #[inline(always)]
    fn region_len(&self) -> usize {
        if self.lens.is_empty() {
            0
        } else {
            1 << self.region_bits
        }
    }

    /// Where the probe for a key of hash `hash` starts in `slots`.
    #[inline(always)]
    fn slot_of(&self, hash: u64) -> usize {
        shard_of(hash) << self.region_bits | hash as usize & self.region_len().wrapping_sub(1)
    }

    fn shard(&self, k: usize) -> ShardRef<'_> {
        let region = self.region_len();
        ShardRef {
            slots: &self.slots.as_slice()[k * region..(k + 1) * region],
            len: self.lens.get(k).copied().unwrap_or(0),
            arena: self.arenas.get(k).map_or(&[], Vec::as_slice),
        }
    }

    /// Shard `k`; the table must have its shards (see [`Self::shards`]).
    #[inline(always)]
    fn shard_mut(&mut self, k: usize) -> ShardMut<'_> {
        let region = self.region_len();
        ShardMut {
            slots: &mut self.slots.as_mut_slice()[k * region..(k + 1) * region],
            len: &mut self.lens[k],
            arena: &mut self.arenas[k],
        }
    }

    /// The shards, none before the first word.
    fn shards(&self) -> impl Iterator<Item = ShardRef<'_>> + '_ {
        (0..self.lens.len()).map(|k| self.shard(k))
    }

    fn shards_mut(&mut self) -> impl Iterator<Item = ShardMut<'_>> + '_ {
        let region = self.region_len().max(1);
        (self
            .slots
            .as_mut_slice()
            .chunks_mut(region)
            .zip(&mut self.lens)
            .zip(&mut self.arenas))
        .map(|((slots, len), arena)| ShardMut { slots, len, arena })
    }

    fn par_shards_mut(&mut self) -> impl IndexedParallelIterator<Item = ShardMut<'_>> + '_ {
        let region = self.region_len().max(1);
        (self.slots.as_mut_slice().par_chunks_mut(region))
            .zip(&mut self.lens)
            .zip(&mut self.arenas)
            .map(|((slots, len), arena)| ShardMut { slots, len, arena })
    }

    /// Makes the shards' regions `region` slots long (a power of two, at
    /// least what they hold), moving every word.
    #[cold]
    #[inline(never)]
    fn resize(&mut self, region: usize) {
        let mut slots = Slots::zeroed(SHARDS * region);
        if self.lens.is_empty() {
            self.lens = vec![0; SHARDS];
            self.arenas = vec![Vec::new(); SHARDS];
        } else {
            let (old, old_region, arenas) = (self.slots.as_slice(), self.region_len(), &self.arenas);
            let rehash = |(k, new): (usize, &mut [Slot])| {
                for slot in old[k * old_region..(k + 1) * old_region]
                    .iter()
                    .filter(|s| s.count != 0)
                {
                    put_new(new, *slot, hash_of(slot, &arenas[k]));
                }
            };
            if self.distinct() >= PARALLEL_MIN {
                slots
                    .as_mut_slice()
                    .par_chunks_mut(region)
                    .enumerate()
                    .for_each(rehash);
            } else {
                slots
                    .as_mut_slice()
                    .chunks_mut(region)
                    .enumerate()
                    .for_each(rehash);
            }
        }
        self.slots = slots;
        self.region_bits = region.trailing_zeros();
    }

    /// Doubles every shard's slots (or makes the shards).
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.resize((self.region_len() * 2).max(MIN_SLOTS));
    }

    /// Makes room for `words` words in every shard (and makes the shards).
    fn reserve(&mut self, words: usize) {
        let mut region = MIN_SLOTS;
        while limit_of(region) < words {
            region *= 2;
        }
        if self.lens.is_empty() || region > self.region_len() {
            self.resize(region);
        }
    }

    /// Adds one occurrence of each inline key of inline value `keys[i]` and
    /// hash `hashes[i]`.
    #[inline(always)]
    fn add_inlines(&mut self, keys: &[u128], hashes: &[u64]) {
        let mut done = 0;
        while done < keys.len() {
            // The slots looked up once for the batch, not once a word.
            let bits = self.region_bits;
            let slots = self.slots.as_mut_slice();
            for (&key, &hash) in keys[done..].iter().zip(&hashes[done..]) {
                let k = shard_of(hash);
                let mut shard = ShardMut {
                    slots: &mut slots[k << bits..(k + 1) << bits],
                    len: &mut self.lens[k],
                    arena: &mut self.arenas[k],
                };
                if shard.add_inline(key, hash, 1).is_err() {
                    break;
                }
                done += 1;
            }
            if done < keys.len() {
                self.grow();
            }
        }
    }

    /// Calls `add(k, shard k, from)` on every shard, in parallel if asked,
    /// starting with `from` 0. `add` adds words to the shard from position
    /// `from` of what it adds; when the shard is full, it returns the
    /// position to go on from, and the table grows before it is called again.
    fn add_per_shard(
        &mut self,
        parallel: bool,
        add: impl Fn(usize, &mut ShardMut<'_>, usize) -> Result<(), usize> + Sync,
    ) {
        let mut from = vec![Some(0); self.lens.len()];
        let step = |(k, (mut shard, from)): (usize, (ShardMut<'_>, &mut Option<usize>))| {
            if let Some(start) = *from {
                *from = add(k, &mut shard, start).err();
            }
        };
        loop {
            if parallel {
                self.par_shards_mut().zip(&mut from).enumerate().for_each(step);
            } else {
                self.shards_mut().zip(&mut from).enumerate().for_each(step);
            }
            if from.iter().all(Option::is_none) {
                return;
            }
            self.grow();
        }
    }

    /// A table made of the sections of its wire form (none, or one per
    /// shard). Each word is parsed, checked and added in one pass, with room
    /// made first for as many words as the sections declare; on an error the
    /// table is dropped. (Adding to a table that holds words already takes a
    /// checking pass first: see [`merge_encoded`](Self::merge_encoded).)
    fn decode<S: AsRef<[u8]> + Sync>(sections: &[S]) -> Result<WordCounts, String> {
        let mut table = WordCounts::default();
        if sections.is_empty() {
            return Ok(table);
        }
        let opened = open_sections(sections)?;
        table.reserve(opened.iter().map(|s| s.words).max().unwrap_or(0));
        let add = |(mut shard, section): (ShardMut<'_>, &Section<'_>)| section.add_all(&mut shard);
        if total_len(sections) >= PARALLEL_MIN_BYTES {
            (table.par_shards_mut().zip(&opened)).try_for_each(add)?;
        } else {
            table.shards_mut().zip(&opened).try_for_each(add)?;
        }
        Ok(table)
    }

    /// Adds checked sections (see [`check_sections`]), one per shard.
    fn add_sections(&mut self, sections: &[Section<'_>], hashes: &[Vec<u64>], parallel: bool) {
        self.add_per_shard(parallel, |k, shard, from| {
            sections[k].add_checked(shard, &hashes[k], from)
        });
    }

    /// Counts the words of `text` (a piece that starts and ends at word
    /// boundaries) and adds them.
    pub fn count(&mut self, mode: SplitMode, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        if self.lens.is_empty() {
            self.grow();
        }
        let table = self;
        // The bulk, then the last few bytes copied into a buffer padded with
        // spaces (a separator in both modes), so that the same scan can read
        // 16 bytes at every position.
        let mut tail = [b' '; 32];
        let mut batch = Batch::new();
        match mode {
            SplitMode::Words => {
                let mut scratch = Vec::new();
                let i = scan_words(table, &mut batch, text, 0, &mut scratch);
                tail[..text.len() - i].copy_from_slice(&text[i..]);
                scan_words(table, &mut batch, &tail, 0, &mut scratch);
            }
            SplitMode::Whitespace => {
                let i = scan_whitespace(table, &mut batch, text, 0);
                tail[..text.len() - i].copy_from_slice(&text[i..]);
                scan_whitespace(table, &mut batch, &tail, 0);
            }
        }
        batch.flush(table);
    }

    /// Adds `other` into `self` (associative and commutative).
    pub fn merge(&mut self, mut other: WordCounts) {
        // The smaller into the larger.
        if self.distinct() < other.distinct() {
            std::mem::swap(self, &mut other);
        }
        if other.is_empty() {
            return;
        }
        let parallel = other.distinct() >= PARALLEL_MIN;
        self.add_per_shard(parallel, |k, shard, from| shard.merge_from(other.shard(k), from));
    }

    /// Adds `n` occurrences of `word` (a no-op when `n` is zero).
    pub fn add(&mut self, word: &[u8], n: u64) {
        if n != 0 {
            if self.lens.is_empty() {
                self.grow();
            }
            add_word(self, word, n);
        }
    }

    /// Number of distinct words.
    pub fn distinct(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Whether no word has been counted.
    pub fn is_empty(&self) -> bool {
        self.distinct() == 0
    }

    /// Sum of the counts: the number of words counted.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }

    /// Count of `word` (zero if absent).
    pub fn get(&self, word: &[u8]) -> u64 {
        if self.lens.is_empty() {
            return 0;
        }
        let hash = hash_word(word);
        self.shard(shard_of(hash)).get(word, hash)
    }

    /// All (word, count) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.shards().flat_map(|shard| {
            shard
                .occupied()
                .map(move |slot| (key_of(slot, shard.arena), slot.count))
        })
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

/// Equal when they hold the same (word, count) pairs.
impl PartialEq for WordCounts {
    fn eq(&self, other: &Self) -> bool {
        self.distinct() == other.distinct() && self.iter().all(|(w, n)| other.get(w) == n)
    }
}

impl Eq for WordCounts {}

/// A map from words (escaped where not printable ASCII) to counts.
impl fmt::Debug for WordCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Word<'a>(&'a [u8]);
        impl fmt::Debug for Word<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "\"{}\"", self.0.escape_ascii())
            }
        }
        f.debug_map()
            .entries(self.iter().map(|(w, n)| (Word(w), n)))
            .finish()
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

/// Serialized shard by shard, so that a decoder can build the shards in
/// parallel without hashing every word to sort it first: a sequence of
/// byte strings, one per shard (none for an empty table). Shard `k` holds
/// the words whose hash falls in shard `k`: their number, then for each its
/// length, its bytes and its count, numbers in LEB128. The decoder checks
/// every word's shard, so a table from a worker gone wrong is rejected, not
/// misfiled.
impl Serialize for WordCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encode = |k: usize| {
            let mut section = Vec::new();
            self.shard(k).encode(&mut section);
            section
        };
        // Large tables' shards side by side: a worker's last encoding is on
        // the job's critical path, and by then other cores are often idle.
        let sections: Vec<Vec<u8>> = if self.distinct() >= PARALLEL_MIN {
            (0..self.lens.len()).into_par_iter().map(encode).collect()
        } else {
            (0..self.lens.len()).map(encode).collect()
        };
        let mut seq = serializer.serialize_seq(Some(sections.len()))?;
        for section in &sections {
            seq.serialize_element(&BytesRef(section))?;
        }
        seq.end()
    }
}

/// One shard's bytes: borrowed from the deserializer's input when it allows
/// it (postcard's `from_bytes` does), else copied.
struct SectionSeed;

impl<'de> DeserializeSeed<'de> for SectionSeed {
    type Value = Cow<'de, [u8]>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for SectionSeed {
    type Value = Cow<'de, [u8]>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }
    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_vec()))
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(Cow::Owned(bytes))
    }
}

/// The byte strings of a table's wire form: none, or one per shard.
fn read_sections<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<Cow<'de, [u8]>>, A::Error> {
    struct Expected;
    impl serde::de::Expected for Expected {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "no byte string or {SHARDS}, one per shard")
        }
    }
    let mut sections = Vec::with_capacity(SHARDS);
    while let Some(section) = seq.next_element_seed(SectionSeed)? {
        if sections.len() == SHARDS {
            return Err(serde::de::Error::invalid_length(SHARDS + 1, &Expected));
        }
        sections.push(section);
    }
    if !sections.is_empty() && sections.len() != SHARDS {
        return Err(serde::de::Error::invalid_length(sections.len(), &Expected));
    }
    Ok(sections)
}

/// Total length of a table's sections.
fn total_len<S: AsRef<[u8]>>(sections: &[S]) -> usize {
    sections.iter().map(|s| s.as_ref().len()).sum()
}

/// Most words a shard may hold over twice the mean of a table's shards.
const UNEVEN_SLACK: usize = 1024;

/// The sections of a table's wire form (one per shard), each read through
/// and checked, with the hashes of their words ([`Section::check`]), before
/// anything is allocated for them. A table far more uneven than hashing makes
/// one (a shard with over twice the mean and [`UNEVEN_SLACK`] more) is refused:
/// every shard of a table has as many slots as its largest, so such a table
/// would cost up to 64 times its size.
fn check_sections<S: AsRef<[u8]> + Sync>(
    sections: &[S],
) -> Result<(Vec<Section<'_>>, Vec<Vec<u64>>), String> {
    let opened = open_sections(sections)?;
    let hashes: Vec<Vec<u64>> = if total_len(sections) >= PARALLEL_MIN_BYTES {
        opened.par_iter().map(Section::check).collect::<Result<_, _>>()?
    } else {
        opened.iter().map(Section::check).collect::<Result<_, _>>()?
    };
    Ok((opened, hashes))
}

/// The sections of a table's wire form (one per shard), opened: the number
/// of words each declares is read and checked against its bytes and, before
/// anything is allocated for them, against the others' (see
/// [`check_sections`]).
fn open_sections<S: AsRef<[u8]>>(sections: &[S]) -> Result<Vec<Section<'_>>, String> {
    let opened: Vec<Section<'_>> = (sections.iter().enumerate())
        .map(|(k, s)| Section::open(k, s.as_ref()))
        .collect::<Result<_, _>>()?;
    let words: usize = opened.iter().map(|s| s.words).sum();
    let most = words / SHARDS * 2 + UNEVEN_SLACK;
    if let Some(shard) = opened.iter().find(|s| s.words > most) {
        return Err(format!(
            "shard {}: {} of the table's {words} words, far more than hashing puts in one shard",
            shard.index, shard.words
        ));
    }
    Ok(opened)
}

/// Reads the shards written by `Serialize`, in parallel when they are large.
impl<'de> Deserialize<'de> for WordCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WordCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a word-count table: {SHARDS} byte strings, or none")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<WordCounts, A::Error> {
                WordCounts::decode(&read_sections(seq)?).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

impl WordCounts {
    /// Adds a table in its serialized form into this one, as it decodes it:
    /// the same result as deserializing it and calling
    /// [`merge`](Self::merge), without building the table only to merge and
    /// drop it. On an error, `self` is unchanged: every shard is checked
    /// before any is added. A table whose words are far more uneven across
    /// shards than hashing makes them (over twice the mean and 1,024 more in
    /// one shard) is an error: no worker counting ordinary text sends one.
    pub fn merge_encoded<'de, D: Deserializer<'de>>(&mut self, deserializer: D) -> Result<(), D::Error> {
        struct V<'a>(&'a mut WordCounts);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a word-count table: {SHARDS} byte strings, or none")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
                let sections = read_sections(seq)?;
                let table = self.0;
                if table.is_empty() {
                    *table = WordCounts::decode(&sections).map_err(serde::de::Error::custom)?;
                    return Ok(());
                }
                if sections.is_empty() {
                    return Ok(());
                }
                let (opened, hashes) = check_sections(&sections).map_err(serde::de::Error::custom)?;
                table.add_sections(&opened, &hashes, total_len(&sections) >= PARALLEL_MIN_BYTES);
                Ok(())
            }
        }
        deserializer.deserialize_seq(V(self))
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
        // One byte string per shard; "abc" is in its shard's, the others
        // hold no word.
        let single = {
            let mut w = WordCounts::new();
            w.add(b"abc", 2);
            w
        };
        let home = shard_of(hash_word(b"abc"));
        let mut expected = vec![SHARDS as u8];
        for shard in 0..SHARDS {
            if shard == home {
                expected.extend([6, 1, 3, b'a', b'b', b'c', 2]);
            } else {
                expected.extend([1, 0]);
            }
        }
        assert_eq!(postcard::to_allocvec(&single).unwrap(), expected);
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

        /// A partial from a worker gone wrong: a sound table's bytes with some
        /// changed. Decoding never panics, and a merge that fails changes
        /// nothing.
        #[test]
        fn corrupted_tables_are_rejected_or_decoded_never_half_merged(
            text in mixed_text(),
            other in mixed_text(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let into = counts(SplitMode::Words, &text);
            let mut bytes = postcard::to_allocvec(&counts(SplitMode::Words, &other)).unwrap();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let decoded = postcard::from_bytes::<WordCounts>(&bytes);
            let mut merged = into.clone();
            let result = merged.merge_encoded(&mut postcard::Deserializer::from_bytes(&bytes));
            match (decoded, result) {
                (Ok(table), Ok(())) => {
                    let mut want = into.clone();
                    want.merge(table);
                    prop_assert_eq!(merged, want);
                }
                (Err(_), Err(_)) => prop_assert_eq!(merged, into),
                (decoded, result) => prop_assert!(false, "decode {:?}, merge {:?}", decoded.is_ok(), result),
            }
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

    // ---- The table itself, against a BTreeMap model. ----

    type Model = BTreeMap<Vec<u8>, u64>;

    /// Keys of every kind: empty, short, exactly `INLINE` and `INLINE + 1`
    /// bytes, long, with zero bytes and trailing zeros (which zero-padding must
    /// not confuse with shorter keys), and non-UTF-8 bytes.
    fn any_key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0u8, 0xff]), 0..4),
            prop::collection::vec(any::<u8>(), 0..=INLINE),
            prop::collection::vec(prop::sample::select(vec![b'x', 0u8]), INLINE - 1..=INLINE + 2),
            prop::collection::vec(any::<u8>(), INLINE + 1..64),
        ]
    }

    /// `n` distinct keys of lengths 1 to 40: enough of them force many
    /// growths and fill every shard.
    fn many_keys(n: usize, salt: u8) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let base = format!("{i:x}-{salt}");
                let len = 1 + (i * 7 + salt as usize) % 40;
                let mut key: Vec<u8> = base.bytes().cycle().take(len.max(base.len())).collect();
                if i % 5 == 0 {
                    key.push(0);
                }
                key
            })
            .collect()
    }

    fn table_of(adds: &[(Vec<u8>, u64)]) -> (WordCounts, Model) {
        let mut table = WordCounts::new();
        let mut model = Model::new();
        for (key, n) in adds {
            table.add(key, *n);
            if *n != 0 {
                *model.entry(key.clone()).or_insert(0) += n;
            }
        }
        (table, model)
    }

    fn check_table(table: &WordCounts, model: &Model) -> Result<(), TestCaseError> {
        prop_assert_eq!(&table.to_btree(), model);
        prop_assert_eq!(table.distinct(), model.len());
        prop_assert_eq!(table.is_empty(), model.is_empty());
        prop_assert_eq!(table.total(), model.values().sum::<u64>());
        for (key, &n) in model {
            prop_assert_eq!(table.get(key), n, "get {:?}", key);
            let mut longer = key.clone();
            longer.push(0);
            prop_assert_eq!(table.get(&longer), model.get(&longer).copied().unwrap_or(0));
        }
        prop_assert_eq!(table.iter().count(), model.len());
        Ok(())
    }

    fn round_trips(table: &WordCounts) -> Result<(), TestCaseError> {
        let bytes = postcard::to_allocvec(table).unwrap();
        let back: WordCounts = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, table);
        let json = serde_json::to_string(table).unwrap();
        let back: WordCounts = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, table);
        // A reader: nothing can be borrowed from the input.
        let back: WordCounts = serde_json::from_reader(json.as_bytes()).unwrap();
        prop_assert_eq!(&back, table);
        Ok(())
    }

    #[test]
    fn growth_and_parallel_paths_match_the_model() {
        // Over PARALLEL_MIN distinct words: parallel merges and decoding.
        let keys = many_keys(3 * PARALLEL_MIN, 1);
        let adds: Vec<(Vec<u8>, u64)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), 1 + i as u64 % 3))
            .collect();
        let (a, model_a) = table_of(&adds);
        check_table(&a, &model_a).unwrap();
        // Half the keys shared, half new, with long ones among both.
        let other = many_keys(3 * PARALLEL_MIN, 2);
        let adds_b: Vec<(Vec<u8>, u64)> = keys[..PARALLEL_MIN * 2]
            .iter()
            .chain(&other[..PARALLEL_MIN * 2])
            .map(|k| (k.clone(), 5))
            .collect();
        let (b, model_b) = table_of(&adds_b);
        let mut model = model_a.clone();
        for (k, n) in &model_b {
            *model.entry(k.clone()).or_insert(0) += n;
        }
        let mut ab = a.clone();
        ab.merge(b.clone());
        check_table(&ab, &model).unwrap();
        let mut ba = b.clone();
        ba.merge(a.clone());
        assert_eq!(ab, ba);
        round_trips(&ab).unwrap();
        let sized = WordCounts::with_capacity(model.len());
        let mut sized_ab = sized.clone();
        sized_ab.merge(a);
        sized_ab.merge(b);
        assert_eq!(sized_ab, ab);
        // Every shard is used, and evenly: the hash's top bits are mixed.
        let per_shard = ab.lens.clone();
        let mean = ab.distinct() / SHARDS;
        assert!(
            per_shard.iter().all(|&n| n > mean * 3 / 4 && n < mean * 5 / 4),
            "{per_shard:?}"
        );
    }

    #[test]
    fn shards_that_fill_up_in_a_merge_grow_and_go_on() {
        // `b`'s words are all new to `a`: every shard of `a` fills up in the
        // middle of the merge, the table grows, and each shard goes on where
        // it stopped. One thread, then in parallel, then past 2 MiB of slots
        // (a mapping of its own).
        for size in [2000, 3 * PARALLEL_MIN, 120_000] {
            let adds = |salt, n| {
                many_keys(size, salt)
                    .into_iter()
                    .map(|k| (k, n))
                    .collect::<Vec<_>>()
            };
            let (a, model_a) = table_of(&adds(6, 1));
            let (b, model_b) = table_of(&adds(7, 2));
            let mut model = model_a;
            model.extend(model_b);
            assert_eq!(model.len(), 2 * size, "disjoint keys");
            let mut ab = a.clone();
            ab.merge(b.clone());
            check_table(&ab, &model).unwrap();
            assert!(
                ab.region_len() > a.region_len(),
                "{size}: the merge grew the table"
            );
            let mut encoded = a.clone();
            merge_encoded(&mut encoded, &postcard::to_allocvec(&b).unwrap()).unwrap();
            check_table(&encoded, &model).unwrap();
        }
        let large = WordCounts::with_capacity(200_000);
        assert!(large.slots.mapping.is_some(), "a mapping of its own");
        assert_eq!(large.slots.as_slice().as_ptr() as usize % HUGE_PAGE, 0);
        assert!(
            large
                .slots
                .as_slice()
                .iter()
                .all(|s| s.count == 0 && s.key == [0; 16])
        );
        assert!(large.is_empty() && large.clone().is_empty());
        let small = WordCounts::with_capacity(1000);
        assert!(small.slots.mapping.is_none(), "from the allocator");
    }

    /// The shards' sections of a table holding `pairs` as given: repeats and
    /// zero counts included, each word in its own shard.
    fn sections_of(pairs: &[(&[u8], u64)]) -> Vec<Vec<u8>> {
        let mut words = [0u64; SHARDS];
        let mut bodies = vec![Vec::new(); SHARDS];
        for &(word, n) in pairs {
            let shard = shard_of(hash_word(word));
            words[shard] += 1;
            put_varint(&mut bodies[shard], word.len() as u64);
            bodies[shard].extend_from_slice(word);
            put_varint(&mut bodies[shard], n);
        }
        (0..SHARDS)
            .map(|shard| {
                let mut section = Vec::new();
                put_varint(&mut section, words[shard]);
                section.extend_from_slice(&bodies[shard]);
                section
            })
            .collect()
    }

    /// A table's wire form, made of these sections.
    fn encode_sections(sections: &[Vec<u8>]) -> Vec<u8> {
        postcard::to_allocvec(&sections.iter().map(|s| BytesRef(s)).collect::<Vec<_>>()).unwrap()
    }

    /// The wire form of a table holding `pairs` as given.
    fn wire(pairs: &[(&[u8], u64)]) -> Vec<u8> {
        encode_sections(&sections_of(pairs))
    }

    #[test]
    fn decoding_sums_repeats_and_drops_zeros() {
        let bytes = wire(&[
            (b"a", 1),
            (b"a", 2),
            (b"zero", 0),
            (&[7; 40], 3),
            (&[7; 40], 4),
            (b"", 1),
        ]);
        let table: WordCounts = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            table.to_btree(),
            map(&[("a", 3), ("", 1)])
                .into_iter()
                .chain([(vec![7; 40], 7)])
                .collect()
        );
        assert!(postcard::from_bytes::<WordCounts>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn decoding_rejects_malformed_shards() {
        let sections = |list: &[&[u8]]| {
            postcard::to_allocvec(&list.iter().map(|s| BytesRef(s)).collect::<Vec<_>>()).unwrap()
        };
        let empty: &[u8] = &[0];
        // Not one byte string per shard.
        assert!(postcard::from_bytes::<WordCounts>(&sections(&[empty; SHARDS - 1])).is_err());
        assert!(postcard::from_bytes::<WordCounts>(&sections(&[empty; SHARDS + 1])).is_err());
        // postcard keeps no message of its own errors: the messages are those
        // of decoding one shard.
        let decode_shard = |k: usize, bytes: &[u8]| {
            let mut list = vec![empty; SHARDS];
            list[k] = bytes;
            WordCounts::decode(&list)
        };
        let error = |bytes: &[u8]| decode_shard(0, bytes).unwrap_err();
        // A word count larger than the bytes could hold.
        assert_eq!(error(&[100, 1]), "shard 0: 100 words cannot fit in 1 bytes");
        // A word longer than what is left, and bytes left over.
        assert_eq!(error(&[1, 5, b'a', 1]), "shard 0: a word runs past the end");
        assert_eq!(error(&[0, 9]), "shard 0: 1 bytes after the last word");
        // Numbers: truncated, and over 64 bits.
        assert_eq!(error(&[1, 0, 0x80]), "shard 0: truncated");
        let too_big = [1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
        assert_eq!(error(&too_big), "shard 0: a number over 64 bits");
        // A word filed in a shard other than its own, alone or in a table.
        let word = b"misfiled";
        let home = shard_of(hash_word(word));
        let section = [&[1, word.len() as u8][..], word, &[1]].concat();
        let elsewhere = (home + 1) % SHARDS;
        assert_eq!(
            decode_shard(elsewhere, &section).unwrap_err(),
            format!("shard {elsewhere}: holds a word of shard {home}")
        );
        let mut list = vec![empty; SHARDS];
        list[elsewhere] = &section;
        assert!(postcard::from_bytes::<WordCounts>(&sections(&list)).is_err());
        list.swap(elsewhere, home);
        let table: WordCounts = postcard::from_bytes(&sections(&list)).unwrap();
        assert_eq!(table.get(word), 1);
    }

    /// `into.merge_encoded` of `other`'s postcard bytes.
    fn merge_encoded(into: &mut WordCounts, other: &[u8]) -> postcard::Result<()> {
        into.merge_encoded(&mut postcard::Deserializer::from_bytes(other))
    }

    #[test]
    fn merging_encoded_tables_equals_merging_decoded_ones() {
        // Small (one thread) and large (parallel) tables, into empty and full ones.
        for size in [50, 3 * PARALLEL_MIN] {
            let keys = many_keys(size, 3);
            let (a, _) = table_of(&keys.iter().map(|k| (k.clone(), 2)).collect::<Vec<_>>());
            let (b, _) = table_of(
                &keys[size / 2..]
                    .iter()
                    .chain(&many_keys(size, 4))
                    .map(|k| (k.clone(), 3))
                    .collect::<Vec<_>>(),
            );
            let mut want = a.clone();
            want.merge(b.clone());
            let mut got = a.clone();
            merge_encoded(&mut got, &postcard::to_allocvec(&b).unwrap()).unwrap();
            assert_eq!(got, want, "{size} words");
            let mut from_empty = WordCounts::new();
            merge_encoded(&mut from_empty, &postcard::to_allocvec(&b).unwrap()).unwrap();
            assert_eq!(from_empty, b);
            merge_encoded(
                &mut from_empty,
                &postcard::to_allocvec(&WordCounts::new()).unwrap(),
            )
            .unwrap();
            assert_eq!(from_empty, b);
        }
    }

    #[test]
    fn a_table_that_fails_to_merge_leaves_the_result_unchanged() {
        let keys = many_keys(3 * PARALLEL_MIN, 5);
        let (a, _) = table_of(&keys.iter().map(|k| (k.clone(), 1)).collect::<Vec<_>>());
        // Every shard is sound but the last, which holds a word of another
        // shard: all are checked before any is added.
        let pairs: Vec<(&[u8], u64)> = keys.iter().map(|k| (&k[..], 7)).collect();
        let mut sections = sections_of(&pairs);
        let misfiled: &[u8] = b"misfiled";
        assert_ne!(shard_of(hash_word(misfiled)), SHARDS - 1, "pick another word");
        sections[SHARDS - 1] = [&[1, misfiled.len() as u8][..], misfiled, &[1]].concat();
        let bytes = encode_sections(&sections);
        let mut result = a.clone();
        assert!(merge_encoded(&mut result, &bytes).is_err());
        assert_eq!(result, a);
    }

    #[test]
    fn tables_far_more_uneven_than_hashing_are_refused() {
        // 3,000 words in one shard, none elsewhere: every shard would get the
        // slots of that one. The same word repeated counts as much.
        let home = shard_of(hash_word(b"a"));
        let many: Vec<Vec<u8>> = many_keys(200_000, 9)
            .into_iter()
            .filter(|k| shard_of(hash_word(k)) == home)
            .take(3000)
            .collect();
        assert_eq!(many.len(), 3000);
        let distinct: Vec<(&[u8], u64)> = many.iter().map(|k| (&k[..], 1)).collect();
        let repeated: Vec<(&[u8], u64)> = vec![(b"a", 1); 3000];
        for pairs in [distinct, repeated] {
            let bytes = encode_sections(&sections_of(&pairs));
            let error = postcard::from_bytes::<WordCounts>(&bytes).unwrap_err();
            assert!(matches!(error, postcard::Error::SerdeDeCustom), "{error:?}");
            let sections = sections_of(&pairs);
            let message = WordCounts::decode(&sections).unwrap_err();
            assert_eq!(
                message,
                format!(
                    "shard {home}: 3000 of the table's 3000 words, far more than hashing puts in one shard"
                )
            );
            let (a, _) = table_of(&[(b"b".to_vec(), 2)]);
            let mut result = a.clone();
            assert!(merge_encoded(&mut result, &bytes).is_err());
            assert_eq!(result, a);
        }
        // Up to twice the mean and the slack is fine.
        let fine: Vec<(&[u8], u64)> = many[..UNEVEN_SLACK].iter().map(|k| (&k[..], 1)).collect();
        let table = WordCounts::decode(&sections_of(&fine)).unwrap();
        assert_eq!(table.distinct(), UNEVEN_SLACK);
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        // A worker gone wrong may send any count: the sum stays a count, and
        // the table stays whole.
        let (a, _) = table_of(&[(b"word".to_vec(), 5), (b"other".to_vec(), 1)]);
        let (b, _) = table_of(&[(b"word".to_vec(), u64::MAX)]);
        let mut result = a.clone();
        merge_encoded(&mut result, &postcard::to_allocvec(&b).unwrap()).unwrap();
        assert_eq!(result.get(b"word"), u64::MAX);
        assert_eq!(result.distinct(), 2);
        round_trips(&result).unwrap();
        let mut merged = a;
        merged.merge(b);
        assert_eq!(merged, result);
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, v);
            assert_eq!(bytes.len(), (64 - v.leading_zeros() as usize).div_ceil(7).max(1));
            let mut rest = &bytes[..];
            assert_eq!(take_varint(&mut rest), Ok(v));
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn swar_classes_match_the_tables() {
        for b in 0..=255u8 {
            for at in 0..8 {
                // The byte among others of every class.
                for fill in [b'a', b' ', 0x80, b'Z', 0, 0xff] {
                    let mut bytes = [fill; 8];
                    bytes[at] = b;
                    let x = u64::from_le_bytes(bytes);
                    let (sep, high, lower) = swar_word(x);
                    let space = swar_space(x);
                    for (i, &c) in bytes.iter().enumerate() {
                        let bit = |m: u64| m >> (8 * i + 7) & 1 == 1;
                        assert_eq!(bit(space), is_space(c), "{c:#x}");
                        assert_eq!(bit(sep), WORD_CLASS[c as usize] == SEP, "{c:#x}");
                        assert_eq!(bit(high), c >= 0x80, "{c:#x}");
                        if WORD_CLASS[c as usize] & (KEEP | UPPER) != 0 {
                            assert_eq!(lower.to_le_bytes()[i], c.to_ascii_lowercase(), "{c:#x}");
                        }
                        assert_eq!(movemask(space) >> i & 1 == 1, is_space(c));
                    }
                }
            }
        }
    }

    #[test]
    fn inline_values_pad_with_zeros_and_hold_the_length() {
        for len in 0..=INLINE {
            let word: Vec<u8> = (0..len as u8)
                .map(|b| b.wrapping_mul(37).wrapping_add(0xC1))
                .collect();
            let mut padded = [0u8; 16];
            padded[..len].copy_from_slice(&word);
            padded[15] = len as u8;
            let expected = u128::from_le_bytes(padded);
            assert_eq!(inline_key(&word), expected, "len {len}");
            // From two words read past the end, as the tokenizers do.
            let mut window = [0xEEu8; 16];
            window[..len].copy_from_slice(&word);
            let (lo, hi) = load16(&window, 0);
            assert_eq!(inline_value(lo, hi, len), expected, "len {len}");
            assert_eq!(hash_word(&word), hash_inline(expected));
        }
    }

    #[test]
    fn debug_lists_words() {
        let mut wc = WordCounts::new();
        wc.add(b"a\xff", 2);
        assert_eq!(format!("{wc:?}"), r#"{"a\xff": 2}"#);
    }

    /// Text made of words of 0 to 40 bytes (ASCII of both cases, digits,
    /// accented letters, invalid bytes) between separators of both modes: long
    /// tokens, tokens across the 16-byte windows and the tail.
    fn long_word_text() -> impl Strategy<Value = Vec<u8>> {
        let letters: Vec<&'static [u8]> =
            vec![b"a", b"q", b"Z", b"7", "é".as_bytes(), "Σ".as_bytes(), b"\xff"];
        let word = prop::collection::vec(prop::sample::select(letters), 0..40).prop_map(|v| v.concat());
        let sep: Vec<&'static [u8]> =
            vec![b" ", b"  ", b"\n", b", ", b".", b"\x0c", b"   \t\t\r\n    \n    "];
        prop::collection::vec((word, prop::sample::select(sep)), 0..40).prop_map(|v| {
            v.into_iter()
                .flat_map(|(w, s)| w.into_iter().chain(s.iter().copied()))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn table_matches_model(adds in prop::collection::vec((any_key(), 0u64..4), 0..200)) {
            let (table, model) = table_of(&adds);
            check_table(&table, &model)?;
            round_trips(&table)?;
        }

        #[test]
        fn merge_matches_model(
            a in prop::collection::vec((any_key(), 0u64..4), 0..150),
            b in prop::collection::vec((any_key(), 0u64..4), 0..150),
            extra in 0usize..3000,
        ) {
            // Many more keys in one of the two (growth while merging, every
            // shard non-empty on one side only or on both).
            let mut b = b;
            b.extend(many_keys(extra, 3).into_iter().map(|k| (k, 1)));
            let (ta, ma) = table_of(&a);
            let (tb, mb) = table_of(&b);
            let mut model = ma;
            for (k, n) in mb {
                *model.entry(k).or_insert(0) += n;
            }
            let mut ab = ta.clone();
            ab.merge(tb.clone());
            check_table(&ab, &model)?;
            let mut ba = tb;
            ba.merge(ta);
            prop_assert_eq!(&ba, &ab);
            let mut empty = WordCounts::new();
            empty.merge(ab.clone());
            prop_assert_eq!(&empty, &ab);
            round_trips(&ab)?;
        }

        #[test]
        fn long_words_match_reference(mode in any_mode(), text in long_word_text(), p in 1usize..6) {
            prop_assert_eq!(counts(mode, &text).to_btree(), reference_counts(mode, &text));
            check_split(mode, &text, p)?;
        }
    }
}
