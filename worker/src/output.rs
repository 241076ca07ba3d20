//! [`Output`]: where a worker writes the output tiles of its tasks.

use std::io;
use std::ops::Range;

use ipc_channel::ipc::IpcSharedMemory;
use memmap2::MmapMut;
use nix::libc;

use crate::protocol::OutputDesc;

/// The output region of a job, as a worker holds it.
#[derive(Debug)]
pub enum Output {
    /// The job has no output.
    None,
    /// Shared with the coordinator and all workers: tiles are written in place.
    Shared {
        /// The region's id ([`new_region_id`](crate::protocol::new_region_id)).
        id: u64,
        /// The region.
        region: IpcSharedMemory,
    },
    /// Private to this worker (message passing): tiles are sent back.
    Private(Option<MmapMut>),
    /// Bytes `offset..offset + len` of a file mapped shared: tiles are
    /// written in place, into the file's pages.
    File {
        /// The file's mapping, from its start.
        map: MmapMut,
        /// Where the output starts in it.
        offset: usize,
    },
}

impl Output {
    /// Maps the output a coordinator described; a shared region named by id
    /// alone is refused: only `Mappings` holds those.
    pub fn open(desc: Option<OutputDesc>) -> io::Result<Self> {
        Ok(match desc {
            None => Output::None,
            Some(OutputDesc::Shared { id, region }) => Output::Shared { id, region },
            Some(OutputDesc::Held { id }) => return Err(crate::region::not_held(id)),
            Some(OutputDesc::Private { len: 0 }) => Output::Private(None),
            Some(OutputDesc::Private { len }) => Output::Private(Some(MmapMut::map_anon(len as usize)?)),
            Some(OutputDesc::File { path, offset, len }) => Self::map_file(&path, offset, len)?,
        })
    }

    /// Maps `len` bytes of the file at `path` from `offset`, which the file
    /// must hold.
    fn map_file(path: &std::path::Path, offset: u64, len: u64) -> io::Result<Self> {
        let named = |err: io::Error| io::Error::new(err.kind(), format!("{}: {err}", path.display()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(named)?;
        let file_len = file.metadata().map_err(named)?.len();
        let end = offset.checked_add(len).filter(|&end| end <= file_len);
        let (Some(end), Ok(offset)) = (end, usize::try_from(offset)) else {
            return Err(named(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shorter than the output",
            )));
        };
        let len = usize::try_from(end).map_err(|_| named(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: the coordinator made the file for this output and lets no
        // one else change it while the job runs; each worker writes only its
        // tasks' disjoint tiles (see `bytes_mut`).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }.map_err(named)?;
        Ok(Output::File { map, offset })
    }

    /// Whether tiles must be sent back to the coordinator.
    pub fn is_private(&self) -> bool {
        matches!(self, Output::Private(_))
    }

    /// The output's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Output::None | Output::Private(None) => &[],
            Output::Shared { region, .. } => region,
            Output::Private(Some(map)) => map,
            Output::File { map, offset } => &map[*offset..],
        }
    }

    /// Maps the pages of `range` of a shared output into this process before
    /// a task writes them: one `madvise(MADV_POPULATE_READ)` costs about a
    /// fifth of the page faults the task's writes would take one page at a
    /// time (32 MiB: 2 ms against 9 ms here), and shared memory keeps no
    /// dirty bits, so the pages are mapped writable. Only a hint: nothing
    /// happens for other outputs, or where the kernel (before Linux 5.14)
    /// does not know the advice.
    pub fn prefault(&self, range: Range<usize>) {
        let Output::Shared { region, .. } = self else {
            return;
        };
        let Some(tile) = region.get(range).filter(|tile| !tile.is_empty()) else {
            return;
        };
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // Down to a page boundary: still inside the mapping, which starts on one.
        let start = tile.as_ptr() as usize / page * page;
        let len = tile.as_ptr() as usize + tile.len() - start;
        // SAFETY: the range lies in this live mapping; populating it maps its
        // pages without changing a byte of them.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_READ);
        }
    }

    /// The output's bytes, writable.
    ///
    /// # Safety
    /// For a shared output, the caller must write only a range no other
    /// process writes or reads at the same time (the coordinator checks that
    /// tasks' output ranges are disjoint, and reads only after the job).
    pub unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Output::None | Output::Private(None) => &mut [],
            // SAFETY: forwarded to the caller's contract.
            Output::Shared { region, .. } => unsafe { region.deref_mut() },
            Output::Private(Some(map)) => map,
            Output::File { map, offset } => &mut map[*offset..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident kilobytes of this process's mapping that starts at `address`.
    fn resident_kib(address: *const u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", address as usize);
        let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&start));
        lines.next().expect("the mapping is listed");
        let rss = lines.find(|line| line.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn prefault_maps_the_tile_and_changes_nothing() {
        let bytes: Vec<u8> = (0..64 * 4096).map(|i| (i % 251) as u8).collect();
        let original = IpcSharedMemory::from_bytes(&bytes);
        // A clone is a second mapping of the same memory: nothing of it is
        // mapped in this process yet.
        let output = Output::Shared {
            id: 1,
            region: original.clone(),
        };
        let address = output.bytes().as_ptr();
        assert_eq!(resident_kib(address), 0);
        // An empty tile and one out of bounds are ignored.
        output.prefault(5..5);
        output.prefault(10..64 * 4096 + 1);
        assert_eq!(resident_kib(address), 0);
        // A tile that starts and ends inside pages: those pages are mapped.
        output.prefault(4096 + 100..9 * 4096 + 1);
        let resident = resident_kib(address);
        assert!((36..=64 * 4).contains(&resident), "{resident} KiB resident");
        assert_eq!(output.bytes(), &bytes[..]);
        // Nothing to do for other outputs.
        Output::None.prefault(0..10);
        Output::open(Some(OutputDesc::Private { len: 100 }))
            .unwrap()
            .prefault(0..10);
    }
}
