//! What the example binaries share: exit codes and one-line errors, engine
//! choice, the progress bar, and logging.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};
use coop::prelude::*;
use coop::{AnyEngine, EngineKind};

/// Exit code for bad input: usage errors, missing or malformed files.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a job that failed while running.
pub const EXIT_FAILED: u8 = 1;

/// An error and the exit code it ends the program with.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: EXIT_FAILED,
            error: error.into(),
        }
    }
}

/// Marks an error as the user's bad input (exit code 2).
pub trait BadInput<T> {
    /// Converts the error into a [`Failure`] with [`EXIT_BAD_INPUT`].
    fn bad_input(self) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> BadInput<T> for Result<T, E> {
    fn bad_input(self) -> Result<T, Failure> {
        self.map_err(|error| Failure {
            code: EXIT_BAD_INPUT,
            error: error.into(),
        })
    }
}

/// Parses the arguments and runs `body`, turning every way out into an exit
/// code and at most one line `error: ...` on stderr: no usage dump, no panic
/// message, no backtrace.
pub fn main<A: Parser>(body: impl FnOnce(A) -> Result<(), Failure>) -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("unknown panic");
        eprintln!("error: internal error: {}", one_line(message));
    }));
    init_logging();
    let (args, matches) = match parse::<A>() {
        Ok(parsed) => parsed,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap's message is its first paragraph; the usage dump follows.
            let text = err.render().to_string();
            let first = text.split("\n\n").next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {} (see --help)", one_line(first));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // `--engine mpi` must start before anything else happens, since every
    // rank of the MPI job runs this same program; after the options are
    // checked, so that every rank refuses them alike.
    let started = EngineArgs::refuse_inapplicable(&matches).and_then(|()| match chosen_engine(&matches) {
        Some(EngineKind::Mpi) => join_mpi(),
        _ => Ok(()),
    });
    let code = match started.and_then(|()| body(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if is_broken_pipe(&failure.error) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", one_line(&describe(&failure.error)));
            ExitCode::from(failure.code)
        }
    };
    // With --engine mpi, the other ranks stop and MPI finalizes here, after
    // the error (if any) is out: a rank stuck in a task of a failed job makes
    // the engine abort the MPI job, which would swallow the message.
    #[cfg(feature = "mpi")]
    MPI.with(|mpi| drop(mpi.borrow_mut().take()));
    code
}

/// Parses the arguments like `A::try_parse`, keeping the matches, which say
/// which options were given on the command line.
fn parse<A: Parser>() -> Result<(A, clap::ArgMatches), clap::Error> {
    let matches = A::command().try_get_matches()?;
    let args = A::from_arg_matches(&matches).map_err(|err| err.format(&mut A::command()))?;
    Ok((args, matches))
}

/// The `--engine` of [`EngineArgs`], if the program takes one.
fn chosen_engine(matches: &clap::ArgMatches) -> Option<EngineKind> {
    matches
        .try_get_one::<EngineKind>("engine")
        .ok()
        .flatten()
        .copied()
}

#[cfg(feature = "mpi")]
thread_local! {
    /// Rank 0's MPI engine, started by [`main`] right after parsing; taken
    /// (shared) by [`EngineArgs::start`] and dropped at the end of [`main`].
    static MPI: std::cell::RefCell<Option<std::rc::Rc<coop::Mpi>>> = const { std::cell::RefCell::new(None) };
}

/// Joins the MPI job, first thing after parsing the arguments: ranks other
/// than 0 serve tasks in there and exit; rank 0 keeps the engine for
/// [`EngineArgs::start`].
#[cfg(feature = "mpi")]
fn join_mpi() -> Result<(), Failure> {
    if MPI.with(|mpi| mpi.borrow().is_none()) {
        let mpi = coop::Mpi::init()?;
        MPI.with(|slot| *slot.borrow_mut() = Some(std::rc::Rc::new(mpi)));
    }
    Ok(())
}

/// Refuses `--engine mpi` in a build without MPI.
#[cfg(not(feature = "mpi"))]
fn join_mpi() -> Result<(), Failure> {
    Err(no_mpi())
}

