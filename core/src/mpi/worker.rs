//! Ranks 1 to N-1: say hello, then serve rank 0's jobs with the worker loop
//! every coop worker runs ([`coop_worker::serve`]), over MPI; finalize MPI
//! and exit. Never returns.

use std::panic::{self, AssertUnwindSafe};

use coop_worker::protocol::{FromWorker, Payload, ToWorker};
use coop_worker::{JobEntry, Link, PayloadKind, ServeError, capture_panics, panic_message};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;

use super::wire::{self, RankHello, TAG_CANCEL, TAG_CONTROL};
use crate::error::MpiError;

/// Exit code given to `MPI_Abort` when a rank cannot go on (rank 0 vanished
/// from the protocol, or coop itself failed): the whole MPI job ends.
pub(super) const EXIT_BROKEN: i32 = 3;

/// Why a rank cannot go on serving rank 0: it aborts the MPI job, printing this.
#[derive(Debug, thiserror::Error)]
enum Broken {
    /// The hello could not be sent.
    #[error("saying hello: {0}")]
    Hello(#[source] MpiError),
    /// The worker loop stopped on a broken link.
    #[error(transparent)]
    Serve(#[from] ServeError<LinkError>),
    /// Coop panicked outside a task.
    #[error("panicked: {0}")]
    Panicked(String),
}

/// Why the MPI link failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    /// A message could not be sent, received or decoded.
    #[error(transparent)]
    Wire(#[from] MpiError),
    /// Rank 0 announced input bytes this rank cannot hold in memory.
    #[error("a chunk of {len} bytes is more than this rank can hold")]
    ChunkTooLarge { len: u64 },
    /// Rank 0 sent something else than a cancellation on the cancel tag.
    #[error("rank 0 sent {0:?} as a cancellation")]
    NotACancel(Box<ToWorker>),
}

/// Serves rank 0 until it says `Shutdown`, then finalizes MPI and exits with
/// status 0. Anything that breaks the protocol, or a panic outside a task,
/// aborts the whole MPI job with a message naming this rank and host: a rank
/// that just died would leave the others waiting.
pub(super) fn serve(universe: Universe, world: SimpleCommunicator, jobs: &'static [JobEntry]) -> ! {
    capture_panics();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let hello = RankHello {
            host: super::host_name(),
            pid: std::process::id(),
        };
        wire::send(&world, 0, TAG_CONTROL, &hello).map_err(Broken::Hello)?;
        let mut link = MpiLink {
            world: &world,
            follows: Vec::new(),
        };
        coop_worker::serve(jobs, &mut link)?;
        Ok::<_, Broken>(())
    }));
    let problem = match outcome {
        Ok(Ok(())) => {
            drop(world);
            drop(universe); // MPI_Finalize
            std::process::exit(0);
        }
        Ok(Err(problem)) => problem,
        Err(payload) => Broken::Panicked(panic_message(&*payload)),
    };
    super::abort(&world, problem)
}

/// A rank's link to rank 0: messages on [`TAG_CONTROL`], cancellations on
/// [`TAG_CANCEL`], and the bytes of chunks, tiles and partials on the data tag.
struct MpiLink<'w> {
    world: &'w SimpleCommunicator,
    /// Bytes to send after the next message, in order ([`Payload::Follows`]).
    follows: Vec<Vec<u8>>,
}

impl Link for MpiLink<'_> {
    type Error = LinkError;

    /// Rank 0 never hangs up: it says `Shutdown`.
    fn receive(&mut self) -> Result<Option<ToWorker>, LinkError> {
        let (_, message) = wire::receive::<ToWorker>(self.world, Some(0), TAG_CONTROL)?;
        Ok(Some(message))
    }

    fn receive_chunk(&mut self, len: u64) -> Result<Vec<Vec<u8>>, LinkError> {
        let size = usize::try_from(len).map_err(|_| LinkError::ChunkTooLarge { len })?;
        let mut bytes = vec![0; size];
        wire::receive_data(self.world, 0, &mut bytes)?;
        Ok(vec![bytes])
    }

    fn take_cancelled(&mut self) -> Result<Option<u64>, LinkError> {
        let mut cancelled = None;
        while let Some(message) = wire::try_receive::<ToWorker>(self.world, 0, TAG_CANCEL)? {
            match message {
                ToWorker::Cancel { job } => cancelled = cancelled.max(Some(job)),
                other => return Err(LinkError::NotACancel(Box::new(other))),
            }
        }
        Ok(cancelled)
    }

    /// Every payload follows its message: ranks share no memory.
    fn payload(&mut self, _: PayloadKind, bytes: Vec<u8>) -> Payload {
        let len = bytes.len() as u64;
        self.follows.push(bytes);
        Payload::Follows { len }
    }

    fn send(&mut self, message: FromWorker) -> Result<(), LinkError> {
        // Taken first, so that a failed send leaves none for the next message.
        let follows = std::mem::take(&mut self.follows);
        wire::send(self.world, 0, TAG_CONTROL, &message)?;
        for bytes in follows {
            wire::send_data(self.world, 0, &bytes);
        }
        Ok(())
    }
}
