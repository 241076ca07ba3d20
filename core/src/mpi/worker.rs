//! Ranks 1 to N-1: serve rank 0's jobs with the jobs registered in
//! [`crate::init`], then finalize MPI and exit. Never returns.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use coop_worker::protocol::{Failure, OutputDesc, SegmentDesc, new_region_id};
use coop_worker::{JobEntry, JobInstance, Mappings, capture_panics, open_job, panic_message};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;

use super::wire::{self, FromRank, Segment, TAG_CANCEL, TAG_CONTROL, TileHeader, ToRank};
use crate::error::MpiError;

/// Exit code given to `MPI_Abort` when a rank cannot go on (rank 0 vanished
/// from the protocol, or coop itself failed): the whole MPI job ends.
pub(super) const EXIT_BROKEN: i32 = 3;

/// Why a rank cannot go on serving rank 0: it aborts the MPI job, printing this.
#[derive(Debug, thiserror::Error)]
enum Broken {
    /// A message could not be sent, received or decoded.
    #[error(transparent)]
    Wire(#[from] MpiError),
    /// Rank 0 announced input bytes this rank cannot hold in memory.
    #[error("chunk too large")]
    ChunkTooLarge,
    /// Rank 0 sent a cancellation on the control tag.
    #[error("rank 0 sent a cancellation as a control message")]
    CancelAsControl,
    /// Rank 0 sent something else than a cancellation on the cancel tag.
    #[error("rank 0 sent {0:?} as a cancellation")]
    NotACancel(Box<ToRank>),
    /// The job reported an output range outside its output.
    #[error("task {task} reported output range {range:?}, out of bounds")]
    TileOutOfBounds {
        task: u32,
        range: std::ops::Range<usize>,
    },
    /// Coop panicked outside a task.
    #[error("panicked: {0}")]
    Panicked(String),
}

/// Serves rank 0 until it says [`ToRank::Shutdown`], then finalizes MPI and
/// exits with status 0. Anything that breaks the protocol, or a panic outside
/// a task, aborts the whole MPI job with a message naming this rank and host:
/// a rank that just died would leave the others waiting.
pub(super) fn serve(universe: Universe, world: SimpleCommunicator, jobs: &'static [JobEntry]) -> ! {
    let host = super::host_name();
    capture_panics();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        wire::send(
            &world,
            0,
            TAG_CONTROL,
            &FromRank::Hello {
                host: host.clone(),
                pid: std::process::id(),
            },
        )?;
        task_loop(&world, jobs)
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

/// The job a rank has open.
struct OpenJob {
    id: u64,
    instance: Box<dyn JobInstance>,
    /// Set after a task failed or rank 0 cancelled the job: the partial may be
    /// half-updated, so the job's remaining tasks and flushes are skipped.
    stopped: bool,
}

fn task_loop(world: &SimpleCommunicator, jobs: &[JobEntry]) -> Result<(), Broken> {
    let mut current: Option<OpenJob> = None;
    // Highest job id rank 0 cancelled.
    let mut cancelled: Option<u64> = None;
    loop {
        let (_, message) = wire::receive::<ToRank>(world, Some(0), TAG_CONTROL)?;
        match message {
            ToRank::StartJob {
                job,
                key,
                params,
                input,
                output,
            } => {
                current = None; // release the previous job's memory first
                // This rank's own view of the input: files mapped by path,
                // in-memory segments as private memory the tasks' chunks fill;
                // the output private too (tiles go back to rank 0).
                let input = input
                    .into_iter()
                    .map(|segment| match segment {
                        Segment::File { path, len } => SegmentDesc::File {
                            id: new_region_id(),
                            path: PathBuf::from(OsStr::from_bytes(&path)),
                            len,
                        },
                        Segment::Memory { len } => SegmentDesc::Private { len },
                    })
                    .collect();
                let output = output.map(|len| OutputDesc::Private { len });
                // Ranks hold no shared memory: nothing to keep between jobs.
                match open_job(jobs, &key, &params, input, output, &mut Mappings::default()) {
                    Ok(instance) => {
                        current = Some(OpenJob {
                            id: job,
                            instance,
                            stopped: false,
                        })
                    }
                    Err(reason) => {
                        wire::send(world, 0, TAG_CONTROL, &FromRank::JobRejected { job, reason })?;
                    }
                }
            }
            ToRank::Task {
                job,
                task,
                spec,
                chunks,
            } => {
                // The chunks' bytes are received whatever happens next: left
                // unread, they would be taken for the next task's.
                let mut data = Vec::with_capacity(chunks.len());
                for chunk in &chunks {
                    let mut bytes = vec![0; usize::try_from(chunk.len).map_err(|_| Broken::ChunkTooLarge)?];
                    wire::receive_data(world, 0, &mut bytes)?;
                    data.push((chunk, bytes));
                }
                check_cancel(world, &mut cancelled, current.as_mut())?;
                let Some(open) = current.as_mut().filter(|o| o.id == job && !o.stopped) else {
                    continue;
                };
                let received = data.iter().try_for_each(|(chunk, bytes)| {
                    let segment = chunk.segment as usize;
                    let region =
                        open.instance.regions_mut().get_mut(segment).ok_or_else(|| {
                            format!("input chunk for segment {segment}, which does not exist")
                        })?;
                    region
                        .write(chunk.offset as usize, bytes)
                        .map_err(|err| format!("input segment {segment}: {err}"))
                });
                match received {
                    Err(message) => fail(world, open, task, Failure::Error(message))?,
                    Ok(()) => run_task(world, open, task, &spec)?,
                }
            }
            ToRank::Flush { job } => {
                check_cancel(world, &mut cancelled, current.as_mut())?;
                let Some(open) = current.as_mut().filter(|o| o.id == job && !o.stopped) else {
                    continue;
                };
                match panic::catch_unwind(AssertUnwindSafe(|| open.instance.take_partial())) {
                    Ok(Ok(bytes)) => {
                        let len = bytes.len() as u64;
                        wire::send(world, 0, TAG_CONTROL, &FromRank::Partial { job, len })?;
                        wire::send_data(world, 0, &bytes);
                    }
                    Ok(Err(err)) => fail(world, open, u32::MAX, Failure::Error(err.to_string()))?,
                    Err(payload) => fail(world, open, u32::MAX, Failure::Panic(panic_message(&*payload)))?,
                }
            }
            ToRank::EndJob { job } => {
                if current.as_ref().is_some_and(|o| o.id == job) {
                    current = None;
                }
                wire::send(world, 0, TAG_CONTROL, &FromRank::JobEnded { job })?;
            }
            ToRank::Cancel { .. } => {
                return Err(Broken::CancelAsControl);
            }
            ToRank::Shutdown => {
                drop(current);
                wire::send(world, 0, TAG_CONTROL, &FromRank::Bye)?;
                return Ok(());
            }
        }
    }
}

/// Takes the cancellations rank 0 sent, and stops the open job if it is one
/// of them: a failed job's queued tasks are skipped rather than run.
fn check_cancel(
    world: &SimpleCommunicator,
    cancelled: &mut Option<u64>,
    current: Option<&mut OpenJob>,
) -> Result<(), Broken> {
    while let Some(message) = wire::try_receive::<ToRank>(world, 0, TAG_CANCEL)? {
        match message {
            ToRank::Cancel { job } => *cancelled = (*cancelled).max(Some(job)),
            other => return Err(Broken::NotACancel(Box::new(other))),
        }
    }
    if let Some(open) = current
        && cancelled.is_some_and(|job| job >= open.id)
    {
        open.stopped = true;
    }
    Ok(())
}

/// Runs one task, catching panics, and answers rank 0: done (with the output
/// tile the task wrote), or failed.
fn run_task(world: &SimpleCommunicator, open: &mut OpenJob, task: u32, spec: &[u8]) -> Result<(), Broken> {
    match panic::catch_unwind(AssertUnwindSafe(|| open.instance.run_task(spec))) {
        Ok(Ok(range)) => {
            let tile = (!range.is_empty()).then(|| TileHeader {
                offset: range.start as u64,
                len: range.len() as u64,
            });
            let done = FromRank::TaskDone {
                job: open.id,
                task,
                tile,
            };
            wire::send(world, 0, TAG_CONTROL, &done)?;
            if tile.is_some() {
                let bytes = (open.instance.output().bytes().get(range.clone()))
                    .ok_or_else(|| Broken::TileOutOfBounds { task, range })?;
                wire::send_data(world, 0, bytes);
            }
            Ok(())
        }
        Ok(Err(err)) => fail(world, open, task, Failure::Error(err.to_string())),
        Err(payload) => fail(world, open, task, Failure::Panic(panic_message(&*payload))),
    }
}

fn fail(world: &SimpleCommunicator, open: &mut OpenJob, task: u32, failure: Failure) -> Result<(), Broken> {
    open.stopped = true;
    let message = FromRank::TaskFailed {
        job: open.id,
        task,
        failure,
    };
    wire::send(world, 0, TAG_CONTROL, &message)?;
    Ok(())
}
