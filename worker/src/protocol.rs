//! The messages a coordinator and its workers exchange, defined once for both sides.
//!
//! Everything here is small: ranges, names, ids. Bulk data never travels in these
//! messages except as a shared-memory handle ([`Payload::Shared`]) or, below a
//! size bound, inline bytes.

use std::path::PathBuf;

use ipc_channel::ipc::{IpcBytesSender, IpcReceiver, IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};

/// Environment variable that names the rendezvous socket of a worker's coordinator.
/// Its presence is what makes a process a worker.
pub const ENV_SERVER: &str = "COOP_WORKER_SERVER";
/// Environment variable holding the coordinator's pid, so that a worker can
/// check it was not orphaned between `fork` and `prctl`.
pub const ENV_PARENT: &str = "COOP_WORKER_PARENT";

/// Environment variable holding a random token the worker must present in its
/// hello: proof that it was started by this coordinator, since anyone who can
/// reach the rendezvous socket could connect.
pub const ENV_TOKEN: &str = "COOP_WORKER_TOKEN";

/// Partials at most this large travel inline in the message; larger ones go
/// through a shared-memory region (one copy, no serialization by ipc-channel).
pub const INLINE_PAYLOAD_MAX: usize = 64 * 1024;

/// Largest message on a bulk channel: the largest that ipc-channel sends whole
/// (capped at 1 MiB).
///
/// A larger message goes out in fragments, the rest of them over a dedicated
/// socket whose receiving end the sender keeps open until the last fragment
/// is sent; if the receiving process dies (a worker killed for a timeout)
/// after the first fragment, nothing ever reads the rest, and the sender
/// blocks for good. A message sent whole fails with a broken pipe instead.
pub fn bulk_piece_len() -> usize {
    ipc_channel::platform::OsIpcSender::get_max_fragment_size().clamp(1, 1 << 20)
}

/// Sends `bytes` (a chunk's) on a bulk channel, in pieces of at most
/// [`bulk_piece_len`] bytes; stops at the first failed send.
pub fn send_chunk(bulk: &IpcBytesSender, bytes: &[u8]) -> std::io::Result<()> {
    for piece in bytes.chunks(bulk_piece_len()) {
        bulk.send(piece)?;
    }
    Ok(())
}

/// A new id for a mapped region (shared memory or a file), unique in this
/// process (never 0): how a coordinator names a region its workers keep.
///
/// Workers keep the input segments and output of their last job mapped (see
/// `Mappings`), and the coordinator knows which each one
/// holds: it names those by id alone ([`SegmentDesc::Held`],
/// [`OutputDesc::Held`]), and a job on the same input then starts with its
/// pages mapped already, where a fresh mapping costs a page fault for every
/// 64 KiB a worker reads, and unmapping it at the end of the job as much
/// again (a worker that reads 150 MB: about 12 ms, then 6).
pub fn new_region_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A path as its bytes: serde's own form of a path is a string, and refuses
/// a path that is not UTF-8 (a message naming one could not be sent at all).
mod path_bytes {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(path.as_os_str().as_bytes(), serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(PathBuf::from(OsString::from_vec(bytes.into_vec())))
    }
}

/// One input segment, as the coordinator describes it to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum SegmentDesc {
    /// A memfd region shared by the coordinator and every worker; sending it
    /// passes the file descriptor, not the bytes.
    Shared {
        /// The region's id ([`new_region_id`]).
        id: u64,
        /// The region.
        region: IpcSharedMemory,
    },
    /// A regular file the worker maps itself (the page cache is the shared memory).
    File {
        /// The mapping's id ([`new_region_id`]); 0: not kept once the job ends.
        id: u64,
        /// Absolute path.
        #[serde(with = "path_bytes")]
        path: PathBuf,
        /// Length the coordinator saw; a worker that sees another refuses the job.
        len: u64,
    },
    /// Not a segment: a [`Pack`](crate::Pack) of small segments, for the
    /// [`SegmentDesc::InPack`]s after it. Described once per job, and not
    /// at all when the worker holds it from its previous job.
    Pack {
        /// The pack's id ([`new_region_id`]).
        id: u64,
        /// The pack's region.
        region: IpcSharedMemory,
    },
    /// A segment in a pack described before it, or held from the worker's
    /// previous job.
    InPack {
        /// The pack's id.
        pack: u64,
        /// Where the segment starts in the pack.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// A shared region or file the worker mapped for its previous job and
    /// still holds.
    Held {
        /// Its id.
        id: u64,
    },
    /// A segment the worker holds privately, zeroed; the bytes each task reads
    /// arrive with the task ([`Chunk`]s). Message passing.
    Private {
        /// Length of the segment.
        len: u64,
    },
}

