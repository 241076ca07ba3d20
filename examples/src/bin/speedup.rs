//! `speedup`: how coop's engines scale. Times the Phoenix suite (word count
//! over a generated corpus, a random matrix multiply, and the rest on
//! generated inputs, `coop_examples::study::apps`) on the sequential engine,
//! on threads, and on worker processes (shared memory, and messages) at 1 to
//! N workers;
//! prints a table, fits Amdahl's law, breaks the job time into its serial
//! pieces, and writes a CSV file and an SVG chart.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Parser;
use coop::partial::{Tally, WordRule};
use coop::prelude::*;
use coop::{AnyEngine, Ipc, JobStats, Sequential, Threads};
use coop_examples::array::Operand;
use coop_examples::cli::{self, BadInput, Failure};
use coop_examples::corpus::{self, DEFAULT_VOCABULARY};
use coop_examples::matmul::MatMul;
use coop_examples::npy::Dtype;
use coop_examples::study::amdahl;
use coop_examples::study::apps::{self, App, bare};
use coop_examples::study::machine::{self, CpuShare, CpuSnapshot};
use coop_examples::study::memory::{self, PeakPss, PssSampler};
use coop_examples::study::plot::{self, Panel, Series};
use coop_examples::study::progress::RunsBar;
use coop_examples::study::report::{self, Row, StatsSummary, Throughput};
use coop_examples::wordcount::WordCount;
use rand::{RngExt, SeedableRng};

/// Time coop's engines (sequential, threads, processes over shared memory or
/// messages) at 1 to N workers on the Phoenix suite (word count, matrix
/// multiply, histogram, linear regression, k-means, PCA, string match), next
/// to bare threads (the jobs' kernels with no engine: what the cores allow); print a
/// table, an Amdahl's-law fit and where the time goes; write a CSV file and an
/// SVG chart of speedup against workers. Each engine is started once and
/// runs a first job (timed apart) before the timed rounds, as in a program
/// that keeps its pool.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Megabytes (10^6 bytes) of generated text to count words in [default: 300, or 16 with --quick].
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    text_mb: Option<u64>,

    /// Distinct words the generated text draws from (Zipf-distributed). The
    /// default is about what 400 MB of English holds; a smaller one gives
    /// smaller tables, which the caches hold better.
    #[arg(long, value_name = "WORDS", default_value_t = DEFAULT_VOCABULARY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000_000))]
    vocabulary: usize,

    /// Where word count reads the text: copied once into shared memory (as
    /// `wordcount` does with standard input), or from a file written once under
    /// --out, which every run maps afresh (as `wordcount FILE` does).
    #[arg(long, value_enum, default_value_t = TextInput::Memory)]
    text_input: TextInput,

    /// Multiply two random N x N f64 matrices [default: 2048, or 512 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    size: Option<u64>,

    /// Runs per engine and worker count, in rounds of one run each; the table shows their median, min and max [default: 5, or 1 with --quick].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: Option<u32>,

    /// Largest worker count; past the number of cores to see oversubscription [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=coop::MAX_WORKERS as u64))]
    max_workers: Option<u64>,

    /// A small study for CI: 16 MB of text, 512 x 512 matrices, one run each.
    #[arg(long)]
    quick: bool,

    /// Directory for speedup.csv and speedup.svg, created if missing [default: target/speedup].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Seed of the corpus and of the matrices.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,

    /// The apps to time, comma-separated: wordcount, matmul, histogram,
    /// linreg, kmeans, pca, strmatch [default: all].
    #[arg(long, value_name = "APPS", value_delimiter = ',', value_parser = app_names())]
    apps: Vec<String>,

    /// Megabytes of generated input for each of histogram, linreg, kmeans,
    /// pca and strmatch [default: 200, or 4 with --quick].
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    suite_mb: Option<u64>,
}

/// The names `--apps` takes, in the study's order.
fn all_apps() -> Vec<&'static str> {
    ["wordcount", "matmul"].into_iter().chain(apps::NAMES).collect()
}

fn app_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(all_apps())
}

/// Where the word-count text lives during the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TextInput {
    /// In shared memory, filled once: the coordinator has its pages mapped
    /// before any run, worker processes map them in their first job and
    /// keep them mapped.
    Memory,
    /// In a file that every run maps afresh, whatever the engine.
    File,
}

