//! The pieces of the `speedup` study: how coop's engines scale with workers.
//!
//! - [`amdahl`]: fits Amdahl's law to measured times and projects speedups.
//! - [`memory`]: the proportional set size (PSS) of a set of processes, and a
//!   sampler that records its peak while a job runs.
//! - [`machine`]: CPU time of the study and of other processes; heap trimming.
//! - [`report`]: summaries of repeated runs, the text table and the CSV file.
//! - [`plot`]: the SVG chart of speedup against workers.
//! - [`progress`]: a progress bar over the runs of the study.

pub mod amdahl;
pub mod apps;
pub mod machine;
pub mod memory;
pub mod plot;
pub mod progress;
pub mod report;
