//! MPI as a [`Transport`]: rank 0 schedules, ranks 1 to N-1 are the workers.
//! Files are mapped by every rank, in-memory segments sent in the chunks
//! tasks read, output tiles and partials come back as bytes after their
//! message. A rank cannot be lost alone (MPI ends the whole job), so this
//! transport never reports a loss, and cannot kill: a breach fails the job.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coop_worker::protocol::{Failure, FromWorker, OutputDesc, Payload, Rejection, SegmentDesc, ToWorker};
use mpi::topology::SimpleCommunicator;

use super::wire::{self, TAG_CANCEL, TAG_CONTROL};
use crate::error::{Error, MpiError, RankFailure, Result};
use crate::input::Input;
use crate::scheduler::{
    Carriage, Event, JobEnd, JobName, JobStart, Kill, Reported, TaskSend, Transport, WorkerId,
};

/// Rank 0's view of the other ranks, between jobs and during one.
#[derive(Debug)]
pub(super) struct State {
    /// Ranks 1 to N-1, in order (`ranks[i]` is rank `i + 1`).
    pub(super) ranks: Vec<Rank>,
    pub(super) next_job: u64,
}

/// One rank.
#[derive(Debug)]
pub(super) struct Rank {
    pub(super) rank: i32,
    pub(super) host: String,
    pub(super) pid: u32,
    /// The job the rank has open, until it is told to end it.
    open: Option<u64>,
    /// A job the rank was told to end, whose [`FromWorker::JobEnded`] has not arrived.
    ending: Option<u64>,
}

impl Rank {
    pub(super) fn new(rank: i32, host: String, pid: u32) -> Self {
        Rank {
            rank,
            host,
            pid,
            open: None,
            ending: None,
        }
    }

    fn id(&self) -> WorkerId {
        WorkerId {
            index: self.rank as u64,
            pid: self.pid,
        }
    }

    /// A protocol breach by this rank.
    fn breach(&self, problem: impl std::fmt::Display) -> Error {
        Error::Protocol {
            pid: self.pid,
            message: format!("MPI rank {} (host {}): {problem}", self.rank, self.host),
        }
    }

    /// Closes the open job in the rank; after a failure, the rank is first
    /// told to skip the job's queued tasks. Its answer is awaited by
    /// [`State::settle`].
    pub(super) fn end(&mut self, world: &SimpleCommunicator, failed: bool) -> Result<()> {
        let Some(job) = self.open.take() else {
            return Ok(());
        };
        if failed {
            wire::send(world, self.rank, TAG_CANCEL, &ToWorker::Cancel { job })?;
        }
        wire::send(world, self.rank, TAG_CONTROL, &ToWorker::EndJob { job })?;
        self.ending = Some(job);
        Ok(())
    }
}

impl State {
    /// Receives the next message from any rank, with the bytes that follow
    /// it (as [`Payload::Inline`]); gives up at `deadline`, if there is one.
    /// A tile longer than `tile_max` (the output's length) is not received:
    /// it is a breach.
    pub(super) fn receive(
        &mut self,
        world: &SimpleCommunicator,
        deadline: Option<Instant>,
        tile_max: u64,
    ) -> Result<Option<(i32, FromWorker)>> {
        let received = match deadline {
            Some(deadline) => wire::receive_until::<FromWorker>(world, None, TAG_CONTROL, deadline)?,
            None => Some(wire::receive::<FromWorker>(world, None, TAG_CONTROL)?),
        };
        let Some((from, mut message)) = received else {
            return Ok(None);
        };
        let max = match message {
            FromWorker::TaskDone { .. } => tile_max,
            _ => u64::MAX,
        };
        for payload in message.payloads_mut() {
            if let Payload::Follows { len } = *payload {
                if len > max {
                    wire::discard_data(world, from, len)?;
                    let rank = self.rank_mut(from)?;
                    return Err(rank.breach(format!(
                        "announced a tile of {len} bytes, more than the output's {max}"
                    )));
                }
                let len = usize::try_from(len).map_err(|_| {
                    self.rank_mut(from).map_or_else(
                        |err| err,
                        |rank| rank.breach("announced more bytes than memory holds"),
                    )
                })?;
                let mut bytes = vec![0; len];
                wire::receive_data(world, from, &mut bytes)?;
                *payload = Payload::Inline(bytes);
            }
        }
        Ok(Some((from, message)))
    }

    fn rank_mut(&mut self, rank: i32) -> Result<&mut Rank> {
        usize::try_from(rank - 1)
            .ok()
            .and_then(|index| self.ranks.get_mut(index))
            .ok_or(Error::Mpi(MpiError::UnknownRank { rank }))
    }

    fn rank_of(&self, worker: WorkerId) -> Option<&Rank> {
        self.ranks
            .get(usize::try_from(worker.index).ok()?.checked_sub(1)?)
    }

    /// Ends the jobs still open (a job a panic unwound through), then waits
    /// until every rank has ended the jobs it was told to end, dropping what
    /// they still send about them (a task of a failed job that was running).
    /// Then every rank is idle, waiting for rank 0.
    pub(super) fn settle(&mut self, world: &SimpleCommunicator) -> Result<()> {
        for rank in &mut self.ranks {
            rank.end(world, true)?;
        }
        while self.ranks.iter().any(|rank| rank.ending.is_some()) {
            // What ranks still send about the jobs is dropped, whatever its size.
            let Some((from, message)) = self.receive(world, None, u64::MAX)? else {
                continue;
            };
            let rank = self.rank_mut(from)?;
            match message {
                FromWorker::JobEnded { job } if rank.ending == Some(job) => rank.ending = None,
                FromWorker::Bye => return Err(rank.breach("said goodbye while ending a job")),
                _ => {}
            }
        }
        Ok(())
    }
}

