//! The Phoenix suite's apps beside word count and matmul, as the study runs
//! them ([`App`]): a job and its generated input, run on an engine or as
//! its kernel on bare threads ([`bare`]), the result encoded to compare
//! with the sequential engine's.

use coop::prelude::*;
use coop::{AnyEngine, JobStats};
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::array::Operand;
use crate::histogram::{Bmp, Histogram, encode_bmp};
use crate::kmeans::{Assign, Points};
use crate::linreg::LinReg;
use crate::pca::{Covariance, Matrix};
use crate::strmatch::StrMatch;
use crate::study::report::Throughput;

/// The apps [`App::generate`] makes, by name.
pub const NAMES: [&str; 5] = ["histogram", "linreg", "kmeans", "pca", "strmatch"];

/// `more`, then the entries of every app's jobs, for `coop::init`.
pub fn register_all(more: impl IntoIterator<Item = coop::JobEntry>) -> Vec<coop::JobEntry> {
    let suite = [
        crate::histogram::register(),
        crate::linreg::register(),
        crate::kmeans::register(),
        crate::strmatch::register(),
    ];
    more.into_iter()
        .chain(suite)
        .chain(crate::pca::register())
        .collect()
}

/// One app of the suite as the study times it.
pub trait App {
    /// Its name in the study's table.
    fn name(&self) -> &'static str;
    /// What its input is, for the study's header.
    fn describe(&self) -> String;
    /// Bytes of input.
    fn bytes(&self) -> u64;
    /// How fast a run of `seconds` went, in the app's own unit.
    fn throughput(&self, seconds: f64) -> Throughput;
    /// Runs its job once on `engine`, or its kernel on `workers` bare
    /// threads if there is none; the result encoded (partial, then output).
    fn run(
        &self,
        engine: Option<&AnyEngine>,
        workers: usize,
        stats: &mut JobStats,
    ) -> anyhow::Result<Vec<u8>>;
}

impl dyn App {
    /// The app `name` (one of [`NAMES`]) over about `bytes` of input made
    /// from `seed`.
    pub fn generate(name: &str, bytes: usize, seed: u64) -> Option<Box<dyn App>> {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut random = |len: usize| (0..len).map(|_| rng.random::<u8>()).collect::<Vec<u8>>();
        Some(match name {
            "histogram" => {
                let side = ((bytes / 3) as f64).sqrt() as usize;
                let pixels = random(3 * side * side);
                let image = encode_bmp(side, side, |x, y| {
                    let at = 3 * (y * side + x);
                    [pixels[at], pixels[at + 1], pixels[at + 2]]
                });
                let input = Input::from_bytes(&image);
                let job = Histogram {
                    images: vec![Bmp::parse(&image).expect("a BMP encode_bmp made")],
                };
                JobApp::boxed(
                    "histogram",
                    format!("a {side} x {side} BMP of random pixels"),
                    job,
                    input,
                    0,
                    Some((side * side, "Mpixel/s")),
                )
            }
            "linreg" => {
                let input = Input::from_bytes(&random(bytes / 2 * 2));
                JobApp::boxed(
                    "linreg",
                    format!("{} random points", bytes / 2),
                    LinReg,
                    input,
                    0,
                    Some((bytes / 2, "Mpoint/s")),
                )
            }
            "kmeans" => {
                let (dims, k) = (8, 16);
                let rows = (bytes / (4 * dims)).max(k);
                let data: Vec<i32> = random(4 * rows * dims)
                    .chunks_exact(4)
                    .map(|c| i32::from(c[0]) << 4 | i32::from(c[1]))
                    .collect();
                let mut input = Input::new();
                input.push_slice(&data);
                let points = Points {
                    offset: 0,
                    rows,
                    dims,
                };
                let means = (0..k * dims).map(|i| f64::from(data[i])).collect();
                let job = Assign { points, means };
                JobApp::boxed(
                    "kmeans",
                    format!("one pass over {rows} points of {dims} i32, k {k}"),
                    job,
                    input,
                    0,
                    Some((rows, "Mpoint/s")),
                )
            }
            "pca" => {
                let cols = 32;
                let rows = (bytes / (8 * cols)).max(2);
                let data: Vec<f64> = random(rows * cols)
                    .into_iter()
                    .map(|b| f64::from(b) / 16.0)
                    .collect();
                let means = (0..cols)
                    .map(|c| (0..rows).map(|r| data[r * cols + c]).sum::<f64>() / rows as f64)
                    .collect();
                let mut input = Input::new();
                input.push_slice(&data);
                let matrix = Matrix {
                    operand: Operand {
                        segment: 0,
                        offset: 0,
                        fortran: false,
                    },
                    rows,
                    cols,
                };
                let job = Covariance { matrix, means };
                let len = job.output_len();
                JobApp::boxed(
                    "pca",
                    format!("the covariance of {rows} x {cols} f64"),
                    job,
                    input,
                    len,
                    Some((rows, "Mrow/s")),
                )
            }
            "strmatch" => {
                let text = crate::corpus::generate(bytes, crate::corpus::DEFAULT_VOCABULARY, seed);
                // Four words the text holds, rare and common, and one it does not.
                let words: Vec<Vec<u8>> = text
                    .split(|&b| b == b' ' || b == b'\n')
                    .filter(|w| w.len() > 3)
                    .step_by(997)
                    .take(4)
                    .map(<[u8]>::to_vec)
                    .collect();
                let patterns = words.into_iter().chain([b"not-a-word".to_vec()]).collect();
                let job = StrMatch::new(patterns).expect("no pattern holds a newline");
                JobApp::boxed(
                    "strmatch",
                    "5 strings in generated text".to_string(),
                    job,
                    Input::from_bytes(&text),
                    0,
                    None,
                )
            }
            _ => return None,
        })
    }
}

