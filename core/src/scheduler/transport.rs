//! What the scheduler asks of a transport: the process pool (ipc-channel and
//! shared memory) or MPI. A transport moves messages and bytes and owns the
//! workers' lives; every decision about tasks is the scheduler's.
//!
//! A transport is made for one job, over the engine's lasting state, so it
//! may borrow what the job lends (the input, for threads that stream it).

use std::time::Duration;

use coop_worker::JobKey;
use coop_worker::protocol::{Chunk, Failure, FromWorker, Payload, Rejection, ToWorker};

use crate::error::{Error, Result, TaskIndex, WorkerExit};
use crate::input::{Input, SharedOutput};

/// A worker as its transport names it: the same for the worker's whole
/// life, and never given to another worker of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct WorkerId {
    /// The transport's number for it (the pool's count of workers started,
    /// an MPI rank).
    pub(crate) index: u64,
    /// Its pid on its host, for errors (known after it is gone).
    pub(crate) pid: u32,
}

/// How a transport carries a job's data, fixed for the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Carriage {
    /// For each input segment, whether its bytes go with the tasks that read
    /// them ([`Chunk`]s, at most once per worker); otherwise workers map it.
    pub(crate) sent: Vec<bool>,
    /// Whether output tiles come back in messages ([`FromWorker::TaskDone`]);
    /// otherwise workers write them in place.
    pub(crate) tiles: bool,
}

impl Carriage {
    /// Whether some task carries input bytes: then no task goes ahead to a
    /// busy worker, where its bytes would wait behind the running task (and,
    /// with MPI, hold the coordinator in the send until the worker takes them).
    pub(crate) fn carries_input(&self) -> bool {
        self.sent.contains(&true)
    }
}

/// What a worker needs to open a job.
#[derive(Debug)]
pub(crate) struct JobStart<'a> {
    pub(crate) id: u64,
    pub(crate) key: JobKey,
    /// The job value, encoded.
    pub(crate) params: &'a [u8],
    pub(crate) input: &'a Input,
    pub(crate) output: Option<&'a SharedOutput>,
}

/// How a job ended for one worker ([`Transport::end_job`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobEnd {
    pub(crate) id: u64,
    /// The job failed (or was stopped): what the worker still runs of it is waste.
    pub(crate) failed: bool,
    /// The worker opened the job.
    pub(crate) opened: bool,
    /// The worker still has tasks of the job (running or queued).
    pub(crate) busy: bool,
}

/// What a transport reports about a worker.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message; its payloads hold their bytes (never [`Payload::Follows`](coop_worker::protocol::Payload::Follows)).
    Message(FromWorker),
    /// Something that is not a message of the protocol.
    Garbage(String),
    /// The worker is gone (and reaped): how it ended.
    Lost(WorkerExit),
}

/// Why the scheduler stops listening to a worker and ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Its task ran past the pool's task timeout.
    Timeout,
    /// It broke the protocol.
    Breach(String),
}

impl From<Kill> for WorkerExit {
    fn from(kill: Kill) -> Self {
        match kill {
            Kill::Timeout => WorkerExit::TimedOut,
            Kill::Breach(problem) => WorkerExit::BrokeProtocol { problem },
        }
    }
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::Timeout => f.write_str("its task timed out"),
            Kill::Breach(problem) => f.write_str(problem),
        }
    }
}

/// A failure a worker reported, which ends the job (user code is not retried).
#[derive(Debug)]
pub(crate) enum Reported {
    /// A task, or encoding the partial (`task` is then none), panicked or
    /// returned an error.
    Failed { task: TaskIndex, failure: Failure },
    /// The worker could not open the job.
    Rejected(Rejection),
}

