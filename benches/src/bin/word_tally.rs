//! Word count (`wordcount --split whitespace`) as a user writes it on coop's
//! generic parts: a `RecordJob` over whitespace-separated words folding into
//! a `Keyed<ShortBytes, u64>`. Measures how far the generic table is from
//! `Tally`, the table built for the byte-string/sum case (BENCHMARKS).
//!
//! `word_tally FILE...`: prints the number of words and of distinct words.
use coop::partial::{Keyed, ShortBytes};
use coop::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct WordTally;

impl RecordJob for WordTally {
    const NAME: &'static str = "word-tally";
    type Partial = Keyed<ShortBytes, u64>;

    fn records(&self) -> Records {
        Records::Whitespace
    }

    fn fold(&self, word: &[u8], words: &mut Keyed<ShortBytes, u64>) -> Result<(), TaskError> {
        words.add_ref(word, 1);
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    coop::init(&[coop::register::<WordTally>()])?;
    let input = Input::from_files(std::env::args().skip(1))?;
    let words = Pool::new()?.run(&WordTally, &input)?;
    let total: u64 = words.iter().map(|(_, n)| n).sum();
    println!("{total} words, {} distinct", words.len());
    Ok(())
}
