//! Cutting the input into tasks at record boundaries: [`Records`] says what a
//! record is, [`Records::split`] cuts every segment into [`Span`]s, and
//! [`Records::iter`] walks the records of a span.
//!
//! A record never spans two segments (two files), and the last record of a
//! segment counts whether or not it ends with its terminator. A [`Span`] task
//! names the bytes it reads, so [`Ipc::Messages`](crate::Ipc::Messages)
//! copies exactly those without [`Job::input_ranges`](crate::Job::input_ranges)
//! written by hand.
//!
//! ```
//! use coop::split::{Records, Span};
//! use coop::Input;
//!
//! let mut input = Input::new();
//! input.push_bytes(b"GET /a 200\nGET /b 404\nGET /c 200");
//! let spans = Records::Lines.split(&input, 2)?;
//! let mut codes = Vec::new();
//! for span in &spans {
//!     for line in Records::Lines.iter(span.bytes(&input)) {
//!         codes.push(line.rsplit(|&b| b == b' ').next().unwrap().to_vec());
//!     }
//! }
//! assert_eq!(codes, [b"200".to_vec(), b"404".to_vec(), b"200".to_vec()]);
//! # Ok::<(), coop::split::SplitError>(())
//! ```

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::input::Input;

/// What a record is: where a task may start and end, and what
/// [`Records::iter`] yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Records {
    /// Lines: each ends with `\n` (not part of the record), the last one
    /// perhaps without it. As [`str::lines`] counts them, but a `\r` is kept.
    Lines,
    /// Records that each end with this byte (not part of the record), the
    /// last one perhaps without it.
    Delimited(u8),
    /// Words: runs of bytes between ASCII whitespace (space, `\t`, `\n`,
    /// vertical tab, form feed, `\r`). Cuts fall on whitespace.
    Whitespace,
    /// Records of exactly this many bytes (rows of `k` f64 values: `8 * k`).
    /// A segment whose length is not a whole number of them is refused, as
    /// are records of 0 bytes (which [`Records::iter`] reads as 1).
    Fixed(usize),
    /// No records: even ranges of bytes, cut anywhere; [`Records::iter`]
    /// yields the span whole.
    Bytes,
}

/// A task's share of the input: a range of one segment that starts and ends
/// at record boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    /// The segment's index in the [`Input`].
    pub segment: usize,
    /// The byte range within the segment.
    pub range: Range<usize>,
}

impl Span {
    /// The span's bytes in `input`.
    ///
    /// # Panics
    ///
    /// If the span lies outside `input` (a span made for another input).
    pub fn bytes<'i>(&self, input: &'i Input) -> &'i [u8] {
        &input.bytes(self.segment)[self.range.clone()]
    }
}

/// Why an input cannot be cut into records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A segment's length (or that of the range of it to split) is not a
    /// whole number of fixed-size records.
    #[error("segment {segment} has {len} bytes of records, not a whole number of {record}-byte records")]
    PartialRecord {
        /// The segment's index.
        segment: usize,
        /// The length of its records, in bytes.
        len: usize,
        /// The record size.
        record: usize,
    },
    /// [`Records::Fixed`] with records of 0 bytes.
    #[error("records of 0 bytes")]
    EmptyRecords,
}

/// The ASCII whitespace bytes of [`Records::Whitespace`], as a table: one
/// load a byte where a match is a chain of compares.
static SPACE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = matches!(i as u8, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
        i += 1;
    }
    table
};

pub(crate) fn is_space(byte: u8) -> bool {
    SPACE[usize::from(byte)]
}

impl Records {
    /// Cuts every segment of `input` into spans of about equal length, about
    /// `pieces` in all (as [`Job::split`](crate::Job::split)'s hint asks):
    /// each segment gets a share by its length, at least one span if it is
    /// not empty. An empty segment gives no span; a segment with fewer
    /// record boundaries than its share gives fewer spans (a segment with
    /// none, one). The spans of a segment are in order, cover it, and none
    /// is empty.
    pub fn split(self, input: &Input, pieces: usize) -> Result<Vec<Span>, SplitError> {
        let whole: Vec<(usize, Range<usize>)> =
            (0..input.len()).map(|s| (s, 0..input.bytes(s).len())).collect();
        self.split_ranges(input, &whole, pieces)
    }

