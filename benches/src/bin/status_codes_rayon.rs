//! `status_codes` as a rayon user writes it: files mapped with memmap2, lines
//! split in parallel, counts folded per thread and reduced.
use std::collections::BTreeMap;
use std::fs::File;

use rayon::prelude::*;

fn status(line: &[u8]) -> Option<u16> {
    // `10.0.0.1 - - [...] "GET / HTTP/1.1" 200 512`: the status is second to last.
    let status = line.rsplit(|&b| b == b' ').nth(1)?;
    std::str::from_utf8(status).ok()?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    let mut maps = Vec::new();
    for path in std::env::args().skip(1) {
        // SAFETY: the files are not changed while this program runs.
        maps.push(unsafe { memmap2::Mmap::map(&File::open(path)?)? });
    }
    let counts = maps
        .par_iter()
        .flat_map(|map| map.par_split(|&b| b == b'\n'))
        .fold(BTreeMap::new, |mut counts: BTreeMap<u16, u64>, line| {
            if let Some(status) = status(line) {
                *counts.entry(status).or_default() += 1;
            }
            counts
        })
        .reduce(BTreeMap::new, |mut into, other| {
            for (status, lines) in other {
                *into.entry(status).or_default() += lines;
            }
            into
        });
    for (status, lines) in counts {
        println!("{status}\t{lines}");
    }
    Ok(())
}
