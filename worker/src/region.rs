//! [`Region`]: one input segment mapped read-only into this process.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use ipc_channel::ipc::IpcSharedMemory;
use memmap2::Mmap;

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
        }
    }
}
