//! The type-erased job interface a worker runs. The typed `Job` trait lives in
//! `coop`, which implements [`JobInstance`] for every job and builds the
//! [`JobEntry`] list passed to [`crate::run_if_worker`].

use std::error::Error;
use std::ops::Range;

use crate::output::Output;
use crate::region::Region;

/// A job opened in a worker: runs tasks and folds their results into one partial.
pub trait JobInstance {
    /// Runs one task, given as encoded bytes, folding its result into the
    /// partial; returns the byte range of the output it wrote. An `Err`'s
    /// message is for the user; panics are caught by the caller.
    fn run_task(&mut self, spec: &[u8]) -> Result<Range<usize>, InstanceError>;

    /// The job's input segments, for private segments to receive their bytes.
    fn regions_mut(&mut self) -> &mut [Region];

    /// The job's output.
    fn output(&self) -> &Output;

    /// The job's output, writable (fault injection scribbles over tiles).
    fn output_mut(&mut self) -> &mut Output;

    /// Encodes the partial folded so far and resets it to empty.
    fn take_partial(&mut self) -> Result<Vec<u8>, InstanceError>;
}

/// Opens a job from its encoded parameters, mapped input and optional output region.
pub type OpenJob =
    fn(params: &[u8], input: Vec<Region>, output: Output) -> Result<Box<dyn JobInstance>, InstanceError>;

/// Why a [`JobInstance`] could not be opened, run a task or encode its
/// partial. Its message (`Display`) is what crosses to the coordinator; the
/// codec's or the job's error is kept as the
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// The job's parameters do not decode.
    #[error("decoding the job: {0}")]
    DecodeJob(#[source] postcard::Error),
    /// A task does not decode.
    #[error("decoding the task: {0}")]
    DecodeTask(#[source] postcard::Error),
    /// The partial does not encode.
    #[error("encoding the partial: {0}")]
    EncodePartial(#[source] postcard::Error),
    /// A task writes output, but the job was opened without one.
    #[error("the job writes output but was given none")]
    NoOutput,
    /// A task's output range lies outside the output.
    #[error("output range {range:?} is out of bounds")]
    OutOfBounds {
        /// The range the task declared.
        range: Range<usize>,
    },
    /// The job's own code returned an error; shown with its sources,
    /// "outer: inner: innermost", since only the message crosses processes.
    #[error("{}", error_chain(&**.0))]
    Job(#[source] Box<dyn Error + Send + Sync>),
}

/// "outer: inner: innermost": `err` and its sources, in one line.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("task 3 could not read its range")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_job_error_is_shown_with_its_sources_and_kept_as_source() {
        let err = InstanceError::Job(Box::new(Outer(std::io::Error::other("disk on fire"))));
        assert_eq!(err.to_string(), "task 3 could not read its range: disk on fire");
        let source = err.source().expect("the job's error is the source");
        assert!(source.downcast_ref::<Outer>().is_some(), "{source:?}");
        assert_eq!(
            source.source().map(ToString::to_string).as_deref(),
            Some("disk on fire")
        );
    }

    #[test]
    fn codec_errors_are_kept_as_sources() {
        let codec = postcard::from_bytes::<u64>(&[]).unwrap_err();
        let err = InstanceError::DecodeTask(codec.clone());
        assert_eq!(err.to_string(), format!("decoding the task: {codec}"));
        let source = err.source().expect("the codec's error is the source");
        assert_eq!(source.downcast_ref::<postcard::Error>(), Some(&codec));
    }

    #[test]
    fn out_of_bounds_keeps_its_text() {
        let err = InstanceError::OutOfBounds { range: 4..9 };
        assert_eq!(err.to_string(), "output range 4..9 is out of bounds");
    }
}
