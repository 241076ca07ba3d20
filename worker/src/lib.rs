//! The worker side of [coop](https://docs.rs/coop): what runs inside a worker process.
//!
//! Users do not depend on this crate directly: `coop` re-exports what they need
//! and calls [`run_if_worker`] from `coop::init`.
//!
//! - [`protocol`]: the messages coordinator and workers exchange, defined once.
//! - [`Region`]: an input segment (shared memory, a mapped file, or private memory).
//! - [`Pack`]: many small input segments in one shared region.
//! - [`Output`]: where a worker writes output tiles (shared or private).
//! - `Mappings`: the input and output a worker keeps mapped between jobs.
//! - [`JobInstance`], [`JobEntry`]: the type-erased job a worker runs.
//! - [`fault`]: fault injection for tests (feature `fault-injection`).
//! - [`serve()`]: the task loop every worker runs, over a [`Link`] that
//!   carries its messages (ipc-channel in a pool, MPI in `coop`).
//! - [`run_if_worker`]: a pool worker's handshake, parent-death signal,
//!   panic capture, then the task loop.
#![deny(missing_docs)]

pub mod fault;
mod job;
mod link;
mod mappings;
mod output;
mod pack;
mod panic;
mod pool;
pub mod protocol;
mod region;
mod release;
mod serve;
mod sigbus;
#[cfg(test)]
mod testing;

pub use job::{InstanceError, JobEntry, JobInstance, JobKey, OpenJob, error_chain};
pub use link::{Link, PayloadKind};
pub use output::Output;
pub use pack::{PACK_ALIGN, Pack};
pub use panic::{capture_panics, panic_message};
pub use pool::{is_worker, run_if_worker};
pub use region::{Region, describe_input};
pub use release::release_pages;
pub use serve::{ServeError, serve};

/// Re-exported so that `coop` and its workers agree on one version.
pub use ipc_channel;