/// MPI, for one job.
pub(super) struct MpiTransport<'a> {
    pub(super) state: &'a mut State,
    pub(super) world: &'a SimpleCommunicator,
    pub(super) input: &'a Input,
    /// The job's [`ToWorker::StartJob`], encoded once for every rank.
    pub(super) start: Option<Vec<u8>>,
    /// The longest tile a rank may send: the output's length.
    pub(super) tile_max: u64,
}

impl MpiTransport<'_> {
    fn rank(&mut self, worker: WorkerId) -> Result<&mut Rank> {
        self.state.rank_mut(worker.index as i32)
    }
}

impl Transport for MpiTransport<'_> {
    /// Files are mapped by every rank (from a shared filesystem); the bytes
    /// of in-memory segments travel. Output is private memory on each rank.
    fn carriage(&self, input: &Input) -> Carriage {
        Carriage {
            sent: input
                .regions()
                .iter()
                .map(|region| region.path().is_none())
                .collect(),
            tiles: true,
        }
    }

    fn prepare(&mut self) -> Result<Vec<WorkerId>> {
        self.state.settle(self.world)?;
        Ok(self.state.ranks.iter().map(Rank::id).collect())
    }

    fn start_job(&mut self, worker: WorkerId, job: &JobStart<'_>) -> Result<()> {
        if self.start.is_none() {
            let input = (job.input.regions().iter())
                .map(|region| {
                    let len = region.bytes().len() as u64;
                    match region.path() {
                        // Id 0: a rank keeps no mapping once the job ends
                        // (ranks share no memory; a kept mapping would only
                        // hold a deleted file's space).
                        Some(path) => SegmentDesc::File {
                            id: 0,
                            path: PathBuf::from(path.as_os_str()),
                            len,
                        },
                        None => SegmentDesc::Private { len },
                    }
                })
                .collect();
            let start = ToWorker::StartJob {
                job: job.id,
                key: job.key.clone(),
                params: Payload::Inline(job.params.to_vec()),
                input,
                output: job.output.map(|out| OutputDesc::Private {
                    len: out.len() as u64,
                }),
            };
            self.start = Some(wire::encode(&start)?);
        }
        let (world, start) = (self.world, self.start.as_deref().unwrap_or_default());
        let rank = self.state.rank_mut(worker.index as i32)?;
        wire::send_encoded(world, rank.rank, TAG_CONTROL, start);
        rank.open = Some(job.id);
        Ok(())
    }

    fn send_task(&mut self, worker: WorkerId, send: TaskSend<'_>) -> Result<()> {
        let rank = worker.index as i32;
        let message = send.message(Payload::Inline(send.spec.to_vec()));
        wire::send(self.world, rank, TAG_CONTROL, &message)?;
        for chunk in send.chunks {
            wire::send_data(self.world, rank, self.input.chunk(chunk));
        }
        Ok(())
    }

    fn flush(&mut self, worker: WorkerId, job: u64) -> Result<()> {
        wire::send(
            self.world,
            worker.index as i32,
            TAG_CONTROL,
            &ToWorker::Flush { job },
        )?;
        Ok(())
    }

    fn end_job(&mut self, worker: WorkerId, end: JobEnd) -> Result<()> {
        let world = self.world;
        self.rank(worker)?.end(world, end.failed)
    }

    fn next_event(&mut self, wait: Duration) -> Result<Option<(WorkerId, Event)>> {
        let deadline = Some(Instant::now() + wait);
        let Some((from, message)) = self.state.receive(self.world, deadline, self.tile_max)? else {
            return Ok(None);
        };
        let id = self.state.rank_mut(from)?.id();
        Ok(Some((id, Event::Message(message))))
    }

    fn kill(&mut self, worker: WorkerId, why: &Kill) -> Result<()> {
        let rank = self.rank(worker)?;
        Err(match why {
            Kill::Breach(problem) => rank.breach(problem),
            Kill::Timeout => rank.breach("its task timed out"),
        })
    }

    /// Never asked: this transport reports no loss.
    fn replace(&mut self) -> Option<Result<WorkerId>> {
        None
    }

    fn reported(&self, worker: WorkerId, job: JobName, failure: Reported) -> Error {
        let (failure, message) = match failure {
            Reported::Failed {
                task,
                failure: Failure::Panic(message),
            } => (RankFailure::Panicked { task }, message),
            Reported::Failed {
                task,
                failure: Failure::Error(message),
            } => (RankFailure::Failed { task }, message),
            Reported::Rejected(Rejection::UnknownJob { registered }) => (
                RankFailure::UnknownJob,
                format!(
                    "registered there: [{}]; is the same program running on every rank? \
                     Add the job to coop::init",
                    registered.join(", ")
                ),
            ),
            Reported::Rejected(Rejection::Setup(message)) => (RankFailure::Setup, message),
        };
        let host = (self.state.rank_of(worker))
            .map_or_else(|| "(unknown host)".to_string(), |rank| rank.host.clone());
        Error::Rank {
            job: job.name,
            rank: worker.index as usize,
            host,
            pid: worker.pid,
            failure,
            message,
        }
    }
}
