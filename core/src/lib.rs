//! Map-reduce on cooperating worker processes.
//!
//! coop splits a job into tasks, runs them in worker processes (one per core
//! by default), hands them the input through shared memory, collects one
//! partial result per worker over `ipc-channel`, and merges the partials.
//! Processes, not threads: a crash, a leak or an abort in one task cannot take
//! the others down, and a lost task simply runs again.
//!
//! # Hello, world
//!
//! ```rust,standalone_crate
//! use coop::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use std::ops::Range;
//!
//! /// Sums a slice of numbers.
//! #[derive(Serialize, Deserialize)]
//! struct Sum;
//!
//! impl Job for Sum {
//!     const NAME: &'static str = "sum";
//!     type Task = Range<usize>; // a task is a range of the input
//!     type Partial = u64;       // each worker folds its tasks into one u64
//!
//!     fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
//!         let len = input.slice::<u64>(0).len();
//!         let step = len.div_ceil(hint).max(1);
//!         Ok((0..len).step_by(step).map(|s| s..(s + step).min(len)).collect())
//!     }
//!
//!     fn map(&self, task: &Range<usize>, input: &Input, sum: &mut u64)
//!         -> Result<(), TaskError> {
//!         *sum += input.slice::<u64>(0)[task.clone()].iter().sum::<u64>();
//!         Ok(())
//!     }
//!
//!     fn merge(&self, into: &mut u64, other: u64) {
//!         *into += other;
//!     }
//! }
//!
//! fn main() -> coop::Result<()> {
//!     // First line of main: a process started as a worker serves and exits here.
//!     coop::init(&[coop::register::<Sum>()])?;
//!
//!     let pool = Pool::builder().workers(2).build()?;
//!     let numbers: Vec<u64> = (1..=1_000_000).collect();
//!     let mut input = Input::new();
//!     input.push_slice(&numbers); // copied once into shared memory
//!     assert_eq!(pool.run(&Sum, &input)?, 500_000_500_000);
//!     Ok(())
//! }
//! ```
//!
//! # How to use
//!
//! 1. Write a [`Job`]: `split` cuts the [`Input`] into small tasks (ranges),
//!    `map` runs one task and folds its result into the worker's partial,
//!    `merge` combines partials (associative and commutative). Jobs with
//!    large partials can also merge one as it is decoded
//!    ([`Job::merge_encoded`]).
//! 2. Call [`init`] first in `main`, listing your jobs ([`register`]). Workers
//!    are your own program re-executed; `init` is where they turn into workers.
//! 3. Build an [`Input`] from bytes, plain-old-data slices, files (mapped, not
//!    read) or a reader; for positional results, a [`SharedOutput`] that tasks
//!    write in disjoint tiles ([`Job::output_range`]).
//! 4. Run on an [`Engine`]: [`Pool`] (processes), [`Threads`] or
//!    [`Sequential`] — or, with the cargo feature `mpi`, `Mpi` (the ranks of
//!    an MPI job, across machines). The job does not know which.
//!    `engine.run(&job, &input)` ([`Engine::run`]) runs a job with default
//!    options; [`Run`] sets the others (output, progress callback, tasks per
//!    worker, stats): `Run::new(&job, &input).output(&mut out).on(&engine)`.
//!
//! # Library parts
//!
//! - [`split`]: tasks cut at record boundaries ([`split::Records`]: lines,
//!   a delimiter byte, ASCII whitespace, fixed-size records, plain bytes),
//!   as [`split::Span`]s that name the bytes they read; a record never spans
//!   two segments.
//! - [`RecordJob`]: the short form of a job, the fold of one record (or of a
//!   task's records at once, [`RecordJob::fold_all`]).
//! - [`partial`]: partials that combine as they are ([`partial::Combine`]):
//!   [`partial::Keyed`] tables (reduce by key), [`partial::Tally`] (counts
//!   of byte strings, built for word counts: its
//!   [`add_words`](partial::Tally::add_words) counts a whole text),
//!   [`partial::Dense`] arrays (histograms, per-class sums), maps,
//!   [`partial::Min`], [`partial::Max`], [`partial::Summary`] (count, sum,
//!   min and max of a column), and tuples of these.
//! - [`Job::map`] takes no output; a job that writes one implements
//!   [`Job::map_with_output`].
//!
//! # Choosing the engine at run time
//!
//! [`EngineKind`] names an engine (`processes`, `threads`, `sequential`,
//! `mpi`) and parses from a string, for a program's `--engine` option;
//! [`AnyEngine`] starts the one named, with a worker count if given, and is
//! an [`Engine`] itself:
//!
//! ```no_run
//! # use coop::prelude::*;
//! # fn demo<J: Job>(job: &J, input: &Input) -> coop::Result<()> {
//! use coop::{AnyEngine, EngineKind};
//! let kind: EngineKind = "threads".parse()?; // from the command line
//! let engine = AnyEngine::builder(kind).workers(4).build()?;
//! let result = engine.run(job, input)?;
//! # Ok(()) }
//! ```
//!
//! # Worker count: `COOP_WORKERS`
//!
//! An engine given no worker count in code ([`Pool::new`], a
//! [`Pool::builder`] without [`workers`](PoolBuilder::workers), an
//! [`AnyEngine`] of processes or threads without one) runs one worker per
//! core, or as many as the environment variable `COOP_WORKERS` says, as
//! `RAYON_NUM_THREADS` does for rayon: `COOP_WORKERS=4 my-program`. A count
//! given in code wins. A value that is not a whole number from 1 to
//! [`MAX_WORKERS`] is an error ([`Error::InvalidWorkersVar`]), not ignored.
//! [`default_workers`] gives the count.
//!
//! # Failures
//!
//! - A worker that dies (crash, `kill -9`, out of memory) is detected at once,
//!   replaced, and its tasks run again, up to [`PoolBuilder::retries`] times;
//!   the result is the same as without the fault. After that, the job fails with
//!   [`Error::TaskLost`], naming the task, the worker's pid and its signal or status.
//! - A panic or an error in a task ends the job with [`Error::TaskPanicked`] or
//!   [`Error::TaskFailed`] (message, task, pid). It is not retried, and the pool
//!   stays usable.
//! - [`PoolBuilder::task_timeout`] kills a worker stuck in a task.
//! - [`Run::deadline`] and [`Run::cancel_token`] end a whole job early
//!   ([`Error::DeadlineExceeded`], [`Error::Cancelled`]): the workers running
//!   its tasks are killed and replaced, and the pool runs the next job.
//! - [`PoolBuilder::memory_limit`] caps what each worker allocates (a worker
//!   past it is reported as such, and its task retried);
//!   [`PoolBuilder::max_jobs_per_worker`] replaces workers after n jobs.
//! - Workers die with the coordinator however it ends (`PR_SET_PDEATHSIG`), and
//!   dropping a [`Pool`] stops and reaps them. Nothing waits without a deadline.
//!
//! # Testing jobs
//!
//! Workers are the program re-executed, and a test binary's `main` is
//! libtest's: a pool in an ordinary `#[test]` would have each worker run the
//! whole test suite again. [`test_workers!`] is the way to test jobs on
//! worker processes with `cargo test`: once per test binary, it registers the
//! jobs (no [`init`] needed) and adds coop's worker entry, a test named
//! `__coop_worker_entry` that workers run alone, quietly, instead of the
//! suite.
//!
//! ```rust
//! # use coop::prelude::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Sum;
//! # impl Job for Sum {
//! #     const NAME: &'static str = "sum"; type Task = (); type Partial = u64;
//! #     fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> { Ok(vec![]) }
//! #     fn map(&self, _: &(), _: &Input, _: &mut u64) -> Result<(), TaskError> { Ok(()) }
//! #     fn merge(&self, a: &mut u64, b: u64) { *a += b }
//! # }
//! // In tests/sum.rs, or in the `tests` module of the crate that defines
//! // `Sum`: every job the tests run on a pool.
//! coop::test_workers!(coop::register::<Sum>());
//! # fn main() {}
//! ```
//!
//! Then any `#[test]` of that binary builds a [`Pool`] and runs the jobs on
//! it, as the example of [`test_workers!`] shows.
//!
//! - Each integration test file is a binary of its own: list the jobs in
//!   each that starts pools. Uses in several modules of one binary add up.
//! - Workers' stdout is discarded (libtest writes its banner there), even
//!   with `--nocapture`; their stderr is kept: debug with `eprintln!`.
//! - [`Threads`] and [`Sequential`] need none of this. A test binary with
//!   `harness = false` has a `main` of its own: call [`init`] first there,
//!   as a program does.
//!
//! # Crate layout
//!
//! - [`Job`], [`init`], [`register`]: the job model and how workers find jobs;
//!   [`test_workers!`]: the same for `cargo test`.
//! - [`Input`], [`SharedOutput`]: data shared with workers, never copied per worker.
//! - [`Engine`], [`Run`], [`Pool`], [`Threads`], [`Sequential`]: what runs jobs;
//!   [`EngineKind`], [`AnyEngine`]: the engine chosen at run time.
//! - [`Error`]: what can go wrong, with worker, task and cause.
//! - [`prelude`]: the names most programs need.
//!
//! Set `RUST_LOG=coop=debug` with a `tracing` subscriber installed to see pool
//! start, dispatch, worker deaths and retries.
//!
//! # Misuse that does not compile
//!
//! A job's partial must be serializable, since it travels between processes:
//!
//! ```compile_fail
//! use coop::prelude::*;
//! struct NotSerializable;
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Bad;
//! impl Job for Bad {
//!     const NAME: &'static str = "bad";
//!     type Task = ();
//!     type Partial = std::rc::Rc<NotSerializable>;
//!     fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> { Ok(vec![]) }
//!     fn map(&self, _: &(), _: &Input, _: &mut Self::Partial) -> Result<(), TaskError> { Ok(()) }
//!     fn merge(&self, _: &mut Self::Partial, _: Self::Partial) {}
//! }
//! ```
//!
//! A task's output tile is only lent for the duration of `map`:
//!
//! ```compile_fail
//! use coop::prelude::*;
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Leak;
//! impl Job for Leak {
//!     const NAME: &'static str = "leak";
//!     type Task = ();
//!     type Partial = ();
//!     fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> { Ok(vec![]) }
//!     fn map(&self, _: &(), _: &Input, _: &mut ()) -> Result<(), TaskError> { Ok(()) }
//!     fn map_with_output(&self, _: &(), _: &Input, out: &mut [u8], _: &mut ()) -> Result<(), TaskError> {
//!         let kept: &'static mut [u8] = out;
//!         Ok(())
//!     }
//!     fn merge(&self, _: &mut (), _: ()) {}
//! }
//! ```
#![deny(missing_docs)]