impl SegmentDesc {
    /// The id of a segment (or pack) the worker keeps mapped once it opened the job.
    pub fn kept_id(&self) -> Option<u64> {
        match self {
            SegmentDesc::Shared { id, .. }
            | SegmentDesc::File { id, .. }
            | SegmentDesc::Held { id }
            | SegmentDesc::Pack { id, .. }
            | SegmentDesc::InPack { pack: id, .. } => Some(*id),
            SegmentDesc::Private { .. } => None,
        }
    }
}

/// Where a job's output tiles go.
#[derive(Debug, Serialize, Deserialize)]
pub enum OutputDesc {
    /// A region shared by all workers and the coordinator: tiles are written in place.
    Shared {
        /// The region's id ([`new_region_id`]).
        id: u64,
        /// The region.
        region: IpcSharedMemory,
    },
    /// A shared output the worker mapped for its previous job and still holds.
    Held {
        /// Its id.
        id: u64,
    },
    /// A private region in the worker; each tile goes back in its [`FromWorker::TaskDone`].
    Private {
        /// Length of the output.
        len: u64,
    },
    /// Bytes of a file that the worker maps itself, shared: tiles are written
    /// straight into the file's pages.
    File {
        /// The file, by a path that names it in every worker.
        path: std::path::PathBuf,
        /// Where the output starts in the file.
        offset: u64,
        /// Length of the output.
        len: u64,
    },
}

impl OutputDesc {
    /// The id of an output the worker keeps mapped once it opened the job.
    pub fn kept_id(&self) -> Option<u64> {
        match self {
            OutputDesc::Shared { id, .. } | OutputDesc::Held { id } => Some(*id),
            OutputDesc::Private { .. } | OutputDesc::File { .. } => None,
        }
    }
}

/// Part of a segment sent with a task: its bytes follow on the worker's bulk
/// channel ([`Hello::bulk`]), in messages of at most
/// [`bulk_piece_len`] bytes each ([`send_chunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Segment index.
    pub segment: u32,
    /// Byte offset within the segment.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// An output tile sent back with a task's result.
#[derive(Debug, Serialize, Deserialize)]
pub struct Tile {
    /// Byte offset within the output.
    pub offset: u64,
    /// The tile's bytes: in shared memory when large, so that no message
    /// from a worker is ever fragmented (see [`Payload`]).
    pub bytes: Payload,
}

/// Most file descriptors described in one message. ipc-channel passes at
/// most 64 in a message (and asserts past that), and every
/// [`SegmentDesc::Shared`] and [`SegmentDesc::Pack`] carries one: with room
/// left for the job's parameters and output, a job with more describes its
/// input in several messages ([`ToWorker::MoreInput`], then
/// [`ToWorker::StartJob`]).
pub const DESCRIPTORS_PER_MESSAGE: usize = 32;

/// Most bytes of descriptions in one message (each counted as
/// [`DESCRIPTION_BYTES`] plus its path), so that a message is never large
/// enough to be fragmented (see [`Payload`]).
const BYTES_PER_MESSAGE: usize = INLINE_PAYLOAD_MAX;

/// More than a description takes encoded, path aside (a variant tag and
/// three integers of at most 10 bytes each).
const DESCRIPTION_BYTES: usize = 48;

