//! One job on the pool: dynamic scheduling, partial collection, and recovery
//! from dead workers. The coordinator never blocks on a worker: it waits only
//! in `try_select_timeout` on all workers' channels at once, with a deadline.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coop_worker::ipc_channel::TrySelectError;
use coop_worker::ipc_channel::ipc::{IpcBytesSender, IpcSelectionResult};
use coop_worker::protocol::{
    Chunk, Failure, FromWorker, OutputDesc, Payload, Rejection, SegmentDesc, Tile, ToWorker, input_batches,
    send_chunk,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::spawn::Spawner;
use super::{Config, Ipc, Kill, Slot, State, describe_death, reap};
use crate::engine::{Encoded, JobStats, Progress, Run, report};
use crate::error::{Error, Result, TaskIndex};
use crate::input::{Input, SharedOutput};
use crate::job::{Job, absorb_partial};
use crate::stop::Stop;

/// Tasks sent ahead to each worker: one running, one waiting, so that a busy
/// worker does not idle for a round trip between tasks.
const DEPTH: usize = 2;

/// How often the coordinator wakes when nothing arrives, to check timeouts.
const POLL: Duration = Duration::from_millis(50);

/// How long a worker whose channel closed gets to finish exiting before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(200);

pub(super) fn run_job<J: Job>(
    state: &mut State,
    spawner: &Spawner,
    config: &Config,
    run: Run<'_, J>,
) -> Result<J::Partial> {
    let started = Instant::now();
    state.resync(spawner, config)?;
    let plan = run.plan(config.workers)?;
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
    let span = tracing::info_span!("job", name = J::NAME, id, tasks = total);
    let _entered = span.enter();

    let encoding = Instant::now();
    let Encoded { params, specs } = plan.encode(job)?;
    let mut job = JobState::<J> {
        id,
        job,
        input,
        output,
        progress,
        ipc: config.ipc,
        params: Payload::new(params),
        specs,
        tasks: plan.tasks,
        ranges: plan.ranges,
        queue: (0..total).collect(),
        attempts: vec![0; total],
        done: vec![false; total],
        done_count: 0,
        result: None,
        feeders: HashMap::new(),
        stop,
        stats: JobStats {
            tasks: total,
            split: plan.split,
            dispatch: encoding.elapsed(),
            ..JobStats::default()
        },
    };
    // With messages, input bytes are streamed to each worker by a feeder
    // thread, so that a worker that stops reading (SIGSTOP) blocks its feeder,
    // never the coordinator. Feeders borrow the input, hence the scope; a
    // feeder still blocked at the end belongs to a busy worker of a failed
    // job, which `end_job` kills, which ends the feeder.
    let outcome = std::thread::scope(|scope| {
        let input = job.input;
        let feeder = |bulk: IpcBytesSender| {
            let (chunks, incoming) = mpsc::channel::<Chunk>();
            let fed = std::thread::Builder::new()
                .name("coop-feeder".into())
                .spawn_scoped(scope, move || {
                    for chunk in incoming {
                        let bytes = &input.bytes(chunk.segment as usize)[chunk.offset as usize..];
                        if send_chunk(&bulk, &bytes[..chunk.len as usize]).is_err() {
                            break; // the worker is dead: its death is handled by the coordinator
                        }
                    }
                });
            match fed {
                Ok(_) => Some(chunks),
                Err(err) => {
                    tracing::warn!(%err, "no feeder thread: the coordinator streams the input itself");
                    None
                }
            }
        };
        let outcome = if total == 0 {
            Ok(J::Partial::default())
        } else {
            job.drive(state, spawner, config, &feeder)
        };
        end_job(state, id, outcome.is_err());
        job.feeders.clear();
        outcome
    });
    // A file that shrank mid-job was read as zeros (or killed the workers that
    // touched it): that, not the result or the error it caused, is the outcome.
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

/// Closes the job in every worker. After a failure, workers still running
/// tasks of the job are killed (they are replaced before the next job): their
/// work is wasted, and they might still be writing the output the caller is
/// about to own again.
fn end_job(state: &mut State, id: u64, failed: bool) {
    for slot in &mut state.slots {
        if failed && !slot.assigned.is_empty() && slot.killed.is_none() {
            slot.kill(Kill::Abandoned);
        }
        // A worker that could not open the job keeps less than it was named,
        // and its refusal may not have been read: after a failure, every
        // worker is sent its regions again.
        if failed {
            slot.held.clear();
        }
        if slot.open {
            let _ = slot.worker.tx.send(ToWorker::EndJob { job: id });
            slot.jobs += 1;
        }
        slot.open = false;
        slot.assigned.clear();
        slot.running_since = None;
        slot.folded.clear();
        slot.flushing = false;
        slot.sent.clear();
    }
}

struct JobState<'a, J: Job> {
    id: u64,
    job: &'a J,
    input: &'a Input,
    output: Option<&'a mut SharedOutput>,
    progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    ipc: Ipc,
    /// The encoded job value, made once for every worker (a large one is in
    /// shared memory, which each worker maps rather than gets a copy of).
    params: Payload,
    specs: Vec<Vec<u8>>,
    tasks: Vec<J::Task>,
    /// Output range of each task, checked disjoint and in bounds.
    ranges: Vec<Range<usize>>,
    /// Tasks waiting for a worker; lost tasks go back to the front.
    queue: VecDeque<usize>,
    /// Times each task was lost with its worker.
    attempts: Vec<u32>,
    /// Whether each task's result is merged or folded in a live worker.
    done: Vec<bool>,
    done_count: usize,
    /// Merged partials so far.
    result: Option<J::Partial>,
    /// Each worker's feeder of input bytes, by pid (message passing).
    /// `None`: no thread could be started; the coordinator streams itself.
    feeders: HashMap<u32, Option<mpsc::Sender<Chunk>>>,
    /// A deadline or cancel: checked at every wake-up (at most [`POLL`]
    /// apart); a job stopped fails, and `end_job` kills its busy workers.
    stop: Stop<'a>,
    stats: JobStats,
}

/// Starts a feeder thread that streams input chunks down a worker's bulk channel.
type StartFeeder<'f> = dyn Fn(IpcBytesSender) -> Option<mpsc::Sender<Chunk>> + 'f;

impl<J: Job> JobState<'_, J> {
    fn drive(
        &mut self,
        state: &mut State,
        spawner: &Spawner,
        config: &Config,
        feeder: &StartFeeder<'_>,
    ) -> Result<J::Partial> {
        loop {
            self.dispatch(state, feeder);
            if self.finished(state) {
                return Ok(self.result.take().unwrap_or_default());
            }
            (self.stop).check(J::NAME, self.done_count, self.specs.len())?;
            if let Some(timeout) = config.task_timeout {
                for slot in &mut state.slots {
                    if slot.killed.is_none()
                        && slot.running_since.is_some_and(|since| since.elapsed() > timeout)
                    {
                        tracing::warn!(
                            pid = slot.worker.pid,
                            ?timeout,
                            "task timed out; killing its worker"
                        );
                        slot.kill(Kill::Timeout);
                    }
                }
            }
            let events = match state.set.try_select_timeout(POLL) {
                Ok(events) => events,
                Err(TrySelectError::Empty) => continue,
                Err(TrySelectError::IoError(err)) => {
                    return Err(Error::Os {
                        context: "waiting for workers",
                        source: err,
                    });
                }
            };
            // Every message is decoded, even after a failure or from a worker
            // already removed: decoding is what takes over the channels a
            // message may carry (ipc-channel asserts, or leaks their file
            // descriptors, if they are dropped unclaimed).
            let mut failure = None;
            for event in events {
                match event {
                    IpcSelectionResult::MessageReceived(receiver, message) => {
                        let decoded = message.to::<FromWorker>();
                        // A worker being killed is not listened to any more: it
                        // may have folded a task it never reported (its partial
                        // would count that task twice once it runs again).
                        let Some(index) = state
                            .slot_of(receiver)
                            .filter(|&index| failure.is_none() && state.slots[index].killed.is_none())
                        else {
                            continue;
                        };
                        let slot = &mut state.slots[index];
                        match decoded {
                            Ok(message) => {
                                if let Err(err) = self.on_message(slot, message) {
                                    failure = Some(err);
                                }
                            }
                            Err(err) => slot.kill(Kill::Breach(format!("undecodable message: {err}"))),
                        }
                    }
                    IpcSelectionResult::ChannelClosed(receiver) => {
                        let Some(index) = state.slot_of(receiver) else {
                            continue;
                        };
                        if failure.is_some() {
                            // The job is over: just reap; the next job replaces it.
                            reap(state.slots.remove(index).worker, EXIT_GRACE);
                        } else if let Err(err) = self.on_death(state, spawner, config, index) {
                            failure = Some(err);
                        }
                    }
                }
            }
            if let Some(err) = failure {
                return Err(err);
            }
        }
    }

    fn finished(&self, state: &State) -> bool {
        self.done_count == self.specs.len()
            && state
                .slots
                .iter()
                .all(|slot| slot.folded.is_empty() && !slot.flushing)
    }

    /// Hands queued tasks to workers with room, and asks idle workers that hold
    /// results for their partial. A failed send means the worker is dead; its
    /// death is handled when its channel reports closed.
    fn dispatch(&mut self, state: &mut State, feeder: &StartFeeder<'_>) {
        let live = state.slots.iter().filter(|slot| slot.killed.is_none()).count();
        // Every idle worker gets a task first; a second one goes ahead only
        // while there is plenty left, so that near the end no task waits behind
        // a slow one while another worker idles. With messages, none goes
        // ahead: its input would queue behind a task still running, in a
        // worker that may not be the first to be free.
        let depth = if self.ipc == Ipc::Messages { 1 } else { DEPTH };
        let started = Instant::now();
        for depth in 1..=depth {
            for slot in state.slots.iter_mut().filter(|slot| slot.killed.is_none()) {
                if depth > 1 && self.queue.len() < live {
                    break;
                }
                if slot.assigned.len() < depth
                    && let Some(task) = self.queue.pop_front()
                {
                    self.send_task(slot, task, feeder);
                }
            }
        }
        // Once nothing is left to hand out, ask each worker for its partial right
        // behind its last task: it answers after running it, which saves a
        // round trip. A partial covers what the worker ran before the flush;
        // tasks sent later (lost work of a dead worker) get another flush.
        for slot in state.slots.iter_mut().filter(|slot| slot.killed.is_none()) {
            let holds_work = !slot.assigned.is_empty() || !slot.folded.is_empty();
            if self.queue.is_empty() && holds_work && !slot.flushing {
                let _ = slot.worker.tx.send(ToWorker::Flush { job: self.id });
                slot.flushing = true;
                // Encoding and sending the partial is timed like a task.
                slot.running_since.get_or_insert_with(Instant::now);
            }
        }
        self.stats.dispatch += started.elapsed();
    }

    fn send_task(&mut self, slot: &mut Slot, task: usize, feeder: &StartFeeder<'_>) {
        if !slot.open {
            let held = |id| slot.held.contains(&id);
            let (input, output) = match self.ipc {
                Ipc::SharedMemory => (
                    self.input.describe(held),
                    self.output.as_deref().map(|out| out.describe(held)),
                ),
                Ipc::Messages => (
                    (0..self.input.len())
                        .map(|segment| SegmentDesc::Private {
                            len: self.input.bytes(segment).len() as u64,
                        })
                        .collect(),
                    self.output.as_deref().map(|out| OutputDesc::Private {
                        len: out.len() as u64,
                    }),
                ),
            };
            self.stats.bytes_to_workers += self.params.bytes().len() as u64;
            // What the worker keeps mapped once it opened the job.
            slot.held = (input.iter().filter_map(SegmentDesc::kept_id))
                .chain(output.iter().filter_map(OutputDesc::kept_id))
                .collect();
            let mut batches = input_batches(input);
            let input = batches.pop().unwrap_or_default();
            // A failed send means a dead worker, handled when its channel
            // reports closed; the messages after it fail the same way.
            for batch in batches {
                let _ = slot.worker.tx.send(ToWorker::MoreInput {
                    job: self.id,
                    input: batch,
                });
            }
            let _ = slot.worker.tx.send(ToWorker::StartJob {
                job: self.id,
                key: crate::job::key::<J>(),
                params: self.params.clone(),
                input,
                output,
            });
            slot.open = true;
        }
        let chunks = match self.ipc {
            Ipc::SharedMemory => Vec::new(),
            Ipc::Messages => self.chunks_for(slot, task),
        };
        tracing::trace!(task, pid = slot.worker.pid, chunks = chunks.len(), "dispatch");
        self.stats.bytes_to_workers += self.specs[task].len() as u64;
        let sent = slot.worker.tx.send(ToWorker::Task {
            job: self.id,
            task: task as u32,
            spec: Payload::new(self.specs[task].clone()),
            chunks: chunks.clone(),
        });
        if sent.is_ok() && !chunks.is_empty() {
            let feed = self
                .feeders
                .entry(slot.worker.pid)
                .or_insert_with(|| feeder(slot.worker.bulk.clone()));
            for chunk in chunks {
                self.stats.bytes_to_workers += chunk.len;
                // A failed send means a dead worker, whose death is handled
                // when its channel reports closed.
                match feed {
                    Some(feed) => {
                        let _ = feed.send(chunk);
                    }
                    None => {
                        let bytes = &self.input.bytes(chunk.segment as usize)[chunk.offset as usize..];
                        let _ = send_chunk(&slot.worker.bulk, &bytes[..chunk.len as usize]);
                    }
                }
            }
        }
        if slot.assigned.is_empty() {
            slot.running_since = Some(Instant::now());
        }
        slot.assigned.push_back(task);
    }

    /// The input ranges `task` reads that `slot`'s worker does not hold yet.
    fn chunks_for(&self, slot: &mut Slot, task: usize) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for (segment, range) in self.job.input_ranges(&self.tasks[task], self.input) {
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

    fn on_message(&mut self, slot: &mut Slot, message: FromWorker) -> Result<()> {
        let pid = slot.worker.pid;
        match message {
            FromWorker::TaskDone { job, task, tile } if job == self.id => {
                let task = task as usize;
                if slot.assigned.front() != Some(&task) {
                    slot.kill(Kill::Breach(format!(
                        "reported task {task}, which it was not running"
                    )));
                    return Ok(());
                }
                if let Err(problem) = self.store_tile(task, tile) {
                    slot.kill(Kill::Breach(problem.to_string()));
                    return Ok(());
                }
                slot.assigned.pop_front();
                slot.running_since = (!slot.assigned.is_empty() || slot.flushing).then(Instant::now);
                slot.folded.push(task);
                if !self.done[task] {
                    self.done[task] = true;
                    self.done_count += 1;
                }
                report(self.progress, self.done_count, self.specs.len());
            }
            FromWorker::TaskFailed { job, task, failure } if job == self.id => {
                let task = TaskIndex(Some(task as usize));
                return Err(match failure {
                    Failure::Panic(message) => Error::TaskPanicked {
                        job: J::NAME,
                        task,
                        pid,
                        message,
                    },
                    Failure::Error(message) => Error::TaskFailed {
                        job: J::NAME,
                        task,
                        pid,
                        message,
                    },
                });
            }
            FromWorker::Partial { job, data } if job == self.id => {
                if !slot.flushing {
                    slot.kill(Kill::Breach("sent a partial it was not asked for".into()));
                    return Ok(());
                }
                let merging = Instant::now();
                self.stats.bytes_from_workers += data.bytes().len() as u64;
                // A partial that does not decode is a worker gone wrong: it is
                // killed and its tasks run again (a bounded number of times).
                if let Err(err) = absorb_partial(self.job, &mut self.result, data.bytes()) {
                    slot.kill(Kill::Breach(format!(
                        "sent a partial that does not decode: {err}"
                    )));
                    return Ok(());
                }
                self.stats.merge += merging.elapsed();
                slot.folded.clear();
                slot.flushing = false;
                slot.running_since = (!slot.assigned.is_empty()).then(Instant::now);
            }
            FromWorker::JobRejected { job, reason } if job == self.id => {
                return Err(match reason {
                    Rejection::UnknownJob { registered } => Error::UnknownJob {
                        job: J::NAME,
                        type_name: std::any::type_name::<J>(),
                        pid,
                        registered,
                    },
                    Rejection::Setup(message) => Error::JobSetup {
                        job: J::NAME,
                        pid,
                        message,
                    },
                });
            }
            FromWorker::FlushFailed { job, failure } if job == self.id => {
                let task = TaskIndex(None);
                return Err(match failure {
                    Failure::Panic(message) => Error::TaskPanicked {
                        job: J::NAME,
                        task,
                        pid,
                        message,
                    },
                    Failure::Error(message) => Error::TaskFailed {
                        job: J::NAME,
                        task,
                        pid,
                        message,
                    },
                });
            }
            FromWorker::Bye => {
                slot.kill(Kill::Breach(format!("sent {} during a job", message.kind())));
            }
            // A message about an earlier job, which ended or failed: stale.
            _ => {}
        }
        Ok(())
    }

    /// Copies a tile sent back by a worker (message passing) into the output,
    /// after checking it is exactly the task's output range.
    fn store_tile(&mut self, task: usize, tile: Option<Tile>) -> Result<(), TileError> {
        let expected = &self.ranges[task];
        let Some(tile) = tile else {
            return match self.ipc {
                Ipc::Messages if !expected.is_empty() => Err(TileError::Missing { task }),
                _ => Ok(()),
            };
        };
        let bytes = tile.bytes.bytes();
        if self.ipc != Ipc::Messages || tile.offset != expected.start as u64 || bytes.len() != expected.len()
        {
            return Err(TileError::WrongRange { task });
        }
        self.stats.bytes_from_workers += bytes.len() as u64;
        if let Some(output) = self.output.as_deref_mut() {
            output.bytes_mut()[expected.clone()].copy_from_slice(bytes);
        }
        Ok(())
    }

    /// A worker's channel closed: it died (or was killed). Its running task and
    /// the results folded in its partial are lost: queue them again, charge the
    /// attempt, and start a replacement.
    fn on_death(
        &mut self,
        state: &mut State,
        spawner: &Spawner,
        config: &Config,
        index: usize,
    ) -> Result<()> {
        let slot = state.slots.remove(index);
        let pid = slot.worker.pid;
        self.feeders.remove(&pid);
        let status = reap(slot.worker, EXIT_GRACE);
        let cause = match &slot.killed {
            Some(kill) => kill.to_string(),
            None => describe_death(status, config.memory_limit),
        };
        for &task in &slot.folded {
            if std::mem::replace(&mut self.done[task], false) {
                self.done_count -= 1;
            }
        }
        // Charge the task that was running; a worker that died holding only
        // folded results (while flushing) charges those, so that a partial that
        // always kills its worker cannot loop forever.
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
            if attempts > config.retries {
                return Err(match (&slot.killed, config.task_timeout) {
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
        if !slot.folded.is_empty() || !slot.assigned.is_empty() {
            report(self.progress, self.done_count, self.specs.len());
        }
        match spawner.spawn(1).pop() {
            Some(Ok(started)) => state.add(started)?,
            Some(Err(err)) if state.slots.is_empty() => {
                return Err(Error::NoWorkers {
                    job: J::NAME,
                    cause: err.to_string(),
                });
            }
            Some(Err(err)) => tracing::warn!(%err, "could not replace a lost worker"),
            None => {}
        }
        Ok(())
    }
}

impl Slot {
    /// Kills the worker; its death is handled when its channel reports closed.
    pub(super) fn kill(&mut self, why: Kill) {
        tracing::warn!(pid = self.worker.pid, reason = %why, "killing worker");
        let _ = kill(Pid::from_raw(self.worker.pid as i32), Signal::SIGKILL);
        self.killed = Some(why);
    }
}

/// How a worker's report of a finished task broke the protocol ([`Kill::Breach`]).
#[derive(Debug, thiserror::Error)]
enum TileError {
    #[error("sent no output tile for task {task}")]
    Missing { task: usize },
    #[error("sent a tile for task {task} that is not its output range")]
    WrongRange { task: usize },
}
