//! Jobs and helpers shared by coop's integration tests. Each test binary calls
//! [`init`] first in `main`, so that it can serve as its own worker program.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use coop::JobEntry;
use coop::prelude::*;
use serde::{Deserialize, Serialize};

pub mod fake_worker;
pub mod leaks;

/// Every job a test binary's workers may run (not [`Unregistered`]).
pub fn jobs() -> Vec<JobEntry> {
    vec![
        coop::register::<Sum>(),
        coop::register::<Squares>(),
        coop::register::<Sleepy>(),
        coop::register::<Misbehave>(),
        coop::register::<HoldInput>(),
        coop::register::<BigPartial>(),
        coop::register::<BigValue>(),
        coop::register::<Total<u32>>(),
        coop::register::<Total<u64>>(),
        coop::register::<ByteCount>(),
        coop::register::<SumFloats>(),
        coop::register::<SumSegments>(),
        coop::register::<Hog>(),
        coop::register::<RecordTally>(),
        coop::register::<ByteHistogram>(),
        coop::register::<LineLengths>(),
        coop::register::<WordTally>(),
        coop::register::<WordsOneByOne>(),
        coop::register::<ColumnSummary>(),
        coop_examples::wordcount::register(),
        coop_examples::matmul::register(),
    ]
}

/// Turns this process into a worker if it was started as one; otherwise
/// returns. First call in every test binary's `main`.
pub fn init() {
    coop::init(&jobs()).expect("each job is listed once");
}

fn ranges(len: usize, pieces: usize) -> Vec<Range<usize>> {
    let pieces = pieces.clamp(1, len.max(1));
    let step = len.div_ceil(pieces).max(1);
    (0..len).step_by(step).map(|s| s..(s + step).min(len)).collect()
}

/// Sums the `u64`s of input segment 0.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sum;

impl Job for Sum {
    const NAME: &'static str = "test-sum";
    type Task = Range<usize>;
    type Partial = u64;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        Ok(ranges(input.slice::<u64>(0).len(), hint))
    }

    fn map(&self, task: &Range<usize>, input: &Input, sum: &mut u64) -> Result<(), TaskError> {
        *sum += input.slice::<u64>(0)[task.clone()].iter().sum::<u64>();
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// Writes `x * x` for every `x` of input segment 0 (`u64`) into the output, at
/// the same index; the partial counts the values written.
#[derive(Debug, Serialize, Deserialize)]
pub struct Squares;

impl Job for Squares {
    const NAME: &'static str = "test-squares";
    type Task = Range<usize>;
    type Partial = u64;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        Ok(ranges(input.slice::<u64>(0).len(), hint))
    }

    fn output_range(&self, task: &Range<usize>) -> Range<usize> {
        task.start * 8..task.end * 8
    }

    fn map(&self, _: &Range<usize>, _: &Input, _: &mut u64) -> Result<(), TaskError> {
        Err("squares are written to the output".into())
    }

    fn map_with_output(
        &self,
        task: &Range<usize>,
        input: &Input,
        out: &mut [u8],
        n: &mut u64,
    ) -> Result<(), TaskError> {
        let out: &mut [u64] = bytemuck::cast_slice_mut(out);
        for (o, x) in out.iter_mut().zip(&input.slice::<u64>(0)[task.clone()]) {
            *o = x * x;
            *n += 1;
        }
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// `tasks` tasks that each sleep `millis`; the partial lists the tasks run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sleepy {
    /// Number of tasks.
    pub tasks: usize,
    /// Sleep per task.
    pub millis: u64,
}

impl Job for Sleepy {
    const NAME: &'static str = "test-sleepy";
    type Task = usize;
    type Partial = Vec<usize>;

    fn split(&self, _: &Input, _: usize) -> Result<Vec<usize>, TaskError> {
        Ok((0..self.tasks).collect())
    }

    fn map(&self, task: &usize, _: &Input, done: &mut Vec<usize>) -> Result<(), TaskError> {
        std::thread::sleep(Duration::from_millis(self.millis));
        done.push(*task);
        Ok(())
    }

    fn merge(&self, into: &mut Vec<usize>, other: Vec<usize>) {
        into.extend(other);
        into.sort_unstable();
    }
}

/// How a [`Misbehave`] task misbehaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Fault {
    /// `panic!` with a message.
    Panic,
    /// Return an error.
    Error,
    /// `SIGKILL` itself.
    Kill,
    /// `exit(7)`.
    Exit,
    /// `abort()`.
    Abort,
    /// Sleep forever.
    Hang,
}

