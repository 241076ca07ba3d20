//! [`Error`]: everything that can go wrong in coop, with the worker, task and cause.

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Result type of coop.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from coop. Messages say what failed, on which worker (pid), which
/// task, and with which signal or exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker count is outside 1..=1024.
    #[error("worker count must be between 1 and {max}, got {requested}")]
    InvalidWorkerCount {
        /// What was asked for.
        requested: usize,
        /// The largest count allowed.
        max: usize,
    },

    /// The environment variable `COOP_WORKERS` ([`crate::ENV_WORKERS`]) is
    /// set to something other than a worker count, for an engine not given
    /// one in code.
    #[error(
        "{var} must be a whole number of workers from 1 to {max}, got {value:?} (unset it for one per core)"
    )]
    InvalidWorkersVar {
        /// The variable's name, `COOP_WORKERS`.
        var: &'static str,
        /// Its value (non-UTF-8 bytes replaced with U+FFFD).
        value: String,
        /// The largest count allowed.
        max: usize,
    },

    /// An engine chosen by name ([`crate::EngineKind`]'s `FromStr`) that
    /// coop does not have.
    #[error(
        "unknown engine {name:?}: expected one of {}",
        crate::EngineKind::ALL.map(crate::EngineKind::name).join(", ")
    )]
    UnknownEngine {
        /// The name given.
        name: String,
    },

    /// The MPI engine was chosen ([`crate::EngineKind::Mpi`]) in a build of
    /// coop without its cargo feature `mpi`.
    #[error(
        "the mpi engine needs coop built with its cargo feature `mpi` (and an MPI library, libclang and mpicc)"
    )]
    MpiNotBuilt,

    /// A pool was created in a program whose `main` does not call [`crate::init`].
    #[error(
        "coop::init was not called: call coop::init(&[...]) first in main, listing the jobs workers may run"
    )]
    NotInitialized,

    /// A worker process could not be started.
    #[error("could not start a worker process ({program}): {source}")]
    Spawn {
        /// The program that was executed.
        program: PathBuf,
        /// Why.
        source: io::Error,
    },

    /// A worker exited or did not connect during the handshake.
    #[error("worker (pid {pid}) failed to start: {cause}")]
    Handshake {
        /// The worker's pid.
        pid: u32,
        /// What happened.
        #[source]
        cause: HandshakeFailure,
    },

    /// A task failed on every attempt because the worker running it died.
    #[error(
        "job `{job}`: task {task} failed {attempts} time(s); the last worker to run it (pid {pid}) {status}"
    )]
    TaskLost {
        /// The job's name.
        job: &'static str,
        /// Index of the task.
        task: usize,
        /// Attempts made.
        attempts: u32,
        /// The worker that ran the last attempt.
        pid: u32,
        /// How that worker ended.
        status: WorkerExit,
    },

    /// A task ran past the job's timeout on every attempt.
    #[error(
        "job `{job}`: task {task} timed out after {timeout:?} on {attempts} attempt(s); last on worker pid {pid}"
    )]
    TaskTimedOut {
        /// The job's name.
        job: &'static str,
        /// Index of the task.
        task: usize,
        /// The per-task timeout.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
        /// The worker that ran the last attempt.
        pid: u32,
    },

    /// User code panicked in a task. Panics are not retried: they would recur.
    #[error("job `{job}`: {task} panicked on worker pid {pid}: {message}")]
    TaskPanicked {
        /// The job's name.
        job: &'static str,
        /// Index of the task (`None` when the panic was in encoding the partial).
        task: TaskIndex,
        /// The worker's pid (this process's pid for in-process engines).
        pid: u32,
        /// The panic message and location.
        message: String,
    },

    /// User code returned an error from a task.
    #[error("job `{job}`: {task} failed on worker pid {pid}: {message}")]
    TaskFailed {
        /// The job's name.
        job: &'static str,
        /// Index of the task.
        task: TaskIndex,
        /// The worker's pid (this process's pid for in-process engines).
        pid: u32,
        /// The error message.
        message: String,
    },

    /// [`crate::init`] was given two entries for one job type, or for two
    /// types that cannot be told apart by name.
    #[error("coop::init lists {first} and {second}: {why}; list each job once")]
    DuplicateJob {
        /// The first entry, as "`NAME` (type name)".
        first: String,
        /// The second entry, likewise.
        second: String,
        /// Whether they are one type, or two types with one type name.
        why: &'static str,
    },

    /// The job did not finish by its [`Run::deadline`](crate::Run::deadline).
    #[error(
        "job `{job}` did not finish by its deadline ({done} of {total} tasks done); its tasks in flight were stopped"
    )]
    DeadlineExceeded {
        /// The job's name.
        job: &'static str,
        /// Tasks whose results were in hand.
        done: usize,
        /// Tasks in the job.
        total: usize,
    },

    /// The job's [`CancelToken`](crate::CancelToken) was cancelled.
    #[error("job `{job}` was cancelled ({done} of {total} tasks done); its tasks in flight were stopped")]
    Cancelled {
        /// The job's name.
        job: &'static str,
        /// Tasks whose results were in hand.
        done: usize,
        /// Tasks in the job.
        total: usize,
    },

    /// [`Job::split`](crate::Job::split) refused the input.
    #[error("job `{job}` refused its input: {message}")]
    Split {
        /// The job's name.
        job: &'static str,
        /// Why (the error `split` returned, with its sources).
        message: String,
    },

    /// A worker binary does not register the job.
    #[error(
        "job `{job}` ({type_name}) is not registered in the worker binary (pid {pid}); registered: [{}]; add it to coop::init",
        registered.join(", ")
    )]
    UnknownJob {
        /// The job's name.
        job: &'static str,
        /// The job's type name, which identifies it (names may repeat).
        type_name: &'static str,
        /// The worker's pid.
        pid: u32,
        /// The jobs the worker binary registers.
        registered: Vec<String>,
    },

    /// A worker could not decode the job or map its input.
    #[error("job `{job}`: worker pid {pid} could not open the job: {message}")]
    JobSetup {
        /// The job's name.
        job: &'static str,
        /// The worker's pid.
        pid: u32,
        /// Why.
        message: String,
    },

    /// `Job::output_range` of a task lies outside the output region.
    #[error("job `{job}`: task {task} writes output bytes {range:?}, but the output holds {len} bytes")]
    OutputOutOfBounds {
        /// The job's name.
        job: &'static str,
        /// Index of the task.
        task: usize,
        /// The range it declared.
        range: Range<usize>,
        /// The output length in bytes.
        len: usize,
    },

    /// Two tasks declare overlapping output ranges.
    #[error("job `{job}`: tasks {first} and {second} write overlapping output ranges")]
    OverlappingOutput {
        /// The job's name.
        job: &'static str,
        /// One task.
        first: usize,
        /// The other.
        second: usize,
    },

    /// A task declares an output range but the job was run without an output.
    #[error("job `{job}`: task {task} writes output, but the job was run without one (Run::output)")]
    MissingOutput {
        /// The job's name.
        job: &'static str,
        /// Index of the task.
        task: usize,
    },

    /// An input file could not be opened or mapped.
    #[error("{}: {source}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },

    /// Encoding or decoding a job, task or partial failed.
    #[error("job `{job}`: could not {what}: {source}")]
    Codec {
        /// The job's name.
        job: &'static str,
        /// What was being encoded or decoded.
        what: &'static str,
        /// The codec's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A worker sent something that breaks the protocol; it is treated as dead.
    #[error("worker pid {pid} broke the protocol: {message}")]
    Protocol {
        /// The worker's pid.
        pid: u32,
        /// What was wrong.
        message: String,
    },

    /// Every worker died and none could be restarted.
    #[error("job `{job}`: no worker left to run it ({cause})")]
    NoWorkers {
        /// The job's name.
        job: &'static str,
        /// Why the last replacement failed.
        cause: String,
    },

    /// An operating-system call failed in the coordinator.
    #[error("{context}: {source}")]
    Os {
        /// What the coordinator was doing.
        context: &'static str,
        /// Why it failed.
        source: io::Error,
    },

    /// A task failed, or the job could not be opened, on a rank of an MPI job
    /// ([`crate::Mpi`]). A rank that dies is not reported here: MPI ends the
    /// whole job, and `mpirun` names the rank, its host and its signal.
    #[cfg(feature = "mpi")]
    #[error("job `{job}`: {failure} on MPI rank {rank} (host {host}, pid {pid}): {message}")]
    Rank {
        /// The job's name.
        job: &'static str,
        /// The rank in `MPI_COMM_WORLD`.
        rank: usize,
        /// The rank's host (MPI's processor name).
        host: String,
        /// The rank's pid on its host.
        pid: u32,
        /// What failed.
        failure: RankFailure,
        /// The panic or error message, or why the job could not be opened.
        message: String,
    },

    /// MPI could not be started, was used in a way it does not allow, or a
    /// message between ranks could not be encoded, decoded or received whole.
    #[cfg(feature = "mpi")]
    #[error("MPI: {0}")]
    Mpi(#[from] MpiError),
}

/// What went wrong with MPI, in an [`Error::Mpi`]. Where a codec failed, its
/// error is the [`source`](std::error::Error::source).
#[cfg(feature = "mpi")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MpiError {
    /// [`crate::Mpi::init`] was called in a process where MPI was already initialized.
    #[error("MPI is already initialized in this process; create one coop::Mpi per program")]
    AlreadyInitialized,

    /// A job was started on an [`crate::Mpi`] engine while another was running
    /// (from a progress callback).
    #[error(
        "a job is already running on this engine (one job at a time: was it called from a progress callback?)"
    )]
    JobRunning,

    /// A message came from a rank that does not run tasks.
    #[error("a message came from rank {rank}, which is not a worker rank")]
    UnknownRank {
        /// The sender's rank in `MPI_COMM_WORLD`.
        rank: i32,
    },

    /// A control message could not be encoded.
    #[error("encoding a message: {source}")]
    Encode {
        /// The codec's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A control message is larger than one MPI message carries.
    #[error(
        "a control message of {len} bytes is more than one MPI message carries; \
         jobs and tasks hold parameters and ranges, data goes in the Input"
    )]
    MessageTooLarge {
        /// The encoded message's length in bytes.
        len: usize,
    },

    /// A control message from a rank could not be decoded.
    #[error("undecodable message from rank {rank}: {source}")]
    Decode {
        /// The sender's rank in `MPI_COMM_WORLD`.
        rank: i32,
        /// The codec's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Fewer or more bytes arrived than a control message announced.
    #[error("{expected} bytes announced, {received} received")]
    DataLength {
        /// Bytes announced.
        expected: usize,
        /// Bytes received (MPI's count).
        received: i32,
    },
}

