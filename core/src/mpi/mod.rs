//! [`Mpi`]: the same jobs on the ranks of an MPI job, across machines
//! (cargo feature `mpi`).
//!
//! Started as `mpirun -n N program ...` (or `srun` under Slurm), every rank
//! runs the program; [`Mpi::init`] is where they part. Rank 0 returns an
//! [`Mpi`] handle, an [`Engine`] like [`crate::Pool`]: it splits each job,
//! hands tasks to ranks 1 to N-1 as they ask for more (dynamic scheduling, so
//! a slow host takes fewer tasks), and merges the partials. Ranks 1 to N-1
//! never return from [`Mpi::init`]: they serve tasks with the jobs listed in
//! [`crate::init`], each folding its tasks into **one** partial sent once per
//! job, and exit when rank 0 drops its handle. The job's code does not change.
//!
//! With `mpirun -n 1` there is no worker rank: rank 0 runs the tasks itself,
//! in its calling thread, as [`crate::Sequential`] does.
//!
//! # Data
//!
//! - An input segment added with [`Input::push_file`](crate::Input::push_file)
//!   is memory-mapped by every rank from the same absolute path: nothing of it
//!   is sent, so the file must be readable at that path on every host (a
//!   shared filesystem). A rank that cannot open it, or sees another length,
//!   fails the job with [`Error::Rank`] naming the rank, host and path.
//! - In-memory segments (bytes, slices, a stream) live in rank 0. The parts a
//!   task reads ([`Job::input_ranges`]) are sent with the task, and only to a
//!   rank that does not hold them yet: each byte reaches a rank at most once
//!   per job (for a matrix product, each rank gets the row blocks of A it
//!   multiplies, and B once).
//! - A [`SharedOutput`](crate::SharedOutput) is private memory on each rank:
//!   each task's tile ([`Job::output_range`]) goes back to rank 0, which writes
//!   it into the output.
//! - Everything that crosses MPI is bytes (postcard, as in the pool), and
//!   transfers larger than 1 GiB are cut into pieces, since MPI counts are `i32`.
//!
//! # Failures
//!
//! - A task that panics or returns an error, or a rank that cannot open the
//!   job, ends the job with [`Error::Rank`]: the job, the task, the rank, its
//!   host and pid, and the message. The other ranks skip the job's remaining
//!   tasks; the handle stays usable (the next job first waits for ranks
//!   still inside a task of the failed one).
//! - MPI cannot recover from a lost rank: when a rank dies (a crash, a signal,
//!   out of memory), the MPI runtime ends the whole MPI job, and `mpirun`
//!   names the rank, host and signal. Tasks are not retried elsewhere.
//! - Nothing hangs: a rank that hits a problem outside a task (a broken
//!   protocol, a panic in coop) prints it with its rank and host and calls
//!   `MPI_Abort`, which ends every rank. Dropping the handle asks every rank to
//!   finish; a rank still inside a task of a failed job after
//!   [`SHUTDOWN_GRACE`] is not waited for: the MPI job is aborted.
//!
//! # Threads
//!
//! MPI is initialized with [`Threading::Funneled`]: only the thread that
//! called [`Mpi::init`] calls MPI. The handle is neither `Send` nor `Sync`, so
//! the compiler keeps it on that thread; jobs may use threads of their own.
//!
//! ```compile_fail,E0277
//! fn send_to_another_thread<T: Send>(_: T) {}
//! send_to_another_thread(coop::Mpi::init().unwrap());
//! ```
//!
//! ```no_run
//! # use coop::prelude::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Sum;
//! # impl Job for Sum {
//! #     const NAME: &'static str = "sum"; type Task = (); type Partial = u64;
//! #     fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> { Ok(vec![]) }
//! #     fn map(&self, _: &(), _: &Input, _: &mut u64) -> Result<(), TaskError> { Ok(()) }
//! #     fn merge(&self, a: &mut u64, b: u64) { *a += b }
//! # }
//! fn main() -> coop::Result<()> {
//!     coop::init(&[coop::register::<Sum>()])?;
//!     let mpi = coop::Mpi::init()?; // ranks 1..N-1 serve here and exit
//!     let mut input = Input::new();
//!     input.push_file("/shared/numbers.bin")?; // mapped by every rank
//!     let total = mpi.run(&Sum, &input)?;
//!     println!("{total}");
//!     Ok(())
//! }
//! ```

mod transport;
mod wire;
mod worker;

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use coop_worker::protocol::{FromWorker, ToWorker};

use crate::engine::{Engine, Run, Sequential};
use crate::error::{Error, MpiError, Result};
use crate::job::{Job, initialized, registered};
use crate::scheduler::{self, Policy};
use transport::{MpiTransport, Rank, State};
use wire::{RankHello, TAG_CONTROL};

#[cfg(doc)]
use crate::Input;

/// How long ranks get to finish and answer when an [`Mpi`] handle is dropped
/// before the MPI job is aborted (only a rank still running a task of a failed
/// job takes that long).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An engine on the ranks of an MPI job: rank 0 coordinates, ranks 1 to N-1
/// run tasks. See the [module documentation](self) for data, failures and
/// threads.
///
/// Create it once per program, first thing after [`crate::init`] (before
/// reading input: the other ranks do not return from [`Mpi::init`]). Dropping
/// it stops the other ranks and finalizes MPI.
pub struct Mpi {
    state: RefCell<State>,
    world: SimpleCommunicator,
    /// Host of each rank, rank 0 first.
    hosts: Vec<String>,
    threading: Threading,
    // MPI calls must stay on the thread that initialized MPI.
    _single_thread: PhantomData<*const ()>,
    // Last: dropped (MPI_Finalize) after everything else.
    _universe: Universe,
}