/// How often the memory sampler looks at most.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    coop::init(&apps::register_all([
        coop_examples::wordcount::register(),
        coop_examples::matmul::register(),
    ]))
    .expect("each job is listed once");
    cli::main(run)
}

/// One engine at one worker count, or bare threads.
#[derive(Debug, Clone, Copy)]
enum Config {
    Sequential,
    Threads(usize),
    Processes(usize, Ipc),
    /// No engine: plain threads, each calling the job's `map` on a fixed
    /// share of the input at once (see [`bare`]).
    Bare(usize),
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Sequential => "sequential",
            Config::Threads(_) => "threads",
            Config::Processes(_, Ipc::SharedMemory) => "processes",
            Config::Processes(_, Ipc::Messages) => "processes/messages",
            Config::Bare(_) => "bare threads",
        }
    }

    fn workers(self) -> usize {
        match self {
            Config::Sequential => 1,
            Config::Threads(n) | Config::Processes(n, _) | Config::Bare(n) => n,
        }
    }

    /// The engine (none for bare threads).
    fn start(self) -> coop::Result<Option<AnyEngine>> {
        Ok(Some(match self {
            Config::Sequential => AnyEngine::Sequential(Sequential),
            Config::Threads(n) => AnyEngine::Threads(Threads::new(n)?),
            Config::Processes(n, ipc) => AnyEngine::Processes(Pool::builder().workers(n).ipc(ipc).build()?),
            Config::Bare(_) => return Ok(None),
        }))
    }

    /// Every configuration of a study up to `max` workers, sequential first
    /// (bare threads from 2: one is the sequential engine without its
    /// bookkeeping).
    fn all(max: usize) -> Vec<Config> {
        let mut all = vec![Config::Sequential];
        all.extend((2..=max).map(Config::Bare));
        all.extend((1..=max).map(Config::Threads));
        all.extend((1..=max).map(|n| Config::Processes(n, Ipc::SharedMemory)));
        all.extend((1..=max).map(|n| Config::Processes(n, Ipc::Messages)));
        all
    }
}

/// The coordinator and, for a pool, its workers.
fn pids(engine: Option<&AnyEngine>) -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    if let Some(AnyEngine::Processes(pool)) = engine {
        pids.extend(pool.worker_pids());
    }
    pids
}

/// A job and its input.
enum Workload {
    WordCount {
        job: WordCount,
        text: Text,
    },
    MatMul {
        job: MatMul,
        input: Input,
    },
    /// The rest of the suite.
    App(Box<dyn App>),
}

/// The word-count text.
enum Text {
    Memory(Input),
    /// A file, removed when the study ends.
    File(TempText),
}

impl Text {
    fn bytes(&self) -> u64 {
        match self {
            Text::Memory(input) => input.total_bytes(),
            Text::File(file) => file.bytes,
        }
    }
}

/// The generated text written to a file, removed on drop.
struct TempText {
    path: PathBuf,
    bytes: u64,
}