/// Index of a task in an error, or `None` when the failure happened while a
/// worker encoded its partial result. Shown as "task 3" or "encoding the partial".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskIndex(pub Option<usize>);

impl std::fmt::Display for TaskIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(task) => write!(f, "task {task}"),
            None => f.write_str("encoding the partial"),
        }
    }
}

/// How a worker process ended, as its coordinator saw it ([`Error::TaskLost`],
/// [`HandshakeFailure::Exited`]). Shown as a phrase about the worker:
/// "exited with status 1", "was killed by signal 9 (SIGKILL)".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerExit {
    /// It exited with this status.
    Exited {
        /// The exit status.
        code: i32,
    },
    /// A signal ended it.
    Signaled {
        /// The signal's number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// It aborted under its memory limit ([`PoolBuilder::memory_limit`](crate::PoolBuilder::memory_limit)):
    /// an allocation past the limit failed, and Rust's allocation-failure
    /// handler aborts.
    OverMemoryLimit {
        /// The limit, in bytes.
        limit: u64,
    },
    /// It closed its channel but kept running, and was killed.
    KeptRunning,
    /// The coordinator killed it: its task ran past the task timeout.
    TimedOut,
    /// The coordinator killed it for breaking the protocol.
    BrokeProtocol {
        /// What it did.
        problem: String,
    },
    /// It ended, but how could not be read.
    Unknown,
}

