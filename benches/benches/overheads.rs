//! Criterion benches of coop's fixed costs, on a pool of 2 workers:
//!
//! - `pool_start`: starting 2 workers and stopping them (target < 20 ms);
//! - `dispatch`: the round trip of a job of 1 or 16 empty tasks on a warm pool
//!   (target < 100 µs for 1 task);
//! - `handoff`: a job of one 1-byte task per worker over a 1 MiB and a 1 GiB
//!   input: nearly the same time for both, since only a descriptor travels;
//! - `merge`: merging two word-count partials of 200k words each, and their
//!   postcard encoding and decoding (partials travel as postcard bytes).
//!
//! The binary is its own worker program, so `main` calls [`coop::init`] before
//! anything else. Data and pools are made lazily, inside the first call of each
//! bench's routine, so that a filter (`cargo bench -- merge`) skips their cost.

use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;

use coop::partial::{Combine, Tally};
use coop::prelude::*;
use coop_benches::{Empty, Touch, word_count_partials};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};

/// Workers in every pool of these benches.
const WORKERS: usize = 2;

/// Distinct words per partial in the `merge` group.
const DISTINCT_WORDS: usize = 200_000;

fn pool() -> Pool {
    Pool::builder()
        .workers(WORKERS)
        .build()
        .expect("starting the pool")
}

fn pool_start(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_start");
    // Milliseconds per iteration: the same iteration count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(BenchmarkId::new("workers", WORKERS), |b| {
        b.iter(|| drop(black_box(pool())));
    });
    group.finish();
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    let pool_cell = OnceCell::new();
    let input = Input::new();
    for tasks in [1, 16] {
        let job = Empty { tasks };
        group.throughput(Throughput::Elements(tasks as u64));
        group.bench_function(BenchmarkId::new("empty_tasks", tasks), |b| {
            let pool = pool_cell.get_or_init(pool);
            b.iter(|| pool.run(&job, &input).expect("empty job"));
        });
    }
    group.finish();
}

fn handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("handoff");
    let pool_cell = OnceCell::new();
    for (label, size) in [("1MiB", 1usize << 20), ("1GiB", 1 << 30)] {
        let input_cell = OnceCell::new();
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            let pool = pool_cell.get_or_init(pool);
            // Made once, outside the timing: copying `size` bytes into shared
            // memory is O(size) and not what is measured.
            let input = input_cell.get_or_init(|| Input::from_bytes(&vec![1u8; size]));
            b.iter(|| {
                let sum = Run::new(&Touch, input)
                    .tasks_per_worker(1)
                    .on(pool)
                    .expect("touch job");
                assert_eq!(sum, WORKERS as u64);
            });
        });
    }
    group.finish();
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    // Milliseconds per iteration: the same iteration count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    let partials = OnceCell::new();
    let partials = || partials.get_or_init(|| word_count_partials(DISTINCT_WORDS));

    group.throughput(Throughput::Elements(2 * DISTINCT_WORDS as u64));
    group.bench_function(BenchmarkId::new("word_counts", DISTINCT_WORDS), |b| {
        let (a, other) = partials();
        b.iter_batched(
            || (a.clone(), other.clone()),
            |(mut into, other)| {
                into.combine(other);
                // Returned, so that criterion drops it outside the timing.
                into
            },
            BatchSize::LargeInput,
        );
    });

    group.throughput(Throughput::Elements(DISTINCT_WORDS as u64));
    group.bench_function(BenchmarkId::new("postcard_encode", DISTINCT_WORDS), |b| {
        let (a, _) = partials();
        b.iter(|| postcard::to_allocvec(black_box(a)).expect("encoding"));
    });
    let encoded = OnceCell::new();
    let encoded = || encoded.get_or_init(|| postcard::to_allocvec(&partials().1).expect("encoding"));
    group.bench_function(BenchmarkId::new("postcard_decode", DISTINCT_WORDS), |b| {
        let bytes = encoded();
        b.iter(|| postcard::from_bytes::<Tally>(black_box(bytes)).expect("decoding"));
    });
    // What the coordinator does with every partial after the first: merge it
    // into the result as it decodes it (`Job::merge_encoded`).
    group.bench_function(BenchmarkId::new("merge_encoded", DISTINCT_WORDS), |b| {
        let (a, _) = partials();
        let bytes = encoded();
        b.iter_batched(
            || a.clone(),
            |mut into| {
                into.combine_encoded(&mut postcard::Deserializer::from_bytes(black_box(bytes)))
                    .expect("decoding");
                into
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = pool_start, dispatch, handoff, merge
}

fn main() {
    // First: in a worker process this serves the coordinator and never returns.
    coop::init(&coop_benches::jobs()).expect("each job is listed once");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
