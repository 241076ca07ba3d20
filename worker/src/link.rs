//! [`Link`]: what carries a worker's messages to and from its coordinator,
//! so that one task loop ([`serve`](crate::serve())) serves pool workers
//! (ipc-channel and shared memory) and MPI ranks (tags and byte buffers) alike.

use crate::job::JobInstance;
use crate::protocol::{FromWorker, Payload, ToWorker};

/// A worker's connection to its coordinator, as the task loop
/// ([`serve`](crate::serve())) uses it: the messages of [`protocol`](crate::protocol),
/// whatever carries them.
///
/// The loop decides what to answer; a link decides only how bytes travel.
/// Two things do not fit in a message on every transport, and a link owns
/// both: the input bytes that follow a [`ToWorker::Task`]
/// ([`receive_chunk`](Self::receive_chunk)), and the bytes a reply carries
/// ([`payload`](Self::payload): inline, in shared memory, or sent apart
/// after the message).
///
/// Internal plumbing between `coop` and its workers: a pool worker's link
/// is built by [`run_if_worker`](crate::run_if_worker), an MPI rank's by
/// `coop` itself.
pub trait Link {
    /// Why the link failed: the loop stops with it (see
    /// [`ServeError`](crate::ServeError)).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The next message from the coordinator, waiting for it; `Ok(None)`:
    /// the coordinator hung up, and the loop ends without an error.
    fn receive(&mut self) -> Result<Option<ToWorker>, Self::Error>;

    /// The bytes of the next input chunk, `len` bytes announced by a
    /// [`ToWorker::Task`]'s [`Chunk`](crate::protocol::Chunk) (the chunks
    /// of a task follow it in order), as the pieces they came in.
    ///
    /// The loop checks that the pieces add up to `len` and fails the task
    /// otherwise, so a link may stop short at a piece it cannot make sense
    /// of rather than fail itself; what it must not do is leave bytes of
    /// this chunk unread, or they would be taken for the next one.
    fn receive_chunk(&mut self, len: u64) -> Result<Vec<Vec<u8>>, Self::Error>;

    /// The highest job id the coordinator cancelled since the last call,
    /// if any: a [`ToWorker::Cancel`] read ahead of the tasks and flushes
    /// already queued (MPI sends them on a tag of their own), so that a
    /// failed job's remaining work is skipped rather than run. The loop
    /// asks before each task and flush.
    ///
    /// The default has none: a pool does not cancel, it kills busy workers
    /// of a failed job.
    fn take_cancelled(&mut self) -> Result<Option<u64>, Self::Error> {
        Ok(None)
    }

    /// Wraps `bytes` that a reply will carry (see [`PayloadKind`]): inline,
    /// in shared memory, or as [`Payload::Follows`] for [`send`](Self::send)
    /// to send after the message.
    fn payload(&mut self, kind: PayloadKind, bytes: Vec<u8>) -> Payload;

    /// Sends `message`, and whatever its payloads need sent after it.
    fn send(&mut self, message: FromWorker) -> Result<(), Self::Error>;

    /// Gives the link each job instance the loop opens, to run in its place:
    /// a layer that must see or change what the job itself does wraps it
    /// (fault injection scribbles over tiles and partials this way). The
    /// default runs the job as it is.
    fn wrap(&mut self, instance: Box<dyn JobInstance>) -> Box<dyn JobInstance> {
        instance
    }
}

/// What the bytes given to [`Link::payload`] are, which decides whether a
/// link may carry them in memory it reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A task's output tile, with its [`FromWorker::TaskDone`]. Several may
    /// be on their way at once (a worker runs the tasks queued for it before
    /// the coordinator reads their results), so each needs memory of its own.
    Tile,
    /// A partial, with [`FromWorker::Partial`]. Sent only when asked, and
    /// read by the coordinator before it asks the same worker again: the
    /// pool reuses one shared region for them ([`Outbox`](crate::protocol::Outbox)).
    Partial,
}