impl WorkerExit {
    /// How a process with this status ended.
    pub(crate) fn of(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => WorkerExit::Exited { code },
            (None, Some(signal)) => WorkerExit::Signaled {
                signal,
                core_dumped: status.core_dumped(),
            },
            (None, None) => WorkerExit::Unknown,
        }
    }
}

impl std::fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerExit::Exited { code } => write!(f, "exited with status {code}"),
            WorkerExit::Signaled { signal, core_dumped } => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                let core = if *core_dumped { ", core dumped" } else { "" };
                write!(f, "was killed by signal {signal} ({name}{core})")
            }
            WorkerExit::OverMemoryLimit { limit } => write!(
                f,
                "exceeded its memory limit of {limit} bytes (an allocation failed, and it aborted)"
            ),
            WorkerExit::KeptRunning => f.write_str("closed its channel but kept running, and was killed"),
            WorkerExit::TimedOut => f.write_str("was killed after its task timed out"),
            WorkerExit::BrokeProtocol { problem } => {
                write!(f, "was killed for breaking the protocol ({problem})")
            }
            WorkerExit::Unknown => f.write_str("ended (status unknown)"),
        }
    }
}

/// Why a worker failed to start ([`Error::Handshake`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// It did not connect in time ([`PoolBuilder::handshake_timeout`](crate::PoolBuilder::handshake_timeout)).
    #[error("did not connect within {timeout:?}")]
    TimedOut {
        /// The time it had.
        timeout: std::time::Duration,
    },
    /// Another process connected in its place, without its token.
    #[error("a process (pid {pid}) connected in its place without its token; it was dropped")]
    WrongToken {
        /// That process's pid, as it claimed.
        pid: u32,
    },
    /// Its hello did not decode.
    #[error("sent an unreadable hello ({source})")]
    UnreadableHello {
        /// The channel's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// It closed the connection without a hello, and did not exit.
    #[error("hung up without a hello ({source})")]
    HungUp {
        /// The channel's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// It ended before its hello.
    #[error("{exit} before completing its handshake{}", .hint.as_deref().unwrap_or(""))]
    Exited {
        /// How it ended.
        exit: WorkerExit,
        /// What most likely went wrong, when something can be said.
        hint: Option<String>,
    },
}

/// What failed on a rank, in an [`Error::Rank`].
#[cfg(feature = "mpi")]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RankFailure {
    /// User code panicked in a task (or in encoding the partial: `TaskIndex(None)`).
    Panicked {
        /// Index of the task.
        task: TaskIndex,
    },
    /// User code returned an error from a task.
    Failed {
        /// Index of the task.
        task: TaskIndex,
    },
    /// The rank could not open the job: decoding it, or mapping its input
    /// (a file missing or of another length on the rank's host).
    Setup,
    /// The program on the rank does not register the job in [`crate::init`].
    UnknownJob,
}

#[cfg(feature = "mpi")]
impl std::fmt::Display for RankFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RankFailure::Panicked { task } => write!(f, "{task} panicked"),
            RankFailure::Failed { task } => write!(f, "{task} failed"),
            RankFailure::Setup => f.write_str("the job could not be opened"),
            RankFailure::UnknownJob => f.write_str("the job is not registered"),
        }
    }
}
