//! The scheduler: one job's state machine, written once for every transport
//! (the process pool, MPI). It splits nothing and moves no bytes itself: it
//! decides which worker runs which task, when to ask for partials, what a
//! lost worker costs, and when the job is over; a [`Transport`] carries it out.
//!
//! Invariants (numbered where the code relies on them):
//!
//! 1. A task is in exactly one place: the queue, one worker's `assigned`
//!    (sent, not reported), or one worker's `folded` (reported, its result in
//!    the worker's unsent partial). `done` counts the last two's reported
//!    tasks once each.
//! 2. A worker runs its tasks in the order sent, so the first of `assigned`
//!    is the one running; a report of any other is a breach.
//! 3. A partial covers exactly the worker's `folded` tasks: the flush goes
//!    behind its last task, and nothing is sent to a flushing worker before
//!    the partial arrives... except tasks of a dead worker, which get another
//!    flush after the partial.
//! 4. A killed worker is not listened to: it may have folded a task it never
//!    reported, so its partial would count that task twice once it runs again.
//! 5. The coordinator never waits without a deadline: at most [`POLL`]
//!    between looks at timeouts, the job's deadline and its cancel token.

#[cfg(test)]
mod tests;
mod transport;

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use coop_worker::protocol::{Chunk, FromWorker, Tile};

use crate::engine::{Encoded, JobStats, Progress, Run, report};
use crate::error::{Error, Result, TaskIndex, WorkerExit};
use crate::input::{Input, SharedOutput};
use crate::job::{Job, absorb_partial};
use crate::stop::Stop;
pub(crate) use transport::{
    Carriage, Event, JobEnd, JobName, JobStart, Kill, Reported, TaskSend, Transport, WorkerId,
};

/// Tasks sent ahead to each worker: one running, one waiting, so that a busy
/// worker does not idle for a round trip between tasks.
const DEPTH: usize = 2;

/// Longest wait for an event (invariant 5).
const POLL: Duration = Duration::from_millis(50);

/// What the engine allows a job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Workers the job is split for.
    pub(crate) workers: usize,
    /// Times a task may be lost with its worker before the job fails.
    pub(crate) retries: u32,
    /// Longest a task may run before its worker is killed.
    pub(crate) task_timeout: Option<Duration>,
}

/// Runs one job over `transport`.
pub(crate) fn run_job<J: Job, T: Transport>(
    transport: &mut T,
    policy: Policy,
    id: u64,
    run: Run<'_, J>,
) -> Result<J::Partial> {
    let started = Instant::now();
    let workers = transport.prepare()?;
    let plan = run.plan(policy.workers)?;
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
    let span = tracing::info_span!("job", name = J::NAME, id, tasks = total);
    let _entered = span.enter();

    let encoding = Instant::now();
    let Encoded { params, specs } = plan.encode(job)?;
    let mut state = JobState::<J> {
        id,
        job,
        input,
        output,
        progress,
        policy,
        carriage: transport.carriage(input),
        params,
        specs,
        tasks: plan.tasks,
        ranges: plan.ranges,
        queue: (0..total).collect(),
        attempts: vec![0; total],
        done: vec![false; total],
        done_count: 0,
        result: None,
        slots: workers.into_iter().map(Slot::new).collect(),
        stop,
        stats: JobStats {
            tasks: total,
            split: plan.split,
            dispatch: encoding.elapsed(),
            ..JobStats::default()
        },
    };
    let outcome = if total == 0 {
        Ok(job.new_partial())
    } else {
        let outcome = state.drive(transport);
        // A failure to close the job in a worker is worse than the job's own
        // failure (the next job could not start): it comes first.
        state.end_job(transport, outcome.is_err()).and(outcome)
    };
    // A file that shrank mid-job was read as zeros (or killed the workers that
    // touched it): that, not the result or the error it caused, is the outcome.
    let outcome = state.input.check_files_intact().and(outcome);
    state.stats.total = started.elapsed();
    match &outcome {
        Ok(_) => tracing::debug!(stats = ?state.stats, "job done"),
        Err(err) => tracing::warn!(%err, "job failed"),
    }
    if let Some(stats) = stats {
        *stats = state.stats;
    }
    outcome
}

/// One worker and what it holds of the job.
#[derive(Debug)]
struct Slot {
    worker: WorkerId,
    /// Whether the worker has opened the job.
    open: bool,
    /// Tasks sent and not yet reported, in the order the worker runs them.
    assigned: VecDeque<usize>,
    /// When the first of `assigned` started running or, with none, when the
    /// flush was sent: the task timeout counts from there.
    running_since: Option<Instant>,
    /// Tasks reported whose results sit in the worker's unsent partial.
    folded: Vec<usize>,
    /// A flush was sent and its partial has not arrived.
    flushing: bool,
    /// Why the worker was killed, if it was (invariant 4).
    killed: Option<Kill>,
    /// Input ranges (segment, start, end) sent to the worker.
    sent: HashSet<(usize, usize, usize)>,
}

