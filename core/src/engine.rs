//! Engines run jobs: [`Engine`], the [`Run`] request, and the in-process
//! engines [`Sequential`] and [`Threads`]. The process engine is [`crate::Pool`].

use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, TaskIndex};
use crate::input::{Input, SharedOutput};
use crate::job::{Job, error_chain};
use crate::stop::{CancelToken, Stop};

/// Tasks per worker when a run does not say: enough for idle workers to take
/// over from slow ones, few enough that dispatch costs nothing.
pub const DEFAULT_TASKS_PER_WORKER: usize = 8;

/// Something that runs jobs. A job does not know which engine runs it, and
/// every engine gives the same result for the same job and input.
///
/// [`run`](Engine::run) runs a job with default options; [`Run`] sets the
/// others (output, progress, stats) and runs it with [`Run::on`]. The engine
/// can be chosen at run time with [`AnyEngine`](crate::AnyEngine).
pub trait Engine {
    /// Runs `job` over `input` with default options (no output region, no
    /// progress callback) and returns its merged partial result: the same
    /// as `Run::new(job, input).on(self)`.
    ///
    /// ```rust,standalone_crate
    /// use coop::prelude::*;
    /// use coop::{Sequential, Threads};
    /// # use std::ops::Range;
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Sum;
    /// # impl Job for Sum {
    /// #     const NAME: &'static str = "sum";
    /// #     type Task = Range<usize>;
    /// #     type Partial = u64;
    /// #     fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
    /// #         let len = input.slice::<u64>(0).len();
    /// #         let step = len.div_ceil(hint).max(1);
    /// #         Ok((0..len).step_by(step).map(|s| s..(s + step).min(len)).collect())
    /// #     }
    /// #     fn map(&self, task: &Range<usize>, input: &Input, sum: &mut u64)
    /// #         -> Result<(), TaskError> {
    /// #         *sum += input.slice::<u64>(0)[task.clone()].iter().sum::<u64>();
    /// #         Ok(())
    /// #     }
    /// #     fn merge(&self, into: &mut u64, other: u64) { *into += other; }
    /// # }
    ///
    /// fn main() -> coop::Result<()> {
    ///     coop::init(&[coop::register::<Sum>()])?;
    ///     let numbers: Vec<u64> = (1..=1000).collect();
    ///     let mut input = Input::new();
    ///     input.push_slice(&numbers);
    ///     // Every engine, one call.
    ///     assert_eq!(Pool::builder().workers(2).build()?.run(&Sum, &input)?, 500_500);
    ///     assert_eq!(Threads::new(2)?.run(&Sum, &input)?, 500_500);
    ///     assert_eq!(Sequential.run(&Sum, &input)?, 500_500);
    ///     Ok(())
    /// }
    /// ```
    fn run<J: Job>(&self, job: &J, input: &Input) -> Result<J::Partial> {
        self.execute(Run::new(job, input))
    }

    /// Runs a job and returns its merged partial result. What [`run`](Engine::run)
    /// and [`Run::on`] call; engines implement it.
    fn execute<J: Job>(&self, run: Run<'_, J>) -> Result<J::Partial>;

    /// Number of workers (processes or threads) tasks run on.
    fn workers(&self) -> usize;
}

/// Progress of a job, reported after each task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Tasks whose results are in hand.
    pub done: usize,
    /// Tasks in the job.
    pub total: usize,
}

/// Where a job's time and bytes went, filled in by the engine when asked with
/// [`Run::stats`]. The coordinator-side pieces (`split`, `dispatch`, `merge`)
/// are the serial part of a job; the rest is the workers' parallel work.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct JobStats {
    /// Tasks the job was split into.
    pub tasks: usize,
    /// Time in [`Job::split`] and the checks of output ranges.
    pub split: Duration,
    /// Time spent encoding and sending tasks (and their input, with
    /// [`Ipc::Messages`](crate::Ipc::Messages)); zero for in-process engines.
    pub dispatch: Duration,
    /// Time spent decoding and merging partials in the coordinator.
    pub merge: Duration,
    /// Wall time of the whole run.
    pub total: Duration,
    /// Bytes of messages sent to workers.
    pub bytes_to_workers: u64,
    /// Bytes of messages received from workers (partials, and output tiles
    /// with [`Ipc::Messages`](crate::Ipc::Messages)).
    pub bytes_from_workers: u64,
    /// Attempts lost with a worker that died: its running task, or, for a
    /// worker that died sending its partial, each task the partial held.
    /// (The other tasks it held run again too, uncharged.)
    pub retries: u32,
}

