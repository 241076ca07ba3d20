//! Criterion benches of the word-count kernel (`coop::partial::Tally`), in
//! process, on a 64 MiB synthetic corpus (`coop_examples::corpus`):
//!
//! - `wordcount_kernel`: the straightforward peer (`coop_benches::peer`: rayon
//!   fold of `FxHashMap<&[u8], u64>` over ~1 MiB chunks) against our
//!   [`Tally`] in both split modes, with the same chunking, on a 2-thread
//!   and a 1-thread rayon pool (throughput in bytes of text);
//! - `wordcount_merge`: merging 16 partials (the counts of 16 slices of the
//!   corpus) into one, as the coordinator does with one partial per worker,
//!   and the postcard encoding and decoding of one partial.
//!
//! The corpus and partials are made once, lazily, outside the timing.

use std::hint::black_box;
use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use coop::partial::{Combine, Tally, WordRule};
use coop_benches::peer;
use coop_examples::corpus;
use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rayon::prelude::*;

/// Size of the corpus.
const CORPUS_BYTES: usize = 64 << 20;
/// Size of the chunks the text is cut into for the rayon fold.
const CHUNK_BYTES: usize = 1 << 20;
/// Partials merged in the `wordcount_merge` group: one per worker of a
/// 16-worker pool.
const PARTIALS: usize = 16;

fn corpus() -> &'static [u8] {
    static TEXT: OnceLock<Vec<u8>> = OnceLock::new();
    TEXT.get_or_init(|| corpus::generate(CORPUS_BYTES, corpus::DEFAULT_VOCABULARY, 1))
}

/// Our kernel with the peer's structure: each rayon fold counts its chunks
/// into its own table, and the tables are merged.
fn ours(rule: WordRule, text: &[u8], ranges: &[Range<usize>]) -> Tally {
    ranges
        .par_iter()
        .fold(Tally::new, |mut counts, range| {
            counts.add_words(rule, &text[range.clone()]);
            counts
        })
        .reduce(Tally::new, |mut a, b| {
            a.combine(b);
            a
        })
}

fn kernel(c: &mut Criterion) {
    let mut group = c.benchmark_group("wordcount_kernel");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(CORPUS_BYTES as u64));
    let ranges = OnceLock::new();
    let ranges = || ranges.get_or_init(|| peer::chunks(corpus(), CHUNK_BYTES));
    let checked = OnceLock::new();
    for threads in [2, 1] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool");
        let label = format!("{threads}_threads");
        group.bench_function(BenchmarkId::new("peer", &label), |b| {
            let (text, ranges) = (corpus(), ranges());
            checked.get_or_init(|| {
                // Same answer as ours, once, outside the timing.
                let theirs = pool.install(|| peer::count(text, ranges));
                let ours = pool.install(|| ours(WordRule::Whitespace, text, ranges));
                assert_eq!(theirs.len(), ours.len());
                assert!(theirs.iter().all(|(w, &n)| ours.get(w) == n));
            });
            b.iter_with_large_drop(|| pool.install(|| peer::count(text, ranges)));
        });
        for (name, mode) in [
            ("ours_whitespace", WordRule::Whitespace),
            ("ours_words", WordRule::Alphanumeric),
        ] {
            group.bench_function(BenchmarkId::new(name, &label), |b| {
                let (text, ranges) = (corpus(), ranges());
                b.iter_with_large_drop(|| pool.install(|| ours(mode, text, ranges)));
            });
        }
    }
    group.finish();
}

/// The counts (Words mode, as `wordcount` counts by default) of `PARTIALS`
/// slices of the corpus.
fn partials() -> &'static [Tally] {
    static PARTS: OnceLock<Vec<Tally>> = OnceLock::new();
    PARTS.get_or_init(|| {
        let text = corpus();
        peer::chunks(text, text.len().div_ceil(PARTIALS))
            .into_par_iter()
            .map(|range| {
                let mut counts = Tally::new();
                counts.add_words(WordRule::Alphanumeric, &text[range]);
                counts
            })
            .collect()
    })
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("wordcount_merge");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(BenchmarkId::new("merge_partials", PARTIALS), |b| {
        let parts = partials();
        b.iter_batched(
            || parts.to_vec(),
            |parts| {
                let mut into = Tally::new();
                for part in parts {
                    into.combine(part);
                }
                into
            },
            BatchSize::PerIteration,
        );
    });
    let distinct = OnceLock::new();
    let distinct = || *distinct.get_or_init(|| partials()[0].len() as u64);
    group.throughput(Throughput::Elements(distinct()));
    group.bench_function("postcard_encode", |b| {
        let part = &partials()[0];
        b.iter(|| postcard::to_allocvec(black_box(part)).expect("encoding"));
    });
    let encoded = OnceLock::new();
    group.bench_function("postcard_decode", |b| {
        let bytes = encoded.get_or_init(|| postcard::to_allocvec(&partials()[0]).expect("encoding"));
        b.iter_with_large_drop(|| postcard::from_bytes::<Tally>(black_box(bytes)).expect("decoding"));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    targets = kernel, merge
}
criterion_main!(benches);
