//! Testing jobs on worker processes from ordinary `#[test]` functions:
//! [`test_workers!`](crate::test_workers).
//!
//! A test binary's `main` is libtest's, which runs every test: a worker that
//! re-executed it as it is would run the whole suite again. So, as procspawn
//! does, the macro registers the jobs before `main` (a constructor) and adds a
//! test, `__coop_worker_entry`, where a worker process serves; the pool
//! starts each worker with the arguments that make libtest run that test
//! alone, quietly.

use std::sync::OnceLock;

use crate::JobEntry;

use crate::job::{check_unique, register_for_tests, registered};

/// The name of the worker entry test that [`test_workers!`](crate::test_workers)
/// adds: what a worker started by a test runs.
const ENTRY: &str = "__coop_worker_entry";

/// The full libtest name of the worker entry, set before `main` by the first
/// `test_workers!` to run: workers of a test binary run it and nothing else.
static TEST_ENTRY: OnceLock<String> = OnceLock::new();

/// The libtest name of the worker entry in module `module` (a
/// `module_path!()`, crate name first, which libtest leaves out).
fn entry_name(module: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{ENTRY}"),
        None => ENTRY.to_string(),
    }
}

/// In a test binary with [`test_workers!`](crate::test_workers): the
/// worker entry's libtest name. `None` in any other program.
pub(crate) fn test_entry() -> Option<&'static str> {
    TEST_ENTRY.get().map(String::as_str)
}

/// The arguments that make libtest run only the worker entry `entry`, and
/// say nothing: exactly that test, on one thread, without capturing its
/// output (a long-lived worker's prints would pile up in libtest's buffer,
/// and panics and errors on stderr must stay visible).
pub(crate) fn worker_args(entry: &str) -> [&str; 5] {
    [entry, "--exact", "--test-threads=1", "--quiet", "--nocapture"]
}

/// Registers `jobs` and records test mode: what the constructor of
/// [`test_workers!`](crate::test_workers) calls before `main`, once per use.
/// Only allocates and takes uncontended locks, which is safe before `main`.
fn register_test_workers(jobs: &[JobEntry], module: &'static str) {
    register_for_tests(jobs);
    let _ = TEST_ENTRY.set(entry_name(module));
}

/// What the worker entry test runs: in a worker, serves the registered jobs
/// and exits; in the coordinator's own test run, returns at once.
fn worker_entry() {
    if !coop_worker::is_worker() {
        return;
    }
    let jobs = registered();
    // `Pool::build` refused the list already, so no coordinator waits for
    // this worker: it only says why it ended.
    if let Err(err) = check_unique(jobs) {
        eprintln!("coop worker {}: {err}", std::process::id());
        std::process::exit(2);
    }
    // libtest's main thread only waits for this test (one thread, one test),
    // so no other thread reads the environment while the worker clears its
    // variables.
    coop_worker::run_if_worker(jobs);
}

