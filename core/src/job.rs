//! The job model: [`Job`] (split, map, merge), and how workers find jobs ([`init`], [`register`]).

use std::ops::Range;
use std::sync::Mutex;

pub(crate) use coop_worker::error_chain;
use coop_worker::{InstanceError, JobEntry as Entry, JobInstance, JobKey, Output, Region};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::input::Input;

/// The error a task may return: any error type converts with `?`.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A map-reduce job: how to split the input into tasks, what one task does,
/// and how partial results merge.
///
/// The job value itself is sent to every worker (encoded with postcard), so it
/// holds parameters, never data: data comes through the [`Input`].
///
/// Each worker folds the results of all the tasks it runs into **one**
/// [`Partial`](Job::Partial) (a combiner, as in Phoenix++) and sends it once per
/// job. Because tasks are scheduled dynamically, which tasks meet in which
/// partial varies from run to run: [`merge`](Job::merge) must be associative and
/// commutative for the result not to depend on scheduling or worker count.
///
/// Workers find the job's code by its type: list every job in [`init`] at the
/// top of `main`. Two instantiations of a generic job (`Sum<u32>`,
/// `Sum<u64>`) are two jobs, each registered on its own.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The job's name for people: logs and error messages say it. It need
    /// not be unique (a generic job has one name for all its
    /// instantiations); workers find a job by its type, never by its name,
    /// and errors that must tell jobs apart add the type's name.
    const NAME: &'static str;

    /// One subtask: small (ranges, indices), sent to a worker as a message.
    /// A [`Span`](crate::split::Span) of [`Records::split`](crate::split::Records::split)
    /// is one, and names the bytes it reads.
    type Task: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The per-worker result that tasks fold into; [`new_partial`](Job::new_partial)
    /// makes an empty one (by default, `Default`'s).
    type Partial: Serialize + DeserializeOwned + Send + Default;

    /// An empty partial, which each worker folds its tasks into, and the
    /// result of a job with no task. It sees the job's parameters: a
    /// histogram of `self.bins` bins is sized here. The default is
    /// `Partial::default()`.
    fn new_partial(&self) -> Self::Partial {
        Self::Partial::default()
    }

    /// Cuts the input into tasks. `hint` is how many tasks the engine would like
    /// (a few per worker, so that idle workers can take over from slow ones);
    /// any count, including zero, is fine.
    ///
    /// An input the job cannot take (a segment whose length is not a whole
    /// number of records, say: see [`Input::try_slice`]) is refused with an
    /// error: the job then fails with [`Error::Split`](crate::Error::Split)
    /// before any task runs.
    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Self::Task>, TaskError>;

    /// The byte range of the job's shared output that `task` writes. Ranges of
    /// different tasks must be disjoint (checked before the job starts). The
    /// default is no output.
    fn output_range(&self, task: &Self::Task) -> Range<usize> {
        let _ = task;
        0..0
    }

    /// The input bytes `task` reads, as (segment, byte range) pairs. Used only
    /// by [`Ipc::Messages`](crate::Ipc::Messages), which copies exactly these
    /// bytes to the worker. The default: a [`Span`](crate::split::Span)'s
    /// own range; for any other task, every byte of every segment, which is
    /// correct but costly.
    fn input_ranges(&self, task: &Self::Task, input: &Input) -> Vec<(usize, Range<usize>)> {
        if let Some(span) = (task as &dyn std::any::Any).downcast_ref::<crate::split::Span>() {
            return vec![(span.segment, span.range.clone())];
        }
        (0..input.len())
            .map(|segment| (segment, 0..input.bytes(segment).len()))
            .collect()
    }

    /// Runs one task: reads its part of `input` and folds its result into
    /// `partial`. A job that writes an output implements
    /// [`map_with_output`](Job::map_with_output) instead, which engines call,
    /// and makes this one an error.
    fn map(&self, task: &Self::Task, input: &Input, partial: &mut Self::Partial) -> Result<(), TaskError>;

    /// Runs one task of a job that writes an output: as [`map`](Job::map), and
    /// writes the task's `output` tile (exactly
    /// [`output_range`](Job::output_range)). Engines call this one; the
    /// default ignores the tile, empty for a job without output, and calls
    /// `map`.
    fn map_with_output(
        &self,
        task: &Self::Task,
        input: &Input,
        output: &mut [u8],
        partial: &mut Self::Partial,
    ) -> Result<(), TaskError> {
        let _ = output;
        self.map(task, input, partial)
    }

    /// Folds `other` into `into`. Must be associative and commutative.
    fn merge(&self, into: &mut Self::Partial, other: Self::Partial);

    /// Folds a partial that a worker sent, still encoded, into `into`, the
    /// result so far (the first partial to arrive is decoded into the result
    /// instead).
    ///
    /// The default decodes the partial, then calls [`merge`](Job::merge).
    /// A job with large partials can do better: merge as it decodes, and
    /// never build a value it would only merge and drop (the word count of
    /// the examples adds each shard of a worker's table straight into the
    /// result's).
    ///
    /// On an error, `into` must be unchanged: the partial is thrown away,
    /// its worker replaced and its tasks run again, so anything of it left in
    /// `into` would be counted twice.
    fn merge_encoded<'de, D: Deserializer<'de>>(
        &self,
        into: &mut Self::Partial,
        partial: D,
    ) -> Result<(), D::Error> {
        let partial = Self::Partial::deserialize(partial)?;
        self.merge(into, partial);
        Ok(())
    }
}

