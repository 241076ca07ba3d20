//! The type-erased job interface a worker runs. The typed `Job` trait lives in
//! `coop`, which implements [`JobInstance`] for every job and builds the
//! [`JobEntry`] list passed to [`crate::run_if_worker`].

use std::ops::Range;

use crate::output::Output;
use crate::region::Region;

/// A job opened in a worker: runs tasks and folds their results into one partial.
pub trait JobInstance {
    /// Runs one task, given as encoded bytes, folding its result into the
    /// partial; returns the byte range of the output it wrote. An `Err` carries
    /// a message for the user; panics are caught by the caller.
    fn run_task(&mut self, spec: &[u8]) -> Result<Range<usize>, String>;

    /// The job's input segments, for private segments to receive their bytes.
    fn regions_mut(&mut self) -> &mut [Region];

    /// The job's output.
    fn output(&self) -> &Output;

    /// The job's output, writable (fault injection scribbles over tiles).
    fn output_mut(&mut self) -> &mut Output;

    /// Encodes the partial folded so far and resets it to empty.
    fn take_partial(&mut self) -> Result<Vec<u8>, String>;
}

/// Opens a job from its encoded parameters, mapped input and optional output region.
pub type OpenJob =
    fn(params: &[u8], input: Vec<Region>, output: Output) -> Result<Box<dyn JobInstance>, String>;

/// A job a worker binary can run, found by name.
#[derive(Debug, Clone, Copy)]
pub struct JobEntry {
    /// Unique name of the job (its `Job::NAME`).
    pub name: &'static str,
    /// Opens an instance of the job.
    pub open: OpenJob,
}
