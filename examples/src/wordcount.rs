//! The word-count job: each worker counts the words of its pieces of text into
//! one [`WordCounts`] table, sent once per job.

use std::ops::Range;

use coop::prelude::*;
use serde::{Deserialize, Serialize};

use crate::words::{SplitMode, WordCounts, split_ranges};

/// Largest piece of text one task counts, so that progress moves and a slow
/// worker never holds much of the job.
const MAX_PIECE: usize = 64 << 20;

/// Counts word frequencies over every segment of the input; a word never spans
/// two segments (two files).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WordCount {
    /// What a word is.
    pub mode: SplitMode,
}

/// A range of one segment's bytes that starts and ends between words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Piece {
    /// Segment index.
    pub segment: usize,
    /// Byte range within the segment.
    pub range: Range<usize>,
}

impl Job for WordCount {
    const NAME: &'static str = "coop-examples/wordcount";
    type Task = Piece;
    type Partial = WordCounts;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Piece>, TaskError> {
        let total = input.total_bytes().max(1) as f64;
        let mut pieces = Vec::new();
        for segment in 0..input.len() {
            let text = input.bytes(segment);
            let share = (hint as f64 * text.len() as f64 / total).round() as usize;
            let count = share.max(text.len().div_ceil(MAX_PIECE)).max(1);
            pieces.extend(
                split_ranges(self.mode, text, count)
                    .into_iter()
                    .map(|range| Piece { segment, range }),
            );
        }
        Ok(pieces)
    }

    fn input_ranges(&self, piece: &Piece, _: &Input) -> Vec<(usize, Range<usize>)> {
        vec![(piece.segment, piece.range.clone())]
    }

    fn map(&self, piece: &Piece, input: &Input, counts: &mut WordCounts) -> Result<(), TaskError> {
        counts.count(self.mode, &input.bytes(piece.segment)[piece.range.clone()]);
        Ok(())
    }

    fn merge(&self, into: &mut WordCounts, other: WordCounts) {
        into.merge(other);
    }

    fn merge_encoded<'de, D: serde::Deserializer<'de>>(
        &self,
        into: &mut WordCounts,
        partial: D,
    ) -> Result<(), D::Error> {
        into.merge_encoded(partial)
    }
}

/// The entry that lets workers run [`WordCount`]; list it in `coop::init`.
pub fn register() -> coop::JobEntry {
    coop::register::<WordCount>()
}