impl Slot {
    fn new(worker: WorkerId) -> Self {
        Slot {
            worker,
            open: false,
            assigned: VecDeque::new(),
            running_since: None,
            folded: Vec::new(),
            flushing: false,
            killed: None,
            sent: HashSet::new(),
        }
    }

    fn holds_work(&self) -> bool {
        !self.assigned.is_empty() || !self.folded.is_empty()
    }
}

struct JobState<'a, J: Job> {
    id: u64,
    job: &'a J,
    input: &'a Input,
    output: Option<&'a mut SharedOutput>,
    progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    policy: Policy,
    carriage: Carriage,
    /// The encoded job value.
    params: Vec<u8>,
    specs: Vec<Vec<u8>>,
    tasks: Vec<J::Task>,
    /// Output range of each task, checked disjoint and in bounds.
    ranges: Vec<Range<usize>>,
    /// Tasks waiting for a worker; lost tasks go back to the front.
    queue: VecDeque<usize>,
    /// Times each task was lost with its worker.
    attempts: Vec<u32>,
    /// Whether each task is reported (invariant 1).
    done: Vec<bool>,
    done_count: usize,
    /// Merged partials so far.
    result: Option<J::Partial>,
    slots: Vec<Slot>,
    /// A deadline or cancel (invariant 5); a job stopped fails, and its busy
    /// workers' tasks are abandoned.
    stop: Stop<'a>,
    stats: JobStats,
}