/// `--engine mpi` in a build without MPI.
#[cfg(not(feature = "mpi"))]
fn no_mpi() -> Failure {
    Failure {
        code: EXIT_BAD_INPUT,
        error: anyhow::anyhow!(
            "--engine mpi needs a build with MPI: rebuild with `cargo build --release -p coop-examples --features mpi` (needs an MPI library such as Open MPI, and libclang)"
        ),
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text
/// the message already carries (coop's errors include their source's text).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// A reader that stopped reading (`| head`) is not an error. serde_json
/// wraps the write's `io::Error` and its `source()` skips it (it returns the
/// io::Error's own source), so the chain never holds the `io::Error`: ask it.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        let kind = match (
            e.downcast_ref::<std::io::Error>(),
            e.downcast_ref::<serde_json::Error>(),
        ) {
            (Some(io), _) => Some(io.kind()),
            (None, Some(json)) => json.io_error_kind(),
            (None, None) => None,
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `RUST_LOG=coop=debug` shows the pool's events on stderr; silent otherwise.
/// Coloured only on a terminal: escape codes would garble a log file or pipe.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init();
    }
}

/// Refuses (as bad input) to allocate `bytes` for `what` when that is more
/// than this machine's memory, instead of being killed halfway through.
pub fn check_fits_in_memory(bytes: u128, what: &str) -> Result<(), Failure> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
        let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    match total {
        Some(total) if bytes > total => Err(anyhow::anyhow!(
            "{what} needs {:.1} GiB, more than this machine's {:.1} GiB of memory",
            bytes as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        ))
        .bad_input(),
        _ => Ok(()),
    }
}

/// `--engine`: coop's [`EngineKind`], by name, with a line of help for each.
fn engine_parser() -> impl TypedValueParser<Value = EngineKind> {
    let help = |kind| match kind {
        EngineKind::Processes => "Worker processes, one per core (coop's pool)",
        EngineKind::Threads => "Threads in this process (rayon)",
        EngineKind::Sequential => "One thread, no workers: the baseline",
        EngineKind::Mpi => {
            "The ranks of an MPI job: start with `mpirun -n N` (rank 0 coordinates, N - 1 ranks run tasks). Needs a build with `--features mpi`"
        }
        _ => "",
    };
    PossibleValuesParser::new(EngineKind::ALL.map(|kind| PossibleValue::new(kind.name()).help(help(kind))))
        .map(|name| {
            name.parse::<EngineKind>()
                .expect("a possible value is a kind's name")
        })
}

/// `--format`: how a program prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    #[default]
    Table,
    /// Tab-separated lines, for `cut`, `sort` and `join`.
    Tsv,
    /// JSON, for programs.
    Json,
}

/// A job's error as the program reports it: input the job refused before any
/// task ran ([`coop::Error::Split`]) is bad input (exit 2); anything else,
/// a failure (exit 1).
pub fn job_failure(error: coop::Error) -> Failure {
    let code = match error {
        coop::Error::Split { .. } => EXIT_BAD_INPUT,
        _ => EXIT_FAILED,
    };
    Failure {
        code,
        error: error.into(),
    }
}

/// How the processes engine moves data: `--ipc shared-memory|messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum IpcKind {
    /// Workers map the input and write output tiles in place (the default).
    #[default]
    SharedMemory,
    /// Each task's input travels in its messages; tiles come back in messages.
    Messages,
}

impl From<IpcKind> for coop::Ipc {
    fn from(kind: IpcKind) -> Self {
        match kind {
            IpcKind::SharedMemory => coop::Ipc::SharedMemory,
            IpcKind::Messages => coop::Ipc::Messages,
        }
    }
}

/// The engine options every program takes: `--workers`, `--engine`, `--ipc`.
/// [`main`] refuses one given on the command line that the chosen engine
/// would ignore (`--ipc` with threads, `--workers` with sequential...).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Number of workers (default: COOP_WORKERS if set, else one per core); processes and threads only.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=coop::MAX_WORKERS as u64))]
    pub workers: Option<u64>,

    /// What runs the job.
    #[arg(long, value_parser = engine_parser(), default_value_t = EngineKind::Processes)]
    pub engine: EngineKind,

    /// How the processes engine moves data: workers map the input and write
    /// output in place, or every task's input and output travels in messages
    /// (processes only).
    #[arg(long, value_enum, default_value_t = IpcKind::SharedMemory)]
    pub ipc: IpcKind,
}

