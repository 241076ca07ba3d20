//! [`Pack`]: one shared-memory region holding many small input segments.
//!
//! Every shared region costs a process a file descriptor and a mapping, and
//! the kernel allows a process about 65,000 mappings (`vm.max_map_count`) and
//! often 1,024 descriptors: an input of 100,000 small files, one region each,
//! exhausts both. Small segments are therefore copied side by side into
//! packs, and a job's messages describe each pack once
//! ([`SegmentDesc::Pack`]) and each segment in it by offset and length
//! ([`SegmentDesc::InPack`]).
//!
//! Invariants:
//! 1. A pack is written only by the process that made it, only at offsets
//!    past every segment it handed out ([`Pack::write`]), and only while no
//!    job reads the input ([`Input`](../../coop/struct.Input.html)'s pushes
//!    take `&mut`).
//! 2. Readers see only the ranges of segments handed out, through slices
//!    made from the region's base pointer: no reference ever spans the
//!    whole region while part of it is written.

use std::ops::Range;

use ipc_channel::ipc::IpcSharedMemory;

use crate::protocol::new_region_id;
use crate::release::release_pages;

/// Where segments start in a pack: a multiple of this, so that a segment
/// holds any plain type aligned to 64 bytes or less.
pub const PACK_ALIGN: usize = 64;

/// A shared-memory region holding small input segments side by side.
#[derive(Debug)]
pub struct Pack {
    memory: IpcSharedMemory,
    /// The start of `memory`'s mapping, taken once: reads and writes of
    /// parts of it go through this pointer (invariant 2).
    base: *mut u8,
    /// `memory`'s length, kept so that no call makes a reference to all of it.
    capacity: usize,
    id: u64,
    /// Made by this process (a coordinator's), rather than a mapping of a
    /// coordinator's pack (a worker's).
    owned: bool,
}

// SAFETY: `base` points into `memory`, which the pack owns and which lives
// as long as it; the bytes behind it are only written under invariant 1
// (through `&mut` of the input that holds the pack, so never while another
// thread reads them), and reading shared memory from any thread is sound.
unsafe impl Send for Pack {}
// SAFETY: as for `Send`: through `&Pack`, safe code only reads the ranges
// handed out; the one writer, `unsafe fn write`, requires invariant 1.
unsafe impl Sync for Pack {}

impl Pack {
    /// A new, zeroed pack of `capacity` bytes, owned by this process.
    pub fn new(capacity: usize) -> Pack {
        let capacity = capacity.max(1);
        let mut memory = IpcSharedMemory::from_byte(0, capacity);
        // SAFETY: the region was just made and nothing else maps or
        // references it yet; the pointer is kept for invariant 2.
        let base = unsafe { memory.deref_mut() }.as_mut_ptr();
        Pack {
            memory,
            base,
            capacity,
            id: new_region_id(),
            owned: true,
        }
    }

    /// A worker's mapping of a coordinator's pack `id`.
    pub(crate) fn from_coordinator(id: u64, memory: IpcSharedMemory) -> Pack {
        let (base, capacity) = (memory.as_ptr().cast_mut(), memory.len());
        Pack {
            memory,
            base,
            capacity,
            id,
            owned: false,
        }
    }

    /// The id the coordinator names this pack by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Size of the region in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The region, for a message describing the pack.
    pub(crate) fn memory(&self) -> &IpcSharedMemory {
        &self.memory
    }

    /// The bytes of `range`, which must be a segment handed out (and in
    /// bounds: checked by the caller that made the segment).
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.capacity());
        if range.is_empty() {
            return &[];
        }
        // SAFETY: in bounds (asserted); under invariant 1 nothing writes a
        // range handed out, so the bytes do not change while this borrow of
        // the pack lives.
        unsafe { std::slice::from_raw_parts(self.base.add(range.start), range.len()) }
    }

    /// Copies `bytes` to `offset`.
    ///
    /// # Safety
    /// Invariant 1: this process owns the pack, no segment handed out
    /// overlaps `offset..offset + bytes.len()`, which is in bounds, and
    /// nothing else writes the pack meanwhile.
    pub unsafe fn write(&self, offset: usize, bytes: &[u8]) {
        // A worker's mapping has a pointer taken from a shared reference:
        // writing through it would be undefined behaviour, not a mistake.
        assert!(self.owned, "only the process that made a pack writes it");
        debug_assert!(offset + bytes.len() <= self.capacity());
        // SAFETY: in bounds and not read by anyone (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(offset), bytes.len()) }
    }
}

impl Drop for Pack {
    /// As for a shared [`Region`](crate::Region): a pack this process owns
    /// is emptied before it is unmapped, so workers that keep it mapped hold
    /// no memory.
    fn drop(&mut self) {
        if self.owned {
            release_pages(&mut self.memory);
        }
    }
}
