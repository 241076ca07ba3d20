//! Choosing the engine at run time: [`EngineKind`] names one (a program's
//! `--engine` option), [`AnyEngine`] holds whichever was started.

use std::fmt;
use std::str::FromStr;

use crate::engine::{Engine, Run, Sequential, Threads};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::pool::{Ipc, Pool};
use crate::workers::default_workers;

/// Which of coop's engines runs the jobs, as a program's user names it:
/// `processes` (the default), `threads`, `sequential` or `mpi`.
/// [`FromStr`] and [`Display`](fmt::Display) use these names, so that a
/// command line or a configuration file can choose the engine;
/// [`AnyEngine::new`] starts it.
///
/// ```
/// use coop::EngineKind;
///
/// let kind: EngineKind = "threads".parse()?;
/// assert_eq!(kind, EngineKind::Threads);
/// assert_eq!(kind.to_string(), "threads");
/// assert!("gpu".parse::<EngineKind>().is_err());
/// # Ok::<(), coop::Error>(())
/// ```
///
/// With clap, a field `engine: EngineKind` is parsed with `FromStr`; for the
/// names in `--help` and in errors, give it
/// `value_parser = PossibleValuesParser::new(EngineKind::ALL.map(EngineKind::name)).map(|name| name.parse::<EngineKind>().unwrap())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EngineKind {
    /// Worker processes: a [`Pool`].
    #[default]
    Processes,
    /// Threads in this process: [`Threads`].
    Threads,
    /// The calling thread, no workers: [`Sequential`].
    Sequential,
    /// The ranks of an MPI job: `coop::Mpi`. Needs coop's cargo
    /// feature `mpi`; without it, starting it fails with
    /// [`Error::MpiNotBuilt`].
    Mpi,
}

impl EngineKind {
    /// Every kind, in the order of their names in help texts.
    pub const ALL: [EngineKind; 4] = [
        EngineKind::Processes,
        EngineKind::Threads,
        EngineKind::Sequential,
        EngineKind::Mpi,
    ];

    /// The kind's name, as [`FromStr`] takes it: `processes`, `threads`,
    /// `sequential` or `mpi`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Processes => "processes",
            EngineKind::Threads => "threads",
            EngineKind::Sequential => "sequential",
            EngineKind::Mpi => "mpi",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = Error;

    /// Parses a kind's [`name`](EngineKind::name), exactly (no other case,
    /// no spaces); anything else is [`Error::UnknownEngine`].
    fn from_str(name: &str) -> Result<Self> {
        EngineKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| Error::UnknownEngine {
                name: name.to_owned(),
            })
    }
}

/// One of coop's engines, chosen at run time: what a program that takes
/// `--engine processes|threads|sequential|mpi` runs its jobs on. It is an
/// [`Engine`] itself: jobs run on it as on the engine it holds.
///
/// ([`Engine`] has generic methods, so there is no `dyn Engine`: this enum
/// is how one variable holds whichever engine was chosen.)
///
/// ```rust,standalone_crate
/// use coop::prelude::*;
/// use coop::{AnyEngine, EngineKind};
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
///     // `program threads`, `program processes`...
///     let kind: EngineKind = std::env::args().nth(1).as_deref().unwrap_or("threads").parse()?;
///     let engine = AnyEngine::builder(kind).workers(2).build()?;
///
///     let numbers: Vec<u64> = (1..=1000).collect();
///     let mut input = Input::new();
///     input.push_slice(&numbers);
///     assert_eq!(engine.run(&Sum, &input)?, 500_500);
///     eprintln!("{} engine, {} workers", engine.name(), engine.workers());
///     Ok(())
/// }
/// ```
///
/// For options the builder does not set (a pool's retries or task timeout),
/// build the engine itself and convert it: `AnyEngine::from(pool)`.
#[derive(Debug)]
#[non_exhaustive]
// A program makes one engine and keeps it: the pool's size in every variant
// costs nothing, where a box would cost a pointer chase per job.
#[allow(clippy::large_enum_variant)]
pub enum AnyEngine {
    /// Worker processes.
    Processes(Pool),
    /// Threads in this process.
    Threads(Threads),
    /// The calling thread.
    Sequential(Sequential),
    /// The ranks of an MPI job (cargo feature `mpi`). Shared, since a process
    /// starts MPI once: a program that keeps a clone decides when the last
    /// one drops, which stops the other ranks and finalizes MPI.
    #[cfg(feature = "mpi")]
    Mpi(std::rc::Rc<crate::Mpi>),
}

impl AnyEngine {
    /// Starts the engine `kind` with default options: as many workers as
    /// [`default_workers`] says (`COOP_WORKERS`, else one per core) for the
    /// processes and threads engines. See [`AnyEngineBuilder::build`].
    pub fn new(kind: EngineKind) -> Result<AnyEngine> {
        AnyEngine::builder(kind).build()
    }

    /// A builder for the engine `kind` with other options.
    pub fn builder(kind: EngineKind) -> AnyEngineBuilder {
        AnyEngineBuilder {
            kind,
            workers: None,
            ipc: Ipc::default(),
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            AnyEngine::Processes(_) => EngineKind::Processes,
            AnyEngine::Threads(_) => EngineKind::Threads,
            AnyEngine::Sequential(_) => EngineKind::Sequential,
            #[cfg(feature = "mpi")]
            AnyEngine::Mpi(_) => EngineKind::Mpi,
        }
    }

    /// The engine's name, as [`EngineKind`] parses it: `processes`,
    /// `threads`, `sequential` or `mpi`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

impl Engine for AnyEngine {
    fn execute<J: Job>(&self, run: Run<'_, J>) -> Result<J::Partial> {
        match self {
            AnyEngine::Processes(pool) => pool.execute(run),
            AnyEngine::Threads(threads) => threads.execute(run),
            AnyEngine::Sequential(sequential) => sequential.execute(run),
            #[cfg(feature = "mpi")]
            AnyEngine::Mpi(mpi) => mpi.execute(run),
        }
    }

