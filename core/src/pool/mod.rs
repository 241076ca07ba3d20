//! [`Pool`]: the coordinator of a set of worker processes.

mod spawn;
mod transport;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::collections::{HashSet, VecDeque};

use coop_worker::ipc_channel::ipc::{IpcReceiverSet, IpcSelectionResult};
use coop_worker::protocol::{FromWorker, ToWorker};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::engine::{Engine, Run};
use crate::error::{Error, Result, WorkerExit};
use crate::job::{Job, check_registered};
use crate::scheduler::{self, Event, Policy, WorkerId};
use crate::workers::{check_worker_count, default_workers};
use spawn::{SpawnConfig, Spawner, Started, Worker};
use transport::PoolTransport;

/// Default number of times a task is run again after the worker running it died.
pub const DEFAULT_RETRIES: u32 = 2;

/// How long a worker may take to start and connect.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker asked to exit gets before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long a worker whose channel closed gets to finish exiting before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// A pool of worker processes, one per core by default (or `COOP_WORKERS`:
/// see [`default_workers`]), that runs [`Job`]s.
///
/// Workers are this same program, re-executed; [`crate::init`] at the top of
/// `main` turns them into workers. They start once and serve many jobs, one
/// job at a time (concurrent [`run`](Engine::run) calls queue). Dropping the
/// pool stops and reaps every worker.
///
/// Workers keep the input segments and shared output of their last job
/// mapped: a job on the same [`Input`](crate::Input) starts with its pages
/// mapped already, where mapping them afresh costs a worker a page fault per
/// 64 KiB it reads. Dropping an `Input` or a
/// [`SharedOutput`](crate::SharedOutput) frees its shared memory at once all
/// the same, in every process.
///
/// Failures: a worker that dies mid-job is replaced and its lost tasks run
/// again (up to [`PoolBuilder::retries`] times per task); a panic or error in a
/// task ends the job with an [`Error`] naming the task and worker, and the pool
/// stays usable. Workers die with the coordinator: they are killed by the
/// kernel when it exits, however it exits.
#[derive(Debug)]
pub struct Pool {
    state: Mutex<State>,
    config: Config,
    // Declared last: dropped after `state`, whose drop reaps the workers.
    spawner: Spawner,
}

#[derive(Debug, Clone)]
struct Config {
    workers: usize,
    retries: u32,
    task_timeout: Option<Duration>,
    ipc: Ipc,
    max_jobs_per_worker: Option<u32>,
    memory_limit: Option<u64>,
}

/// How a pool's workers get their input and give back their output tiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ipc {
    /// Workers map the input (memfd regions, files) and write output tiles in
    /// place: only ranges travel in messages. The default.
    #[default]
    SharedMemory,
    /// Message passing: each task's input ([`Job::input_ranges`]) is copied to
    /// its worker inside the task's messages, and each output tile comes back
    /// in a message and is copied into the output. Every byte goes through
    /// the kernel; simpler, and fine for small inputs. Same results.
    Messages,
}

/// Builds a [`Pool`] with options other than the defaults.
#[derive(Debug, Clone)]
#[must_use = "a PoolBuilder starts no workers until .build()"]
pub struct PoolBuilder {
    workers: Option<usize>,
    retries: u32,
    task_timeout: Option<Duration>,
    handshake_timeout: Duration,
    program: Option<PathBuf>,
    ipc: Ipc,
    fault: Option<spawn::InjectedFault>,
    max_jobs_per_worker: Option<u32>,
    memory_limit: Option<u64>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            retries: DEFAULT_RETRIES,
            task_timeout: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            program: None,
            ipc: Ipc::default(),
            fault: None,
            max_jobs_per_worker: None,
            memory_limit: None,
        }
    }
}

