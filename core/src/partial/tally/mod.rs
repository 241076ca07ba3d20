//! [`Tally`]: counts of byte strings, the byte-string-key, sum-combiner case of
//! [`Keyed`](super::Keyed) built for speed, and [`WordRule`], what
//! [`Tally::add_words`] takes a word to be.
//!
//! Layout (the why of each choice is by its code):
//! - `mod.rs`: the table. Open addressing in `SHARDS` regions of one
//!   allocation, picked by a key's top hash bits; keys of up to 15 bytes
//!   inline in their 24-byte slot, longer ones in their shard's arena.
//! - `scan.rs`: cutting text into words 16 bytes at a time, inserting them in
//!   batches whose slots are prefetched.
//! - `wire.rs`: the encoded form, one byte string per shard, merged shard by
//!   shard in parallel straight from the bytes.
//!
//! Invariants:
//! 1. No stored word has a count of zero: a zero count marks an empty slot.
//! 2. A key's hash depends on its bytes only, whichever path computed it, and
//!    its shard is its top `SHARD_BITS` bits: a decoded word is checked
//!    against the shard it came in.
//! 3. All shards have as many slots (a power of two, at most 3/4 full); they
//!    grow together.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;

use memmap2::MmapMut;
use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};

use super::Combine;

mod scan;
#[cfg(test)]
mod tests;
mod wire;

use scan::*;

/// What a word is, for [`Tally::add_words`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WordRule {
    /// Maximal runs of characters for which [`char::is_alphanumeric`] is
    /// true, each lowercased with [`char::to_lowercase`] (the full mapping).
    /// Bytes that are not valid UTF-8 separate words, exactly as if
    /// [`String::from_utf8_lossy`] had replaced them with U+FFFD. Keys are the
    /// lowercased UTF-8 bytes.
    Alphanumeric,
    /// Maximal runs of bytes that are not ASCII whitespace (space, `\t`,
    /// `\n`, 0x0B, 0x0C, `\r`), raw bytes, compared byte for byte (the
    /// words of `wc -w`, and of [`Records::Whitespace`](crate::split::Records::Whitespace)).
    Whitespace,
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

/// Counts of byte strings (words, most often): what
/// [`Keyed<ShortBytes, u64>`](super::Keyed) holds, built for speed. It
/// [combines](Combine) word by word, and merges a worker's table from its
/// encoded bytes shard by shard in parallel, without decoding it into a table
/// first.
///
/// ```
/// use coop::partial::{Combine, Tally, WordRule};
///
/// let mut a = Tally::new();
/// a.add_words(WordRule::Alphanumeric, "The cat saw the dog.".as_bytes());
/// let mut b = Tally::new();
/// b.add_words(WordRule::Alphanumeric, "A dog!".as_bytes());
/// b.add(b"cat", 2);
/// a.combine(b);
/// assert_eq!(a.get(b"the"), 2);
/// assert_eq!(a.top(2), [(&b"cat"[..], 3), (&b"dog"[..], 2)]);
/// assert_eq!(a.total(), 9);
/// ```
///
/// A hash table of its own: 64 shards (picked by the top bits of a key's
/// hash) of open addressing with linear probing, laid side by side in one
/// block of slots (huge pages asked for when large); each 24-byte slot holds
/// a count and the key itself with its length when it has at most 15 bytes
/// (longer keys live in the shard's byte arena), so that a lookup usually
/// touches one cache line and counting allocates nothing per word.
/// [`add_words`](Tally::add_words) reads 16 bytes at a time and prefetches
/// the slots of the next 64 words while it counts.
///
/// The hash is not keyed, and the shards grow together: text crafted so that
/// many of its words fall in one shard makes every shard as large as that one
/// (and its probes long), and an encoded table whose shards are far more
/// uneven than hashing makes them is refused when merged. Hashing spreads the
/// words of ordinary text evenly. Counts saturate at `u64::MAX`.
#[derive(Clone, Default)]
pub struct Tally {
    /// `SHARDS` regions of `1 << region_bits` slots each, region `k` for
    /// shard `k`; none before the first word. All shards grow together.
    slots: Slots,
    region_bits: u32,
    /// Alphanumeric in each shard: empty, or `SHARDS` numbers.
    lens: Vec<usize>,
    /// The bytes of each shard's long keys, one after the other: as `lens`.
    arenas: Vec<Vec<u8>>,
}

impl Tally {
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
            if self.len() >= PARALLEL_MIN {
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
    pub fn len(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Whether no word has been counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// Word by word: a word in both adds its counts. Large tables merge shard by
/// shard on the global rayon pool; an encoded one merges as it is decoded,
/// without building it first.
impl Combine for Tally {
    fn combine(&mut self, mut other: Tally) {
        // The smaller into the larger.
        if self.len() < other.len() {
            std::mem::swap(self, &mut other);
        }
        if other.is_empty() {
            return;
        }
        let parallel = other.len() >= PARALLEL_MIN;
        self.add_per_shard(parallel, |k, shard, from| shard.merge_from(other.shard(k), from));
    }

    fn combine_encoded<'de, D: Deserializer<'de>>(&mut self, partial: D) -> Result<(), D::Error> {
        self.add_encoded(partial)
    }
}

/// Equal when they hold the same (word, count) pairs.
impl PartialEq for Tally {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(w, n)| other.get(w) == n)
    }
}

impl Eq for Tally {}

/// A map from words (escaped where not printable ASCII) to counts.
impl fmt::Debug for Tally {
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

/// Order of [`Tally::sorted`]: count descending, then word ascending.
fn rank(a: &(&[u8], u64), b: &(&[u8], u64)) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0))
}