/// Folds an encoded partial into the result so far, or makes it the result if
/// it is the first. On an error, `result` is unchanged.
pub(crate) fn absorb_partial<J: Job>(
    job: &J,
    result: &mut Option<J::Partial>,
    bytes: &[u8],
) -> postcard::Result<()> {
    match result {
        Some(result) => job.merge_encoded(result, &mut postcard::Deserializer::from_bytes(bytes)),
        None => {
            *result = Some(postcard::from_bytes(bytes)?);
            Ok(())
        }
    }
}

/// The jobs this program's workers serve: those of the first registration,
/// by [`init`] or (in a test binary) by [`test_workers!`](crate::test_workers)
/// before `main`. Leaked: a program registers once, or once per
/// `test_workers!`, and workers and engines keep the list to the end.
static REGISTERED: Mutex<Option<&'static [Entry]>> = Mutex::new(None);

/// Turns a process that was started as a worker into a worker, and returns at
/// once in any other process. Call it first in `main`, before any thread
/// starts, listing every job a worker may be asked to run.
///
/// In a worker, `init` never returns: it serves its coordinator, then exits.
/// A job missing from the list fails with [`Error::UnknownJob`](crate::Error::UnknownJob).
///
/// Workers serve the list of the first registration: a second `init`, or an
/// `init` in a test binary whose jobs [`test_workers!`](crate::test_workers)
/// registered, returns `Ok` and changes nothing (a job it lists that was not
/// registered then is logged as a warning, and its runs fail with
/// `Error::UnknownJob`).
///
/// # Errors
///
/// [`Error::DuplicateJob`](crate::Error::DuplicateJob) if the list names one
/// job type twice (or two types with one type name, from two versions of a
/// crate). Nothing is registered then, and a pool cannot be built.
///
/// ```no_run
/// # use coop::prelude::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Sum;
/// # impl Job for Sum {
/// #     const NAME: &'static str = "sum"; type Task = (); type Partial = u64;
/// #     fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> { Ok(vec![]) }
/// #     fn map(&self, _: &(), _: &Input, _: &mut u64) -> Result<(), TaskError> { Ok(()) }
/// #     fn merge(&self, a: &mut u64, b: u64) { *a += b }
/// # }
/// fn main() -> coop::Result<()> {
///     coop::init(&[coop::register::<Sum>()])?;
///     // ... the program, which creates a Pool
///     Ok(())
/// }
/// ```
pub fn init(jobs: &[JobEntry]) -> crate::Result<()> {
    let jobs = &entries(jobs);
    // Checked before serving: a worker must never be asked to choose between
    // two entries. A worker of a list that fails this check is never started
    // (its coordinator's own `init` failed), so it has no one to tell.
    if let Err(err) = check_unique(jobs) {
        if coop_worker::is_worker() {
            eprintln!("coop worker {}: {err}", std::process::id());
            std::process::exit(2);
        }
        return Err(err);
    }
    coop_worker::run_if_worker(jobs);
    let mut registered = lock_registered();
    match *registered {
        None => *registered = Some(Vec::leak(jobs.to_vec())),
        Some(first) => {
            // Workers never see this call (they serve from the first), so
            // a job only this list names is one they cannot run.
            for extra in jobs.iter().filter(|job| !first.iter().any(|f| f.is(&job.key()))) {
                tracing::warn!(
                    job = %extra.describe(),
                    "coop::init lists a job the first registration did not; workers cannot run it"
                );
            }
        }
    }
    Ok(())
}