impl fmt::Debug for Mpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpi")
            .field("ranks", &self.hosts.len())
            .field("hosts", &self.hosts)
            .field("threading", &self.threading)
            .finish()
    }
}

impl Mpi {
    /// Initializes MPI and parts the ranks: on rank 0, returns the engine; on
    /// every other rank, serves rank 0's jobs until it drops the engine, then
    /// exits the process (status 0), never returning.
    ///
    /// Call it once, first thing after [`crate::init`], whose job list the
    /// ranks serve. Fails with [`Error::NotInitialized`] without `coop::init`,
    /// and with [`MpiError::AlreadyInitialized`] ([`Error::Mpi`]) if MPI was already initialized in this process.
    pub fn init() -> Result<Mpi> {
        if !initialized() {
            return Err(Error::NotInitialized);
        }
        let (universe, threading) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or(MpiError::AlreadyInitialized)?;
        let world = universe.world();
        if world.rank() != 0 {
            worker::serve(universe, world, registered());
        }
        let mut ranks = Vec::new();
        for rank in 1..world.size() {
            match wire::receive::<RankHello>(&world, Some(rank), TAG_CONTROL) {
                Ok((_, RankHello { host, pid })) => ranks.push(Rank::new(rank, host, pid)),
                // The other ranks are waiting in the protocol; ending the MPI
                // job is the only way not to leave them hanging.
                Err(problem) => abort(&world, format!("rank {rank} did not start: {problem}")),
            }
        }
        let hosts: Vec<String> = std::iter::once(host_name())
            .chain(ranks.iter().map(|slot| slot.host.clone()))
            .collect();
        tracing::info!(ranks = world.size(), ?hosts, ?threading, "MPI engine started");
        Ok(Mpi {
            state: RefCell::new(State { ranks, next_job: 0 }),
            world,
            hosts,
            threading,
            _single_thread: PhantomData,
            _universe: universe,
        })
    }

    /// The host of each rank (MPI's processor name), rank 0 first.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The number of ranks in the MPI job, rank 0 included.
    pub fn ranks(&self) -> usize {
        self.hosts.len()
    }
}

impl Engine for Mpi {
    /// Runs the job on ranks 1 to N-1, or, with a single rank, in the calling
    /// thread like [`Sequential`].
    fn execute<J: Job>(&self, run: Run<'_, J>) -> Result<J::Partial> {
        let mut state = (self.state.try_borrow_mut()).map_err(|_| MpiError::JobRunning)?;
        if state.ranks.is_empty() {
            return Sequential.execute(run);
        }
        let id = state.next_job;
        state.next_job += 1;
        // MPI cannot lose a rank alone, so nothing is retried; nor can a
        // rank be killed, so there is no task timeout.
        let policy = Policy {
            workers: state.ranks.len(),
            retries: 0,
            task_timeout: None,
        };
        let tile_max = run.output.as_ref().map_or(0, |output| output.len() as u64);
        let mut transport = MpiTransport {
            state: &mut state,
            world: &self.world,
            input: run.input,
            start: None,
            tile_max,
        };
        scheduler::run_job(&mut transport, policy, id, run)
    }

    /// Ranks that run tasks: N-1, or 1 (rank 0 itself) with a single rank.
    fn workers(&self) -> usize {
        (self.ranks() - 1).max(1)
    }
}

impl Drop for Mpi {
    /// Ends any job still out, asks every rank to leave, and waits for their
    /// answers (dropping what they still send) for up to [`SHUTDOWN_GRACE`];
    /// then MPI is finalized. A rank that does not answer in time is still in
    /// a task of a failed job: the MPI job is aborted rather than hang.
    fn drop(&mut self) {
        let world = &self.world;
        let state = self.state.get_mut();
        for rank in &mut state.ranks {
            if let Err(err) = rank.end(world, true) {
                abort(world, format!("ending a job: {err}"));
            }
        }
        for rank in &state.ranks {
            if let Err(problem) = wire::send(world, rank.rank, TAG_CONTROL, &ToWorker::Shutdown) {
                abort(world, problem);
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut left: Vec<i32> = state.ranks.iter().map(|rank| rank.rank).collect();
        while !left.is_empty() {
            match state.receive(world, Some(deadline), u64::MAX) {
                Ok(Some((rank, FromWorker::Bye))) => left.retain(|&r| r != rank),
                Ok(Some(_)) => {}
                Ok(None) => {
                    let busy: Vec<String> = state
                        .ranks
                        .iter()
                        .filter(|rank| left.contains(&rank.rank))
                        .map(|rank| format!("rank {} (host {}, pid {})", rank.rank, rank.host, rank.pid))
                        .collect();
                    eprintln!(
                        "coop: MPI rank 0: {} still running a task of a failed job {SHUTDOWN_GRACE:?} \
                         after shutdown; aborting the MPI job",
                        busy.join(", ")
                    );
                    // Status 1, as for the failed job this follows.
                    world.abort(1);
                }
                Err(problem) => abort(world, problem),
            }
        }
    }
}

/// This rank's host, as MPI names it.
fn host_name() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "(unnamed host)".into())
}

/// Prints `problem` with this rank's name and ends every rank of the MPI job.
fn abort(world: &SimpleCommunicator, problem: impl fmt::Display) -> ! {
    eprintln!(
        "coop: MPI rank {} (host {}, pid {}): {problem}",
        world.rank(),
        host_name(),
        std::process::id()
    );
    world.abort(worker::EXIT_BROKEN)
}