impl<J: Job> JobState<'_, J> {
    fn drive(&mut self, transport: &mut impl Transport) -> Result<J::Partial> {
        loop {
            // A finished job is done, whenever its deadline; a stopped one
            // sends nothing more (nor anything at all, stopped before it
            // started).
            if self.finished() {
                return Ok(self.result.take().unwrap_or_else(|| self.job.new_partial()));
            }
            (self.stop).check(J::NAME, self.done_count, self.specs.len())?;
            self.dispatch(transport)?;
            self.kill_overdue(transport)?;
            if let Some((worker, event)) = transport.next_event(POLL)? {
                self.on_event(transport, worker, event)?;
                // The rest of the batch before the next dispatch: a worker's
                // death may be behind its last report, and a task sent to it
                // in between would be charged for it.
                while let Some((worker, event)) = transport.buffered_event() {
                    self.on_event(transport, worker, event)?;
                }
            }
        }
    }

    fn finished(&self) -> bool {
        self.done_count == self.specs.len()
            && self
                .slots
                .iter()
                .all(|slot| slot.folded.is_empty() && !slot.flushing)
    }

    /// Closes the job in every worker.
    fn end_job(&mut self, transport: &mut impl Transport, failed: bool) -> Result<()> {
        let mut outcome = Ok(());
        for slot in &self.slots {
            let end = JobEnd {
                id: self.id,
                failed,
                opened: slot.open,
                busy: !slot.assigned.is_empty() && slot.killed.is_none(),
            };
            let ended = transport.end_job(slot.worker, end);
            outcome = outcome.and(ended);
        }
        outcome
    }

    fn kill(&mut self, transport: &mut impl Transport, index: usize, why: Kill) -> Result<()> {
        let slot = &mut self.slots[index];
        tracing::warn!(worker = ?slot.worker, reason = %why, "killing worker");
        transport.kill(slot.worker, &why)?;
        slot.killed = Some(why);
        Ok(())
    }

    fn kill_overdue(&mut self, transport: &mut impl Transport) -> Result<()> {
        let Some(timeout) = self.policy.task_timeout else {
            return Ok(());
        };
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.killed.is_none() && slot.running_since.is_some_and(|since| since.elapsed() > timeout) {
                self.kill(transport, index, Kill::Timeout)?;
            }
        }
        Ok(())
    }

    /// Hands queued tasks to workers with room, and asks workers that hold
    /// results for their partial once nothing is left to hand out.
    fn dispatch(&mut self, transport: &mut impl Transport) -> Result<()> {
        let started = Instant::now();
        let live = self.slots.iter().filter(|slot| slot.killed.is_none()).count();
        // Every idle worker gets a task first; a second one goes ahead only
        // while there is plenty left, so that near the end no task waits
        // behind a slow one while another worker idles.
        let depth = if self.carriage.carries_input() { 1 } else { DEPTH };
        for depth in 1..=depth {
            for index in 0..self.slots.len() {
                if depth > 1 && self.queue.len() < live {
                    break;
                }
                let slot = &self.slots[index];
                if slot.killed.is_none()
                    && slot.assigned.len() < depth
                    && let Some(task) = self.queue.pop_front()
                {
                    self.send_task(transport, index, task)?;
                }
            }
        }
        // The flush goes right behind a worker's last task: it answers after
        // running it, which saves a round trip (invariant 3).
        if self.queue.is_empty() {
            for slot in &mut self.slots {
                if slot.killed.is_none() && slot.holds_work() && !slot.flushing {
                    transport.flush(slot.worker, self.id)?;
                    slot.flushing = true;
                    // Encoding and sending the partial is timed like a task.
                    slot.running_since.get_or_insert_with(Instant::now);
                }
            }
        }
        self.stats.dispatch += started.elapsed();
        Ok(())
    }

    fn send_task(&mut self, transport: &mut impl Transport, index: usize, task: usize) -> Result<()> {
        if !self.slots[index].open {
            let start = JobStart {
                id: self.id,
                key: crate::job::key::<J>(),
                params: &self.params,
                input: self.input,
                output: self.output.as_deref(),
            };
            transport.start_job(self.slots[index].worker, &start)?;
            self.stats.bytes_to_workers += self.params.len() as u64;
            self.slots[index].open = true;
        }
        let chunks = self.chunks_for(index, task);
        let slot = &mut self.slots[index];
        tracing::trace!(task, worker = ?slot.worker, chunks = chunks.len(), "dispatch");
        let spec = &self.specs[task];
        let send = TaskSend {
            job: self.id,
            task: task as u32,
            spec,
            chunks: &chunks,
        };
        transport.send_task(slot.worker, send)?;
        self.stats.bytes_to_workers += spec.len() as u64 + chunks.iter().map(|chunk| chunk.len).sum::<u64>();
        if slot.assigned.is_empty() {
            slot.running_since = Some(Instant::now());
        }
        slot.assigned.push_back(task);
        Ok(())
    }

    /// The input ranges `task` reads, of segments whose bytes travel, that
    /// the worker does not hold yet ([`Job::input_ranges`]).
    fn chunks_for(&mut self, index: usize, task: usize) -> Vec<Chunk> {
        let slot = &mut self.slots[index];
        let mut chunks = Vec::new();
        for (segment, range) in self.job.input_ranges(&self.tasks[task], self.input) {
            if !self.carriage.sent.get(segment).copied().unwrap_or(false) {
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

    fn on_event(&mut self, transport: &mut impl Transport, worker: WorkerId, event: Event) -> Result<()> {
        // A worker not of this job (lost before it) has nothing to say to it.
        let Some(index) = self.slots.iter().position(|slot| slot.worker == worker) else {
            return Ok(());
        };
        match event {
            Event::Lost(status) => self.on_death(transport, index, status),
            // Invariant 4.
            _ if self.slots[index].killed.is_some() => Ok(()),
            Event::Garbage(problem) => self.kill(transport, index, Kill::Breach(problem)),
            Event::Message(message) => match self.on_message(transport, index, message)? {
                Some(problem) => self.kill(transport, index, Kill::Breach(problem)),
                None => Ok(()),
            },
        }
    }

    /// Takes a worker's message; a breach of the protocol is returned, for
    /// the worker to be killed.
    fn on_message(
        &mut self,
        transport: &mut impl Transport,
        index: usize,
        message: FromWorker,
    ) -> Result<Option<String>> {
        let slot = &mut self.slots[index];
        let name = JobName {
            name: J::NAME,
            type_name: std::any::type_name::<J>(),
        };
        match message {
            FromWorker::TaskDone { job, task, tile } if job == self.id => {
                let task = task as usize;
                // Invariant 2.
                if slot.assigned.front() != Some(&task) {
                    return Ok(Some(format!("reported task {task}, which it was not running")));
                }
                if let Err(problem) = self.store_tile(task, tile) {
                    return Ok(Some(problem.to_string()));
                }
                let slot = &mut self.slots[index];
                slot.assigned.pop_front();
                slot.running_since = (!slot.assigned.is_empty() || slot.flushing).then(Instant::now);
                slot.folded.push(task);
                if !std::mem::replace(&mut self.done[task], true) {
                    self.done_count += 1;
                }
                report(self.progress, self.done_count, self.specs.len());
            }
            FromWorker::Partial { job, data } if job == self.id => {
                if !slot.flushing {
                    return Ok(Some("sent a partial it was not asked for".into()));
                }
                let merging = Instant::now();
                self.stats.bytes_from_workers += data.bytes().len() as u64;
                // A partial that does not decode is a worker gone wrong: it
                // is killed, and its tasks run again.
                if let Err(err) = absorb_partial(self.job, &mut self.result, data.bytes()) {
                    return Ok(Some(format!("sent a partial that does not decode: {err}")));
                }
                self.stats.merge += merging.elapsed();
                let slot = &mut self.slots[index];
                slot.folded.clear();
                slot.flushing = false;
                slot.running_since = (!slot.assigned.is_empty()).then(Instant::now);
            }
            // A worker that reports a failure skips the rest of the job: it
            // is idle (not killed as busy at the end).
            FromWorker::TaskFailed { job, task, failure } if job == self.id => {
                slot.assigned.clear();
                let task = TaskIndex(Some(task as usize));
                return Err(transport.reported(slot.worker, name, Reported::Failed { task, failure }));
            }
            FromWorker::FlushFailed { job, failure } if job == self.id => {
                slot.assigned.clear();
                let task = TaskIndex(None);
                return Err(transport.reported(slot.worker, name, Reported::Failed { task, failure }));
            }
            FromWorker::JobRejected { job, reason } if job == self.id => {
                slot.assigned.clear();
                return Err(transport.reported(slot.worker, name, Reported::Rejected(reason)));
            }
            FromWorker::JobEnded { job } if job == self.id => {
                return Ok(Some("ended the job before it was told to".into()));
            }
            FromWorker::Bye => return Ok(Some("said goodbye during a job".into())),
            // A message about an earlier job, which ended or failed: stale.
            _ => {}
        }
        Ok(None)
    }

    /// Copies a tile sent back by a worker into the output, after checking it
    /// is exactly the task's output range.
    fn store_tile(&mut self, task: usize, tile: Option<Tile>) -> Result<(), TileError> {
        let expected = &self.ranges[task];
        let Some(tile) = tile else {
            return match self.carriage.tiles && !expected.is_empty() {
                true => Err(TileError::Missing { task }),
                false => Ok(()),
            };
        };
        let bytes = tile.bytes.bytes();
        if !self.carriage.tiles || tile.offset != expected.start as u64 || bytes.len() != expected.len() {
            return Err(TileError::WrongRange { task });
        }
        self.stats.bytes_from_workers += bytes.len() as u64;
        if let Some(output) = self.output.as_deref_mut() {
            output.bytes_mut()[expected.clone()].copy_from_slice(bytes);
        }
        Ok(())
    }

    /// A worker is gone. Its running task and the results folded in its
    /// partial are lost: they go back to the queue, the task charged an
    /// attempt, and a replacement starts.
    fn on_death(&mut self, transport: &mut impl Transport, index: usize, status: WorkerExit) -> Result<()> {
        let slot = self.slots.remove(index);
        let pid = slot.worker.pid;
        let cause = match &slot.killed {
            Some(kill) => WorkerExit::from(kill.clone()),
            None => status,
        };
        for &task in &slot.folded {
            if std::mem::replace(&mut self.done[task], false) {
                self.done_count -= 1;
            }
        }
        // Charge the task that was running; a worker that died holding only
        // folded results (while flushing) charges those, so that a partial
        // that always kills its worker cannot loop forever.
        let charged: Vec<usize> = match slot.assigned.front() {
            Some(&running) => vec![running],
            None => slot.folded.clone(),
        };
        for &task in slot.folded.iter().chain(&slot.assigned).rev() {
            self.queue.push_front(task);
        }
        tracing::warn!(pid, %cause, requeued = slot.folded.len() + slot.assigned.len(), "worker lost");
        for task in charged {
            self.attempts[task] += 1;
            self.stats.retries += 1;
            let attempts = self.attempts[task];
            if attempts > self.policy.retries {
                return Err(match (&slot.killed, self.policy.task_timeout) {
                    (Some(Kill::Timeout), Some(timeout)) => Error::TaskTimedOut {
                        job: J::NAME,
                        task,
                        timeout,
                        attempts,
                        pid,
                    },
                    _ => Error::TaskLost {
                        job: J::NAME,
                        task,
                        attempts,
                        pid,
                        status: cause,
                    },
                });
            }
        }
        if slot.holds_work() {
            report(self.progress, self.done_count, self.specs.len());
        }
        match transport.replace() {
            Some(Ok(worker)) => self.slots.push(Slot::new(worker)),
            Some(Err(err)) if self.slots.is_empty() => {
                return Err(Error::NoWorkers {
                    job: J::NAME,
                    cause: err.to_string(),
                });
            }
            Some(Err(err)) => tracing::warn!(%err, "could not replace a lost worker"),
            None if self.slots.is_empty() => {
                return Err(Error::NoWorkers {
                    job: J::NAME,
                    cause: "the last one was lost, and this engine starts no others".into(),
                });
            }
            None => {}
        }
        Ok(())
    }
}

/// How a worker's report of a finished task broke the protocol.
#[derive(Debug, thiserror::Error)]
enum TileError {
    #[error("sent no output tile for task {task}")]
    Missing { task: usize },
    #[error("sent a tile for task {task} that is not its output range")]
    WrongRange { task: usize },
}
