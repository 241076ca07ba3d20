//! Rank 0's side of one job: dynamic scheduling over the other ranks, output
//! tiles and partials coming back, and closing the job in every rank.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use coop_worker::protocol::{Chunk, Failure, Rejection};
use mpi::topology::SimpleCommunicator;

use super::wire::{self, FromRank, Segment, TAG_CANCEL, TAG_CONTROL, TileHeader, ToRank};
use crate::engine::{Encoded, JobStats, Progress, Run, report};
use crate::error::{Error, MpiError, RankFailure, Result, TaskIndex};
use crate::input::{Input, SharedOutput};
use crate::job::{Job, absorb_partial};
use crate::stop::Stop;

/// Tasks sent ahead to each rank when they carry no input bytes: one running,
/// one waiting, so that a rank does not idle for a round trip between tasks.
const DEPTH: usize = 2;

/// How often rank 0 looks at the job's deadline and cancel token while no
/// rank reports.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Rank 0's view of the other ranks.
#[derive(Debug)]
pub(super) struct State {
    /// Ranks 1 to N-1, in order (`ranks[i]` is rank `i + 1`).
    pub(super) ranks: Vec<RankSlot>,
    pub(super) next_job: u64,
    /// The job whose tasks are out, if one is (set until it is ended in every rank).
    pub(super) current: Option<u64>,
}

/// One rank and what it holds of the current job.
#[derive(Debug)]
pub(super) struct RankSlot {
    pub(super) rank: i32,
    pub(super) host: String,
    pub(super) pid: u32,
    /// Whether the rank has opened the current job.
    open: bool,
    /// Tasks sent and not yet reported done, in the order the rank runs them.
    assigned: VecDeque<usize>,
    /// Tasks done whose results sit in the rank's unsent partial.
    folded: usize,
    /// A flush was sent and its partial has not arrived.
    flushing: bool,
    /// A job the rank was told to end, whose [`FromRank::JobEnded`] has not arrived.
    ending: Option<u64>,
    /// Parts of in-memory segments (segment, start, end) the rank holds.
    sent: HashSet<(usize, usize, usize)>,
}

impl RankSlot {
    pub(super) fn new(rank: i32, host: String, pid: u32) -> Self {
        RankSlot {
            rank,
            host,
            pid,
            open: false,
            assigned: VecDeque::new(),
            folded: 0,
            flushing: false,
            ending: None,
            sent: HashSet::new(),
        }
    }

    /// A protocol breach by this rank.
    pub(super) fn breach(&self, problem: impl std::fmt::Display) -> Error {
        Error::Protocol {
            pid: self.pid,
            message: format!("MPI rank {} (host {}): {problem}", self.rank, self.host),
        }
    }
}

impl State {
    fn slot(&mut self, rank: i32) -> Result<&mut RankSlot> {
        usize::try_from(rank - 1)
            .ok()
            .and_then(|index| self.ranks.get_mut(index))
            .ok_or(Error::Mpi(MpiError::UnknownRank { rank }))
    }

    /// Closes job `id` in every rank that opened it. After a failure, ranks are
    /// first told to skip the job's queued tasks. Their answers are awaited by
    /// [`State::settle`], before the next job or at shutdown.
    pub(super) fn end_job(&mut self, world: &SimpleCommunicator, id: u64, failed: bool) -> Result<()> {
        self.current = None;
        for slot in &mut self.ranks {
            if !slot.open {
                continue;
            }
            if failed {
                wire::send(world, slot.rank, TAG_CANCEL, &ToRank::Cancel { job: id })?;
            }
            wire::send(world, slot.rank, TAG_CONTROL, &ToRank::EndJob { job: id })?;
            slot.ending = Some(id);
            slot.open = false;
            slot.assigned.clear();
            slot.folded = 0;
            slot.flushing = false;
            slot.sent.clear();
        }
        Ok(())
    }