/// An app that is one job over one input.
struct JobApp<J> {
    name: &'static str,
    describe: String,
    job: J,
    input: Input,
    output_len: usize,
    /// How many items (pixels, points) a run counts, and the unit of their
    /// throughput (`Mpixel/s`); megabytes of input if none.
    items: Option<(usize, &'static str)>,
}

impl<J: Job> JobApp<J> {
    fn boxed(
        name: &'static str,
        describe: String,
        job: J,
        input: Input,
        output_len: usize,
        items: Option<(usize, &'static str)>,
    ) -> Box<dyn App> {
        Box::new(JobApp {
            name,
            describe,
            job,
            input,
            output_len,
            items,
        })
    }
}

impl<J: Job> App for JobApp<J>
where
    J::Partial: Serialize,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn bytes(&self) -> u64 {
        self.input.total_bytes()
    }

    fn throughput(&self, seconds: f64) -> Throughput {
        let seconds = seconds.max(1e-9);
        match self.items {
            Some((items, unit)) => Throughput::MillionsPerSecond {
                value: items as f64 / 1e6 / seconds,
                unit,
            },
            None => Throughput::MegabytesPerSecond(self.bytes() as f64 / 1e6 / seconds),
        }
    }

    fn run(
        &self,
        engine: Option<&AnyEngine>,
        workers: usize,
        stats: &mut JobStats,
    ) -> anyhow::Result<Vec<u8>> {
        let mut output = SharedOutput::new(self.output_len);
        let partial = match engine {
            Some(engine) => {
                let run = Run::new(&self.job, &self.input).stats(stats);
                if self.output_len > 0 {
                    run.output(&mut output).on(engine)?
                } else {
                    run.on(engine)?
                }
            }
            None => {
                // The tasks the engines run, a run of them a thread.
                let hint = workers * coop::DEFAULT_TASKS_PER_WORKER;
                let tasks = self
                    .job
                    .split(&self.input, hint)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut partials = bare(&self.job, &self.input, &tasks, workers, output.bytes_mut())
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .into_iter();
                let mut all = partials.next().unwrap_or_else(|| self.job.new_partial());
                partials.for_each(|partial| self.job.merge(&mut all, partial));
                all
            }
        };
        let mut encoded = postcard::to_allocvec(&partial)?;
        encoded.extend_from_slice(output.bytes());
        Ok(encoded)
    }
}

/// Calls the job's own `map` from `threads` plain threads, all at once,
/// each on its share of `tasks` (a run of them in order; tasks whose output
/// ranges, if any, are disjoint and in order) into a partial of its own: the
/// kernel with no engine (no pool, no task queue, no messages, no merge),
/// the most any engine can make of these cores. Returns the partials,
/// unmerged.
pub fn bare<J: Job>(
    job: &J,
    input: &Input,
    tasks: &[J::Task],
    threads: usize,
    mut output: &mut [u8],
) -> Result<Vec<J::Partial>, TaskError> {
    let mut tiles = Vec::with_capacity(tasks.len());
    let mut offset = 0;
    for task in tasks {
        let range = job.output_range(task);
        let (_, rest) = std::mem::take(&mut output).split_at_mut(range.start - offset);
        let (tile, rest) = rest.split_at_mut(range.len());
        tiles.push(tile);
        (output, offset) = (rest, range.end);
    }
    let threads = threads.clamp(1, tasks.len().max(1));
    let mut work: Vec<Vec<(&J::Task, &mut [u8])>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, pair) in tasks.iter().zip(tiles).enumerate() {
        work[k * threads / tasks.len()].push(pair);
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = (work.into_iter())
            .map(|share| {
                scope.spawn(move || {
                    let mut partial = job.new_partial();
                    for (task, tile) in share {
                        job.map_with_output(task, input, tile, &mut partial)?;
                    }
                    Ok(partial)
                })
            })
            .collect();
        (running.into_iter())
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_app_gives_the_same_result_on_bare_threads_and_sequentially() {
        for name in NAMES {
            let app = <dyn App>::generate(name, 200_000, 3).expect("a known app");
            let engine = AnyEngine::builder(coop::EngineKind::Sequential).build().unwrap();
            let mut stats = JobStats::default();
            let sequential = app.run(Some(&engine), 1, &mut stats).unwrap();
            let bare = app.run(None, 3, &mut stats).unwrap();
            assert_eq!(sequential, bare, "{name}");
            assert!(app.bytes() > 100_000, "{name}: {}", app.bytes());
        }
        assert!(<dyn App>::generate("nope", 1, 1).is_none());
    }
}