impl PoolBuilder {
    /// Number of worker processes, 1 to [`MAX_WORKERS`](crate::MAX_WORKERS) (default:
    /// [`default_workers`], which reads `COOP_WORKERS`, else one per core).
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = Some(count);
        self
    }

    /// Times a task is run again after the worker running it died (default
    /// [`DEFAULT_RETRIES`]). Panics and errors in user code are never retried.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Kills a worker whose task runs longer than `timeout`, and runs the task
    /// again elsewhere (counted as a retry). Off by default.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Replaces each worker once it has served `jobs` jobs (at least 1), before
    /// the next job starts: what a leak in user code, or memory a worker's
    /// allocator keeps, can grow to stays bounded. Off by default (workers
    /// serve for the pool's life).
    pub fn max_jobs_per_worker(mut self, jobs: u32) -> Self {
        self.max_jobs_per_worker = Some(jobs.max(1));
        self
    }

    /// Caps what each worker may allocate at `bytes` (its data segment:
    /// `RLIMIT_DATA`, heap and private mappings; the input and output it maps
    /// from the coordinator do not count). A worker whose allocation fails
    /// aborts; its death is reported as "exceeded its memory limit" and its
    /// task runs again, like any crash ([`retries`](PoolBuilder::retries)),
    /// then fails with [`Error::TaskLost`]. Off by default.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// How long a starting worker may take to connect (default 30 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The executable started as each worker (default: this program itself).
    /// It must call [`crate::init`] first in `main` with the jobs it will be
    /// asked to run; it is started with no arguments (in a test binary with
    /// [`crate::test_workers!`], with those that make libtest run only the
    /// worker entry). Meant for wrappers and tests: most programs keep the
    /// default.
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// How workers get their input: shared memory (default) or messages.
    pub fn ipc(mut self, ipc: Ipc) -> Self {
        self.ipc = ipc;
        self
    }

    /// Makes workers misbehave, for tests: worker `worker` (counting from 0 in
    /// the order the pool starts them, replacements included), or every worker
    /// if `None`, starts with `fault` (see [`crate::fault`]).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(mut self, worker: Option<usize>, fault: crate::fault::Fault) -> Self {
        self.fault = Some(spawn::InjectedFault {
            worker,
            fault: fault.to_string(),
        });
        self
    }

    /// Starts the workers. A worker that fails to start is tried again, up
    /// to [`retries`](Self::retries) times, before the error is returned.
    ///
    /// Fails with [`Error::InvalidWorkersVar`] if no worker count was given
    /// and `COOP_WORKERS` is not one, with [`Error::NotInitialized`] before
    /// [`crate::init`] (or [`crate::test_workers!`]) registered jobs, and
    /// with [`Error::DuplicateJob`] if `test_workers!` registered two types
    /// with one type name.
    pub fn build(self) -> Result<Pool> {
        let workers = match self.workers {
            Some(workers) => workers,
            None => default_workers()?,
        };
        check_worker_count(workers)?;
        check_registered()?;
        let program = match self.program {
            Some(program) => program,
            None => spawn::current_program()?,
        };
        let started = Instant::now();
        let spawner = Spawner::new(SpawnConfig {
            program,
            handshake_timeout: self.handshake_timeout,
            fault: self.fault,
            test_entry: crate::testing::test_entry(),
            memory_limit: self.memory_limit,
        })?;
        let mut state = State::new()?;
        let mut missing = workers;
        for attempt in 0..=self.retries {
            for worker in spawner.spawn(missing) {
                match worker {
                    Ok(worker) => {
                        state.add(worker)?;
                    }
                    // On error, `state` drops and reaps the workers already started.
                    Err(err) if attempt == self.retries => return Err(err),
                    Err(err) => tracing::warn!(%err, "a worker failed to start; trying again"),
                }
            }
            missing = workers - state.members.len();
            if missing == 0 {
                break;
            }
        }
        tracing::info!(workers, elapsed = ?started.elapsed(), "pool started");
        Ok(Pool {
            state: Mutex::new(state),
            config: Config {
                workers,
                retries: self.retries,
                task_timeout: self.task_timeout,
                max_jobs_per_worker: self.max_jobs_per_worker,
                memory_limit: self.memory_limit,
                ipc: self.ipc,
            },
            spawner,
        })
    }
}

impl Pool {
    /// A pool of one worker process per core, or of `COOP_WORKERS` workers
    /// if that variable is set (see [`default_workers`]).
    pub fn new() -> Result<Pool> {
        Pool::builder().build()
    }

    /// A builder for a pool with other options.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The pids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.lock()
            .members
            .iter()
            .map(|member| member.worker.pid)
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held (in user merge code) leaves the
        // workers in a consistent state: each job starts by re-syncing them.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Engine for Pool {
    fn execute<J: Job>(&self, run: Run<'_, J>) -> Result<J::Partial> {
        let mut state = self.lock();
        let id = state.next_job;
        state.next_job += 1;
        let policy = Policy {
            workers: self.config.workers,
            retries: self.config.retries,
            task_timeout: self.config.task_timeout,
        };
        // Feeder threads stream input bytes to workers (message passing); they
        // borrow the input, hence the scope. The transport, dropped at the end
        // of the closure, ends them first.
        let input = run.input;
        std::thread::scope(|scope| {
            let mut transport = PoolTransport::new(&mut state, &self.spawner, &self.config, scope, input);
            scheduler::run_job(&mut transport, policy, id, run)
        })
    }

    fn workers(&self) -> usize {
        self.config.workers
    }
}

/// The coordinator's view of its workers, between jobs and during one.
struct State {
    members: Vec<Member>,
    /// Every worker's result channel, polled together.
    set: IpcReceiverSet,
    next_job: u64,
    next_worker: u64,
    /// Events read and not yet handed to a job: the rest of a batch that
    /// came in with the event that failed the job (the next job takes them).
    pending: VecDeque<(WorkerId, Event)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field(
                "workers",
                &self.members.iter().map(|m| m.worker.pid).collect::<Vec<_>>(),
            )
            .field("next_job", &self.next_job)
            .finish()
    }
}