/// Cuts a job's input descriptions into the batches its messages carry, in
/// order: at most [`DESCRIPTORS_PER_MESSAGE`] descriptors and about
/// [`INLINE_PAYLOAD_MAX`] bytes each, so 100,000 segments in packs take
/// about 75 messages. Always at least one batch (the last, which goes with
/// [`ToWorker::StartJob`]), maybe empty.
pub fn input_batches(input: Vec<SegmentDesc>) -> Vec<Vec<SegmentDesc>> {
    let mut batches = vec![Vec::new()];
    let (mut descriptors, mut bytes) = (0, 0);
    for segment in input {
        let (fds, len) = match &segment {
            SegmentDesc::Shared { .. } | SegmentDesc::Pack { .. } => (1, DESCRIPTION_BYTES),
            SegmentDesc::File { path, .. } => (0, DESCRIPTION_BYTES + path.as_os_str().len()),
            SegmentDesc::InPack { .. } | SegmentDesc::Held { .. } | SegmentDesc::Private { .. } => {
                (0, DESCRIPTION_BYTES)
            }
        };
        let batch = batches.last_mut().expect("never empty");
        if !batch.is_empty()
            && (descriptors + fds > DESCRIPTORS_PER_MESSAGE || bytes + len > BYTES_PER_MESSAGE)
        {
            batches.push(Vec::new());
            (descriptors, bytes) = (0, 0);
        }
        (descriptors, bytes) = (descriptors + fds, bytes + len);
        batches.last_mut().expect("never empty").push(segment);
    }
    batches
}

/// Coordinator to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// The first input segments of the job that the next
    /// [`ToWorker::StartJob`] opens, when it has more than one message can
    /// describe ([`input_batches`]); the segments of several of these come
    /// before those of the `StartJob`, in the order sent.
    MoreInput {
        /// Job id.
        job: u64,
        /// Input segments, in order.
        input: Vec<SegmentDesc>,
    },
    /// Open a job: find its code by its type, map its input and output.
    StartJob {
        /// Job id, unique within the pool.
        job: u64,
        /// Which registered job ([`crate::JobEntry::key`]).
        key: crate::JobKey,
        /// The job value, encoded with postcard (see [`Payload`]).
        params: Payload,
        /// The last input segments, in order, after those of the job's
        /// [`ToWorker::MoreInput`] messages.
        input: Vec<SegmentDesc>,
        /// Where output tiles go, if the job has an output.
        output: Option<OutputDesc>,
    },
    /// Run one task of the open job and fold its result into the worker's partial.
    Task {
        /// Job id.
        job: u64,
        /// Task index within the job.
        task: u32,
        /// The task, encoded with postcard (see [`Payload`]).
        spec: Payload,
        /// Input bytes sent with the task (private segments only); each chunk's
        /// bytes follow on the bulk channel, in order.
        chunks: Vec<Chunk>,
    },
    /// Send the partial folded so far and start a new, empty one.
    Flush {
        /// Job id.
        job: u64,
    },
    /// The job failed: skip its remaining tasks and flushes. Sent where a
    /// worker can read it ahead of the tasks queued for it (MPI: on a tag of
    /// its own); a pool kills busy workers of a failed job instead.
    Cancel {
        /// Job id.
        job: u64,
    },
    /// Close the job, release its mappings, and answer [`FromWorker::JobEnded`].
    EndJob {
        /// Job id.
        job: u64,
    },
    /// Answer [`FromWorker::Bye`] and exit.
    Shutdown,
}

/// A pool worker's first message, on the rendezvous channel its coordinator
/// named in [`ENV_SERVER`]: who it is, and the channels of everything after.
///
/// The handshake is the transport's own (an MPI rank says hello in its own
/// way); every message after it is a [`ToWorker`] or a [`FromWorker`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The worker's pid, checked against the spawned child.
    pub pid: u32,
    /// The token from [`ENV_TOKEN`].
    pub token: String,
    /// Channel on which the worker receives [`ToWorker`] messages.
    pub to_worker: IpcSender<ToWorker>,
    /// Channel on which the worker receives the bytes of [`Chunk`]s.
    pub bulk: IpcBytesSender,
    /// Channel on which the coordinator receives [`FromWorker`] messages.
    pub from_worker: IpcReceiver<FromWorker>,
}