    /// As [`split`](Records::split), over the given byte ranges of segments
    /// (`(segment, range)`) instead of whole segments: the records of a file
    /// that starts with a header (a `.npy` array's rows) are the range after
    /// it. Spans cover each range, in order; [`Records::Fixed`] refuses a
    /// range that is not a whole number of records.
    ///
    /// # Panics
    ///
    /// If a range lies outside its segment.
    pub fn split_ranges(
        self,
        input: &Input,
        ranges: &[(usize, Range<usize>)],
        pieces: usize,
    ) -> Result<Vec<Span>, SplitError> {
        let total = ranges.iter().map(|(_, range)| range.len()).sum::<usize>().max(1) as f64;
        let mut spans = Vec::new();
        for (segment, range) in ranges {
            let (segment, bytes) = (*segment, &input.bytes(*segment)[range.clone()]);
            if let Records::Fixed(record) = self {
                if record == 0 {
                    return Err(SplitError::EmptyRecords);
                }
                if !bytes.len().is_multiple_of(record) {
                    return Err(SplitError::PartialRecord {
                        segment,
                        len: bytes.len(),
                        record,
                    });
                }
            }
            let share = (pieces as f64 * bytes.len() as f64 / total).round() as usize;
            spans.extend(self.cut(bytes, share.max(1)).into_iter().map(|cut| Span {
                segment,
                range: range.start + cut.start..range.start + cut.end,
            }));
        }
        Ok(spans)
    }

    /// Cuts `bytes` into about `pieces` ranges at record boundaries.
    pub(crate) fn cut(self, bytes: &[u8], pieces: usize) -> Vec<Range<usize>> {
        let len = bytes.len();
        let mut ranges = Vec::with_capacity(pieces.min(len));
        let mut start = 0;
        for k in 1..pieces {
            let ideal = (len as u128 * k as u128 / pieces as u128) as usize;
            match self.boundary(bytes, ideal.max(start + 1)) {
                Some(cut) if cut < len => {
                    ranges.push(start..cut);
                    start = cut;
                }
                _ => break,
            }
        }
        if start < len {
            ranges.push(start..len);
        }
        ranges
    }

    /// The first record boundary at or after `from` (`0 < from`), if any
    /// before the end.
    fn boundary(self, bytes: &[u8], from: usize) -> Option<usize> {
        if from >= bytes.len() {
            return None;
        }
        match self {
            // Just after a terminator: the one at `from - 1` or later.
            Records::Lines => memchr::memchr(b'\n', &bytes[from - 1..]).map(|at| from + at),
            Records::Delimited(end) => memchr::memchr(end, &bytes[from - 1..]).map(|at| from + at),
            // Just before a whitespace byte: no word is cut.
            Records::Whitespace => bytes[from..]
                .iter()
                .position(|&b| is_space(b))
                .map(|at| from + at),
            Records::Fixed(record) => Some(from.div_ceil(record) * record),
            Records::Bytes => Some(from),
        }
    }

    /// The records of `bytes` (a span's, or any that start at a record
    /// boundary), in order, without their terminators: lines (an empty line
    /// is an empty record), words (never empty), fixed-size records, or the
    /// bytes whole ([`Records::Bytes`], none if empty).
    pub fn iter<'a>(self, bytes: &'a [u8]) -> RecordIter<'a> {
        RecordIter {
            records: self,
            rest: bytes,
        }
    }
}

/// The records of a span ([`Records::iter`]).
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    records: Records,
    rest: &'a [u8],
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        let (record, next) = match self.records {
            Records::Lines => terminated(rest, b'\n'),
            Records::Delimited(end) => terminated(rest, end),
            Records::Whitespace => {
                let Some(start) = rest.iter().position(|&b| !is_space(b)) else {
                    // Only whitespace left: no record, now or later.
                    self.rest = &[];
                    return None;
                };
                let word = &rest[start..];
                let end = word.iter().position(|&b| is_space(b)).unwrap_or(word.len());
                (&word[..end], &word[end..])
            }
            // A short tail (bytes not made by `split`) is a record of its own.
            Records::Fixed(record) => rest.split_at(record.clamp(1, rest.len())),
            Records::Bytes => (rest, &rest[rest.len()..]),
        };
        self.rest = next;
        Some(record)
    }
}