/// A request to run one job: the job, its input, and options.
///
/// ```no_run
/// # use coop::prelude::*;
/// # fn demo<J: Job>(pool: &Pool, job: &J, input: &Input, out: &mut SharedOutput) -> coop::Result<()> {
/// let report = |p: Progress| eprintln!("{}/{}", p.done, p.total);
/// Run::new(job, input).output(out).progress(&report).on(pool)?;
/// # Ok(()) }
/// ```
#[must_use = "a Run does nothing until .on(engine)"]
pub struct Run<'a, J: Job> {
    pub(crate) job: &'a J,
    pub(crate) input: &'a Input,
    pub(crate) output: Option<&'a mut SharedOutput>,
    pub(crate) progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    pub(crate) tasks_per_worker: usize,
    pub(crate) stats: Option<&'a mut JobStats>,
    pub(crate) stop: Stop<'a>,
}

impl<J: Job> std::fmt::Debug for Run<'_, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("job", &J::NAME)
            .field("segments", &self.input.len())
            .field("output", &self.output.as_ref().map(|o| o.len()))
            .field("tasks_per_worker", &self.tasks_per_worker)
            .finish()
    }
}

impl<'a, J: Job> Run<'a, J> {
    /// A run of `job` over `input`, with no output region and default options.
    pub fn new(job: &'a J, input: &'a Input) -> Self {
        Run {
            job,
            input,
            output: None,
            progress: None,
            tasks_per_worker: DEFAULT_TASKS_PER_WORKER,
            stats: None,
            stop: Stop::default(),
        }
    }

    /// Ends the job with [`Error::DeadlineExceeded`] if it has not finished
    /// by `deadline`. On a [`Pool`](crate::Pool) the workers running its
    /// tasks are killed at once (and replaced before the next job); the
    /// in-process engines start no task after it, and let a task running
    /// finish (a thread cannot be stopped); on the MPI engine (feature
    /// `mpi`), rank 0 ends the job as the pool does, and a rank running a
    /// task finishes it (MPI cannot kill a rank and go on).
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.stop.deadline = Some(deadline);
        self
    }

    /// Ends the job with [`Error::Cancelled`] once `token` is cancelled,
    /// from any thread; what happens to tasks in flight is as for
    /// [`deadline`](Run::deadline).
    pub fn cancel_token(mut self, token: &'a CancelToken) -> Self {
        self.stop.cancel = Some(token);
        self
    }

    /// The shared output region the tasks write their tiles into.
    pub fn output(mut self, output: &'a mut SharedOutput) -> Self {
        self.output = Some(output);
        self
    }

    /// Called after each task with the number of tasks done and in all.
    pub fn progress(mut self, report: &'a (dyn Fn(Progress) + Sync)) -> Self {
        self.progress = Some(report);
        self
    }

    /// How many tasks per worker to ask [`Job::split`] for (at least 1; default
    /// [`DEFAULT_TASKS_PER_WORKER`]).
    pub fn tasks_per_worker(mut self, count: usize) -> Self {
        self.tasks_per_worker = count.max(1);
        self
    }

    /// Fills `stats` with where the run's time and bytes went.
    pub fn stats(mut self, stats: &'a mut JobStats) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Runs the job on `engine`.
    pub fn on<E: Engine + ?Sized>(self, engine: &E) -> Result<J::Partial> {
        engine.execute(self)
    }

    /// Splits the job and checks the output ranges of its tasks.
    pub(crate) fn plan(&self, workers: usize) -> Result<Plan<J>> {
        let started = Instant::now();
        let hint = workers.saturating_mul(self.tasks_per_worker);
        let tasks = self.job.split(self.input, hint).map_err(|err| Error::Split {
            job: J::NAME,
            message: crate::job::error_chain(&*err),
        })?;
        let ranges: Vec<Range<usize>> = tasks.iter().map(|t| self.job.output_range(t)).collect();
        let len = self.output.as_ref().map_or(0, |o| o.len());
        for (task, range) in ranges.iter().enumerate() {
            if range.is_empty() {
                continue;
            }
            if self.output.is_none() {
                return Err(Error::MissingOutput { job: J::NAME, task });
            }
            if range.end > len || range.start > range.end {
                return Err(Error::OutputOutOfBounds {
                    job: J::NAME,
                    task,
                    range: range.clone(),
                    len,
                });
            }
        }
        let mut order: Vec<usize> = (0..tasks.len()).filter(|&t| !ranges[t].is_empty()).collect();
        order.sort_by_key(|&t| ranges[t].start);
        for pair in order.windows(2) {
            if ranges[pair[0]].end > ranges[pair[1]].start {
                return Err(Error::OverlappingOutput {
                    job: J::NAME,
                    first: pair[0].min(pair[1]),
                    second: pair[0].max(pair[1]),
                });
            }
        }
        Ok(Plan {
            tasks,
            ranges,
            split: started.elapsed(),
        })
    }
}