/// Worker to coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// A task finished; its result is folded into the worker's partial.
    TaskDone {
        /// Job id.
        job: u64,
        /// Task index.
        task: u32,
        /// The task's output tile, when the output is private to the worker
        /// and the task wrote a non-empty range.
        tile: Option<Tile>,
    },
    /// A task panicked or returned an error. Not retried: it would fail again.
    TaskFailed {
        /// Job id.
        job: u64,
        /// Task index.
        task: u32,
        /// What went wrong.
        failure: Failure,
    },
    /// Encoding the partial, answering [`ToWorker::Flush`], panicked or
    /// returned an error.
    FlushFailed {
        /// Job id.
        job: u64,
        /// What went wrong.
        failure: Failure,
    },
    /// The worker's partial result, answering [`ToWorker::Flush`].
    Partial {
        /// Job id.
        job: u64,
        /// The partial, encoded with postcard.
        data: Payload,
    },
    /// The worker could not open the job.
    JobRejected {
        /// Job id.
        job: u64,
        /// Why.
        reason: Rejection,
    },
    /// Answer to [`ToWorker::EndJob`]: the worker runs nothing of the job any
    /// more (a coordinator that must know, MPI's, waits for it).
    JobEnded {
        /// Job id.
        job: u64,
    },
    /// Answer to [`ToWorker::Shutdown`], the worker's last message.
    Bye,
}

impl FromWorker {
    /// What the message is, for logs and protocol errors.
    pub fn kind(&self) -> &'static str {
        match self {
            FromWorker::TaskDone { .. } => "a task result",
            FromWorker::TaskFailed { .. } => "a task failure",
            FromWorker::FlushFailed { .. } => "a partial's failure",
            FromWorker::Partial { .. } => "a partial",
            FromWorker::JobRejected { .. } => "a job rejection",
            FromWorker::JobEnded { .. } => "a job's end",
            FromWorker::Bye => "a goodbye",
        }
    }

    /// The payloads the message carries, in order: what a transport that
    /// sends bytes apart from messages sends after it ([`Payload::Follows`]).
    pub fn payloads_mut(&mut self) -> impl Iterator<Item = &mut Payload> {
        let payload = match self {
            FromWorker::TaskDone { tile: Some(tile), .. } => Some(&mut tile.bytes),
            FromWorker::Partial { data, .. } => Some(data),
            _ => None,
        };
        payload.into_iter()
    }
}

/// How a task failed inside a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Failure {
    /// User code panicked; the message and location of the panic.
    Panic(String),
    /// User code returned an error; its message (with sources, `: `-separated).
    Error(String),
}

/// Why a worker refused to open a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Rejection {
    /// No job of that name was registered with `coop::init` in the worker binary.
    UnknownJob {
        /// Names that are registered.
        registered: Vec<String>,
    },
    /// The job's parameters could not be decoded, or its input could not be mapped.
    Setup(String),
}

/// Bytes that travel inline or, when large, in a shared-memory region.
///
/// Inline payloads are small enough that the message carrying them is never
/// split into fragments by ipc-channel. That matters both ways: a receiver
/// waits for every fragment of a message it started reading, so a worker
/// stopped mid-message would block the coordinator; and a sender keeps
/// sending fragments to a receiver that died after the first (see
/// [`bulk_piece_len`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Payload {
    /// Small payloads.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Large payloads: one copy into a memfd, passed as a file descriptor.
    Shared {
        /// The region, perhaps larger than the payload (see [`Outbox`]).
        region: IpcSharedMemory,
        /// Length of the payload, from the start of the region.
        len: u64,
    },
    /// The bytes follow the message apart from it, on the transport's data
    /// path (MPI's data tag): what a transport without shared memory sends,
    /// and turns back into [`Payload::Inline`] on receipt.
    Follows {
        /// Length of the bytes that follow.
        len: u64,
    },
}