/// The record before the first `end` in `bytes`, and what follows that `end`
/// (or the whole, unterminated).
fn terminated(bytes: &[u8], end: u8) -> (&[u8], &[u8]) {
    match memchr::memchr(end, bytes) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &bytes[bytes.len()..]),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn input(segments: &[&[u8]]) -> Input {
        let mut input = Input::new();
        for segment in segments {
            input.push_bytes(segment);
        }
        input
    }

    /// The records of every segment whole, the plain way.
    fn reference(records: Records, segment: &[u8]) -> Vec<Vec<u8>> {
        match records {
            Records::Lines => String::from_utf8_lossy(segment)
                .split_terminator('\n')
                .map(|line| line.as_bytes().to_vec())
                .collect(),
            Records::Delimited(end) => {
                let mut all: Vec<Vec<u8>> = segment.split(|&b| b == end).map(<[u8]>::to_vec).collect();
                if segment.last() == Some(&end) || segment.is_empty() {
                    all.pop();
                }
                all
            }
            Records::Whitespace => segment
                .split(|&b| is_space(b))
                .filter(|word| !word.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
            Records::Fixed(record) => segment.chunks(record).map(<[u8]>::to_vec).collect(),
            Records::Bytes => (!segment.is_empty())
                .then(|| segment.to_vec())
                .into_iter()
                .collect(),
        }
    }

    fn records_by_spans(records: Records, input: &Input, pieces: usize) -> Vec<Vec<Vec<u8>>> {
        let spans = records.split(input, pieces).unwrap();
        let mut by_segment = vec![Vec::new(); input.len()];
        for span in &spans {
            by_segment[span.segment].extend(records.iter(span.bytes(input)).map(<[u8]>::to_vec));
        }
        by_segment
    }

    #[test]
    fn lines_count_as_str_lines_does_with_or_without_a_last_newline() {
        fn all(text: &[u8]) -> Vec<&[u8]> {
            Records::Lines.iter(text).collect()
        }
        assert_eq!(all(b"a\n\nb"), [&b"a"[..], b"", b"b"]);
        assert_eq!(all(b"a\nb\n"), [&b"a"[..], b"b"]);
        assert_eq!(all(b"\n"), [&b""[..]]);
        assert!(all(b"").is_empty());
        assert_eq!(all(b"a\r\nb"), [&b"a\r"[..], b"b"]);
    }

    #[test]
    fn no_record_spans_two_segments_and_an_unterminated_last_one_counts() {
        let input = input(&[b"one\ntw", b"o\nthree", b"", b"\n"]);
        let spans = Records::Lines.split(&input, 8).unwrap();
        assert!(spans.iter().all(|span| span.segment != 2), "{spans:?}");
        assert_eq!(
            records_by_spans(Records::Lines, &input, 8),
            [
                vec![b"one".to_vec(), b"tw".to_vec()],
                vec![b"o".to_vec(), b"three".to_vec()],
                vec![],
                vec![b"".to_vec()],
            ]
        );
    }

    #[test]
    fn a_record_longer_than_a_task_is_one_span() {
        let long = [vec![b'x'; 1000], b"\nshort\n".to_vec()].concat();
        let input = input(&[&long]);
        let spans = Records::Lines.split(&input, 10).unwrap();
        assert_eq!(spans[0].range, 0..1001, "{spans:?}");
        assert_eq!(spans.len(), 2, "{spans:?}");
        let none = input_of(b"no newline at all");
        assert_eq!(Records::Lines.split(&none, 4).unwrap().len(), 1);
    }

    fn input_of(bytes: &[u8]) -> Input {
        input(&[bytes])
    }

    #[test]
    fn ranges_after_a_header_are_cut_at_their_own_record_boundaries() {
        // A 10-byte header, then 6 records of 8 bytes; a second segment
        // whose range is empty.
        let mut input = input_of(&[1u8; 10 + 48]);
        input.push_bytes(b"header only");
        let ranges = [(0, 10..58), (1, 11..11)];
        let spans = Records::Fixed(8).split_ranges(&input, &ranges, 3).unwrap();
        assert_eq!(spans.first().map(|s| s.range.start), Some(10));
        assert_eq!(spans.last().map(|s| s.range.end), Some(58));
        assert!(spans.windows(2).all(|w| w[0].range.end == w[1].range.start));
        assert!(
            spans
                .iter()
                .all(|s| s.segment == 0 && (s.range.start - 10) % 8 == 0 && !s.range.is_empty())
        );
        assert_eq!(spans.len(), 3);
        let err = Records::Fixed(8)
            .split_ranges(&input, &[(0, 10..57)], 2)
            .unwrap_err();
        assert_eq!(
            err,
            SplitError::PartialRecord {
                segment: 0,
                len: 47,
                record: 8
            }
        );
        // Whole segments: what `split` cuts.
        let whole = [(0, 0..58), (1, 0..11)];
        assert_eq!(
            Records::Lines.split_ranges(&input, &whole, 4),
            Records::Lines.split(&input, 4)
        );
    }

    #[test]
    fn fixed_records_are_never_cut_and_partial_ones_refused() {
        let input = input_of(&[7u8; 24 * 5]);
        let spans = Records::Fixed(24).split(&input, 3).unwrap();
        assert!(
            spans
                .iter()
                .all(|s| s.range.start % 24 == 0 && s.range.end % 24 == 0),
            "{spans:?}"
        );
        let err = Records::Fixed(24).split(&input_of(&[0; 25]), 2).unwrap_err();
        assert_eq!(
            err,
            SplitError::PartialRecord {
                segment: 0,
                len: 25,
                record: 24
            }
        );
        assert_eq!(
            err.to_string(),
            "segment 0 has 25 bytes of records, not a whole number of 24-byte records"
        );
        assert_eq!(
            Records::Fixed(0).split(&input_of(b"x"), 1).unwrap_err(),
            SplitError::EmptyRecords
        );
    }

    #[test]
    fn any_hint_is_fine_however_large() {
        let spans = Records::Lines.split(&input_of(b"a\nb\nc"), usize::MAX).unwrap();
        assert_eq!(spans.len(), 3);
    }

    #[test]
    fn segments_share_the_pieces_by_length() {
        let big = vec![b'a'; 9000];
        let input = input(&[&big, &[b'b'; 1000]]);
        let spans = Records::Bytes.split(&input, 10).unwrap();
        let count = |segment| spans.iter().filter(|s| s.segment == segment).count();
        assert_eq!((count(0), count(1)), (9, 1));
        assert!(Records::Bytes.split(&Input::new(), 4).unwrap().is_empty());
    }

    fn any_records() -> impl Strategy<Value = Records> {
        prop_oneof![
            Just(Records::Lines),
            Just(Records::Delimited(b',')),
            Just(Records::Whitespace),
            (1usize..7).prop_map(Records::Fixed),
            Just(Records::Bytes),
        ]
    }

    proptest! {
        /// However a segment is cut, its spans cover it in order and give
        /// exactly its records.
        #[test]
        fn spans_give_the_records_of_the_whole(
            records in any_records(),
            segments in prop::collection::vec(
                prop::collection::vec(prop::sample::select(b"ab,\n \t".to_vec()), 0..60),
                0..4,
            ),
            pieces in 0usize..12,
        ) {
            let segments: Vec<Vec<u8>> = match records {
                // Whole records only.
                Records::Fixed(record) => segments
                    .into_iter()
                    .map(|mut s| { s.truncate(s.len() / record * record); s })
                    .collect(),
                _ => segments,
            };
            let refs: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
            let input = input(&refs);
            let spans = records.split(&input, pieces).unwrap();
            for (segment, bytes) in segments.iter().enumerate() {
                let mine: Vec<&Span> = spans.iter().filter(|s| s.segment == segment).collect();
                let mut at = 0;
                for span in &mine {
                    prop_assert_eq!(span.range.start, at);
                    prop_assert!(span.range.end > span.range.start);
                    at = span.range.end;
                }
                prop_assert_eq!(at, bytes.len());
            }
            let by_spans = records_by_spans(records, &input, pieces);
            for (segment, bytes) in segments.iter().enumerate() {
                match records {
                    // Each span is one record: together, the segment.
                    Records::Bytes => prop_assert_eq!(&by_spans[segment].concat(), bytes),
                    _ => prop_assert_eq!(&by_spans[segment], &reference(records, bytes)),
                }
            }
        }
    }
}