impl Reported {
    /// The error naming the job, and the worker by its pid.
    pub(crate) fn into_error(self, pid: u32, job: JobName) -> Error {
        match self {
            Reported::Failed {
                task,
                failure: Failure::Panic(message),
            } => Error::TaskPanicked {
                job: job.name,
                task,
                pid,
                message,
            },
            Reported::Failed {
                task,
                failure: Failure::Error(message),
            } => Error::TaskFailed {
                job: job.name,
                task,
                pid,
                message,
            },
            Reported::Rejected(Rejection::UnknownJob { registered }) => Error::UnknownJob {
                job: job.name,
                type_name: job.type_name,
                pid,
                registered,
            },
            Reported::Rejected(Rejection::Setup(message)) => Error::JobSetup {
                job: job.name,
                pid,
                message,
            },
        }
    }
}

/// One task as the scheduler sends it ([`Transport::send_task`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskSend<'a> {
    pub(crate) job: u64,
    pub(crate) task: u32,
    /// The task, encoded.
    pub(crate) spec: &'a [u8],
    /// The input it reads that the worker does not hold yet, whose bytes
    /// go with it.
    pub(crate) chunks: &'a [Chunk],
}

impl TaskSend<'_> {
    /// The task's message, its spec carried as `spec` (a transport's own
    /// form of [`TaskSend::spec`]).
    pub(crate) fn message(&self, spec: Payload) -> ToWorker {
        ToWorker::Task {
            job: self.job,
            task: self.task,
            spec,
            chunks: self.chunks.to_vec(),
        }
    }
}

/// The job a [`Reported`] failure belongs to, for the error that names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobName {
    pub(crate) name: &'static str,
    pub(crate) type_name: &'static str,
}

/// The operations the scheduler needs. Sends never block on a worker for
/// long (the pool streams input bytes from threads of its own); a send to a
/// worker that died is not an error: the death is reported as an event.
/// An `Err` is one the job cannot outlive, and ends it.
pub(crate) trait Transport {
    /// How this job's data travels.
    fn carriage(&self, input: &Input) -> Carriage;

    /// Gets the workers ready for a new job (deaths between jobs handled,
    /// workers retired and replaced, answers about earlier jobs taken), and
    /// names them.
    fn prepare(&mut self) -> Result<Vec<WorkerId>>;

    /// Opens the job in the worker; comes before its first task.
    fn start_job(&mut self, worker: WorkerId, job: &JobStart<'_>) -> Result<()>;

    /// Sends one task, with the input bytes of its chunks (from the job's input).
    fn send_task(&mut self, worker: WorkerId, task: TaskSend<'_>) -> Result<()>;

    /// Asks the worker for its partial, behind the tasks it has.
    fn flush(&mut self, worker: WorkerId, job: u64) -> Result<()>;

    /// Closes the job in the worker.
    fn end_job(&mut self, worker: WorkerId, end: JobEnd) -> Result<()>;

    /// The next event, waiting at most `wait`.
    fn next_event(&mut self, wait: Duration) -> Result<Option<(WorkerId, Event)>>;

    /// An event read with the last one (the rest of its batch), if there is
    /// one; never waits nor reads. The scheduler takes these before it
    /// dispatches again, so that a worker's death read behind its last
    /// report is known before another task is sent to it. By default none.
    fn buffered_event(&mut self) -> Option<(WorkerId, Event)> {
        None
    }

    /// Ends a worker that is not to be trusted any more; its loss is reported
    /// as [`Event::Lost`]. A transport that cannot end one worker alone (MPI)
    /// fails the job instead.
    fn kill(&mut self, worker: WorkerId, why: &Kill) -> Result<()>;

    /// Starts a worker in place of one lost; `None` if the transport starts
    /// no workers once the engine runs.
    fn replace(&mut self) -> Option<Result<WorkerId>>;

    /// The error for a failure the worker reported; by default, that of a
    /// worker process known by its pid.
    fn reported(&self, worker: WorkerId, job: JobName, failure: Reported) -> Error {
        failure.into_error(worker.pid, job)
    }
}
