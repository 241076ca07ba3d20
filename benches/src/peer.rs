//! The "straightforward" word count a Rust user would write, as the yardstick
//! of the `wordcount` bench: rayon over chunks of the text cut at ASCII
//! whitespace, `split` on the six ASCII whitespace bytes, one
//! `FxHashMap<&[u8], u64>` per rayon fold, merged at the end.

use std::ops::Range;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

/// The six ASCII whitespace bytes: space, `\t`, `\n`, 0x0B, 0x0C, `\r`.
fn is_space(b: &u8) -> bool {
    matches!(*b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Cuts `text` into ranges of about `target` bytes, each cut just before an
/// ASCII whitespace byte (so that no word spans two ranges). The ranges are
/// contiguous and cover the whole text.
pub fn chunks(text: &[u8], target: usize) -> Vec<Range<usize>> {
    let target = target.max(1);
    let mut out = Vec::with_capacity(text.len() / target + 1);
    let mut start = 0;
    while start < text.len() {
        let from = (start + target).min(text.len());
        let end = text[from..]
            .iter()
            .position(is_space)
            .map_or(text.len(), |off| from + off);
        out.push(start..end);
        start = end;
    }
    out
}

/// Word counts of `text` (whitespace-separated tokens, raw bytes), counted
/// chunk by chunk on the current rayon pool.
pub fn count<'a>(text: &'a [u8], ranges: &[Range<usize>]) -> FxHashMap<&'a [u8], u64> {
    ranges
        .par_iter()
        .fold(FxHashMap::default, |mut map, range| {
            for word in text[range.clone()].split(is_space).filter(|w| !w.is_empty()) {
                *map.entry(word).or_insert(0) += 1;
            }
            map
        })
        .reduce(FxHashMap::default, |mut a, mut b| {
            if a.len() < b.len() {
                std::mem::swap(&mut a, &mut b);
            }
            for (word, n) in b {
                *a.entry(word).or_insert(0) += n;
            }
            a
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coop::__private::reference_counts;
    use coop::partial::WordRule;

    #[test]
    fn peer_matches_reference() {
        let text = b"a b\tc\nd\x0be\x0cf\rg  a, a. \xff\xfe b";
        for target in [1, 3, 7, 100] {
            let ranges = chunks(text, target);
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert_eq!(ranges.last().map(|r| r.end), Some(text.len()));
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            let got: std::collections::BTreeMap<Vec<u8>, u64> = count(text, &ranges)
                .into_iter()
                .map(|(w, n)| (w.to_vec(), n))
                .collect();
            assert_eq!(got, reference_counts(WordRule::Whitespace, text));
        }
        assert!(chunks(b"", 10).is_empty());
    }
}