/// Sums task indices `0..tasks`, but task `victim` misbehaves with `fault`:
/// every time, or only the first time if `once` names a marker file (created
/// by the first attempt).
#[derive(Debug, Serialize, Deserialize)]
pub struct Misbehave {
    /// Number of tasks.
    pub tasks: usize,
    /// The task that misbehaves.
    pub victim: usize,
    /// How.
    pub fault: Fault,
    /// Misbehave only if this file does not exist yet, and create it.
    pub once: Option<PathBuf>,
}

impl Job for Misbehave {
    const NAME: &'static str = "test-misbehave";
    type Task = usize;
    type Partial = u64;

    fn split(&self, _: &Input, _: usize) -> Result<Vec<usize>, TaskError> {
        Ok((0..self.tasks).collect())
    }

    fn map(&self, task: &usize, _: &Input, sum: &mut u64) -> Result<(), TaskError> {
        if *task == self.victim {
            let strike = match &self.once {
                Some(marker) => std::fs::File::create_new(marker).is_ok(),
                None => true,
            };
            if strike {
                match self.fault {
                    Fault::Panic => panic!("task {task} panics on purpose"),
                    Fault::Error => return Err(format!("task {task} fails on purpose").into()),
                    Fault::Kill => {
                        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                    }
                    Fault::Exit => std::process::exit(7),
                    Fault::Abort => std::process::abort(),
                    Fault::Hang => loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    },
                }
            }
        }
        *sum += *task as u64;
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// Sums input segment 0 read as `[T]`: `Total<u32>` and `Total<u64>` share a
/// `NAME` and read the same bytes differently, so a worker that ran one for
/// the other would give a wrong sum.
#[derive(Debug, Serialize, Deserialize)]
pub struct Total<T>(std::marker::PhantomData<T>);

impl<T> Default for Total<T> {
    fn default() -> Self {
        Total(std::marker::PhantomData)
    }
}

impl<T> Job for Total<T>
where
    T: bytemuck::Pod + Into<u64> + Send + Sync + Serialize + for<'de> Deserialize<'de>,
{
    const NAME: &'static str = "total";
    type Task = Range<usize>;
    type Partial = u64;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        Ok(ranges(input.slice::<T>(0).len(), hint))
    }