/// Registers jobs for the workers of a test binary, so that ordinary
/// `#[test]` functions can run them on a [`Pool`](crate::Pool).
///
/// ```rust
/// use coop::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # use std::ops::Range;
/// # #[derive(Serialize, Deserialize)] struct Sum;
/// # impl Job for Sum {
/// #     const NAME: &'static str = "sum"; type Task = Range<usize>; type Partial = u64;
/// #     fn split(&self, input: &Input, _: usize) -> Result<Vec<Range<usize>>, TaskError> {
/// #         Ok(vec![0..input.slice::<u64>(0).len()])
/// #     }
/// #     fn map(&self, t: &Range<usize>, input: &Input, sum: &mut u64) -> Result<(), TaskError> {
/// #         *sum += input.slice::<u64>(0)[t.clone()].iter().sum::<u64>();
/// #         Ok(())
/// #     }
/// #     fn merge(&self, a: &mut u64, b: u64) { *a += b }
/// # }
/// # #[derive(Serialize, Deserialize)] struct Max;
/// # impl Job for Max {
/// #     const NAME: &'static str = "max"; type Task = (); type Partial = u64;
/// #     fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> { Ok(vec![]) }
/// #     fn map(&self, _: &(), _: &Input, _: &mut u64) -> Result<(), TaskError> { Ok(()) }
/// #     fn merge(&self, a: &mut u64, b: u64) { *a = (*a).max(b) }
/// # }
/// // tests/sum.rs: every job these tests run on a pool.
/// coop::test_workers!(coop::register::<Sum>(), coop::register::<Max>());
///
/// #[test]
/// fn sum_on_two_workers() -> coop::Result<()> {
///     let pool = Pool::builder().workers(2).build()?;
///     let mut input = Input::new();
///     input.push_slice(&(1..=1000u64).collect::<Vec<_>>());
///     assert_eq!(pool.run(&Sum, &input)?, 500_500);
///     Ok(())
/// }
/// # fn main() {}
/// ```
///
/// (A doctest is no test binary: there the macro and the test compile, and
/// neither runs.)
///
/// Put it once in a test binary (an integration test file, or the `tests`
/// module of a library), listing every job its tests run on a pool; no
/// [`init`](crate::init) is needed. It expands, under `#[cfg(test)]`, to:
///
/// - a constructor that registers the jobs before `main`, as
///   [`init`](crate::init) would, without serving;
/// - a test named `__coop_worker_entry`, coop's worker entry rather than a
///   test: in the test run it passes at once, and in a worker it serves and
///   exits.
///
/// Workers are the test binary re-executed with the arguments that make
/// libtest run the worker entry alone (`__coop_worker_entry --exact
/// --test-threads=1 --quiet --nocapture`), so no other test, and no side
/// effect of one, ever runs in a worker. Their stdout is discarded (libtest
/// would print its banner there); their stderr is kept, so write debugging
/// output with `eprintln!`. Tasks run on libtest's test thread, whose stack
/// is 2 MiB unless `RUST_MIN_STACK` says otherwise (a program's main thread
/// has 8 MiB).
///
/// Several uses in one binary (in several modules) add up: workers serve every
/// job listed in any of them, and a job listed twice is registered once. Two
/// distinct types with one type name make [`Pool::build`](crate::PoolBuilder::build)
/// fail with [`Error::DuplicateJob`](crate::Error::DuplicateJob). A
/// [`coop::init`](crate::init) in a test returns `Ok` and registers nothing
/// more: list every job here.
// The example shows a `#[test]` where it goes: in a test binary.
#[allow(clippy::test_attr_in_doctest)]
#[macro_export]
macro_rules! test_workers {
    ($($job:expr),* $(,)?) => {
        #[cfg(test)]
        $crate::__private::ctor::declarative::ctor! {
            // SAFETY: runs before `main`, where only what needs no runtime
            // set-up is sound: this allocates and takes an uncontended
            // `Mutex`, both of which work before `main` on Linux, and starts
            // no thread.
            #[ctor(unsafe, anonymous)]
            fn __coop_test_workers() {
                $crate::__private::register_test_workers(
                    &[$($job),*],
                    ::core::module_path!(),
                );
            }
        }

        /// coop's worker entry, not a test: in a worker process started by a
        /// `coop::Pool` in this test binary, serves the jobs of
        /// `coop::test_workers!` and exits; elsewhere, does nothing.
        #[cfg(test)]
        #[test]
        fn __coop_worker_entry() {
            $crate::__private::worker_entry();
        }
    };
}

/// What [`test_workers!`](crate::test_workers) expands to uses, and test
/// oracles shared by the workspace's tests; not an API.
#[doc(hidden)]
pub mod __private {
    use std::collections::BTreeMap;

    pub use ctor;

    use crate::partial::WordRule;

    /// Called by the macro's constructor, before `main`.
    pub fn register_test_workers(jobs: &[crate::JobEntry], module: &'static str) {
        super::register_test_workers(jobs, module);
    }

    /// Called by the macro's worker entry test.
    pub fn worker_entry() {
        super::worker_entry();
    }

    /// The word count that tests check [`Tally::add_words`](crate::partial::Tally::add_words)
    /// against, obviously correct and slow: decodes with
    /// [`String::from_utf8_lossy`] and iterates chars ([`WordRule::Alphanumeric`]) or
    /// splits on the six ASCII whitespace bytes ([`WordRule::Whitespace`]).
    pub fn reference_counts(rule: WordRule, text: &[u8]) -> BTreeMap<Vec<u8>, u64> {
        let mut out: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        match rule {
            WordRule::Alphanumeric => {
                let decoded = String::from_utf8_lossy(text);
                let mut word = String::new();
                for c in decoded.chars() {
                    if c.is_alphanumeric() {
                        word.extend(c.to_lowercase());
                    } else if !word.is_empty() {
                        *out.entry(std::mem::take(&mut word).into_bytes()).or_insert(0) += 1;
                    }
                }
                if !word.is_empty() {
                    *out.entry(word.into_bytes()).or_insert(0) += 1;
                }
            }
            WordRule::Whitespace => {
                for w in text.split(|&b| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')) {
                    if !w.is_empty() {
                        *out.entry(w.to_vec()).or_insert(0) += 1;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_named_as_libtest_names_it() {
        assert_eq!(entry_name("my_tests"), "__coop_worker_entry");
        assert_eq!(entry_name("my_crate::tests"), "tests::__coop_worker_entry");
        assert_eq!(entry_name("my_crate::a::b"), "a::b::__coop_worker_entry");
    }

    #[test]
    fn workers_run_the_entry_alone_and_quietly() {
        let args = worker_args("tests::__coop_worker_entry");
        assert_eq!(args[0], "tests::__coop_worker_entry");
        for flag in ["--exact", "--test-threads=1", "--quiet", "--nocapture"] {
            assert!(args.contains(&flag), "{flag} missing from {args:?}");
        }
    }
}