impl Drop for TempText {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a run gave, to compare with the sequential engine's.
enum Outcome {
    Counts(Tally),
    Product(SharedOutput),
    /// An app's result, encoded.
    Encoded(Vec<u8>),
}

/// One timed run.
struct Measured {
    seconds: f64,
    outcome: Outcome,
    stats: JobStats,
    memory: PeakPss,
    cpu: CpuShare,
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::WordCount { .. } => "word count",
            Workload::MatMul { .. } => "matmul",
            Workload::App(app) => app.name(),
        }
    }

    fn throughput(&self, seconds: f64) -> Throughput {
        let seconds = seconds.max(1e-9);
        match self {
            Workload::WordCount { text, .. } => {
                Throughput::MegabytesPerSecond(text.bytes() as f64 / 1e6 / seconds)
            }
            Workload::MatMul { job, .. } => Throughput::GigaflopsPerSecond(
                2.0 * job.m as f64 * job.k as f64 * job.n as f64 / 1e9 / seconds,
            ),
            Workload::App(app) => app.throughput(seconds),
        }
    }

    /// Runs the job once on `engine`, or on `workers` bare threads if there is
    /// none, timing only the run itself, while the CPU time of `pids` is
    /// counted against everything else's and, if `sample_memory`, a sampler
    /// watches their memory.
    fn run_once(
        &self,
        engine: Option<&AnyEngine>,
        workers: usize,
        pids: &[u32],
        sample_memory: bool,
    ) -> anyhow::Result<Measured> {
        let mut stats = JobStats::default();
        let mut product = match self {
            Workload::WordCount { .. } | Workload::App(_) => None,
            Workload::MatMul { job, .. } => Some(SharedOutput::new(job.output_len())),
        };
        // A file is mapped for this run only: its pages are not mapped here
        // yet, as when `wordcount FILE` starts.
        let mapped;
        let text = match self {
            Workload::WordCount {
                text: Text::File(file),
                ..
            } => {
                let mut input = Input::new();
                input.push_file(&file.path)?;
                mapped = input;
                Some(&mapped)
            }
            Workload::WordCount {
                text: Text::Memory(input),
                ..
            } => Some(input),
            Workload::MatMul { .. } | Workload::App(_) => None,
        };
        let sampler = sample_memory.then(|| PssSampler::start(pids.to_vec(), SAMPLE_INTERVAL));
        let cpu_before = CpuSnapshot::take(pids);
        let started = Instant::now();
        // Word count gives its table, or bare threads' unmerged tables.
        // An app's result, encoded.
        let mut encoded = None;
        let result: anyhow::Result<Vec<Tally>> = match (self, engine) {
            (Workload::App(app), engine) => app.run(engine, workers, &mut stats).map(|bytes| {
                encoded = Some(bytes);
                Vec::new()
            }),
            (Workload::WordCount { job, .. }, Some(engine)) => {
                let input = text.expect("word count has a text");
                Run::new(job, input)
                    .stats(&mut stats)
                    .on(engine)
                    .map(|counts| vec![counts])
                    .map_err(Into::into)
            }
            (Workload::WordCount { job, .. }, None) => {
                let input = text.expect("word count has a text");
                let shares = job.records().split(input, workers)?;
                bare(job, input, &shares, workers, &mut []).map_err(|err| anyhow!("{err}"))
            }
            (Workload::MatMul { job, input }, engine) => {
                let product = product.as_mut().expect("a product is made for matmul");
                match engine {
                    Some(engine) => Run::new(job, input)
                        .output(product)
                        .stats(&mut stats)
                        .on(engine)
                        .map_err(Into::into),
                    None => {
                        let shares: Vec<Range<usize>> = (0..workers)
                            .map(|k| k * job.m / workers..(k + 1) * job.m / workers)
                            .collect();
                        bare(job, input, &shares, workers, product.bytes_mut())
                            .map(drop)
                            .map_err(|err| anyhow!("{err}"))
                    }
                }
                .map(|()| Vec::new())
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let cpu = match (cpu_before, CpuSnapshot::take(pids)) {
            (Some(before), Some(after)) => before.until(&after),
            _ => CpuShare::default(),
        };
        let memory = sampler.map(PssSampler::stop).unwrap_or_default();
        let tables = result?;
        let outcome = match (self, product) {
            (Workload::WordCount { job, .. }, _) => {
                let mut tables = tables.into_iter();
                let mut counts = tables.next().unwrap_or_default();
                for table in tables {
                    job.merge(&mut counts, table);
                }
                Outcome::Counts(counts)
            }
            (Workload::MatMul { .. }, product) => {
                Outcome::Product(product.expect("a product is made for matmul"))
            }
            (Workload::App(_), _) => Outcome::Encoded(encoded.expect("an app's run gives its result")),
        };
        Ok(Measured {
            seconds,
            outcome,
            stats,
            memory,
            cpu,
        })
    }
}

/// Why `got` is not the reference result, if it is not.
fn difference(reference: &Outcome, got: &Outcome) -> Option<String> {
    match (reference, got) {
        (Outcome::Counts(want), Outcome::Counts(got)) => (want != got).then(|| {
            let missing = want.iter().find(|&(word, n)| got.get(word) != n);
            let word = missing.map_or_else(
                || "(a word the sequential engine did not count)".to_string(),
                |(word, n)| format!("{:?}: {n} sequentially, {}", String::from_utf8_lossy(word), got.get(word)),
            );
            format!(
                "word counts differ: {} words / {} distinct sequentially, {} / {} here; first difference {word}",
                want.total(),
                want.len(),
                got.total(),
                got.len()
            )
        }),
        (Outcome::Product(want), Outcome::Product(got)) => {
            let (want, got) = (want.bytes(), got.bytes());
            if want == got {
                return None;
            }
            let at = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
            Some(format!(
                "products differ: first different byte {at} (element {}) of {}",
                at / 8,
                want.len()
            ))
        }
        (Outcome::Encoded(want), Outcome::Encoded(got)) => (want != got).then(|| {
            let at = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
            format!("results differ from byte {at} of {} (encoded)", want.len())
        }),
        _ => Some("different kinds of result".to_string()),
    }
}

/// Everything measured for one workload.
struct Study {
    rows: Vec<Row>,
    samples: u64,
    sampling: Duration,
    /// CPU time during the runs.
    cpu: CpuShare,
    /// Seconds of all runs together.
    run_time: f64,
}

/// What the runs of one configuration gave so far.
#[derive(Default)]
struct Runs {
    times: Vec<f64>,
    starts: Vec<f64>,
    /// The engine's first job, untimed in the rounds.
    first: f64,
    stats: Vec<JobStats>,
    /// From the memory round.
    peak: Option<u64>,
    cpu: CpuShare,
}

/// Runs every configuration `runs` times on `workload`, in rounds: each round
/// runs every configuration once, in order, so that a machine that slows down
/// or speeds up for a while (it is shared) weighs on all of them alike rather
/// than on the ones that happened to run then. Every result is checked
/// against the sequential engine's.
///
/// Each engine is started once, before the rounds, and runs one job first,
/// timed apart: the rounds time jobs on an engine in use, as a program that
/// keeps a pool runs them. A pool's first job pays for what its workers then
/// keep: mapping the input, growing their heaps and the region partials
/// travel in; so does a thread pool's, less.
///
/// Memory is sampled in one more round, whose runs are not timed, each on an
/// engine started for it (so that no other engine's workers hold memory
/// while it is measured): reading `smaps_rollup` takes CPU time and the
/// measured processes' memory-map locks, which a run that keeps every core
/// busy pays for and a sequential run, with cores to spare, does not (1.6 and
/// 6 % of a 2-thread word count here, medians of two series of paired runs).
fn measure(workload: &Workload, configs: &[Config], runs: u32, bar: &RunsBar) -> Result<Study, Failure> {
    let name = workload.name();
    let mut reference: Option<Outcome> = None;
    let mut check = |outcome: Outcome, context: &dyn Fn() -> String| -> Result<(), Failure> {
        match &reference {
            None => reference = Some(outcome),
            Some(want) => {
                if let Some(why) = difference(want, &outcome) {
                    return Err(
                        anyhow!("{}: the result is not the sequential engine's: {why}", context()).into(),
                    );
                }
            }
        }
        Ok(())
    };
    let mut study = Study {
        rows: Vec::new(),
        samples: 0,
        sampling: Duration::ZERO,
        cpu: CpuShare::default(),
        run_time: 0.0,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut measured: Vec<Runs> = configs.iter().map(|_| Runs::default()).collect();
    let start = |config: Config, so_far: &mut Runs, context: &dyn Fn() -> String| {
        let started = Instant::now();
        let engine = config
            .start()
            .with_context(|| format!("{}: starting the engine", context()))?;
        so_far.starts.push(started.elapsed().as_secs_f64());
        let pids = pids(engine.as_ref());
        anyhow::Ok((engine, pids))
    };

    let mut engines = Vec::new();
    for (&config, so_far) in configs.iter().zip(&mut measured) {
        let (label, workers) = (config.label(), config.workers());
        let context = || format!("{name}: {label} with {workers} worker(s), first job");
        bar.message(format!("{name}: {label} x{workers}: start, first job"));
        let (engine, pids) = start(config, so_far, &context)?;
        let first = workload
            .run_once(engine.as_ref(), workers, &pids, false)
            .with_context(context)?;
        check(first.outcome, &context)?;
        so_far.first = first.seconds;
        engines.push((engine, pids));
        bar.run_done();
    }
    for run in 1..=runs {
        for ((&config, so_far), (engine, pids)) in configs.iter().zip(&mut measured).zip(&engines) {
            let (label, workers) = (config.label(), config.workers());
            let context = || format!("{name}: {label} with {workers} worker(s), run {run}");
            bar.message(format!("{name}: {label} x{workers}: run {run}/{runs}"));
            let outcome = workload
                .run_once(engine.as_ref(), workers, pids, false)
                .with_context(context)?;
            check(outcome.outcome, &context)?;
            so_far.times.push(outcome.seconds);
            so_far.stats.push(outcome.stats);
            so_far.cpu += outcome.cpu;
            bar.run_done();
        }
    }
    drop(engines);
    for (&config, so_far) in configs.iter().zip(&mut measured) {
        let (label, workers) = (config.label(), config.workers());
        let context = || format!("{name}: {label} with {workers} worker(s), memory round");
        bar.message(format!("{name}: {label} x{workers}: memory"));
        let (engine, pids) = start(config, so_far, &context)?;
        machine::trim_heap();
        let outcome = workload
            .run_once(engine.as_ref(), workers, &pids, true)
            .with_context(context)?;
        drop(engine);
        check(outcome.outcome, &context)?;
        so_far.peak = outcome.memory.peak_bytes;
        study.samples += u64::from(outcome.memory.samples);
        study.sampling += outcome.memory.sampling;
        bar.run_done();
    }
    let sequential = configs
        .iter()
        .position(|c| matches!(c, Config::Sequential))
        .map_or(f64::NAN, |i| report::median(&measured[i].times));
    for (&config, runs) in configs.iter().zip(measured) {
        let median = report::median(&runs.times);
        let run_time: f64 = runs.times.iter().sum();
        study.cpu += runs.cpu;
        study.run_time += run_time;
        study.rows.push(Row {
            workload: name.to_string(),
            engine: config.label().to_string(),
            workers: config.workers(),
            speedup: sequential / median,
            throughput: workload.throughput(median),
            peak_pss: runs.peak,
            start: report::median(&runs.starts),
            first: runs.first,
            stats: StatsSummary::of(&runs.stats),
            // /proc counts CPU time in ticks (10 ms): too coarse for shorter runs.
            others_cpu: (run_time >= 0.5).then(|| runs.cpu.others / (cores * run_time)),
            times: runs.times,
        });
    }
    Ok(study)
}

fn word_count_workload(
    megabytes: u64,
    vocabulary: usize,
    seed: u64,
    where_: TextInput,
    out_dir: &Path,
) -> Result<(Workload, f64), Failure> {
    let bytes = megabytes * 1_000_000;
    // The generated text and its copy in shared memory (or the page cache).
    cli::check_fits_in_memory(2 * u128::from(bytes), &format!("--text-mb {megabytes}"))?;
    let started = Instant::now();
    let generated = corpus::generate(bytes as usize, vocabulary, seed);
    let text = match where_ {
        TextInput::Memory => {
            let mut input = Input::new();
            input.push_bytes(&generated);
            Text::Memory(input)
        }
        TextInput::File => {
            let file = TempText {
                path: out_dir.join(format!("corpus-{}.txt", std::process::id())),
                bytes,
            };
            std::fs::write(&file.path, &generated)
                .with_context(|| format!("writing {}", file.path.display()))?;
            Text::File(file)
        }
    };
    drop(generated);
    let job = WordCount {
        rule: WordRule::Alphanumeric,
    };
    Ok((Workload::WordCount { job, text }, started.elapsed().as_secs_f64()))
}

fn matmul_workload(n: u64, seed: u64) -> Result<(Workload, f64), Failure> {
    // A and B, their copies in shared memory, and C.
    let matrix = u128::from(n) * u128::from(n) * 8;
    cli::check_fits_in_memory(5 * matrix, &format!("--size {n}"))?;
    let n = n as usize;
    let started = Instant::now();
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut input = Input::new();
    for _ in 0..2 {
        let data: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0f64..1.0)).collect();
        input.push_slice(&data);
    }
    let operand = |segment| Operand {
        segment,
        offset: 0,
        fortran: false,
    };
    let job = MatMul {
        dtype: Dtype::F64,
        m: n,
        k: n,
        n,
        a: operand(0),
        b: operand(1),
    };
    Ok((Workload::MatMul { job, input }, started.elapsed().as_secs_f64()))
}

