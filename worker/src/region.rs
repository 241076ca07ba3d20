//! [`Region`]: one input segment mapped read-only into this process.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use ipc_channel::ipc::IpcSharedMemory;
use memmap2::{Mmap, MmapMut};

use crate::protocol::SegmentDesc;

/// One input segment, mapped into this process: a shared-memory region or a
/// memory-mapped file. Coordinator and workers each hold their own mapping of
/// the same pages, so the bytes exist once in memory whatever the worker count.
#[derive(Debug)]
pub struct Region {
    backing: Backing,
}

#[derive(Debug)]
enum Backing {
    Shared(IpcSharedMemory),
    /// `map` is `None` for an empty file, which cannot be mapped.
    File {
        path: PathBuf,
        map: Option<Mmap>,
    },
    /// Anonymous memory, zeroed and allocated page by page as it is written;
    /// `None` when empty.
    Private(Option<MmapMut>),
}

impl Region {
    /// Wraps a shared-memory region.
    pub fn shared(region: IpcSharedMemory) -> Self {
        Region {
            backing: Backing::Shared(region),
        }
    }

    /// Maps a regular file read-only. `path` should be absolute if the region
    /// is to be described to workers, whose working directory may differ.
    ///
    /// The file must not be truncated while mapped: reading pages past its new
    /// end raises `SIGBUS` in the process that touches them.
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
            // is not modified while a job reads it.
            let map = unsafe { Mmap::map(&file)? };
            Some(map)
        };
        Ok(Region {
            backing: Backing::File {
                path: path.to_path_buf(),
                map,
            },
        })
    }

    /// The segment's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Shared(region) => region,
            Backing::File { map: Some(map), .. } => map,
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

    /// How a worker finds this segment: the region's handle, or the file's path.
    pub fn describe(&self) -> SegmentDesc {
        match &self.backing {
            Backing::Shared(region) => SegmentDesc::Shared(region.clone()),
            Backing::File { path, .. } => SegmentDesc::File {
                path: path.clone(),
                len: self.bytes().len() as u64,
            },
            Backing::Private(_) => SegmentDesc::Private {
                len: self.bytes().len() as u64,
            },
        }
    }

    /// Maps a segment described by a coordinator. A file whose length changed
    /// since the coordinator mapped it is refused.
    pub fn open(desc: SegmentDesc) -> io::Result<Self> {
        match desc {
            SegmentDesc::Shared(region) => Ok(Region::shared(region)),
            SegmentDesc::File { path, len } => {
                let region = Region::map_file(&path)
                    .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
                let found = region.bytes().len() as u64;
                if found != len {
                    return Err(io::Error::other(format!(
                        "{}: file changed size while in use ({len} bytes expected, {found} found)",
                        path.display()
                    )));
                }
                Ok(region)
            }
            SegmentDesc::Private { len } => Region::private(len as usize),
        }
    }
}
