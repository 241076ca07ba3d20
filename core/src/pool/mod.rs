//! [`Pool`]: the coordinator of a set of worker processes.

mod members;
mod spawn;
mod transport;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::{Engine, Run};
use crate::error::Result;
use crate::job::{Job, check_registered};
use crate::scheduler::{self, Policy};
use crate::workers::{check_worker_count, default_workers};
use members::State;
use spawn::{SpawnConfig, Spawner};
use transport::PoolTransport;

/// Default number of times a task is run again after the worker running it died.
pub const DEFAULT_RETRIES: u32 = 2;

/// How long a worker may take to start and connect.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

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
/// task ends the job with an [`Error`](crate::Error) naming the task and worker, and the pool
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
    /// then fails with [`Error::TaskLost`](crate::Error::TaskLost). Off by default.
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
    /// Fails with [`Error::InvalidWorkersVar`](crate::Error::InvalidWorkersVar) if no worker count was given
    /// and `COOP_WORKERS` is not one, with [`Error::NotInitialized`](crate::Error::NotInitialized) before
    /// [`crate::init`] (or [`crate::test_workers!`]) registered jobs, and
    /// with [`Error::DuplicateJob`](crate::Error::DuplicateJob) if `test_workers!` registered two types
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

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
}
