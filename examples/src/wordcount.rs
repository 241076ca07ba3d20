//! The word-count job: each worker counts the words of its spans of text into
//! one [`Tally`], sent once per job.

use coop::partial::{Tally, WordRule};
use coop::prelude::*;
use serde::{Deserialize, Serialize};

/// Counts word frequencies over every segment of the input; a word never spans
/// two segments (two files).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WordCount {
    /// What a word is.
    pub rule: WordRule,
}

impl RecordJob for WordCount {
    const NAME: &'static str = "coop-examples/wordcount";
    type Partial = Tally;

    /// Tasks are cut at whitespace, which ends a word under either rule.
    fn records(&self) -> Records {
        Records::Whitespace
    }

    fn fold(&self, word: &[u8], tally: &mut Tally) -> Result<(), TaskError> {
        self.fold_all(word, tally)
    }

    /// A whole span at once: [`Tally::add_words`] scans 16 bytes at a time
    /// and batches its inserts.
    fn fold_all(&self, text: &[u8], tally: &mut Tally) -> Result<(), TaskError> {
        tally.add_words(self.rule, text);
        Ok(())
    }
}

/// The entry that lets workers run [`WordCount`]; list it in `coop::init`.
pub fn register() -> coop::JobEntry {
    coop::register::<WordCount>()
}