pub(crate) fn report(progress: Option<&(dyn Fn(Progress) + Sync)>, done: usize, total: usize) {
    if let Some(report) = progress {
        report(Progress { done, total });
    }
}

/// A job split into tasks whose output ranges were checked.
pub(crate) struct Plan<J: Job> {
    pub(crate) tasks: Vec<J::Task>,
    pub(crate) ranges: Vec<Range<usize>>,
    /// Time spent in `Job::split` and the checks.
    pub(crate) split: Duration,
}

/// A job and its tasks encoded for other processes (postcard).
pub(crate) struct Encoded {
    pub(crate) params: Vec<u8>,
    pub(crate) specs: Vec<Vec<u8>>,
}

impl<J: Job> Plan<J> {
    /// Encodes `job` and every task, for engines whose workers are other processes.
    pub(crate) fn encode(&self, job: &J) -> Result<Encoded> {
        let codec = |what| {
            move |source: postcard::Error| Error::Codec {
                job: J::NAME,
                what,
                source: source.into(),
            }
        };
        Ok(Encoded {
            params: postcard::to_allocvec(job).map_err(codec("encode the job"))?,
            specs: self
                .tasks
                .iter()
                .map(postcard::to_allocvec)
                .collect::<Result<Vec<_>, _>>()
                .map_err(codec("encode a task"))?,
        })
    }

    /// Cuts `output` into one tile per task (empty for tasks without output).
    fn tiles<'o>(&self, output: &'o mut [u8]) -> Vec<&'o mut [u8]> {
        let mut order: Vec<usize> = (0..self.tasks.len()).collect();
        order.sort_by_key(|&t| self.ranges[t].start);
        let mut tiles: Vec<&mut [u8]> = (0..self.tasks.len()).map(|_| &mut [][..]).collect();
        let mut rest = output;
        let mut offset = 0;
        for t in order {
            let range = &self.ranges[t];
            if range.is_empty() {
                continue;
            }
            // Ranges are checked disjoint and in bounds by `Run::plan`.
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(range.start - offset);
            let (tile, tail) = tail.split_at_mut(range.len());
            tiles[t] = tile;
            rest = tail;
            offset = range.end;
        }
        tiles
    }
}

/// A task of an in-process engine: its index, the task, and its output tile.
type LocalTask<'p, 'o, J> = (usize, &'p <J as Job>::Task, &'o mut [u8]);

/// Plans `run` for `workers` and hands `execute` every task with its tile.
fn in_process<J: Job>(
    run: Run<'_, J>,
    workers: usize,
    execute: impl FnOnce(&Local<'_, J>, Vec<LocalTask<'_, '_, J>>) -> Result<J::Partial>,
) -> Result<J::Partial> {
    let started = Instant::now();
    let plan = run.plan(workers)?;
    let Run {
        job,
        input,
        output,
        progress,
        stats,
        stop,
        ..
    } = run;
    let mut empty = [];
    let tiles = plan.tiles(output.map_or(&mut empty[..], SharedOutput::bytes_mut));
    let work = plan
        .tasks
        .iter()
        .zip(tiles)
        .enumerate()
        .map(|(i, (task, tile))| (i, task, tile))
        .collect();
    let local = Local {
        job,
        input,
        progress,
        total: plan.tasks.len(),
        done: AtomicUsize::new(0),
        merging: AtomicU64::new(0),
        stop,
    };
    let result = execute(&local, work);
    // A file that shrank mid-job was read as zeros: that, not the result (or
    // an error it caused), is the outcome.
    input.check_files_intact()?;
    if let Some(stats) = stats {
        *stats = JobStats {
            tasks: plan.tasks.len(),
            split: plan.split,
            merge: Duration::from_nanos(local.merging.load(Ordering::Relaxed)),
            total: started.elapsed(),
            ..JobStats::default()
        };
    }
    result
}

/// What in-process engines share while running one job.
struct Local<'a, J: Job> {
    job: &'a J,
    input: &'a Input,
    progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    total: usize,
    done: AtomicUsize,
    /// Nanoseconds spent in `Job::merge`.
    merging: AtomicU64,
    /// Checked before each task: no task starts after a deadline or a cancel.
    stop: Stop<'a>,
}

