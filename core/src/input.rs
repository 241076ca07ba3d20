//! Shared data: [`Input`] (read-only segments every worker maps) and
//! [`SharedOutput`] (a writable region tasks fill tile by tile).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use bytemuck::Pod;
use coop_worker::ipc_channel::ipc::IpcSharedMemory;
use coop_worker::protocol::{Chunk, OutputDesc, SegmentDesc, new_region_id};
use coop_worker::{PACK_ALIGN, Pack, Region, release_pages};

use crate::error::{Error, Result};

/// The input of a job: an ordered list of read-only segments, each mapped once
/// into shared memory that every worker maps too. Tasks carry only indices and
/// ranges into it; the bytes are never copied per worker.
///
/// - [`push_bytes`](Input::push_bytes) / [`push_slice`](Input::push_slice):
///   data already in memory is copied once into a memfd region.
/// - [`push_file`](Input::push_file): a regular file is memory-mapped, here and
///   by each worker (the page cache is the shared memory): no copy at all.
/// - [`push_reader`](Input::push_reader): a stream (stdin, a pipe) is read into
///   a memfd region.
///
/// Segments smaller than [`Input::PACKED_BELOW`] (small files included) are
/// copied side by side into a few shared regions instead, so that an input
/// of 100,000 small files costs a handful of mappings and descriptors, not
/// 100,000 of each (the kernel allows a process about 65,000 mappings). A
/// mapped file holds no descriptor either. Segments start on a 64-byte
/// boundary at least (a page boundary when not packed).
///
/// Jobs read segments with [`bytes`](Input::bytes) and [`slice`](Input::slice).
///
/// A [`Pool`](crate::Pool)'s workers keep the segments of their last job
/// mapped, so that the next job on the same input starts with its pages
/// mapped; dropping the input frees its shared memory at once all the same.
#[derive(Debug, Default)]
pub struct Input {
    regions: Vec<Region>,
    /// The pack small segments are copied into now, and the bytes of it used.
    pack: Option<(Arc<Pack>, usize)>,
}

/// The first pack's size; each next one is twice the last, up to [`PACK_MAX`],
/// so that a small input takes little memory and a large one few packs.
const PACK_MIN: usize = 64 * 1024;
/// The largest pack.
const PACK_MAX: usize = 64 << 20;

impl Input {
    /// Segments smaller than this many bytes are copied into packs (see
    /// [`Input`]); larger ones get a region of their own, or a mapping.
    pub const PACKED_BELOW: usize = 64 * 1024;

    /// An input with no segments.
    pub fn new() -> Self {
        Self::default()
    }