impl EngineArgs {
    /// Starts the engine these options describe, with `-w` workers, or as
    /// many as `COOP_WORKERS` says, or one per core. The MPI engine is the
    /// one [`main`] started, or is started here (where ranks other than 0
    /// serve tasks and exit).
    pub fn start(&self) -> Result<AnyEngine, Failure> {
        if self.engine == EngineKind::Mpi {
            return mpi_engine();
        }
        let mut builder = AnyEngine::builder(self.engine).ipc(self.ipc.into());
        if let Some(workers) = self.workers {
            builder = builder.workers(workers as usize);
        }
        builder.build().map_err(|error| match error {
            // A bad setting of the user's, like a bad option.
            coop::Error::InvalidWorkersVar { .. } => Failure {
                code: EXIT_BAD_INPUT,
                error: error.into(),
            },
            error => error.into(),
        })
    }
}

/// The MPI engine [`main`] started (started here if it did not).
#[cfg(feature = "mpi")]
fn mpi_engine() -> Result<AnyEngine, Failure> {
    join_mpi()?;
    let mpi = MPI.with(|mpi| mpi.borrow().clone());
    Ok(AnyEngine::from(mpi.expect("join_mpi keeps the engine")))
}

/// Refuses `--engine mpi` in a build without MPI.
#[cfg(not(feature = "mpi"))]
fn mpi_engine() -> Result<AnyEngine, Failure> {
    Err(no_mpi())
}

/// The [`EngineArgs`] options that an engine would ignore, and why: refused
/// rather than dropped, since the user meant something by them.
const INAPPLICABLE: &[(EngineKind, &str, &str)] = &[
    (
        EngineKind::Threads,
        "ipc",
        "it chooses how worker processes get their data, and threads share this process's memory",
    ),
    (
        EngineKind::Sequential,
        "workers",
        "it runs the job on this thread, with no workers",
    ),
    (
        EngineKind::Sequential,
        "ipc",
        "it runs the job in this process, with no workers",
    ),
    (
        EngineKind::Mpi,
        "workers",
        "the workers are the MPI ranks other than 0 (mpirun -n N gives N - 1)",
    ),
    (
        EngineKind::Mpi,
        "ipc",
        "it chooses how coop's worker processes get their data, not MPI ranks",
    ),
];

impl EngineArgs {
    /// Refuses (as bad input) an engine option given on the command line
    /// that the chosen engine does not use (see [`INAPPLICABLE`]); [`main`]
    /// calls it, from the matches (which say what was given, not defaulted).
    fn refuse_inapplicable(matches: &clap::ArgMatches) -> Result<(), Failure> {
        let Some(engine) = chosen_engine(matches) else {
            return Ok(());
        };
        let given = |id: &str| {
            // `try_contains_id` first: `value_source` panics on an unknown id.
            matches.try_contains_id(id).unwrap_or(false)
                && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        };
        match INAPPLICABLE
            .iter()
            .find(|&&(kind, id, _)| kind == engine && given(id))
        {
            Some((_, id, why)) => Err(anyhow::anyhow!(
                "--{id} does not apply to --engine {engine}: {why}"
            ))
            .bad_input(),
            None => Ok(()),
        }
    }
}

/// A progress bar on stderr that appears only when stderr is a terminal and
/// the job has run for more than a second.
#[derive(Debug)]
pub struct ProgressBar {
    started: Instant,
    enabled: bool,
    bar: OnceLock<indicatif::ProgressBar>,
}

impl Default for ProgressBar {
    fn default() -> Self {
        ProgressBar {
            started: Instant::now(),
            enabled: std::io::stderr().is_terminal(),
            bar: OnceLock::new(),
        }
    }
}

impl ProgressBar {
    /// Records progress; pass `&|p| bar.report(p)` to [`Run::progress`].
    pub fn report(&self, progress: Progress) {
        if !self.enabled || self.started.elapsed() < Duration::from_secs(1) {
            return;
        }
        let bar = self.bar.get_or_init(|| {
            let bar = indicatif::ProgressBar::new(progress.total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} tasks")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        bar.set_position(progress.done as u64);
    }

    /// Removes the bar, if it was shown.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