impl<J: Job> Local<'_, J> {
    fn merge(&self, mut into: J::Partial, other: J::Partial) -> J::Partial {
        let started = Instant::now();
        self.job.merge(&mut into, other);
        self.merging
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        into
    }

    /// Runs one task in this process, turning a panic or error into [`Error`],
    /// and reports progress.
    fn map(&self, task: usize, spec: &J::Task, tile: &mut [u8], partial: &mut J::Partial) -> Result<()> {
        (self.stop).check(J::NAME, self.done.load(Ordering::Relaxed), self.total)?;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            self.job.map_with_output(spec, self.input, tile, partial)
        }));
        let pid = std::process::id();
        match outcome {
            Ok(Ok(())) => {
                report(
                    self.progress,
                    self.done.fetch_add(1, Ordering::Relaxed) + 1,
                    self.total,
                );
                Ok(())
            }
            Ok(Err(err)) => Err(Error::TaskFailed {
                job: J::NAME,
                task: TaskIndex(Some(task)),
                pid,
                message: error_chain(&*err),
            }),
            Err(payload) => Err(Error::TaskPanicked {
                job: J::NAME,
                task: TaskIndex(Some(task)),
                pid,
                message: payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic with a non-string payload".into()),
            }),
        }
    }
}

/// The honest baseline: split, map and merge in the calling thread. No
/// workers, no IPC, one partial.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Engine for Sequential {
    fn execute<J: Job>(&self, run: Run<'_, J>) -> Result<J::Partial> {
        in_process(run, 1, |local, work| {
            let mut partial = local.job.new_partial();
            for (index, task, tile) in work {
                local.map(index, task, tile, &mut partial)?;
            }
            Ok(partial)
        })
    }

    fn workers(&self) -> usize {
        1
    }
}

/// The same job on a pool of threads in this process, sharing the input by
/// reference: what a rayon user would write. No isolation: a crash in one task
/// takes the whole process down.
#[derive(Debug)]
pub struct Threads {
    pool: rayon::ThreadPool,
}

impl Threads {
    /// A pool of `threads` threads (1 to [`crate::MAX_WORKERS`]);
    /// `Threads::new(coop::default_workers()?)` for one per core, or
    /// `COOP_WORKERS`, as a pool has by default.
    pub fn new(threads: usize) -> Result<Self> {
        crate::workers::check_worker_count(threads)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("coop-thread-{i}"))
            .build()
            .map_err(|err| Error::Os {
                context: "starting the thread pool",
                source: std::io::Error::other(err),
            })?;
        Ok(Threads { pool })
    }
}

impl Engine for Threads {
    /// Like the pool's workers: each thread takes the next task when idle and
    /// folds every task it runs into its own partial; the partials of the
    /// threads are merged at the end.
    fn execute<J: Job>(&self, run: Run<'_, J>) -> Result<J::Partial> {
        in_process(run, self.workers(), |local, work| {
            let work: Vec<Mutex<Option<LocalTask<'_, '_, J>>>> =
                work.into_iter().map(|task| Mutex::new(Some(task))).collect();
            let next = AtomicUsize::new(0);
            let failed = AtomicBool::new(false);
            let partials = self.pool.broadcast(|_| -> Result<Option<J::Partial>> {
                let mut partial = None;
                while !failed.load(Ordering::Relaxed) {
                    let Some(slot) = work.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let taken = slot
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .take();
                    let Some((index, task, tile)) = taken else {
                        continue;
                    };
                    let partial = partial.get_or_insert_with(|| local.job.new_partial());
                    if let Err(err) = local.map(index, task, tile, partial) {
                        failed.store(true, Ordering::Relaxed);
                        return Err(err);
                    }
                }
                Ok(partial)
            });
            let mut merged: Option<J::Partial> = None;
            for partial in partials {
                if let Some(partial) = partial? {
                    merged = Some(match merged {
                        Some(into) => local.merge(into, partial),
                        None => partial,
                    });
                }
            }
            Ok(merged.unwrap_or_else(|| local.job.new_partial()))
        })
    }