/// The default output directory: `speedup/` in the cargo target directory
/// this program was built in (`target/release/speedup` -> `target/speedup`),
/// else `target/speedup` under the current directory.
fn default_out() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let profile = exe.parent()?;
            let name = profile.file_name()?.to_str()?;
            matches!(name, "release" | "debug").then(|| profile.parent().map(|t| t.join("speedup")))?
        })
        .unwrap_or_else(|| PathBuf::from("target").join("speedup"))
}

fn run(args: Args) -> Result<(), Failure> {
    let wall = Instant::now();
    machine::give_freed_memory_back();
    let text_mb = args.text_mb.unwrap_or(if args.quick { 16 } else { 300 });
    let size = args.size.unwrap_or(if args.quick { 512 } else { 2048 });
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 5 });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_workers = args.max_workers.map_or(cores, |n| n as usize);
    let out_dir = args.out.clone().unwrap_or_else(default_out);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("creating {}", out_dir.display()))
        .bad_input()?;

    let suite_mb = args.suite_mb.unwrap_or(if args.quick { 4 } else { 200 });
    let apps: Vec<&str> = (all_apps().into_iter())
        .filter(|app| args.apps.is_empty() || args.apps.iter().any(|a| a == app))
        .collect();
    cli::check_fits_in_memory(
        3 * u128::from(suite_mb) * 1_000_000,
        &format!("--suite-mb {suite_mb}"),
    )?;
    let configs = Config::all(max_workers);
    // The first jobs, the timed rounds and the memory round, for each workload.
    let bar = RunsBar::new(apps.len() as u64 * configs.len() as u64 * (u64::from(runs) + 2));
    let mut stdout = io::stdout().lock();
    writeln!(
        stdout,
        "speedup: {cores} core(s); workers 1 to {max_workers}; every engine and worker count started once and given a first job, then {runs} timed round(s), each running every engine and worker count once, then one round that samples memory, each run on an engine started for it"
    )?;

    let mut studies = Vec::new();
    // One workload at a time, so that the memory of one is not in the other's figures.
    for app in apps {
        bar.message(match app {
            "wordcount" => format!("generating {text_mb} MB of text"),
            "matmul" => format!("generating two {size} x {size} matrices"),
            app => format!("generating {suite_mb} MB for {app}"),
        });
        let (workload, setup) = match app {
            "wordcount" => {
                word_count_workload(text_mb, args.vocabulary, args.seed, args.text_input, &out_dir)?
            }
            "matmul" => matmul_workload(size, args.seed)?,
            app => {
                let started = Instant::now();
                let app = <dyn App>::generate(app, suite_mb as usize * 1_000_000, args.seed)
                    .expect("an app --apps takes");
                (Workload::App(app), started.elapsed().as_secs_f64())
            }
        };
        bar.suspend(|| match &workload {
            Workload::WordCount { text, .. } => writeln!(
                stdout,
                "word count: {:.1} MB of generated text (vocabulary {}, seed {}, --split words) {} in {setup:.2} s",
                text.bytes() as f64 / 1e6,
                args.vocabulary,
                args.seed,
                match text {
                    Text::Memory(_) => "in shared memory".to_string(),
                    Text::File(file) => format!("in {}, mapped afresh by each run", file.path.display()),
                }
            ),
            Workload::MatMul { .. } => writeln!(
                stdout,
                "matmul: two random {size} x {size} f64 matrices (seed {}) in {setup:.2} s; {:.1} GFLOP per multiply",
                args.seed,
                2.0 * (size as f64).powi(3) / 1e9
            ),
            Workload::App(app) => writeln!(
                stdout,
                "{}: {} ({:.1} MB, seed {}) in {setup:.2} s",
                app.name(),
                app.describe(),
                app.bytes() as f64 / 1e6,
                args.seed
            ),
        })?;
        studies.push((measure(&workload, &configs, runs, &bar)?, workload.name()));
    }
    bar.finish();

    let rows: Vec<Row> = studies.iter().flat_map(|(s, _)| s.rows.iter().cloned()).collect();
    writeln!(stdout)?;
    report::write_table(&mut stdout, &rows)?;
    writeln!(
        stdout,
        "\nspeedup: sequential median / median. efficiency: speedup / workers. peak PSS: the largest sum of the \
         proportional set sizes of the coordinator and its workers during its run of the memory round, which \
         is not timed (shared pages counted once). \
         start s: starting the engine (worker processes or thread pool), not part of any run. \
         first s: the engine's first job, before the timed rounds. \
         bare threads: no engine, but plain threads that each call the job's map on a fixed share of the \
         input, all at once, with no tasks, messages or merge (the tables are merged after the timing): what \
         these cores give the kernel itself, the most any engine can reach. others %: CPU \
         time of other programs on this machine during the runs, as a share of all {cores} core(s) (- when \
         the runs were too short to tell)."
    )?;
    let (samples, sampling) = studies.iter().fold((0, Duration::ZERO), |(n, t), (s, _)| {
        (n + s.samples, t + s.sampling)
    });
    writeln!(
        stdout,
        "memory: {samples} samples of /proc/PID/smaps_rollup in the memory round, at most every {} ms and at \
         least {} times a sample's cost apart; {:.2} ms per sample on average",
        SAMPLE_INTERVAL.as_millis(),
        memory::COST_FACTOR,
        sampling.as_secs_f64() * 1e3 / samples.max(1) as f64
    )?;
    let (mut cpu, mut run_time) = (CpuShare::default(), 0.0);
    for (study, _) in &studies {
        cpu += study.cpu;
        run_time += study.run_time;
    }
    let others = cpu.others / (cores as f64 * run_time).max(1e-9);
    writeln!(
        stdout,
        "cpu: during the {run_time:.1} s of runs, this study used {:.1} core-seconds, other programs {:.1} \
         ({:.0}% of the machine), the hypervisor stole {:.1}",
        cpu.ours,
        cpu.others,
        100.0 * others,
        cpu.steal
    )?;
    if others > 0.05 {
        writeln!(
            stdout,
            "warning: other programs competed for the cores during the runs: the times above are disturbed \
             (see the others % column); run again on a quiet machine"
        )?;
    }

    // Ratios round by round: the runs of a round follow one another, so the
    // machine's drift (it is shared) mostly cancels out of them.
    writeln!(
        stdout,
        "\nRound by round (each ratio between runs of the same round; median, then min-max over {runs} round(s)):"
    )?;
    for (study, name) in &studies {
        write_paired_ratios(&mut stdout, study, name)?;
    }

    // Amdahl's law over the processes engine.
    writeln!(
        stdout,
        "\nAmdahl's law T(N) = T1 * (s + (1 - s) / N), least squares for s over the processes (shared memory) medians:"
    )?;
    let mut fits = Vec::new();
    for (study, name) in &studies {
        let fit = fit_amdahl(&mut stdout, study, name, cores)?;
        fits.push(fit);
    }

    // Where the time goes, at the largest worker count.
    writeln!(
        stdout,
        "\nWhere the time goes at {max_workers} worker(s) (coop::JobStats, medians over {runs} run(s); split, \
         dispatch and merge run in the coordinator, one after the other: the serial part):"
    )?;
    for ((study, _), fit) in studies.iter().zip(&fits) {
        for engine in ["processes", "processes/messages"] {
            let Some(row) = study
                .rows
                .iter()
                .find(|r| r.engine == engine && r.workers == max_workers)
            else {
                continue;
            };
            report::write_breakdown(&mut stdout, &[row])?;
            if let Some(fit) = fit
                && engine == "processes"
                && row.stats.total > 0.0
            {
                let pieces = row.stats.serial() / fit.t1;
                writeln!(
                    stdout,
                    "    serial pieces / T1 = {:.2}% (the fitted s is {:.2}%); with s = the serial pieces, Amdahl \
                     projects {:.2}x on 8 cores, 16: {:.2}x, 64: {:.2}x",
                    100.0 * pieces,
                    100.0 * fit.serial,
                    amdahl::speedup(pieces, 8.0),
                    amdahl::speedup(pieces, 16.0),
                    amdahl::speedup(pieces, 64.0)
                )?;
            }
        }
    }

    // Files.
    let csv_path = out_dir.join("speedup.csv");
    let mut csv =
        BufWriter::new(File::create(&csv_path).with_context(|| format!("creating {}", csv_path.display()))?);
    report::write_csv(&mut csv, &rows)?;
    csv.flush()
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let svg_path = out_dir.join("speedup.svg");
    let panels: Vec<Panel> = studies
        .iter()
        .map(|(study, name)| panel(study, name, max_workers))
        .collect();
    plot::speedup_svg(&svg_path, &panels, max_workers)
        .with_context(|| format!("writing {}", svg_path.display()))?;
    writeln!(
        stdout,
        "\nwrote {}\nwrote {}\ntotal wall time {:.1} s",
        csv_path.display(),
        svg_path.display(),
        wall.elapsed().as_secs_f64()
    )?;
    stdout.flush()?;
    Ok(())
}

