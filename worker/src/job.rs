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

/// A job a worker binary can run, found by its type ([`JobKey`]), never by
/// its display name: two jobs may share a `Job::NAME`.
#[derive(Debug, Clone, Copy)]
pub struct JobEntry {
    /// The job's `Job::NAME`, for people: logs and error messages.
    pub name: &'static str,
    /// `std::any::type_name` of the job type: generic arguments included.
    pub type_name: &'static str,
    /// A hash of the job type's `TypeId`: tells apart two distinct types
    /// whose `type_name`s are equal (two versions of one crate).
    pub type_hash: u64,
    /// Opens an instance of the job.
    pub open: OpenJob,
}

impl JobEntry {
    /// Whether this entry is the job `key` names.
    pub fn is(&self, key: &JobKey) -> bool {
        self.type_hash == key.type_hash && self.type_name == key.type_name
    }

    /// How a coordinator names this job to a worker.
    pub fn key(&self) -> JobKey {
        JobKey {
            type_name: self.type_name.to_string(),
            type_hash: self.type_hash,
        }
    }

    /// "NAME (type name)", as messages name a job.
    pub fn describe(&self) -> String {
        format!("`{}` ({})", self.name, self.type_name)
    }
}

/// The identity of a job type, as a coordinator names it to its workers (the
/// same binary): its type name and a hash of its `TypeId`. Distinct types,
/// two instantiations of one generic job included, never share a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct JobKey {
    /// `std::any::type_name` of the job type.
    pub type_name: String,
    /// A hash of its `TypeId` (stable within one binary, which is all a key needs).
    pub type_hash: u64,
}