    /// Waits until every rank has ended the jobs it was told to end, dropping
    /// what they still send about them (a task of a failed job that was
    /// running, with its tile). Then every rank is idle, waiting for rank 0.
    pub(super) fn settle(&mut self, world: &SimpleCommunicator) -> Result<()> {
        if let Some(id) = self.current {
            // The previous job did not finish (a panic unwound through it).
            self.end_job(world, id, true)?;
        }
        while self.ranks.iter().any(|slot| slot.ending.is_some()) {
            let (rank, message) = wire::receive::<FromRank>(world, None, TAG_CONTROL)?;
            let slot = self.slot(rank)?;
            wire::discard_data(world, rank, message.data_len()).map_err(|err| slot.breach(err))?;
            match message {
                FromRank::JobEnded { job } if slot.ending == Some(job) => slot.ending = None,
                FromRank::Hello { .. } | FromRank::Bye => {
                    return Err(slot.breach(format!("sent {message:?} while ending a job")));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs one job on ranks 1 to N-1 (at least one).
pub(super) fn run_job<J: Job>(
    state: &mut State,
    world: &SimpleCommunicator,
    run: Run<'_, J>,
) -> Result<J::Partial> {
    let started = Instant::now();
    state.settle(world)?;
    let plan = run.plan(state.ranks.len())?;
    let total = plan.tasks.len();
    let Run {
        job,
        input,
        output,
        progress,
        stats,
        stop,
        ..
    } = run;
    let id = state.next_job;
    state.next_job += 1;
    let span = tracing::info_span!("mpi job", name = J::NAME, id, tasks = total);
    let _entered = span.enter();

    let encoding = Instant::now();
    let Encoded { params, specs } = plan.encode(job)?;
    let segments: Vec<Segment> = (input.regions().iter())
        .map(|region| {
            let len = region.bytes().len() as u64;
            match region.path() {
                Some(path) => Segment::File {
                    path: path.as_os_str().as_bytes().to_vec(),
                    len,
                },
                None => Segment::Memory { len },
            }
        })
        .collect();
    let in_memory = segments
        .iter()
        .map(|s| matches!(s, Segment::Memory { .. }))
        .collect();
    let start = wire::encode(&ToRank::StartJob {
        job: id,
        key: crate::job::key::<J>(),
        params,
        input: segments,
        output: output.as_deref().map(|out| out.len() as u64),
    })
    .map_err(|err| Error::Codec {
        job: J::NAME,
        what: "encode the job",
        message: err.to_string(),
    })?;
    let mut job = JobState::<J> {
        id,
        job,
        input,
        output,
        progress,
        in_memory,
        start,
        specs,
        tasks: plan.tasks,
        ranges: plan.ranges,
        queue: (0..total).collect(),
        done: 0,
        result: None,
        stop,
        stats: JobStats {
            tasks: total,
            split: plan.split,
            dispatch: encoding.elapsed(),
            ..JobStats::default()
        },
    };
    let outcome = if total == 0 {
        Ok(J::Partial::default())
    } else {
        state.current = Some(id);
        job.drive(state, world)
    };
    if state.current.is_some() {
        // A failure to tell the ranks is worse than the job's own: it comes first.
        state.end_job(world, id, outcome.is_err())?;
    }
    // A file that shrank mid-job was read as zeros (the ranks on this host
    // share the file with rank 0): that, not the result, is the outcome.
    let outcome = job.input.check_files_intact().and(outcome);
    job.stats.total = started.elapsed();
    match &outcome {
        Ok(_) => tracing::debug!(stats = ?job.stats, "job done"),
        Err(err) => tracing::warn!(%err, "job failed"),
    }
    if let Some(stats) = stats {
        *stats = job.stats;
    }
    outcome
}

struct JobState<'a, J: Job> {
    id: u64,
    job: &'a J,
    input: &'a Input,
    output: Option<&'a mut SharedOutput>,
    progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// Whether each input segment is in rank 0's memory (its bytes are sent).
    in_memory: Vec<bool>,
    /// The job's [`ToRank::StartJob`], encoded once for every rank.
    start: Vec<u8>,
    specs: Vec<Vec<u8>>,
    tasks: Vec<J::Task>,
    /// Output range of each task, checked disjoint and in bounds.
    ranges: Vec<Range<usize>>,
    /// Tasks waiting for a rank.
    queue: VecDeque<usize>,
    /// Tasks reported done.
    done: usize,
    /// Merged partials so far.
    result: Option<J::Partial>,
    /// A deadline or cancel, checked whenever a rank reports and at least
    /// every [`STOP_POLL`].
    stop: Stop<'a>,
    stats: JobStats,
}

impl<J: Job> JobState<'_, J> {
    fn drive(&mut self, state: &mut State, world: &SimpleCommunicator) -> Result<J::Partial> {
        loop {
            self.dispatch(state, world)?;
            if self.finished(state) {
                return Ok(self.result.take().unwrap_or_default());
            }
            (self.stop).check(J::NAME, self.done, self.specs.len())?;
            // Waits at most STOP_POLL, so that a deadline or cancel is seen
            // even while no rank reports (a rank stuck in a task, say).
            let wait = Instant::now() + STOP_POLL;
            let Some((rank, message)) = wire::receive_until::<FromRank>(world, None, TAG_CONTROL, wait)?
            else {
                continue;
            };
            let slot = state.slot(rank)?;
            self.on_message(world, slot, message)?;
        }
    }

    fn finished(&self, state: &State) -> bool {
        self.done == self.specs.len() && state.ranks.iter().all(|slot| slot.folded == 0 && !slot.flushing)
    }

    /// Hands queued tasks to ranks with room, and asks ranks that hold results
    /// for their partial once nothing is left to hand out.
    fn dispatch(&mut self, state: &mut State, world: &SimpleCommunicator) -> Result<()> {
        let started = Instant::now();
        // Every idle rank gets a task first; a second one goes ahead only while
        // plenty are left, so that near the end no task waits behind a slow
        // rank while another idles. Tasks that carry input bytes never go
        // ahead: MPI would hold rank 0 in the send until the busy rank took them.
        let depth = if self.in_memory.contains(&true) { 1 } else { DEPTH };
        let ranks = state.ranks.len();
        for depth in 1..=depth {
            for slot in &mut state.ranks {
                if depth > 1 && self.queue.len() < ranks {
                    break;
                }
                if slot.assigned.len() < depth
                    && let Some(task) = self.queue.pop_front()
                {
                    self.send_task(world, slot, task)?;
                }
            }
        }
        // The flush goes right behind a rank's last task: it answers after
        // running it, which saves a round trip.
        for slot in &mut state.ranks {
            let holds_work = !slot.assigned.is_empty() || slot.folded > 0;
            if self.queue.is_empty() && holds_work && !slot.flushing {
                self.send(world, slot.rank, &ToRank::Flush { job: self.id })?;
                slot.flushing = true;
            }
        }
        self.stats.dispatch += started.elapsed();
        Ok(())
    }

    fn send(&mut self, world: &SimpleCommunicator, rank: i32, message: &ToRank) -> Result<()> {
        let bytes = wire::send(world, rank, TAG_CONTROL, message).map_err(|err| Error::Codec {
            job: J::NAME,
            what: "send a message to a rank",
            message: err.to_string(),
        })?;
        self.stats.bytes_to_workers += bytes;
        Ok(())
    }

    fn send_task(&mut self, world: &SimpleCommunicator, slot: &mut RankSlot, task: usize) -> Result<()> {
        if !slot.open {
            wire::send_encoded(world, slot.rank, TAG_CONTROL, &self.start);
            self.stats.bytes_to_workers += self.start.len() as u64;
            slot.open = true;
        }
        let chunks = self.chunks_for(slot, task);
        tracing::trace!(task, rank = slot.rank, chunks = chunks.len(), "dispatch");
        let message = ToRank::Task {
            job: self.id,
            task: task as u32,
            spec: self.specs[task].clone(),
            chunks: chunks.clone(),
        };
        self.send(world, slot.rank, &message)?;
        for chunk in &chunks {
            let start = chunk.offset as usize;
            let bytes = &self.input.bytes(chunk.segment as usize)[start..start + chunk.len as usize];
            wire::send_data(world, slot.rank, bytes);
            self.stats.bytes_to_workers += bytes.len() as u64;
        }
        slot.assigned.push_back(task);
        Ok(())
    }

    /// The parts of in-memory segments `task` reads that `slot`'s rank does
    /// not hold yet ([`Job::input_ranges`]); files are mapped by each rank.
    fn chunks_for(&self, slot: &mut RankSlot, task: usize) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for (segment, range) in self.job.input_ranges(&self.tasks[task], self.input) {
            if !self.in_memory.get(segment).copied().unwrap_or(false) {
                continue;
            }
            let len = self.input.bytes(segment).len();
            let range = range.start.min(len)..range.end.min(len);
            if range.is_empty() || !slot.sent.insert((segment, range.start, range.end)) {
                continue;
            }
            chunks.push(Chunk {
                segment: segment as u32,
                offset: range.start as u64,
                len: range.len() as u64,
            });
        }
        chunks
    }

    fn on_message(
        &mut self,
        world: &SimpleCommunicator,
        slot: &mut RankSlot,
        message: FromRank,
    ) -> Result<()> {
        let rank = slot.rank;
        match message {
            FromRank::TaskDone { job, task, tile } if job == self.id => {
                let task = task as usize;
                if slot.assigned.front() != Some(&task) {
                    return Err(slot.breach(format!("reported task {task}, which it was not running")));
                }
                self.store_tile(world, slot, task, tile)?;
                slot.assigned.pop_front();
                slot.folded += 1;
                self.done += 1;
                report(self.progress, self.done, self.specs.len());
            }
            FromRank::Partial { job, len } if job == self.id => {
                if !slot.flushing {
                    wire::discard_data(world, rank, len).map_err(|err| slot.breach(err))?;
                    return Err(slot.breach("sent a partial it was not asked for"));
                }
                let len = usize::try_from(len).map_err(|_| slot.breach("announced a partial too large"))?;
                let mut data = vec![0; len];
                wire::receive_data(world, rank, &mut data).map_err(|err| slot.breach(err))?;
                let merging = Instant::now();
                self.stats.bytes_from_workers += data.len() as u64;
                absorb_partial(self.job, &mut self.result, &data).map_err(|err| Error::Codec {
                    job: J::NAME,
                    what: "decode a rank's partial",
                    message: err.to_string(),
                })?;
                drop(data);
                self.stats.merge += merging.elapsed();
                slot.folded = 0;
                slot.flushing = false;
            }
            FromRank::TaskFailed { job, task, failure } if job == self.id => {
                let task = TaskIndex((task != u32::MAX).then_some(task as usize));
                let (failure, message) = match failure {
                    Failure::Panic(message) => (RankFailure::Panicked { task }, message),
                    Failure::Error(message) => (RankFailure::Failed { task }, message),
                };
                return Err(self.rank_error(slot, failure, message));
            }
            FromRank::JobRejected { job, reason } if job == self.id => {
                let (failure, message) = match reason {
                    Rejection::UnknownJob { registered } => (
                        RankFailure::UnknownJob,
                        format!(
                            "registered there: [{}]; is the same program running on every rank? \
                             Add the job to coop::init",
                            registered.join(", ")
                        ),
                    ),
                    Rejection::Setup(message) => (RankFailure::Setup, message),
                };
                return Err(self.rank_error(slot, failure, message));
            }
            FromRank::Hello { .. } | FromRank::Bye | FromRank::JobEnded { .. } => {
                return Err(slot.breach(format!("sent {message:?} during a job")));
            }
            // About an earlier job, which ended or failed: stale.
            stale => wire::discard_data(world, rank, stale.data_len()).map_err(|err| slot.breach(err))?,
        }
        Ok(())
    }

    fn rank_error(&self, slot: &RankSlot, failure: RankFailure, message: String) -> Error {
        Error::Rank {
            job: J::NAME,
            rank: slot.rank as usize,
            host: slot.host.clone(),
            pid: slot.pid,
            failure,
            message,
        }
    }

    /// Receives the tile that follows a task's report straight into the
    /// output, after checking it is exactly the task's output range.
    fn store_tile(
        &mut self,
        world: &SimpleCommunicator,
        slot: &RankSlot,
        task: usize,
        tile: Option<TileHeader>,
    ) -> Result<()> {
        let expected = self.ranges[task].clone();
        let Some(tile) = tile else {
            return match expected.is_empty() {
                true => Ok(()),
                false => Err(slot.breach(format!("sent no output tile for task {task}"))),
            };
        };
        let output = match self.output.as_deref_mut() {
            Some(output) if tile.offset == expected.start as u64 && tile.len == expected.len() as u64 => {
                output
            }
            _ => {
                wire::discard_data(world, slot.rank, tile.len).map_err(|err| slot.breach(err))?;
                return Err(slot.breach(format!(
                    "sent a tile for task {task} that is not its output range"
                )));
            }
        };
        wire::receive_data(world, slot.rank, &mut output.bytes_mut()[expected])
            .map_err(|err| slot.breach(err))?;
        self.stats.bytes_from_workers += tile.len;
        Ok(())
    }
}