/// Fits and prints Amdahl's law for one workload; returns the fit relative to
/// the processes engine at one worker.
/// For each worker count above one: speedup of processes, threads and bare
/// threads over sequential, and the time of processes over threads and over
/// bare threads, round by round.
fn write_paired_ratios(out: &mut impl Write, study: &Study, name: &str) -> io::Result<()> {
    let row = |engine: &str, workers: usize| {
        (study.rows.iter()).find(|r| r.engine == engine && r.workers == workers)
    };
    let Some(sequential) = row("sequential", 1) else {
        return Ok(());
    };
    let show = |s: Option<report::Summary>, unit: &str| {
        s.map_or_else(
            || "-".to_string(),
            |s| format!("{:.2}{unit} ({:.2}-{:.2})", s.median, s.min, s.max),
        )
    };
    for p in (study.rows.iter()).filter(|r| r.engine == "processes" && r.workers > 1) {
        let (threads, bare) = (row("threads", p.workers), row("bare threads", p.workers));
        writeln!(
            out,
            "  {name}, {} workers: speedup over sequential of processes {}, of threads {}, of bare threads {}; \
             processes / threads time {}; processes / bare threads time {}",
            p.workers,
            show(report::paired_ratios(sequential, p), "x"),
            show(threads.and_then(|t| report::paired_ratios(sequential, t)), "x"),
            show(bare.and_then(|b| report::paired_ratios(sequential, b)), "x"),
            show(threads.and_then(|t| report::paired_ratios(p, t)), ""),
            show(bare.and_then(|b| report::paired_ratios(p, b)), ""),
        )?;
    }
    Ok(())
}