// The README's examples, compiled and run as doc tests so that they keep
// working.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

mod any_engine;
mod engine;
mod error;
mod input;
mod job;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod partial;
mod pool;
mod record_job;
mod scheduler;
pub mod split;
mod stop;
mod testing;
mod workers;

#[cfg(feature = "mpi")]
pub use crate::error::{MpiError, RankFailure};
#[cfg(feature = "mpi")]
pub use crate::mpi::Mpi;
pub use any_engine::{AnyEngine, AnyEngineBuilder, EngineKind};
pub use engine::{DEFAULT_TASKS_PER_WORKER, Engine, JobStats, Progress, Run, Sequential, Threads};
pub use error::{Error, HandshakeFailure, Result, TaskIndex, WorkerExit};
pub use input::{Input, SharedOutput, SliceError};
pub use job::{Job, JobEntry, TaskError, init, register};
pub use pool::{DEFAULT_RETRIES, Ipc, Pool, PoolBuilder};
pub use record_job::RecordJob;
pub use stop::CancelToken;
#[doc(hidden)]
pub use testing::__private;
pub use workers::{ENV_WORKERS, MAX_WORKERS, default_workers};

/// Fault injection for tests (feature `fault-injection`): see
/// [`PoolBuilder::inject_fault`].
#[cfg(feature = "fault-injection")]
pub mod fault {
    pub use coop_worker::fault::{Behaviour, ENV_FAULT, Fault, Point};
}

/// The names most programs need: `use coop::prelude::*;`.
pub mod prelude {
    pub use crate::split::Records;
    pub use crate::{Engine, Input, Job, Pool, Progress, RecordJob, Run, SharedOutput, TaskError};
}
