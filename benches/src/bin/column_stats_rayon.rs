//! `column_stats` as a rayon user writes it: the file mapped with memmap2,
//! rows in parallel chunks, statistics folded per thread and reduced.
//!
//! `column_stats_rayon FILE COLUMNS COLUMN BINS LOW HIGH`
use std::fs::File;

use rayon::prelude::*;

struct Stats {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    bins: Vec<u64>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, columns, column, bins, low, high] = &args[..] else {
        anyhow::bail!("usage: column_stats_rayon FILE COLUMNS COLUMN BINS LOW HIGH");
    };
    let (columns, column, bins): (usize, usize, usize) = (columns.parse()?, column.parse()?, bins.parse()?);
    let (low, high): (f64, f64) = (low.parse()?, high.parse()?);
    // SAFETY: the file is not changed while this program runs.
    let map = unsafe { memmap2::Mmap::map(&File::open(path)?)? };
    anyhow::ensure!(map.len() % (8 * columns) == 0, "{path} is not whole rows");
    let empty = || Stats {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        bins: vec![0; bins],
    };
    let stats = map
        .par_chunks(8 * columns)
        .fold(empty, |mut s, row| {
            let x = f64::from_le_bytes(row[8 * column..][..8].try_into().unwrap());
            (s.n, s.sum, s.min, s.max) = (s.n + 1, s.sum + x, s.min.min(x), s.max.max(x));
            let bin = ((x - low) / (high - low) * bins as f64).floor();
            if (0.0..bins as f64).contains(&bin) {
                s.bins[bin as usize] += 1;
            }
            s
        })
        .reduce(empty, |mut a, b| {
            (a.n, a.sum, a.min, a.max) = (a.n + b.n, a.sum + b.sum, a.min.min(b.min), a.max.max(b.max));
            a.bins.iter_mut().zip(&b.bins).for_each(|(a, b)| *a += b);
            a
        });
    let (min, max) = (stats.n > 0).then_some((stats.min, stats.max)).unzip();
    println!(
        "n {} mean {:.6} min {min:?} max {max:?}",
        stats.n,
        stats.sum / stats.n as f64
    );
    println!("{:?}", stats.bins);
    Ok(())
}