impl Payload {
    /// Wraps `bytes`, choosing inline or shared memory by size.
    pub fn new(bytes: Vec<u8>) -> Self {
        if bytes.len() <= INLINE_PAYLOAD_MAX {
            Payload::Inline(bytes)
        } else {
            Payload::Shared {
                len: bytes.len() as u64,
                region: IpcSharedMemory::from_bytes(&bytes),
            }
        }
    }

    /// The payload's bytes; none if its length lies beyond its region (a
    /// payload no coop process makes), or if they follow apart
    /// ([`Payload::Follows`], until the transport took them).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Inline(bytes) => bytes,
            Payload::Follows { .. } => &[],
            Payload::Shared { region, len } => usize::try_from(*len)
                .ok()
                .and_then(|len| region.get(..len))
                .unwrap_or_default(),
        }
    }
}

/// The shared region a worker's last large partial went out in, kept to
/// carry the next one: its pages are allocated and mapped already, where a
/// new region costs a page fault for every page written (a 7 MB word-count
/// table: about 5 ms to create, against 1 ms to copy into a kept one).
///
/// A worker sends one partial at a time, and only when asked
/// ([`ToWorker::Flush`]); the coordinator reads a partial's bytes while it
/// merges it, before it asks the same worker for another. So the region is
/// never written while the coordinator reads it.
#[derive(Debug, Default)]
pub struct Outbox {
    region: Option<IpcSharedMemory>,
}

