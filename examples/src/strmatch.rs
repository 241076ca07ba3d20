//! String match, as the Phoenix suite has it: for each of a few fixed
//! strings, how many lines of the input contain it, and how many contain any
//! (what `grep -c -F` counts). A search for the leftmost match of any
//! pattern (Aho-Corasick, with its SIMD prefilters) skips the lines without
//! one; a line with one is searched again, alone, for every pattern in it.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use coop::partial::{Combine, Dense};
use coop::prelude::*;
use serde::{Deserialize, Serialize};

/// Counts the lines (each ended by `\n`, the last one perhaps not) that
/// contain each pattern, byte for byte, and those that contain any. A line
/// never spans two segments.
#[derive(Debug, Serialize, Deserialize)]
pub struct StrMatch {
    patterns: Vec<Vec<u8>>,
    /// Built once per process, at the first task.
    #[serde(skip)]
    matcher: OnceLock<Matcher>,
}

/// Lines that contain each pattern, in the order given, and any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineCounts {
    /// Per pattern.
    pub patterns: Dense<u64>,
    /// Lines that contain at least one.
    pub any: u64,
}

impl Combine for LineCounts {
    fn combine(&mut self, other: LineCounts) {
        self.patterns.combine(other.patterns);
        self.any += other.any;
    }
}

/// A pattern with a newline, which no line contains.
#[derive(Debug, thiserror::Error)]
#[error("pattern {0} holds a newline: lines are matched one at a time")]
pub struct NewlineInPattern(usize);

/// The automata over the non-empty patterns, and what they number them.
#[derive(Debug)]
struct Matcher {
    /// Finds the leftmost match of any pattern: a line that has one.
    any: AhoCorasick,
    /// Finds every match of every pattern, overlapping: those of a line.
    every: AhoCorasick,
    /// Index in the job's patterns of each automaton pattern.
    index: Vec<usize>,
    /// Indices of the empty patterns, which every line contains.
    empty: Vec<usize>,
}

impl StrMatch {
    /// A job over `patterns`, refused if one holds a `\n`.
    pub fn new(patterns: Vec<Vec<u8>>) -> Result<StrMatch, NewlineInPattern> {
        if let Some(k) = patterns.iter().position(|p| p.contains(&b'\n')) {
            return Err(NewlineInPattern(k));
        }
        Ok(StrMatch {
            patterns,
            matcher: OnceLock::new(),
        })
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[Vec<u8>] {
        &self.patterns
    }

    fn matcher(&self) -> Result<&Matcher, TaskError> {
        if let Some(matcher) = self.matcher.get() {
            return Ok(matcher);
        }
        let (empty, index): (Vec<usize>, Vec<usize>) =
            (0..self.patterns.len()).partition(|&k| self.patterns[k].is_empty());
        let patterns = || index.iter().map(|&k| &self.patterns[k]);
        let any = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(patterns())?;
        // A DFA: the fastest kind a byte, for the short texts (a line each)
        // it searches.
        let every = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .build(patterns())?;
        Ok(self.matcher.get_or_init(|| Matcher {
            any,
            every,
            index,
            empty,
        }))
    }
}

impl RecordJob for StrMatch {
    const NAME: &'static str = "coop-examples/strmatch";
    type Partial = LineCounts;

    fn empty_partial(&self) -> LineCounts {
        LineCounts {
            patterns: Dense::new(self.patterns.len()),
            any: 0,
        }
    }

    fn fold(&self, line: &[u8], counts: &mut LineCounts) -> Result<(), TaskError> {
        self.fold_all(line, counts)
    }

    /// The lines of the span that match any pattern, found by one search
    /// that skips the others at SIMD speed; each of those searched alone
    /// for every pattern in it, each counted once a line.
    fn fold_all(&self, text: &[u8], counts: &mut LineCounts) -> Result<(), TaskError> {
        let matcher = self.matcher()?;
        if !matcher.empty.is_empty() {
            // Every line contains the empty string.
            let lines = memchr::memchr_iter(b'\n', text).count() as u64
                + u64::from(text.last().is_some_and(|&b| b != b'\n'));
            for &k in &matcher.empty {
                counts.patterns.add(k, lines);
            }
            counts.any += lines;
        }
        if matcher.index.is_empty() {
            return Ok(());
        }
        // The line each pattern was last counted in, as a line number.
        let mut counted_in = vec![0u64; self.patterns.len()];
        let (mut line, mut from) = (0u64, 0);
        while let Some(found) = matcher
            .any
            .find(aho_corasick::Input::new(text).span(from..text.len()))
        {
            // No match starts before the leftmost one: its line is searched
            // from there to its end.
            let end = memchr::memchr(b'\n', &text[found.end()..]).map_or(text.len(), |at| found.end() + at);
            line += 1;
            if matcher.empty.is_empty() {
                counts.any += 1;
            }
            for each in matcher.every.find_overlapping_iter(&text[found.start()..end]) {
                let k = matcher.index[each.pattern().as_usize()];
                if counted_in[k] != line {
                    counted_in[k] = line;
                    counts.patterns.add(k, 1);
                }
            }
            from = (end + 1).min(text.len());
        }
        Ok(())
    }
}

/// The entry that lets workers run [`StrMatch`]; list it in `coop::init`.
pub fn register() -> coop::JobEntry {
    coop::register::<StrMatch>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `grep -c -F -e PATTERN` counts, the plain way.
    fn plain(patterns: &[&[u8]], text: &[u8]) -> (Vec<u64>, u64) {
        let lines: Vec<&[u8]> = text
            .strip_suffix(b"\n")
            .unwrap_or(text)
            .split(|&b| b == b'\n')
            .collect();
        let lines = if text.is_empty() { Vec::new() } else { lines };
        let has = |line: &[u8], p: &[u8]| p.is_empty() || line.windows(p.len()).any(|w| w == p);
        let per = patterns
            .iter()
            .map(|p| lines.iter().filter(|l| has(l, p)).count() as u64)
            .collect();
        let any = lines
            .iter()
            .filter(|l| patterns.iter().any(|p| has(l, p)))
            .count() as u64;
        (per, any)
    }

    fn counts(patterns: &[&[u8]], text: &[u8]) -> (Vec<u64>, u64) {
        let job = StrMatch::new(patterns.iter().map(|p| p.to_vec()).collect()).unwrap();
        let mut counts = job.empty_partial();
        job.fold_all(text, &mut counts).unwrap();
        (counts.patterns.into_vec(), counts.any)
    }

    #[test]
    fn lines_count_once_whatever_their_matches() {
        let text = b"abcabc\nxx\nbc ab\n\nab";
        for patterns in [
            &[&b"ab"[..], b"bc", b"abc", b"zz"][..],
            &[b"b", b"bca"],
            &[b"", b"x"],
            &[b"ab", b"ab"],
            &[],
        ] {
            assert_eq!(counts(patterns, text), plain(patterns, text), "{patterns:?}");
        }
        assert_eq!(counts(&[b"a"], b""), (vec![0], 0));
        assert_eq!(counts(&[b""], b"\n\n"), (vec![2], 2));
        assert!(StrMatch::new(vec![b"a\nb".to_vec()]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn counts_as_the_plain_way(
            text in proptest::collection::vec(proptest::sample::select(b"ab\nc".to_vec()), 0..200),
            patterns in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(b"abc".to_vec()), 0..4), 0..5),
        ) {
            let patterns: Vec<&[u8]> = patterns.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(counts(&patterns, &text), plain(&patterns, &text));
        }
    }
}