fn fit_amdahl(
    out: &mut impl Write,
    study: &Study,
    name: &str,
    cores: usize,
) -> io::Result<Option<amdahl::Fit>> {
    let processes: Vec<(f64, f64)> = study
        .rows
        .iter()
        .filter(|r| r.engine == "processes")
        .map(|r| (r.workers as f64, r.summary().median))
        .collect();
    // Past the core count, more workers only share the same cores: not what
    // the law describes. Use those points only when there are no others.
    let within: Vec<(f64, f64)> = processes
        .iter()
        .copied()
        .filter(|&(n, _)| n <= cores as f64)
        .collect();
    let (points, note) = if within.iter().any(|&(n, _)| n > 1.0) {
        (within, format!("1 to {} workers", cores.min(processes.len())))
    } else {
        (
            processes.clone(),
            "all worker counts, oversubscribed ones included".to_string(),
        )
    };
    let t1 = processes
        .iter()
        .find(|&&(n, _)| n == 1.0)
        .map(|&(_, t)| t)
        .unwrap_or(f64::NAN);
    let sequential = study
        .rows
        .iter()
        .find(|r| r.engine == "sequential")
        .map_or(f64::NAN, |r| r.summary().median);
    let describe = |fit: &amdahl::Fit| {
        let caveat = if fit.serial > 1.0 {
            " (above 1: more workers took longer, which the law does not describe; projected with s = 1)"
        } else if fit.serial < 0.0 {
            " (below 0: better than linear; projected with s = 0)"
        } else {
            ""
        };
        format!(
            "s = {:.4}, rms error of the fit {:.1}%{caveat}; projected speedup on 8 cores {:.2}x, 16: {:.2}x, 64: {:.2}x",
            fit.serial,
            100.0 * fit.rms_relative_error,
            fit.speedup(8.0),
            fit.speedup(16.0),
            fit.speedup(64.0)
        )
    };
    let fit = amdahl::fit(t1, &points);
    match &fit {
        Some(fit) => {
            writeln!(
                out,
                "  {name}: T1 = processes at 1 worker ({t1:.3} s), {note}:\n    {}",
                describe(fit)
            )?;
            if let Some(against) = amdahl::fit(sequential, &points) {
                writeln!(
                    out,
                    "  {name}: T1 = sequential ({sequential:.3} s), so that the cost of processes counts as serial:\n    {}",
                    describe(&against)
                )?;
            }
        }
        None => writeln!(
            out,
            "  {name}: no fit: needs the processes engine at more than one worker (--max-workers)"
        )?,
    }
    Ok(fit)
}

/// The chart panel of one workload: a line per engine.
fn panel(study: &Study, name: &str, max_workers: usize) -> Panel {
    let mut series = vec![Series {
        label: "sequential (baseline)".to_string(),
        points: vec![(1.0, 1.0), (max_workers.max(2) as f64, 1.0)],
        measured: false,
    }];
    for engine in ["bare threads", "threads", "processes", "processes/messages"] {
        series.push(Series {
            label: engine.to_string(),
            points: study
                .rows
                .iter()
                .filter(|r| r.engine == engine)
                .map(|r| (r.workers as f64, r.speedup))
                .collect(),
            measured: true,
        });
    }
    Panel {
        title: format!("{name}: speedup over sequential"),
        series,
    }
}