/// One worker of the pool, and what outlives a job about it.
struct Member {
    id: WorkerId,
    worker: Worker,
    /// Id of the worker's channel in `State::set`.
    receiver: u64,
    /// Regions the worker keeps mapped: those of the last job it opened
    /// (the worker's `Mappings`); none believed after a failed job.
    held: HashSet<u64>,
    /// Jobs the worker has opened ([`PoolBuilder::max_jobs_per_worker`]).
    jobs: u32,
    /// It was sent SIGKILL: it is never given another job, even if its
    /// channel has not closed yet.
    killed: bool,
}

impl Member {
    fn kill(&mut self) {
        let _ = kill(Pid::from_raw(self.worker.pid as i32), Signal::SIGKILL);
        self.killed = true;
    }
}

impl State {
    fn new() -> Result<Self> {
        Ok(State {
            members: Vec::new(),
            set: IpcReceiverSet::new().map_err(|source| Error::Os {
                context: "creating the receiver set",
                source,
            })?,
            next_job: 0,
            next_worker: 0,
            pending: VecDeque::new(),
        })
    }

    fn add(&mut self, (worker, rx): Started) -> Result<WorkerId> {
        let receiver = self.set.add(rx).map_err(|source| Error::Os {
            context: "polling a worker's channel",
            source,
        })?;
        let id = WorkerId {
            index: self.next_worker,
            pid: worker.pid,
        };
        self.next_worker += 1;
        self.members.push(Member {
            id,
            worker,
            receiver,
            held: HashSet::new(),
            jobs: 0,
            killed: false,
        });
        Ok(id)
    }

    fn member(&self, id: WorkerId) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    fn member_mut(&mut self, id: WorkerId) -> Option<&mut Member> {
        self.members.iter_mut().find(|member| member.id == id)
    }

    /// Reads what the workers said, waiting up to `wait` (none: not at all),
    /// into `pending`. A closed channel is a worker gone: it is reaped and
    /// removed here, and reported as lost.
    fn poll(&mut self, wait: Option<Duration>, memory_limit: Option<u64>) -> Result<()> {
        let events = match wait {
            Some(wait) => self.set.try_select_timeout(wait),
            None => self.set.try_select(),
        };
        let events = match events {
            Ok(events) => events,
            Err(coop_worker::ipc_channel::TrySelectError::Empty) => return Ok(()),
            Err(coop_worker::ipc_channel::TrySelectError::IoError(err)) => {
                return Err(Error::Os {
                    context: "waiting for workers",
                    source: err,
                });
            }
        };
        for event in events {
            match event {
                // Every message is decoded, even one from a worker already
                // removed: decoding is what takes over the shared memory a
                // message may carry (ipc-channel leaks it otherwise).
                IpcSelectionResult::MessageReceived(receiver, message) => {
                    let event = transport::decode(message);
                    if let Some(member) = self.members.iter().find(|m| m.receiver == receiver) {
                        self.pending.push_back((member.id, event));
                    }
                }
                IpcSelectionResult::ChannelClosed(receiver) => {
                    let Some(index) = self.members.iter().position(|m| m.receiver == receiver) else {
                        continue;
                    };
                    let member = self.members.remove(index);
                    let status = reap(member.worker, EXIT_GRACE);
                    self.pending
                        .push_back((member.id, Event::Lost(exit_of(status, memory_limit))));
                }
            }
        }
        Ok(())
    }

