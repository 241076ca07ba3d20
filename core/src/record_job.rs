//! [`RecordJob`]: the short form of the everyday job, "for each record,
//! fold into this partial".

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::input::Input;
use crate::job::{Job, TaskError};
use crate::partial::Combine;
use crate::split::{Records, Span};

/// A job that folds each record of its input (each line, by default) into a
/// partial that [combines](Combine): the whole of a [`Job`] but the fold,
/// which is all it asks for. Every `RecordJob` is a `Job`: register it and
/// run it like any other.
///
/// ```rust,standalone_crate
/// use std::collections::BTreeMap;
/// use coop::prelude::*;
///
/// /// How many lines of a web server's log have each status code.
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct StatusCodes;
///
/// impl RecordJob for StatusCodes {
///     const NAME: &'static str = "status-codes";
///     type Partial = BTreeMap<u16, u64>;
///     fn fold(&self, line: &[u8], counts: &mut BTreeMap<u16, u64>) -> Result<(), TaskError> {
///         // `10.0.0.1 - - [..] "GET / HTTP/1.1" 200 512`: the status is second to last.
///         let status = line.rsplit(|&b| b == b' ').nth(1).and_then(|s| std::str::from_utf8(s).ok());
///         if let Some(status) = status.and_then(|s| s.parse().ok()) {
///             *counts.entry(status).or_default() += 1;
///         }
///         Ok(())
///     }
/// }
///
/// fn main() -> coop::Result<()> {
///     coop::init(&[coop::register::<StatusCodes>()])?;
///     let mut input = Input::new();
///     input.push_bytes(b"a - - [x] \"GET / HTTP/1.1\" 200 5\nb - - [x] \"GET /x HTTP/1.1\" 404 0\n");
///     let counts = Pool::builder().workers(2).build()?.run(&StatusCodes, &input)?;
///     assert_eq!(counts, BTreeMap::from([(200, 1), (404, 1)]));
///     Ok(())
/// }
/// ```
///
/// Tasks are [`Span`]s of about equal length cut at record boundaries
/// ([`Records::split`]): a record never spans two segments, and the last
/// one counts without its terminator.
///
/// The `Job` of a `RecordJob` comes from a blanket implementation: a type
/// cannot implement both traits itself, and a job that needs `Job`'s other
/// hooks (an output, its own `merge_encoded`) implements `Job`, with
/// [`Records::split`] and [`Records::iter`] for its records.
pub trait RecordJob: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The job's name for people ([`Job::NAME`], which it becomes; with both
    /// traits in scope, `<MyJob as Job>::NAME` says which).
    const NAME: &'static str;

    /// What each worker folds its records into.
    type Partial: Serialize + DeserializeOwned + Send + Default + Combine;

    /// What a record is; lines by default.
    fn records(&self) -> Records {
        Records::Lines
    }

    /// Where the records are: `(segment, byte range)`s, every segment whole
    /// by default. A job over files that start with a header (a `.npy`
    /// array's rows) names the ranges after it ([`Records::split_ranges`]).
    fn ranges(&self, input: &Input) -> Vec<(usize, std::ops::Range<usize>)> {
        (0..input.len())
            .map(|segment| (segment, 0..input.bytes(segment).len()))
            .collect()
    }

    /// An empty partial, which may be sized from the job's parameters
    /// ([`Job::new_partial`]; named apart so that a call on a type with both
    /// traits in scope is not ambiguous); `Default`'s by default.
    fn empty_partial(&self) -> Self::Partial {
        Self::Partial::default()
    }

    /// Folds one record into the partial. An error fails the job.
    fn fold(&self, record: &[u8], partial: &mut Self::Partial) -> Result<(), TaskError>;

    /// Folds every record of `records`, a task's bytes (which start and end
    /// at record boundaries), into the partial: [`fold`](Self::fold) for each
    /// record by default. A job that folds a run of records faster than one
    /// at a time overrides it (word count counts a whole span's words into a
    /// [`Tally`](crate::partial::Tally) at once); the two must agree.
    fn fold_all(&self, records: &[u8], partial: &mut Self::Partial) -> Result<(), TaskError> {
        for record in self.records().iter(records) {
            self.fold(record, partial)?;
        }
        Ok(())
    }
}

impl<R: RecordJob> Job for R {
    const NAME: &'static str = R::NAME;
    type Task = Span;
    type Partial = R::Partial;

    fn new_partial(&self) -> R::Partial {
        self.empty_partial()
    }

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Span>, TaskError> {
        Ok(self.records().split_ranges(input, &self.ranges(input), hint)?)
    }

    fn map(&self, span: &Span, input: &Input, partial: &mut R::Partial) -> Result<(), TaskError> {
        self.fold_all(span.bytes(input), partial)
    }

    fn merge(&self, into: &mut R::Partial, other: R::Partial) {
        into.combine(other);
    }

    fn merge_encoded<'de, D: serde::Deserializer<'de>>(
        &self,
        into: &mut R::Partial,
        partial: D,
    ) -> Result<(), D::Error> {
        into.combine_encoded(partial)
    }
}
