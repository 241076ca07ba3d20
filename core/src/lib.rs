//! placeholder
mod engine;
mod error;
mod input;
mod job;
mod pool;

pub use engine::{DEFAULT_TASKS_PER_WORKER, Engine, Progress, Run, Sequential, Threads};
pub use error::{Error, Result, TaskIndex};
pub use input::{Input, SharedOutput};
pub use job::{Job, TaskError, init, register};
pub use pool::{DEFAULT_RETRIES, MAX_WORKERS, Pool, PoolBuilder};
pub use coop_worker::JobEntry;

/// The names most programs need.
pub mod prelude {
    pub use crate::{Engine, Input, Job, Pool, Progress, Run, SharedOutput, TaskError};
}