impl Outbox {
    /// A payload of `bytes`: inline when small, else copied into the kept
    /// region, or into a new one an eighth larger than `bytes` (kept in its
    /// place) when they do not fit.
    pub fn payload(&mut self, bytes: Vec<u8>) -> Payload {
        if bytes.len() <= INLINE_PAYLOAD_MAX {
            return Payload::Inline(bytes);
        }
        let region = match &mut self.region {
            Some(region) if region.len() >= bytes.len() => region,
            kept => kept.insert(IpcSharedMemory::from_byte(0, bytes.len() + bytes.len() / 8)),
        };
        // SAFETY: no other process reads the region now (see the type's
        // docs), and no reference into it is alive in this one.
        let target = unsafe { region.deref_mut() };
        target[..bytes.len()].copy_from_slice(&bytes);
        Payload::Shared {
            region: region.clone(),
            len: bytes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use ipc_channel::ipc;

    use super::*;

    #[test]
    fn input_batches_keep_order_and_bound_descriptors_and_bytes() {
        assert_eq!(
            input_batches(Vec::new()).len(),
            1,
            "one batch, empty, for StartJob"
        );
        let shared = |id| SegmentDesc::Shared {
            id,
            region: IpcSharedMemory::from_bytes(&[1]),
        };
        let file = |id, len| SegmentDesc::File {
            id,
            path: PathBuf::from("p".repeat(len)),
            len: 1,
        };
        let in_pack = |offset| SegmentDesc::InPack {
            pack: 1,
            offset,
            len: 1,
        };
        let mut input: Vec<SegmentDesc> = (0..70).map(shared).collect();
        input.extend((70..100).map(|id| file(id, 4000)));
        input.extend((0..5000).map(in_pack));
        let batches = input_batches(input);
        let ids: Vec<u64> = batches
            .iter()
            .flatten()
            .filter_map(SegmentDesc::kept_id)
            .collect();
        assert_eq!(ids[..100], (0..100).collect::<Vec<_>>());
        assert_eq!(ids.len(), 5100, "nothing lost");
        for batch in &batches {
            let descriptors = batch
                .iter()
                .filter(|s| matches!(s, SegmentDesc::Shared { .. }))
                .count();
            assert!(!batch.is_empty() && descriptors <= DESCRIPTORS_PER_MESSAGE);
            // What the batch takes encoded, as its message carries it.
            let encoded = postcard::to_allocvec(batch).unwrap().len();
            assert!(encoded <= BYTES_PER_MESSAGE, "{encoded} bytes");
        }
        // Segments with no descriptor go many to a message.
        assert!(batches.len() < 20, "{} batches", batches.len());
        // One path longer than the bound still goes, alone.
        assert_eq!(input_batches(vec![file(1, BYTES_PER_MESSAGE + 1)]).len(), 1);
    }

    #[test]
    fn inline_payloads_fit_a_message_sent_whole_and_larger_ones_are_shared() {
        // Room for the rest of the message around an inline payload.
        assert!(INLINE_PAYLOAD_MAX + 16 * 1024 <= bulk_piece_len());
        let inline = Payload::new(vec![1; INLINE_PAYLOAD_MAX]);
        assert!(matches!(inline, Payload::Inline(_)));
        let shared = Payload::new(vec![2; INLINE_PAYLOAD_MAX + 1]);
        assert!(matches!(shared, Payload::Shared { .. }));
        assert_eq!(shared.bytes(), &vec![2; INLINE_PAYLOAD_MAX + 1][..]);
    }

    #[test]
    fn an_outbox_carries_large_payloads_in_one_region_while_they_fit() {
        let mut outbox = Outbox::default();
        let region_of = |payload: &Payload| match payload {
            Payload::Shared { region, .. } => region.len(),
            Payload::Inline(_) | Payload::Follows { .. } => 0,
        };
        let small = outbox.payload(vec![1; 100]);
        assert!(matches!(small, Payload::Inline(_)));
        assert!(outbox.region.is_none());

        let first = outbox.payload(vec![2; 800_000]);
        assert_eq!(first.bytes(), &[2; 800_000][..]);
        assert_eq!(region_of(&first), 900_000);
        drop(first); // the coordinator is done with it
        let kept = outbox.region.as_ref().map(|r| r.as_ptr());
        // Smaller, then as large as the region: the same region.
        for len in [700_000, 900_000] {
            let next = outbox.payload(vec![3; len]);
            assert_eq!(next.bytes(), &vec![3; len][..]);
            assert_eq!(region_of(&next), 900_000);
            assert_eq!(outbox.region.as_ref().map(|r| r.as_ptr()), kept);
        }
        // Larger: a new region, kept from then on.
        let larger = outbox.payload(vec![4; 1_000_000]);
        assert_eq!(larger.bytes(), &vec![4; 1_000_000][..]);
        assert_eq!(region_of(&larger), 1_125_000);
    }

    #[test]
    fn a_shared_payload_longer_than_its_region_reads_as_empty() {
        let payload = Payload::Shared {
            region: IpcSharedMemory::from_bytes(&[5; 10]),
            len: 11,
        };
        assert!(payload.bytes().is_empty());
    }

    #[test]
    fn a_chunk_travels_in_pieces_ipc_channel_sends_whole() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let piece = bulk_piece_len();
        let bytes: Vec<u8> = (0..3 * piece + 17).map(|i| (i % 251) as u8).collect();
        let sender = {
            let bytes = bytes.clone();
            std::thread::spawn(move || send_chunk(&tx, &bytes))
        };
        let mut received = Vec::new();
        while received.len() < bytes.len() {
            let message = rx.recv().unwrap();
            assert!(
                !message.is_empty() && message.len() <= piece,
                "{} bytes",
                message.len()
            );
            received.extend_from_slice(&message);
        }
        sender.join().unwrap().unwrap();
        assert_eq!(received, bytes);
    }

    /// The hang this guards against: a message ipc-channel must fragment,
    /// sent to a process that dies after its first fragment, blocks its
    /// sender for good (found by the fault suite: a worker stopped, then
    /// killed for its timeout, with its input in flight).
    #[test]
    fn a_chunk_to_a_receiver_that_goes_away_fails_instead_of_blocking() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let (done, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(send_chunk(&tx, &vec![7u8; 16 << 20]));
        });
        // Let the sender fill the socket, then close the receiving end unread.
        std::thread::sleep(Duration::from_millis(200));
        drop(rx);
        let sent = outcome
            .recv_timeout(Duration::from_secs(20))
            .expect("the sender still blocks after its receiver went away");
        assert!(sent.is_err(), "16 MiB sent to a receiver that read nothing");
    }
}