    fn map(&self, task: &Range<usize>, input: &Input, sum: &mut u64) -> Result<(), TaskError> {
        *sum += input.slice::<T>(0)[task.clone()]
            .iter()
            .map(|&x| x.into())
            .sum::<u64>();
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// Counts the bytes of input segment 0, under the same `NAME` as [`Total`]:
/// two unrelated job types may share a name.
#[derive(Debug, Serialize, Deserialize)]
pub struct ByteCount;

impl Job for ByteCount {
    const NAME: &'static str = "total";
    type Task = Range<usize>;
    type Partial = u64;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        Ok(ranges(input.bytes(0).len(), hint))
    }

    fn map(&self, task: &Range<usize>, _: &Input, count: &mut u64) -> Result<(), TaskError> {
        *count += task.len() as u64;
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// Sums input segment 0 as `f64`s, refusing a segment that is not a whole
/// number of them.
#[derive(Debug, Serialize, Deserialize)]
pub struct SumFloats;

impl Job for SumFloats {
    const NAME: &'static str = "sum-floats";
    type Task = Range<usize>;
    type Partial = f64;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        Ok(ranges(input.try_slice::<f64>(0)?.len(), hint))
    }

    fn map(&self, task: &Range<usize>, input: &Input, sum: &mut f64) -> Result<(), TaskError> {
        *sum += input.try_slice::<f64>(0)?[task.clone()].iter().sum::<f64>();
        Ok(())
    }

    fn merge(&self, into: &mut f64, other: f64) {
        *into += other;
    }
}

/// Sums the `u64`s of every input segment: a task is a range of segments.
#[derive(Debug, Serialize, Deserialize)]
pub struct SumSegments;

impl Job for SumSegments {
    const NAME: &'static str = "test-sum-segments";
    type Task = Range<usize>;
    type Partial = u64;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        Ok(ranges(input.len(), hint))
    }

    fn input_ranges(&self, segments: &Range<usize>, input: &Input) -> Vec<(usize, Range<usize>)> {
        segments.clone().map(|s| (s, 0..input.bytes(s).len())).collect()
    }

    fn map(&self, segments: &Range<usize>, input: &Input, sum: &mut u64) -> Result<(), TaskError> {
        for segment in segments.clone() {
            *sum += input.try_slice::<u64>(segment)?.iter().sum::<u64>();
        }
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// One task that allocates `bytes` and touches every page: past a worker's
/// memory limit, the allocation fails and the worker aborts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hog {
    /// How much to allocate.
    pub bytes: usize,
}

impl Job for Hog {
    const NAME: &'static str = "test-hog";
    type Task = ();
    type Partial = u64;

    fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> {
        Ok(vec![()])
    }

    fn map(&self, _: &(), _: &Input, sum: &mut u64) -> Result<(), TaskError> {
        // The allocator's last words ("memory allocation of N bytes failed")
        // would land among the test's output: the test expects the death.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stderr(null);
        }
        let hoard = vec![1u8; self.bytes];
        *sum += hoard.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>();
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// A job no test binary registers; one task per worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unregistered;

impl Job for Unregistered {
    const NAME: &'static str = "test-unregistered";
    type Task = ();
    type Partial = ();

    fn split(&self, _: &Input, hint: usize) -> Result<Vec<()>, TaskError> {
        Ok(vec![(); hint])
    }

    fn map(&self, _: &(), _: &Input, _: &mut ()) -> Result<(), TaskError> {
        Ok(())
    }

    fn merge(&self, _: &mut (), _: ()) {}
}

/// One task per worker: reads every page of input segment 0, writes a file
/// `touched-<pid>` into `dir`, then waits (up to a minute) for `dir/release`.
/// Lets a test look at the workers' memory while they all hold the input.
#[derive(Debug, Serialize, Deserialize)]
pub struct HoldInput {
    /// Where the handshake files go.
    pub dir: PathBuf,
    /// Number of tasks (one per worker).
    pub tasks: usize,
}

impl Job for HoldInput {
    const NAME: &'static str = "test-hold-input";
    type Task = ();
    type Partial = u64;

    fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> {
        Ok(vec![(); self.tasks])
    }

    fn map(&self, _: &(), input: &Input, sum: &mut u64) -> Result<(), TaskError> {
        *sum += input
            .bytes(0)
            .iter()
            .step_by(4096)
            .map(|&b| b as u64)
            .sum::<u64>();
        std::fs::write(self.dir.join(format!("touched-{}", std::process::id())), b"")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.dir.join("release").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// One task whose worker's partial is `bytes` bytes long, byte `i` being
/// `(i % 251) as u8`: a result far larger than any message, to see what the
/// pool does with it (see the soak tests).
#[derive(Debug, Serialize, Deserialize)]
pub struct BigPartial {
    /// Length of the partial, in bytes.
    pub bytes: usize,
}

impl BigPartial {
    /// Whether `partial` is exactly what the task makes: the right length and
    /// byte `i` equal to `i % 251`. On a mismatch, says where.
    pub fn check(&self, partial: &[u8]) -> Result<(), String> {
        if partial.len() != self.bytes {
            return Err(format!("{} bytes, expected {}", partial.len(), self.bytes));
        }
        let pattern = Self::pattern();
        match partial
            .chunks(251)
            .position(|chunk| chunk != &pattern[..chunk.len()])
        {
            Some(at) => {
                let i = at * 251;
                Err(format!(
                    "bytes {i}.. are {:?}, expected 0, 1, 2...",
                    &partial[i..(i + 8).min(partial.len())]
                ))
            }
            None => Ok(()),
        }
    }

    fn pattern() -> Vec<u8> {
        (0..251).collect()
    }
}

impl Job for BigPartial {
    const NAME: &'static str = "test-big-partial";
    type Task = ();
    type Partial = Vec<u8>;

    fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> {
        Ok(vec![()])
    }

    fn map(&self, _: &(), _: &Input, partial: &mut Vec<u8>) -> Result<(), TaskError> {
        partial.reserve_exact(self.bytes);
        let pattern = Self::pattern();
        for _ in 0..self.bytes / 251 {
            partial.extend_from_slice(&pattern);
        }
        partial.extend_from_slice(&pattern[..self.bytes % 251]);
        Ok(())
    }

    fn merge(&self, into: &mut Vec<u8>, other: Vec<u8>) {
        into.extend(other);
    }
}

/// A job whose value and tasks are far larger than one socket buffer: each
/// task carries `pad` too, and adds up the bytes of both copies, so a
/// partial is `tasks * 2 * sum(pad)` only if both arrived whole.
#[derive(Debug, Serialize, Deserialize)]
pub struct BigValue {
    /// Bytes carried by the job value and by every task.
    pub pad: Vec<u8>,
    /// Number of tasks.
    pub tasks: usize,
}

impl BigValue {
    /// What a job of `tasks` tasks over `pad` returns.
    pub fn expected(pad: &[u8], tasks: usize) -> u64 {
        2 * tasks as u64 * pad.iter().map(|&b| u64::from(b)).sum::<u64>()
    }
}

impl Job for BigValue {
    const NAME: &'static str = "test-big-value";
    type Task = Vec<u8>;
    type Partial = u64;

    fn split(&self, _: &Input, _: usize) -> Result<Vec<Vec<u8>>, TaskError> {
        Ok(vec![self.pad.clone(); self.tasks])
    }

    fn map(&self, task: &Vec<u8>, _: &Input, sum: &mut u64) -> Result<(), TaskError> {
        *sum += self.pad.iter().chain(task).map(|&b| u64::from(b)).sum::<u64>();
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// Counts each distinct record of the input, records cut by
/// [`coop::split::Records`]: the short form of a job ([`RecordJob`]), whose
/// tasks are spans (no `input_ranges` written here).
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordTally {
    /// What a record is.
    pub records: coop::split::Records,
}

impl RecordJob for RecordTally {
    const NAME: &'static str = "test-record-tally";
    type Partial = std::collections::BTreeMap<Vec<u8>, u64>;

    fn records(&self) -> coop::split::Records {
        self.records
    }

    fn fold(&self, record: &[u8], tally: &mut Self::Partial) -> Result<(), TaskError> {
        *tally.entry(record.to_vec()).or_default() += 1;
        Ok(())
    }
}

/// A histogram of line lengths in `bins` bins (the last one for every longer
/// line), and the longest line: a partial sized from the job's parameters.
#[derive(Debug, Serialize, Deserialize)]
pub struct LineLengths {
    /// Number of bins.
    pub bins: usize,
}

impl RecordJob for LineLengths {
    const NAME: &'static str = "test-line-lengths";
    type Partial = (coop::partial::Dense<u64>, coop::partial::Max<usize>);

    fn empty_partial(&self) -> Self::Partial {
        (
            coop::partial::Dense::new(self.bins),
            coop::partial::Max::default(),
        )
    }

    fn fold(&self, line: &[u8], (bins, longest): &mut Self::Partial) -> Result<(), TaskError> {
        bins.add(line.len().min(self.bins - 1), 1);
        longest.add(line.len());
        Ok(())
    }
}

/// Counts each byte value of the input in a 256-bin histogram: a job of the
/// library's [`coop::partial::Dense`] partial, over plain byte spans.
#[derive(Debug, Serialize, Deserialize)]
pub struct ByteHistogram;

impl Job for ByteHistogram {
    const NAME: &'static str = "test-byte-histogram";
    type Task = coop::split::Span;
    type Partial = coop::partial::Dense<u64>;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<coop::split::Span>, TaskError> {
        Ok(coop::split::Records::Bytes.split(input, hint)?)
    }

    fn map(
        &self,
        span: &coop::split::Span,
        input: &Input,
        bins: &mut Self::Partial,
    ) -> Result<(), TaskError> {
        for &byte in span.bytes(input) {
            bins.add(usize::from(byte), 1);
        }
        Ok(())
    }

    fn merge(&self, into: &mut Self::Partial, other: Self::Partial) {
        coop::partial::Combine::combine(into, other);
    }
}

/// Counts each word (runs between ASCII whitespace) in a keyed partial, the
/// library's reduce-by-key table, with short words held inline.
#[derive(Debug, Serialize, Deserialize)]
pub struct WordTally;

impl RecordJob for WordTally {
    const NAME: &'static str = "test-word-tally";
    type Partial = coop::partial::Keyed<coop::partial::ShortBytes, u64>;

    fn records(&self) -> coop::split::Records {
        coop::split::Records::Whitespace
    }

    fn fold(&self, word: &[u8], tally: &mut Self::Partial) -> Result<(), TaskError> {
        tally.add_ref(word, 1);
        Ok(())
    }
}

/// Counts each word into a [`Tally`](coop::partial::Tally) one record at a
/// time (`Tally::add`), where word count's job counts a whole span at once
/// (`Tally::add_words` in `fold_all`): the two must agree.
#[derive(Debug, Serialize, Deserialize)]
pub struct WordsOneByOne;

impl RecordJob for WordsOneByOne {
    const NAME: &'static str = "test-words-one-by-one";
    type Partial = coop::partial::Tally;

    fn records(&self) -> coop::split::Records {
        coop::split::Records::Whitespace
    }

    fn fold(&self, word: &[u8], tally: &mut coop::partial::Tally) -> Result<(), TaskError> {
        tally.add(word, 1);
        Ok(())
    }
}

/// The [`Summary`](coop::partial::Summary) of a file of little-endian `f64`s.
#[derive(Debug, Serialize, Deserialize)]
pub struct ColumnSummary;

impl RecordJob for ColumnSummary {
    const NAME: &'static str = "test-column-summary";
    type Partial = coop::partial::Summary;

    fn records(&self) -> coop::split::Records {
        coop::split::Records::Fixed(8)
    }

    fn fold(&self, value: &[u8], summary: &mut coop::partial::Summary) -> Result<(), TaskError> {
        summary.add(f64::from_le_bytes(value.try_into()?));
        Ok(())
    }
}
