//! [`Region`]: one input segment mapped read-only into this process.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipc_channel::ipc::IpcSharedMemory;
use memmap2::{Mmap, MmapMut};

use crate::pack::Pack;
use crate::protocol::{SegmentDesc, new_region_id};
use crate::release::release_pages;
use crate::sigbus;

/// One input segment, mapped into this process: a shared-memory region or a
/// memory-mapped file. Coordinator and workers each hold their own mapping of
/// the same pages, so the bytes exist once in memory whatever the worker count.
#[derive(Debug)]
pub struct Region {
    backing: Backing,
    /// How the coordinator names a shared region or file to its workers
    /// ([`new_region_id`]); 0 for private memory.
    id: u64,
    /// Made by this process (a coordinator's), rather than a mapping of a
    /// coordinator's region (a worker's); see [`Region::drop`](#impl-Drop-for-Region).
    owned: bool,
}

#[derive(Debug)]
enum Backing {
    Shared(IpcSharedMemory),
    /// One of the small segments side by side in a [`Pack`].
    Packed {
        pack: Arc<Pack>,
        range: Range<usize>,
    },
    /// `map` is `None` for an empty file, which cannot be mapped. No
    /// descriptor stays open (a mapping needs none, and a process may have
    /// few): [`Region::check_file`] finds the file again by its path and
    /// `identity` (device and inode).
    File {
        path: PathBuf,
        identity: (u64, u64),
        map: Option<FileMap>,
    },
    /// Anonymous memory, zeroed and allocated page by page as it is written;
    /// `None` when empty.
    Private(Option<MmapMut>),
}

/// A file mapping and its `SIGBUS` guard. The guard is declared first, so
/// it is dropped (unregistered) before the memory is unmapped.
#[derive(Debug)]
struct FileMap {
    guard: sigbus::Guard,
    map: Mmap,
}

impl Region {
    /// Wraps a new shared-memory region that this process owns: it gets a new
    /// id, and its memory is freed when the region is dropped, even while
    /// workers still map it.
    pub fn shared(region: IpcSharedMemory) -> Self {
        Region {
            backing: Backing::Shared(region),
            id: new_region_id(),
            owned: true,
        }
    }

    /// A worker's mapping of a coordinator's segment, handed back when the
    /// job that used it closes, to be kept for the next (see
    /// `Mappings`); `None`, and the region unchanged, for
    /// private memory and the regions a coordinator owns.
    pub(crate) fn take_kept(&mut self) -> Option<Region> {
        if self.owned || self.id == 0 {
            return None;
        }
        Some(std::mem::replace(self, Region::empty()))
    }

    /// The id the coordinator names this segment by (0 for private memory
    /// and segments in a pack, which is named by its own id).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// A segment of `range` in `pack`: bytes already written there.
    ///
    /// # Panics
    /// If `range` is not within the pack.
    pub fn in_pack(pack: Arc<Pack>, range: Range<usize>) -> Self {
        assert!(range.start <= range.end && range.end <= pack.capacity());
        Region {
            backing: Backing::Packed { pack, range },
            id: 0,
            owned: true,
        }
    }

    /// The pack this segment lies in, if it is in one.
    pub fn pack(&self) -> Option<&Arc<Pack>> {
        match &self.backing {
            Backing::Packed { pack, .. } => Some(pack),
            _ => None,
        }
    }

    /// An empty private segment.
    fn empty() -> Region {
        Region {
            backing: Backing::Private(None),
            id: 0,
            owned: false,
        }
    }