    fn workers(&self) -> usize {
        self.pool.current_num_threads()
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use serde::{Deserialize, Serialize};

    use super::*;

    /// Writes byte `i` of each task's declared range; tasks and ranges are given.
    #[derive(Serialize, Deserialize)]
    struct Tiles(Vec<Range<usize>>);

    impl Job for Tiles {
        const NAME: &'static str = "tiles";
        type Task = Range<usize>;
        type Partial = usize;

        fn split(&self, _: &Input, _: usize) -> Result<Vec<Range<usize>>, crate::TaskError> {
            Ok(self.0.clone())
        }

        fn output_range(&self, task: &Range<usize>) -> Range<usize> {
            task.clone()
        }

        fn map(
            &self,
            _: &Range<usize>,
            _: &Input,
            _: &mut usize,
        ) -> std::result::Result<(), crate::TaskError> {
            Err("writes its output".into())
        }

        fn map_with_output(
            &self,
            task: &Range<usize>,
            _: &Input,
            out: &mut [u8],
            n: &mut usize,
        ) -> std::result::Result<(), crate::TaskError> {
            assert!(task.start != 999, "task at 999 panics");
            assert_eq!(out.len(), task.len());
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = (task.start + i) as u8;
            }
            *n += 1;
            Ok(())
        }

        fn merge(&self, into: &mut usize, other: usize) {
            *into += other;
        }
    }

    fn run_tiles(ranges: Vec<Range<usize>>, len: Option<usize>) -> Result<(usize, Vec<u8>)> {
        let job = Tiles(ranges);
        let input = Input::new();
        let mut out = len.map(SharedOutput::new);
        let mut run = Run::new(&job, &input);
        if let Some(out) = out.as_mut() {
            run = run.output(out);
        }
        let n = run.on(&Sequential)?;
        Ok((n, out.map(|o| o.bytes().to_vec()).unwrap_or_default()))
    }

    #[test]
    fn tiles_in_any_order_fill_the_output() {
        let (n, bytes) = run_tiles(vec![6..10, 0..3, 3..3, 3..6], Some(10)).unwrap();
        assert_eq!(n, 4);
        assert_eq!(bytes, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn overlapping_tiles_are_refused_before_running() {
        let err = run_tiles(vec![0..4, 8..9, 3..6], Some(10)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OverlappingOutput {
                    first: 0,
                    second: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn out_of_bounds_tile_is_refused() {
        let err = run_tiles(vec![0..4, 8..11], Some(10)).unwrap_err();
        assert!(
            matches!(err, Error::OutputOutOfBounds { task: 1, len: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("8..11"), "{err}");
    }

    #[test]
    fn tile_without_output_is_refused() {
        let err = run_tiles(vec![0..4, 4..4], None).unwrap_err();
        assert!(matches!(err, Error::MissingOutput { task: 0, .. }), "{err}");
    }

    #[test]
    fn threads_fill_the_same_tiles() {
        let job = Tiles((0..50).map(|i| i * 3..i * 3 + 3).collect());
        let input = Input::new();
        let mut out = SharedOutput::new(150);
        let n = Run::new(&job, &input)
            .output(&mut out)
            .on(&Threads::new(3).unwrap())
            .unwrap();
        assert_eq!(n, 50);
        assert_eq!(out.bytes(), &(0..150).map(|i| i as u8).collect::<Vec<u8>>()[..]);
    }

    #[test]
    fn panic_in_process_names_the_task() {
        for threads in [false, true] {
            let job = Tiles(vec![0..1, 999..999, 2..3]);
            let input = Input::new();
            let mut out = SharedOutput::new(10);
            let run = Run::new(&job, &input).output(&mut out);
            let err = if threads {
                run.on(&Threads::new(2).unwrap())
            } else {
                run.on(&Sequential)
            };
            match err.unwrap_err() {
                Error::TaskPanicked {
                    task: TaskIndex(Some(1)),
                    message,
                    ..
                } => {
                    assert!(message.contains("task at 999 panics"), "{message}")
                }
                other => panic!("unexpected: {other}"),
            }
        }
    }
}