/// Adds `jobs` to the jobs workers serve, without serving: what
/// [`test_workers!`](crate::test_workers) does before `main`, once per use.
/// An entry registered already is skipped; two types with one type name are
/// both kept, for [`check_registered`] to refuse.
pub(crate) fn register_for_tests(jobs: &[JobEntry]) {
    let jobs = &entries(jobs);
    let mut registered = lock_registered();
    *registered = Some(Vec::leak(merged(registered.unwrap_or(&[]), jobs)));
}

/// `known`, then the entries of `more` it lacks.
fn merged(known: &[Entry], more: &[Entry]) -> Vec<Entry> {
    let mut all = known.to_vec();
    for job in more {
        if !all.iter().any(|known| known.is(&job.key())) {
            all.push(*job);
        }
    }
    all
}

fn lock_registered() -> std::sync::MutexGuard<'static, Option<&'static [Entry]>> {
    // Nothing panics while holding the lock; a poisoned one still holds a
    // whole list.
    REGISTERED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`Error::DuplicateJob`](crate::Error::DuplicateJob) for the first two
/// entries with one type name: the same type twice, or two types a worker
/// could not tell apart by name.
pub(crate) fn check_unique(jobs: &[Entry]) -> crate::Result<()> {
    for (i, first) in jobs.iter().enumerate() {
        if let Some(second) = jobs[i + 1..].iter().find(|e| e.type_name == first.type_name) {
            return Err(crate::Error::DuplicateJob {
                first: first.describe(),
                second: second.describe(),
                why: if first.type_hash == second.type_hash {
                    "the same job type twice"
                } else {
                    "two distinct types with one type name (two versions of a crate?)"
                },
            });
        }
    }
    Ok(())
}

/// The jobs registered so far (none before [`init`] or `test_workers!`).
pub(crate) fn registered() -> &'static [Entry] {
    lock_registered().unwrap_or(&[])
}

pub(crate) fn initialized() -> bool {
    lock_registered().is_some()
}

/// Whether a pool can start: jobs were registered, and workers could tell
/// them apart ([`init`] checks its list; `test_workers!` cannot refuse
/// before `main`, so its lists are checked here).
pub(crate) fn check_registered() -> crate::Result<()> {
    if !initialized() {
        return Err(crate::Error::NotInitialized);
    }
    check_unique(registered())
}

/// A job workers can run: what [`register`] makes and [`init`] takes.
/// What is inside (how a worker opens the job) is coop's own business.
#[derive(Debug, Clone, Copy)]
pub struct JobEntry(Entry);

impl JobEntry {
    /// The job's [`Job::NAME`].
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The name of the job's type, by which workers tell jobs apart.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name
    }
}

/// What is inside `jobs`, for the worker side.
fn entries(jobs: &[JobEntry]) -> Vec<Entry> {
    jobs.iter().map(|job| job.0).collect()
}

/// The entry that lets workers run job `J`; pass it to [`init`].
pub fn register<J: Job>() -> JobEntry {
    JobEntry(Entry {
        name: J::NAME,
        type_name: std::any::type_name::<J>(),
        type_hash: type_hash::<J>(),
        open: open::<J>,
    })
}

/// How a coordinator names job `J` to its workers.
pub(crate) fn key<J: Job>() -> JobKey {
    JobKey {
        type_name: std::any::type_name::<J>().to_string(),
        type_hash: type_hash::<J>(),
    }
}

/// A hash of `J`'s `TypeId`: the same in every process of one binary, which
/// is all workers need (they are the coordinator's binary, re-executed).
fn type_hash<J: 'static>() -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    std::any::TypeId::of::<J>().hash(&mut hasher);
    hasher.finish()
}

fn open<J: Job>(
    params: &[u8],
    input: Vec<Region>,
    output: Output,
) -> Result<Box<dyn JobInstance>, InstanceError> {
    let job: J = postcard::from_bytes(params).map_err(InstanceError::DecodeJob)?;
    Ok(Box::new(Instance {
        input: Input::from_regions(input),
        output,
        partial: job.new_partial(),
        job,
    }))
}