    /// Maps a regular file read-only. `path` should be absolute if the region
    /// is to be described to workers, whose working directory may differ.
    ///
    /// If the file is truncated while mapped, reading pages past its new end
    /// would raise `SIGBUS` in the process that touches them: a guard answers
    /// those reads with zeros instead, and [`Region::check_file`] reports it.
    pub fn map_file(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and private to this Region; the
            // input contract (documented on `Input::push_file`) is that the file
            // is not modified while a job reads it. If it is truncated anyway,
            // the guard registered below turns the SIGBUS of a read past the
            // new end into zeros, and `check_file` reports the change.
            let map = unsafe { Mmap::map(&file)? };
            let guard = sigbus::Guard::register(map.as_ptr(), map.len());
            Some(FileMap { guard, map })
        };
        Ok(Region {
            backing: Backing::File {
                path: path.to_path_buf(),
                identity: (meta.dev(), meta.ino()),
                map,
            },
            id: new_region_id(),
            owned: true,
        })
    }

    /// The path of a mapped file; `None` for other segments.
    pub fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// For a mapped file, checks that it still holds every byte that was
    /// mapped: an error if it is shorter now, or if a read past its end was
    /// answered with zeros (it shrank, and may have grown back since). The
    /// message does not name the file ([`Region::path`] does). Other segments
    /// are always fine.
    ///
    /// The size is checked if the path still names the file mapped; a file
    /// renamed over or removed since is no longer reachable (and a rename
    /// changes no byte of it), so then only reads past its end are caught.
    pub fn check_file(&self) -> io::Result<()> {
        let Backing::File {
            path, identity, map, ..
        } = &self.backing
        else {
            return Ok(());
        };
        let mapped = self.bytes().len() as u64;
        let now = std::fs::metadata(path)
            .ok()
            .filter(|meta| (meta.dev(), meta.ino()) == *identity)
            .map(|meta| meta.len());
        if let Some(now) = now
            && now < mapped
        {
            return Err(io::Error::other(format!(
                "file shrank from {mapped} to {now} bytes while it was being read"
            )));
        }
        if map.as_ref().is_some_and(|m| m.guard.faulted()) {
            let now = now.map_or("fewer".to_string(), |now| now.to_string());
            return Err(io::Error::other(format!(
                "file was truncated while it was being read ({mapped} bytes when mapped, \
                 {now} now; reads past its end found nothing)"
            )));
        }
        Ok(())
    }

    /// The segment's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Shared(region) => region,
            Backing::Packed { pack, range } => pack.bytes(range.clone()),
            Backing::File { map: Some(map), .. } => &map.map,
            Backing::File { map: None, .. } => &[],
            Backing::Private(Some(map)) => map,
            Backing::Private(None) => &[],
        }
    }

    /// A private, zeroed region of `len` bytes whose contents arrive in pieces
    /// ([`Region::write`]). Pages never written take no memory.
    pub fn private(len: usize) -> io::Result<Self> {
        let map = if len == 0 {
            None
        } else {
            Some(MmapMut::map_anon(len)?)
        };
        Ok(Region {
            backing: Backing::Private(map),
            id: 0,
            owned: true,
        })
    }

    /// Copies `bytes` to `offset` of a private region.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let target = match &mut self.backing {
            Backing::Private(Some(map)) => offset
                .checked_add(bytes.len())
                .and_then(|end| map.get_mut(offset..end)),
            Backing::Private(None) => (bytes.is_empty() && offset == 0).then_some(&mut [][..]),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "only private segments receive data",
                ));
            }
        };
        match target {
            Some(target) => {
                target.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} bytes at offset {offset} do not fit the segment", bytes.len()),
            )),
        }
    }

    /// How a worker finds this segment: the region's handle, the file's
    /// path, or the id alone if `held(id)` says the worker still maps it.
    pub fn describe(&self, held: impl Fn(u64) -> bool) -> SegmentDesc {
        match &self.backing {
            Backing::Shared(_) | Backing::File { .. } if held(self.id) => SegmentDesc::Held { id: self.id },
            Backing::Shared(region) => SegmentDesc::Shared {
                id: self.id,
                region: region.clone(),
            },
            Backing::File { path, .. } => SegmentDesc::File {
                id: self.id,
                path: path.clone(),
                len: self.bytes().len() as u64,
            },
            Backing::Packed { pack, range } => SegmentDesc::InPack {
                pack: pack.id(),
                offset: range.start as u64,
                len: range.len() as u64,
            },
            Backing::Private(_) => SegmentDesc::Private {
                len: self.bytes().len() as u64,
            },
        }
    }

    /// Maps a segment described by a coordinator. A file whose length changed
    /// since the coordinator mapped it is refused, and so is a segment named
    /// by id alone: only `Mappings` holds those.
    pub fn open(desc: SegmentDesc) -> io::Result<Self> {
        let (mut region, id) = match desc {
            // Never `Region::shared`, whose drop would free the coordinator's memory.
            SegmentDesc::Shared { id, region } => (
                Region {
                    backing: Backing::Shared(region),
                    id,
                    owned: false,
                },
                id,
            ),
            SegmentDesc::File { id, path, len } => {
                let region = Region::map_file(&path)
                    .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
                let found = region.bytes().len() as u64;
                if found != len {
                    return Err(io::Error::other(format!(
                        "{}: file changed size while in use ({len} bytes expected, {found} found)",
                        path.display()
                    )));
                }
                (region, id)
            }
            SegmentDesc::Held { id } | SegmentDesc::InPack { pack: id, .. } => return Err(not_held(id)),
            SegmentDesc::Pack { .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a pack is not a segment",
                ));
            }
            SegmentDesc::Private { len } => (Region::private(len as usize)?, 0),
        };
        // The coordinator's region, not this process's.
        (region.id, region.owned) = (id, false);
        Ok(region)
    }
}

