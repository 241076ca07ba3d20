//! The example programs of coop, `wordcount` and `matmul`, written only against
//! coop's public API, as a user would. The binaries are thin: the jobs and their
//! kernels live here so that tests and benches can use them too.
//!
//! - [`wordcount`]: the word-count job, a short client of `coop::partial::Tally`.
//! - [`matmul`]: the matrix-multiply job; [`npy`]: NumPy `.npy` headers.
//! - [`cli`]: what both binaries share (exit codes, engine choice, progress bar).
//! - [`output`]: writing an output file: atomic replace, links followed, devices written through.
//! - [`study`]: the pieces of the `speedup` binary (Amdahl fit, memory sampler, table, CSV, plot).
#![deny(missing_docs)]

pub mod array;
pub mod cli;
pub mod corpus;
pub mod histogram;
pub mod kmeans;
pub mod linreg;
pub mod matmul;
pub mod npy;
pub mod output;
pub mod pca;
pub mod strmatch;
pub mod study;
pub mod wordcount;