/// A job opened in a worker.
struct Instance<J: Job> {
    job: J,
    input: Input,
    output: Output,
    partial: J::Partial,
}

impl<J: Job> JobInstance for Instance<J> {
    fn run_task(&mut self, spec: &[u8]) -> Result<Range<usize>, InstanceError> {
        let task: J::Task = postcard::from_bytes(spec).map_err(InstanceError::DecodeTask)?;
        let range = self.job.output_range(&task);
        if !range.is_empty() && matches!(self.output, Output::None) {
            return Err(InstanceError::NoOutput);
        }
        self.output.prefault(range.clone());
        // SAFETY: the coordinator checked that the output ranges of all the
        // job's tasks are disjoint and in bounds before sending any task, each
        // task runs once at a time, and the coordinator reads a shared output
        // only after the job ended. So no other process or thread touches
        // `range` while this `&mut` lives.
        let output = unsafe { self.output.bytes_mut() };
        let tile = (output.get_mut(range.clone()))
            .ok_or_else(|| InstanceError::OutOfBounds { range: range.clone() })?;
        (self.job)
            .map_with_output(&task, &self.input, tile, &mut self.partial)
            .map_err(InstanceError::Job)?;
        Ok(range)
    }

    fn regions_mut(&mut self) -> &mut [Region] {
        self.input.regions_mut()
    }

    fn output(&self) -> &Output {
        &self.output
    }

    fn output_mut(&mut self) -> &mut Output {
        &mut self.output
    }

    fn take_partial(&mut self) -> Result<Vec<u8>, InstanceError> {
        // A new empty one for the tasks after the flush (a dead worker's).
        let partial = std::mem::replace(&mut self.partial, self.job.new_partial());
        postcard::to_allocvec(&partial).map_err(InstanceError::EncodePartial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Count<T>(std::marker::PhantomData<T>);

    impl<T: Send + Sync + 'static> Job for Count<T> {
        const NAME: &'static str = "count";
        type Task = ();
        type Partial = u64;
        fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> {
            Ok(vec![])
        }
        fn map(&self, _: &(), _: &Input, _: &mut u64) -> Result<(), crate::TaskError> {
            Ok(())
        }
        fn merge(&self, _: &mut u64, _: u64) {}
    }

    #[test]
    fn instantiations_of_a_generic_job_are_distinct_jobs() {
        let (narrow, wide) = (register::<Count<u32>>().0, register::<Count<u64>>().0);
        assert_eq!(narrow.name, wide.name);
        assert_ne!(narrow.key(), wide.key());
        assert!(narrow.is(&key::<Count<u32>>()) && !narrow.is(&key::<Count<u64>>()));
        assert!(check_unique(&[narrow, wide]).is_ok());
    }

    #[test]
    fn a_job_listed_twice_is_refused_naming_both() {
        let entry = register::<Count<u32>>().0;
        let message = check_unique(&[register::<Count<u64>>().0, entry, entry])
            .unwrap_err()
            .to_string();
        assert!(message.contains("the same job type twice"), "{message}");
        assert!(
            message.contains("`count` (coop::job::tests::Count<u32>)"),
            "{message}"
        );
        // Two types a worker could not tell apart by name: refused too.
        let twin = Entry {
            type_hash: entry.type_hash ^ 1,
            ..entry
        };
        let message = check_unique(&[entry, twin]).unwrap_err().to_string();
        assert!(
            message.contains("two distinct types with one type name"),
            "{message}"
        );
    }

    #[test]
    fn lists_of_several_test_workers_add_up() {
        let (narrow, wide) = (register::<Count<u32>>().0, register::<Count<u64>>().0);
        let all = merged(&[narrow], &[wide, narrow]);
        let keys: Vec<_> = all.iter().map(Entry::key).collect();
        assert_eq!(
            keys,
            [narrow.key(), wide.key()],
            "one entry per job, first list first"
        );
        // Two types with one type name are both kept, for the pool to refuse.
        let twin = Entry {
            type_hash: narrow.type_hash ^ 1,
            ..narrow
        };
        let all = merged(&all, &[twin]);
        assert_eq!(all.len(), 3);
        assert!(check_unique(&all).is_err());
    }
}