/// How a worker finds a job's input: each segment's description, preceded,
/// for the first segment of each pack the worker does not hold (`held`), by
/// the pack itself.
pub fn describe_input(regions: &[Region], held: impl Fn(u64) -> bool + Copy) -> Vec<SegmentDesc> {
    let mut described = std::collections::HashSet::new();
    let mut input = Vec::with_capacity(regions.len());
    for region in regions {
        if let Some(pack) = region.pack()
            && !held(pack.id())
            && described.insert(pack.id())
        {
            input.push(SegmentDesc::Pack {
                id: pack.id(),
                region: pack.memory().clone(),
            });
        }
        input.push(region.describe(held));
    }
    input
}

/// The error for a segment or output a coordinator named by id to a worker
/// that does not hold it.
pub(crate) fn not_held(id: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("region {id} was named by id, but this worker does not hold it"),
    )
}

impl Drop for Region {
    /// A shared region this process owns is emptied before it is unmapped:
    /// its pages are freed now, not when the last worker that kept it mapped
    /// (see `Mappings`) unmaps it at its next job. Nothing
    /// reads it any more: jobs borrow their input for as long as they run,
    /// and a worker never touches a kept region outside a job that uses it.
    fn drop(&mut self) {
        if let (Backing::Shared(region), true) = (&mut self.backing, self.owned) {
            release_pages(region);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_file_reads_zeros_and_fails_the_check() {
        let path = std::env::temp_dir().join(format!("coop-region-{}-shrink", std::process::id()));
        std::fs::write(&path, vec![b'a'; 3 * 4096 + 10]).unwrap();
        let region = Region::map_file(&path).unwrap();
        assert_eq!(region.path(), Some(path.as_path()));
        region.check_file().unwrap();

        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let err = region.check_file().unwrap_err();
        assert_eq!(
            err.to_string(),
            "file shrank from 12298 to 4096 bytes while it was being read"
        );
        // The lost pages read as zeros, in this process, instead of SIGBUS.
        let bytes = region.bytes();
        assert_eq!(bytes.len(), 3 * 4096 + 10);
        assert!(bytes[..4096].iter().all(|&b| b == b'a'));
        assert!(bytes[4096..].iter().all(|&b| b == 0));

        // Grown back to its size: the zeros read are still reported.
        std::fs::write(&path, vec![b'b'; 3 * 4096 + 10]).unwrap();
        let err = region.check_file().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("file was truncated while it was being read"),
            "{err}"
        );
        drop(region);

        // A fresh mapping of the same file is intact again; growth is fine.
        let region = Region::map_file(&path).unwrap();
        std::fs::write(&path, vec![b'c'; 4 * 4096]).unwrap();
        region.check_file().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn other_segments_have_no_file_to_check() {
        let region = Region::private(100).unwrap();
        assert_eq!(region.path(), None);
        region.check_file().unwrap();
    }
}