    fn workers(&self) -> usize {
        match self {
            AnyEngine::Processes(pool) => pool.workers(),
            AnyEngine::Threads(threads) => threads.workers(),
            AnyEngine::Sequential(sequential) => sequential.workers(),
            #[cfg(feature = "mpi")]
            AnyEngine::Mpi(mpi) => mpi.workers(),
        }
    }
}

impl From<Pool> for AnyEngine {
    fn from(pool: Pool) -> Self {
        AnyEngine::Processes(pool)
    }
}

impl From<Threads> for AnyEngine {
    fn from(threads: Threads) -> Self {
        AnyEngine::Threads(threads)
    }
}

impl From<Sequential> for AnyEngine {
    fn from(sequential: Sequential) -> Self {
        AnyEngine::Sequential(sequential)
    }
}

#[cfg(feature = "mpi")]
impl From<crate::Mpi> for AnyEngine {
    fn from(mpi: crate::Mpi) -> Self {
        AnyEngine::Mpi(std::rc::Rc::new(mpi))
    }
}

#[cfg(feature = "mpi")]
impl From<std::rc::Rc<crate::Mpi>> for AnyEngine {
    fn from(mpi: std::rc::Rc<crate::Mpi>) -> Self {
        AnyEngine::Mpi(mpi)
    }
}

/// Starts an [`AnyEngine`] with options other than the defaults: see
/// [`AnyEngine::builder`]. An option the chosen engine has no use for is
/// ignored, so that one set of options serves every kind.
#[derive(Debug, Clone)]
pub struct AnyEngineBuilder {
    kind: EngineKind,
    workers: Option<usize>,
    ipc: Ipc,
}

impl AnyEngineBuilder {
    /// Number of workers of the processes and threads engines, 1 to
    /// [`MAX_WORKERS`](crate::MAX_WORKERS) (default: [`default_workers`],
    /// which reads `COOP_WORKERS`, else one per core). Ignored by the
    /// sequential engine, which has none, and the MPI engine, whose workers
    /// are the ranks of the MPI job.
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = Some(count);
        self
    }

    /// How the processes engine's workers get their data (default
    /// [`Ipc::SharedMemory`]). Ignored by the other engines.
    pub fn ipc(mut self, ipc: Ipc) -> Self {
        self.ipc = ipc;
        self
    }

    /// Starts the engine.
    ///
    /// Processes: as [`PoolBuilder::build`](crate::PoolBuilder::build)
    /// (which needs [`crate::init`] first). Threads: as [`Threads::new`].
    /// Both fail with [`Error::InvalidWorkersVar`] if no worker count was
    /// given and `COOP_WORKERS` is not one. MPI: as
    /// `coop::Mpi::init`, which on ranks other than 0 serves
    /// tasks and exits, never returning, so start it first thing after
    /// `coop::init`; without coop's feature `mpi`, fails with
    /// [`Error::MpiNotBuilt`].
    pub fn build(self) -> Result<AnyEngine> {
        let workers = || match self.workers {
            Some(workers) => Ok(workers),
            None => default_workers(),
        };
        Ok(match self.kind {
            EngineKind::Processes => {
                AnyEngine::Processes(Pool::builder().workers(workers()?).ipc(self.ipc).build()?)
            }
            EngineKind::Threads => AnyEngine::Threads(Threads::new(workers()?)?),
            EngineKind::Sequential => AnyEngine::Sequential(Sequential),
            #[cfg(feature = "mpi")]
            EngineKind::Mpi => AnyEngine::from(crate::Mpi::init()?),
            #[cfg(not(feature = "mpi"))]
            EngineKind::Mpi => return Err(Error::MpiNotBuilt),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_their_names_and_nothing_else() {
        for kind in EngineKind::ALL {
            assert_eq!(kind.to_string().parse::<EngineKind>().unwrap(), kind);
        }
        assert_eq!(EngineKind::default(), EngineKind::Processes);
        for bad in ["", "Threads", " threads", "process", "gpu"] {
            let err = bad.parse::<EngineKind>().unwrap_err();
            assert!(
                matches!(&err, Error::UnknownEngine { name } if name == bad),
                "{err}"
            );
            assert!(
                err.to_string()
                    .ends_with("expected one of processes, threads, sequential, mpi"),
                "{err}"
            );
        }
    }

    #[test]
    fn in_process_engines_start_by_kind() {
        let threads = AnyEngine::builder(EngineKind::Threads)
            .workers(3)
            .ipc(Ipc::Messages)
            .build()
            .unwrap();
        assert_eq!(
            (threads.kind(), threads.name(), threads.workers()),
            (EngineKind::Threads, "threads", 3)
        );
        // The sequential engine ignores a worker count, even one out of range.
        let sequential = AnyEngine::builder(EngineKind::Sequential)
            .workers(0)
            .build()
            .unwrap();
        assert_eq!((sequential.name(), sequential.workers()), ("sequential", 1));
        let err = AnyEngine::builder(EngineKind::Threads)
            .workers(0)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidWorkerCount { requested: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn pool_without_init_is_refused_by_kind_too() {
        // This test binary never calls `coop::init`.
        let err = AnyEngine::builder(EngineKind::Processes)
            .workers(1)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::NotInitialized), "{err}");
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn mpi_without_the_feature_is_refused() {
        let err = AnyEngine::new(EngineKind::Mpi).unwrap_err();
        assert!(matches!(err, Error::MpiNotBuilt), "{err}");
        assert!(err.to_string().contains("feature `mpi`"), "{err}");
    }
}
