//! What the machine itself allows N workers, whatever the engine: each
//! workload's bare kernel (no coop, no tasks, no messages, no merge) on one
//! N-th of `speedup`'s default work, first on one thread while the other
//! cores idle, then on N threads at once, each on its own N-th (N: the number
//! of cores). Throughput is in the work done, so
//!
//! ```text
//! ceiling = throughput(N shares at once) / throughput(1 share alone)
//! ```
//!
//! is the most N workers of any engine could gain over one here: what shared
//! caches, memory and clock speeds leave of N. `speedup`'s ratios are measured
//! against it in `docs/BENCHMARKS.md`.
//!
//! - `ceiling_wordcount`: [`WordCounts::count`] over `speedup`'s default text
//!   (300 MB, 600,000-word vocabulary), cut at word boundaries; throughput in
//!   bytes of text.
//! - `ceiling_matmul`: [`multiply_rows`] over `speedup`'s default matrices
//!   (2048 x 2048 f64), cut into row blocks; throughput in elements, one per
//!   floating-point operation.
//!
//! The text and matrices are made once, lazily, outside the timing.

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use coop_examples::corpus;
use coop_examples::matmul::{Matrix, multiply_rows};
use coop_examples::words::{SplitMode, WordCounts, split_ranges};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

/// `speedup`'s default text size.
const TEXT_BYTES: usize = 300_000_000;
/// `speedup`'s default matrix size.
const N: usize = 2048;

/// Cores, hence shares.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `work` on every item of `shares` at once, one thread each.
fn at_once<T: Sync, R: Send>(shares: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = shares.iter().map(|s| scope.spawn(|| work(s))).collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a share's thread panicked"))
            .collect()
    })
}

/// Benches `work` on one share alone, then on every share at once.
fn alone_and_at_once<T: Sync, R: Send>(
    c: &mut Criterion,
    name: &str,
    shares: &[T],
    size: impl Fn(&T) -> u64,
    throughput: fn(u64) -> Throughput,
    work: impl Fn(&T) -> R + Sync,
) {
    let n = shares.len();
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(throughput(size(&shares[0])));
    group.bench_function(BenchmarkId::new("1_share_alone", format!("of_{n}")), |b| {
        b.iter_with_large_drop(|| work(&shares[0]));
    });
    group.throughput(throughput(shares.iter().map(&size).sum()));
    group.bench_function(
        BenchmarkId::new(format!("{n}_shares_at_once"), format!("of_{n}")),
        |b| {
            b.iter_with_large_drop(|| at_once(shares, &work));
        },
    );
    group.finish();
}

fn text() -> &'static [u8] {
    static TEXT: OnceLock<Vec<u8>> = OnceLock::new();
    TEXT.get_or_init(|| corpus::generate(TEXT_BYTES, corpus::DEFAULT_VOCABULARY, 1))
}

fn wordcount(c: &mut Criterion) {
    let mode = SplitMode::Words;
    let text = text();
    let shares = split_ranges(mode, text, cores());
    let count = |range: &Range<usize>| {
        let mut counts = WordCounts::new();
        counts.count(mode, &text[range.clone()]);
        counts
    };
    // The shares together count the whole text, once, outside the timing.
    let mut whole = WordCounts::new();
    for part in at_once(&shares, count) {
        whole.merge(part);
    }
    assert_eq!(whole, count(&(0..text.len())));
    alone_and_at_once(
        c,
        "ceiling_wordcount",
        &shares,
        |range| range.len() as u64,
        Throughput::Bytes,
        count,
    );
}

/// An N x N row-major matrix.
fn square(data: &[f64]) -> Matrix<'_, f64> {
    Matrix {
        data,
        rows: N,
        cols: N,
        fortran: false,
    }
}

fn matmul(c: &mut Criterion) {
    // Any values: the kernel's speed does not depend on them.
    let a: Vec<f64> = (0..N * N).map(|i| (i as f64 * 0.618_034).fract() - 0.5).collect();
    let b: Vec<f64> = (0..N * N).map(|i| (i as f64 * 0.414_214).fract() - 0.5).collect();
    let (a, b) = (square(&a), square(&b));
    let n = cores();
    let shares: Vec<Range<usize>> = (0..n).map(|k| k * N / n..(k + 1) * N / n).collect();
    let multiply = |rows: &Range<usize>| {
        let mut c = vec![0.0f64; rows.len() * N];
        multiply_rows(a, b, rows.clone(), &mut c);
        c
    };
    alone_and_at_once(
        c,
        "ceiling_matmul",
        &shares,
        |rows| 2 * (rows.len() * N * N) as u64,
        Throughput::Elements,
        multiply,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8));
    targets = wordcount, matmul
}
criterion_main!(benches);