    /// Readies the pool for a job: what workers said since the last job is
    /// stale, but a worker gone or gone wrong is replaced (and one that
    /// served its jobs retired), so that every job starts with a full pool.
    fn resync(&mut self, spawner: &Spawner, config: &Config) -> Result<()> {
        self.poll(None, config.memory_limit)?;
        while let Some((id, event)) = self.pending.pop_front() {
            let problem = match event {
                Event::Lost(status) => {
                    tracing::warn!(worker = ?id, %status, "worker lost between jobs");
                    continue;
                }
                Event::Message(FromWorker::Bye) => "said goodbye unasked".to_string(),
                Event::Message(_) => continue,
                Event::Garbage(problem) => problem,
            };
            if let Some(member) = self.member_mut(id) {
                tracing::warn!(pid = member.worker.pid, problem, "killing worker between jobs");
                member.kill();
            }
        }
        // Workers killed (in the last job, or just now) whose channel has
        // not closed yet: reaped here, so that no job is sent to them.
        let (killed, live) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|member| member.killed);
        self.members = live;
        let killed: Vec<Member> = killed;
        for member in killed {
            let pid = member.worker.pid;
            let status = reap(member.worker, Duration::from_millis(100));
            tracing::debug!(pid, status = %exit_of(status, None), "killed worker reaped");
        }
        if let Some(max) = config.max_jobs_per_worker {
            let (retired, kept) = std::mem::take(&mut self.members)
                .into_iter()
                .partition(|member| member.jobs >= max);
            self.members = kept;
            let retired: Vec<Member> = retired;
            // Every worker is told first, so that they exit together.
            for member in &retired {
                let _ = member.worker.tx.send(ToWorker::Shutdown);
                tracing::debug!(pid = member.worker.pid, jobs = member.jobs, "worker retired");
            }
            for member in retired {
                reap(member.worker, SHUTDOWN_GRACE);
            }
        }
        let missing = config.workers.saturating_sub(self.members.len());
        if missing > 0 {
            for worker in spawner.spawn(missing) {
                match worker {
                    Ok(worker) => {
                        self.add(worker)?;
                    }
                    Err(err) if self.members.is_empty() => return Err(err),
                    Err(err) => tracing::warn!(%err, "could not replace a worker"),
                }
            }
        }
        Ok(())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        for member in &self.members {
            let _ = member.worker.tx.send(ToWorker::Shutdown);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for member in self.members.drain(..) {
            let left = deadline.saturating_duration_since(Instant::now());
            reap(member.worker, left);
        }
    }
}

/// How a worker ended.
#[derive(Debug, Clone, Copy)]
struct Reaped {
    status: Option<ExitStatus>,
    /// It was still running after the grace period and was killed then.
    overstayed: bool,
}

/// Waits up to `grace` for a worker to exit, then kills it; always reaps it.
fn reap(mut worker: Worker, grace: Duration) -> Reaped {
    let deadline = Instant::now() + grace;
    loop {
        match worker.child.try_wait() {
            Ok(Some(status)) => {
                return Reaped {
                    status: Some(status),
                    overstayed: false,
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                let _ = kill(Pid::from_raw(worker.pid as i32), Signal::SIGKILL);
                return Reaped {
                    status: worker.child.wait().ok(),
                    overstayed: true,
                };
            }
            Err(_) => {
                return Reaped {
                    status: None,
                    overstayed: false,
                };
            }
        }
    }
}

/// How a worker whose channel closed ended; under a memory limit, a worker
/// that aborted almost surely failed an allocation past it (Rust's
/// allocation-failure handler aborts).
fn exit_of(reaped: Reaped, memory_limit: Option<u64>) -> WorkerExit {
    match reaped {
        Reaped { overstayed: true, .. } => WorkerExit::KeptRunning,
        Reaped { status: None, .. } => WorkerExit::Unknown,
        Reaped {
            status: Some(status), ..
        } => match (WorkerExit::of(status), memory_limit) {
            (WorkerExit::Signaled { signal, .. }, Some(limit)) if signal == Signal::SIGABRT as i32 => {
                WorkerExit::OverMemoryLimit { limit }
            }
            (exit, _) => exit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_without_init_is_refused() {
        // This test binary never calls `coop::init`.
        let err = Pool::builder().workers(1).build().unwrap_err();
        assert!(matches!(err, Error::NotInitialized), "{err}");
        assert!(err.to_string().contains("coop::init"));
    }

    #[test]
    fn worker_count_is_checked_before_anything_starts() {
        use crate::MAX_WORKERS;
        for bad in [0, MAX_WORKERS + 1] {
            let err = Pool::builder().workers(bad).build().unwrap_err();
            assert!(matches!(err, Error::InvalidWorkerCount { .. }), "{err}");
        }
    }

    #[test]
    fn exit_statuses_are_described() {
        use std::os::unix::process::ExitStatusExt;
        let ended = |status, overstayed| Reaped { status, overstayed };
        let describe = |reaped, limit| exit_of(reaped, limit).to_string();
        assert_eq!(
            describe(ended(Some(ExitStatus::from_raw(7 << 8)), false), None),
            "exited with status 7"
        );
        assert_eq!(
            describe(ended(Some(ExitStatus::from_raw(9)), false), None),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(describe(ended(None, false), None), "ended (status unknown)");
        assert_eq!(
            describe(ended(Some(ExitStatus::from_raw(9)), true), None),
            "closed its channel but kept running, and was killed"
        );
        // An abort under a memory limit is the limit; without one, a signal.
        let aborted = || ended(Some(ExitStatus::from_raw(6)), false);
        assert_eq!(
            exit_of(aborted(), Some(1 << 20)),
            WorkerExit::OverMemoryLimit { limit: 1 << 20 }
        );
        assert_eq!(
            describe(aborted(), Some(1 << 20)),
            "exceeded its memory limit of 1048576 bytes (an allocation failed, and it aborted)"
        );
        assert_eq!(describe(aborted(), None), "was killed by signal 6 (SIGABRT)");
    }
}