    /// An input of one segment holding a copy of `data`.
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut input = Self::new();
        input.push_bytes(data);
        input
    }

    /// An input of the files at `paths`, a segment each, in order: each
    /// added as [`push_file`](Self::push_file) adds it (mapped where it can
    /// be). The first that cannot be added is the error.
    ///
    /// ```no_run
    /// let input = coop::Input::from_files(std::env::args().skip(1))?;
    /// # Ok::<(), coop::Error>(())
    /// ```
    pub fn from_files<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self> {
        let mut input = Self::new();
        for path in paths {
            input.push_file(path)?;
        }
        Ok(input)
    }

    pub(crate) fn from_regions(regions: Vec<Region>) -> Self {
        Input { regions, pack: None }
    }

    /// Copies `data` into a new shared-memory segment; returns its index.
    pub fn push_bytes(&mut self, data: &[u8]) -> usize {
        if data.len() >= Self::PACKED_BELOW {
            return self.push(Region::shared(IpcSharedMemory::from_bytes(data)));
        }
        let fits = |(pack, used): &(Arc<Pack>, usize)| {
            used.next_multiple_of(PACK_ALIGN) + data.len() <= pack.capacity()
        };
        let last = self.pack.as_ref().map_or(0, |(pack, _)| pack.capacity());
        let (pack, used) = match self.pack.take().filter(fits) {
            Some(current) => current,
            None => {
                let capacity = (last * 2).clamp(PACK_MIN, PACK_MAX).max(data.len());
                (Arc::new(Pack::new(capacity)), 0)
            }
        };
        let start = used.next_multiple_of(PACK_ALIGN);
        // SAFETY: this input made the pack; every segment handed out ends at
        // or before `used`, and `start..start + len` is within the pack
        // (`fits`, or a new pack at least as large); `&mut self` means no job
        // reads the input meanwhile (invariant 1 of `Pack`).
        unsafe { pack.write(start, data) };
        let region = Region::in_pack(pack.clone(), start..start + data.len());
        self.pack = Some((pack, start + data.len()));
        self.push(region)
    }

    /// Copies a plain-old-data slice (`f32`, `f64`, `u32`, `u64`, ...) into a new
    /// shared-memory segment; returns its index. Read it back with [`slice`](Input::slice).
    pub fn push_slice<T: Pod>(&mut self, data: &[T]) -> usize {
        self.push_bytes(bytemuck::cast_slice(data))
    }

    /// Adds a file; returns its segment index. A regular file is memory-mapped
    /// (the workers map it themselves, by its canonical path: links such as
    /// `/dev/stdin` or `/proc/self/fd/N`, which would name another file in a
    /// worker, are resolved); a pipe, a device, an empty-looking file (as in
    /// /proc) or a file that no path names any more (unlinked) is read into
    /// shared memory. A directory is an error.
    ///
    /// The file should not be truncated while a job reads it. If it is, reads
    /// of the lost bytes find zeros (instead of a `SIGBUS` that would kill the
    /// reader), and the job ends with [`Error::Input`]: the file shrank while
    /// it was being read.
    pub fn push_file(&mut self, path: impl AsRef<Path>) -> Result<usize> {
        let path = path.as_ref();
        let input_error = |source| Error::Input {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(input_error)?;
        if meta.is_dir() {
            return Err(input_error(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )));
        }
        // Pipes and devices cannot be mapped; nor can files that report size 0
        // but have contents (/proc), nor a file that workers cannot open by a
        // path: read those into shared memory instead, and small files, which
        // are cheaper to read than to map and go into a pack.
        let shared_path = (meta.is_file() && meta.len() >= Self::PACKED_BELOW as u64)
            .then(|| std::fs::canonicalize(path).ok())
            .flatten()
            .filter(|canonical| names_file(canonical, &meta));
        let Some(canonical) = shared_path else {
            let file = File::open(path).map_err(input_error)?;
            return self.push_reader(file).map_err(input_error);
        };
        let region = Region::map_file(&canonical).map_err(input_error)?;
        Ok(self.push(region))
    }

    /// Reads `reader` to its end into a new shared-memory segment; returns its index.
    pub fn push_reader(&mut self, mut reader: impl Read) -> io::Result<usize> {
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(self.push_bytes(&data))
    }

    fn push(&mut self, region: Region) -> usize {
        self.regions.push(region);
        self.regions.len() - 1
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Total size of all segments in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.bytes().len() as u64).sum()
    }

    /// The bytes of segment `index`.
    ///
    /// # Panics
    /// If there is no such segment.
    pub fn bytes(&self, index: usize) -> &[u8] {
        match self.regions.get(index) {
            Some(region) => region.bytes(),
            None => panic!("input has {} segment(s), no segment {index}", self.regions.len()),
        }
    }

    /// Segment `index` viewed as a slice of `T`.
    ///
    /// # Panics
    /// If there is no such segment, or its length is not a multiple of
    /// `size_of::<T>()`: for input from outside the program (files, streams),
    /// use [`try_slice`](Input::try_slice) and refuse the input with its
    /// error.
    pub fn slice<T: Pod>(&self, index: usize) -> &[T] {
        match self.try_slice(index) {
            Ok(slice) => slice,
            Err(err) => panic!("{err}"),
        }
    }

    /// Segment `index` viewed as a slice of `T`, or why it cannot be: no such
    /// segment, or a length that is not a multiple of `size_of::<T>()`.
    /// (Segments start on a 64-byte boundary at least, so alignment holds for
    /// any `T` aligned to 64 bytes or less.) Return the error from [`Job::split`](crate::Job::split)
    /// to refuse the input:
    ///
    /// ```
    /// # use coop::prelude::*;
    /// # fn split(input: &Input) -> Result<Vec<std::ops::Range<usize>>, TaskError> {
    /// let values = input.try_slice::<f64>(0)?; // "input segment 0 (13 bytes) cannot be viewed as [f64]: ..."
    /// # Ok(vec![0..values.len()])
    /// # }
    /// ```
    pub fn try_slice<T: Pod>(&self, index: usize) -> Result<&[T], SliceError> {
        let error = |reason: String| SliceError {
            segment: index,
            len: self.regions.get(index).map_or(0, |r| r.bytes().len()),
            element: std::any::type_name::<T>(),
            reason,
        };
        let Some(region) = self.regions.get(index) else {
            return Err(error(format!("the input has {} segment(s)", self.regions.len())));
        };
        let bytes = region.bytes();
        if bytes.is_empty() {
            // An empty region's pointer is dangling and may be misaligned.
            return Ok(&[]);
        }
        bytemuck::try_cast_slice(bytes).map_err(|err| {
            error(match err {
                bytemuck::PodCastError::OutputSliceWouldHaveSlop => format!(
                    "its length is not a multiple of {} bytes",
                    std::mem::size_of::<T>()
                ),
                other => other.to_string(),
            })
        })
    }

    /// The bytes of a chunk a transport sends with a task (the scheduler
    /// made it from the job's input ranges, clamped to the segment).
    pub(crate) fn chunk(&self, chunk: &Chunk) -> &[u8] {
        let start = chunk.offset as usize;
        &self.bytes(chunk.segment as usize)[start..start + chunk.len as usize]
    }

    #[cfg(any(feature = "mpi", test))]
    pub(crate) fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub(crate) fn regions_mut(&mut self) -> &mut [Region] {
        &mut self.regions
    }

    /// Checks, after a job, that every mapped file still holds the bytes that
    /// were mapped: [`Error::Input`] naming the first file that shrank while
    /// the job read it (its lost bytes were read as zeros, so the result is
    /// wrong). Engines call it when a job ends, whatever its outcome.
    pub(crate) fn check_files_intact(&self) -> Result<()> {
        for region in &self.regions {
            if let (Some(path), Err(source)) = (region.path(), region.check_file()) {
                return Err(Error::Input {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// The segments as a worker finds them; `held(id)` says whether it still
    /// maps segment (or pack) `id` (see [`new_region_id`]).
    pub(crate) fn describe(&self, held: impl Fn(u64) -> bool + Copy) -> Vec<SegmentDesc> {
        coop_worker::describe_input(&self.regions, held)
    }
}

/// Why an input segment cannot be viewed as a slice ([`Input::try_slice`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input segment {segment} ({len} bytes) cannot be viewed as [{element}]: {reason}")]
#[non_exhaustive]
pub struct SliceError {
    /// The segment's index.
    pub segment: usize,
    /// Its length in bytes (0 if there is no such segment).
    pub len: usize,
    /// The element type asked for.
    pub element: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Whether `path` names the file that `meta` describes (same device and inode).
fn names_file(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|named| named.dev() == meta.dev() && named.ino() == meta.ino())
}

/// A writable shared-memory region, zeroed, that the tasks of a job fill: each
/// task writes only its own disjoint tile ([`Job::output_range`](crate::Job::output_range)),
/// straight into memory the caller reads afterwards. Nothing of it is serialized.
///
/// Its memory is freed when it is dropped, even in workers that keep it
/// mapped for their next job. [`SharedOutput::map_file`] makes one in a
/// file instead: tiles go straight into the file's pages.
#[derive(Debug)]
pub struct SharedOutput {
    id: u64,
    backing: Backing,
}

/// Where a [`SharedOutput`]'s bytes are.
#[derive(Debug)]
enum Backing {
    Memory(IpcSharedMemory),
    /// `len` bytes of the file at `path` from `offset`, mapped from its start.
    File {
        map: memmap2::MmapMut,
        path: std::path::PathBuf,
        offset: usize,
        len: usize,
    },
}

impl SharedOutput {
    /// A zeroed region of `len` bytes.
    pub fn new(len: usize) -> Self {
        SharedOutput {
            id: new_region_id(),
            backing: Backing::Memory(IpcSharedMemory::from_byte(0, len)),
        }
    }

    /// A zeroed region holding `count` values of `T`.
    pub fn zeroed<T: Pod>(count: usize) -> Self {
        let len = count
            .checked_mul(size_of::<T>())
            .expect("output size overflows usize");
        Self::new(len)
    }

    /// An output in `len` bytes of the regular file at `path`, from byte
    /// `offset` (after a header the caller writes): tasks write their tiles
    /// straight into the file's pages, which worker processes map
    /// themselves by the file's canonical path, so the result is neither
    /// copied nor written out at the end. The file is grown to `offset +
    /// len` bytes if it is shorter; what it held there is what the output
    /// starts with. It must stay where it is, the same file, until the jobs
    /// that use the output end; flush it (`File::sync_data`) to make the
    /// writes durable. Engines without shared memory (`Ipc::Messages`, MPI)
    /// send tiles back, which the coordinator writes into the mapping.
    pub fn map_file(path: impl AsRef<Path>, offset: usize, len: usize) -> Result<Self> {
        let input_error = |path: &Path, source| Error::Input {
            path: path.to_path_buf(),
            source,
        };
        let path = path.as_ref();
        let path = std::fs::canonicalize(path).map_err(|e| input_error(path, e))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| input_error(&path, e))?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| input_error(&path, io::ErrorKind::InvalidInput.into()))?;
        if file.metadata().map_err(|e| input_error(&path, e))?.len() < end as u64 {
            file.set_len(end as u64).map_err(|e| input_error(&path, e))?;
        }
        // SAFETY: the caller keeps the file as it is while the output lives
        // (above); within it, the engines write only disjoint tiles.
        let map = unsafe { memmap2::MmapOptions::new().len(end).map_mut(&file) }
            .map_err(|e| input_error(&path, e))?;
        Ok(SharedOutput {
            id: new_region_id(),
            backing: Backing::File {
                map,
                path,
                offset,
                len,
            },
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The region's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Memory(region) => region,
            Backing::File { map, offset, len, .. } => &map[*offset..*offset + *len],
        }
    }

    /// The region viewed as a slice of `T`.
    ///
    /// # Panics
    /// If the length is not a multiple of `size_of::<T>()`, or the bytes
    /// are not aligned for `T` (an offset in a file that is not a multiple
    /// of its alignment).
    pub fn as_slice<T: Pod>(&self) -> &[T] {
        if self.is_empty() {
            return &[];
        }
        bytemuck::cast_slice(self.bytes())
    }

    /// How a worker finds the region: its handle, or its id alone if
    /// `held(id)` says the worker still maps it (see [`new_region_id`]); a
    /// file, by its path.
    pub(crate) fn describe(&self, held: impl Fn(u64) -> bool) -> OutputDesc {
        match &self.backing {
            Backing::Memory(_) if held(self.id) => OutputDesc::Held { id: self.id },
            Backing::Memory(region) => OutputDesc::Shared {
                id: self.id,
                region: region.clone(),
            },
            Backing::File {
                path, offset, len, ..
            } => OutputDesc::File {
                path: path.clone(),
                offset: *offset as u64,
                len: *len as u64,
            },
        }
    }

    /// The region's bytes, writable: to fill it before a job, or to write
    /// tiles without an engine, as `speedup`'s bare threads do.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.backing {
            // SAFETY: `&mut self` excludes other references in this process, and no
            // worker touches the region outside a job: engines hand it to workers
            // only while they run a job that borrows this output mutably, and a
            // worker that keeps it mapped afterwards (for its next job) neither
            // reads nor writes it until a job that uses it again.
            Backing::Memory(region) => unsafe { region.deref_mut() },
            Backing::File { map, offset, len, .. } => &mut map[*offset..*offset + *len],
        }
    }
}

impl Drop for SharedOutput {
    fn drop(&mut self) {
        if let Backing::Memory(region) = &mut self.backing {
            release_pages(region);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::engine::{Run, Sequential, Threads};
    use crate::job::Job;

    /// Sums the bytes of segment 0, page by page; the first task truncates
    /// the file to one page before it reads anything.
    #[derive(Serialize, Deserialize)]
    struct ShrinkThenSum {
        path: std::path::PathBuf,
    }

    impl Job for ShrinkThenSum {
        const NAME: &'static str = "shrink-then-sum";
        type Task = Range<usize>;
        type Partial = u64;

        fn split(&self, input: &Input, _: usize) -> Result<Vec<Range<usize>>, crate::TaskError> {
            let len = input.bytes(0).len();
            Ok((0..len).step_by(4096).map(|s| s..(s + 4096).min(len)).collect())
        }

        fn map(
            &self,
            task: &Range<usize>,
            input: &Input,
            sum: &mut u64,
        ) -> std::result::Result<(), crate::TaskError> {
            if task.start == 0 {
                File::options().write(true).open(&self.path)?.set_len(4096)?;
            }
            *sum += input.bytes(0)[task.clone()]
                .iter()
                .map(|&b| u64::from(b))
                .sum::<u64>();
            Ok(())
        }

        fn merge(&self, into: &mut u64, other: u64) {
            *into += other;
        }
    }

    #[test]
    fn small_segments_share_packs_and_large_ones_get_their_own() {
        let mut input = Input::new();
        let mut expected = Vec::new();
        for i in 0..10_000u64 {
            let data: Vec<u64> = (0..i % 7).map(|j| i * j).collect();
            input.push_slice(&data);
            expected.push(data);
        }
        let large = vec![7u8; Input::PACKED_BELOW];
        input.push_bytes(&large);
        for (i, data) in expected.iter().enumerate() {
            assert_eq!(input.slice::<u64>(i), &data[..], "segment {i}");
            let at = input.bytes(i).as_ptr() as usize;
            assert!(
                data.is_empty() || at.is_multiple_of(PACK_ALIGN),
                "segment {i} is aligned"
            );
        }
        assert_eq!(input.bytes(10_000), &large[..]);
        assert!(input.regions()[10_000].pack().is_none());
        let packs: std::collections::HashSet<u64> = input
            .regions()
            .iter()
            .filter_map(|r| r.pack())
            .map(|p| p.id())
            .collect();
        // 10,000 segments of up to 48 bytes, 64 apart: 640 KB, in packs of
        // 64 KB, 128 KB, 256 KB and 512 KB.
        assert_eq!(packs.len(), 4, "{packs:?}");
        // Each pack is described once, before its first segment.
        let described = input.describe(|_| false);
        let pack_entries = described
            .iter()
            .filter(|d| matches!(d, SegmentDesc::Pack { .. }))
            .count();
        assert_eq!((pack_entries, described.len()), (4, 10_005));
        let held = input.describe(|_| true);
        assert_eq!(
            held.len(),
            10_001,
            "packs the worker holds are not described again"
        );
    }

    #[test]
    fn a_file_named_through_a_link_of_this_process_is_given_to_workers_by_its_own_path() {
        use std::os::fd::AsRawFd;

        let path = std::env::temp_dir().join(format!("coop-input-link-{}", std::process::id()));
        let words = b"some words ".repeat(Input::PACKED_BELOW / 10);
        std::fs::write(&path, &words).unwrap();
        let file = File::open(&path).unwrap();
        // `/proc/self/fd/N` (like `/dev/stdin`) names another file, or none,
        // in a worker: workers get the file's own path.
        let own_link = format!("/proc/self/fd/{}", file.as_raw_fd());
        let mut input = Input::new();
        input.push_file(&own_link).unwrap();
        assert_eq!(
            input.regions()[0].path(),
            Some(std::fs::canonicalize(&path).unwrap().as_path())
        );
        assert_eq!(input.bytes(0), &words[..]);
        // Unlinked, no path names it: it is read into shared memory.
        std::fs::remove_file(&path).unwrap();
        input.push_file(&own_link).unwrap();
        assert_eq!(input.regions()[1].path(), None);
        assert_eq!(input.bytes(1), &words[..]);
    }

    #[test]
    fn from_files_adds_each_in_order_and_stops_at_the_first_error() {
        let dir = std::env::temp_dir().join(format!("coop-from-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"first").unwrap();
        std::fs::write(&b, b"second").unwrap();
        let input = Input::from_files([&b, &a]).unwrap();
        assert_eq!(
            (input.len(), input.bytes(0), input.bytes(1)),
            (2, &b"second"[..], &b"first"[..])
        );
        assert_eq!(
            Input::from_files(Vec::<std::path::PathBuf>::new()).unwrap().len(),
            0
        );
        let missing = dir.join("missing");
        let err = Input::from_files([&a, &missing, &b]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_shrinks_during_a_job_is_an_input_error_not_a_crash() {
        for threads in [false, true] {
            let path = std::env::temp_dir().join(format!("coop-input-{}-{threads}", std::process::id()));
            std::fs::write(&path, vec![1u8; 64 * 4096]).unwrap();
            let mut input = Input::new();
            input.push_file(&path).unwrap();
            input.push_bytes(b"not a file");
            input.check_files_intact().unwrap();
            let job = ShrinkThenSum { path: path.clone() };
            let run = Run::new(&job, &input).tasks_per_worker(1);
            let result = if threads {
                run.on(&Threads::new(2).unwrap())
            } else {
                run.on(&Sequential)
            };
            let err = result.unwrap_err();
            assert!(matches!(err, Error::Input { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "{}: file shrank from {} to 4096 bytes while it was being read",
                    path.display(),
                    64 * 4096
                )
            );
            // Reads of the lost bytes found zeros.
            assert!(input.bytes(0)[4096..].iter().all(|&b| b == 0));
            std::fs::remove_file(&path).unwrap();
        }
    }
}
