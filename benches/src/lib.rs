//! Jobs and data generators used by coop's criterion benches (`benches/overheads.rs`).
//!
//! The jobs do as little work as possible, so that what a bench measures is
//! coop's own overhead: starting workers, dispatching tasks, handing the input
//! over, and merging partials.

#![deny(missing_docs)]

use coop::JobEntry;
use coop::partial::Tally;
use coop::prelude::*;
use serde::{Deserialize, Serialize};

pub mod peer;

/// Every job a bench binary's workers may run; pass it to [`coop::init`].
pub fn jobs() -> Vec<JobEntry> {
    vec![coop::register::<Empty>(), coop::register::<Touch>()]
}

/// `tasks` tasks that do nothing: measures the round trip of a job and of its
/// tasks, with an empty partial.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Empty {
    /// Number of tasks in the job (whatever the engine's hint).
    pub tasks: usize,
}

impl Job for Empty {
    const NAME: &'static str = "bench-empty";
    type Task = ();
    type Partial = ();

    fn split(&self, _: &Input, _: usize) -> Result<Vec<()>, TaskError> {
        Ok(vec![(); self.tasks])
    }

    fn map(&self, _: &(), _: &Input, _: &mut ()) -> Result<(), TaskError> {
        Ok(())
    }

    fn merge(&self, _: &mut (), _: ()) {}
}

/// One task per hinted slot (`hint` tasks), each of which reads a single byte
/// of input segment 0: the job costs the same whatever the segment's size,
/// unless handing the segment to the workers copies it.
///
/// The partial is the sum of the bytes read, so the reads cannot be optimised
/// away.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Touch;

impl Job for Touch {
    const NAME: &'static str = "bench-touch";
    /// Offset of the byte to read.
    type Task = usize;
    type Partial = u64;

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<usize>, TaskError> {
        let last = input.bytes(0).len().saturating_sub(1);
        let tasks = hint.max(1);
        // Spread the reads from the first byte to the last.
        Ok((0..tasks)
            .map(|t| if tasks == 1 { 0 } else { last * t / (tasks - 1) })
            .collect())
    }

    fn map(&self, task: &usize, input: &Input, sum: &mut u64) -> Result<(), TaskError> {
        let bytes = input.bytes(0);
        let byte = bytes.get(*task).copied().ok_or("input segment 0 is empty")?;
        *sum += u64::from(byte);
        Ok(())
    }

    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// A small deterministic generator (Knuth's MMIX linear congruential
/// generator), enough for reproducible bench data without a `rand` dependency.
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    /// The next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0
    }
}

/// The `index`-th word of a deterministic vocabulary: lowercase ASCII letters
/// derived from `index` alone, distinct for distinct indices.
///
/// The word is a letter giving the number of base-26 digits of `index`, those
/// digits, then 0 to 7 pseudo-random letters, so that lengths vary as in text
/// (2 to 12 letters for indices below 26⁴ = 456,976).
pub fn word(index: u64) -> Vec<u8> {
    let mut digits = Vec::with_capacity(14);
    let mut n = index;
    loop {
        digits.push(b'a' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    let mut rng = Lcg::new(index ^ 0x9E37_79B9_7F4A_7C15);
    let extra = (rng.next_u64() >> 61) as usize;
    let mut word = Vec::with_capacity(1 + digits.len() + extra);
    word.push(b'a' + digits.len() as u8);
    word.extend_from_slice(&digits);
    for _ in 0..extra {
        word.push(b'a' + ((rng.next_u64() >> 32) % 26) as u8);
    }
    word
}

/// Two word-count partials of `distinct` words each, sharing about
/// `distinct / 2` words, with counts from 1 to 1000: what two workers of a
/// word count over similar text send back.
pub fn word_count_partials(distinct: usize) -> (Tally, Tally) {
    let distinct = distinct as u64;
    let half = distinct / 2;
    let mut rng = Lcg::new(42);
    let mut a = Tally::with_capacity(distinct as usize);
    let mut b = Tally::with_capacity(distinct as usize);
    // `a` has words 0..distinct, `b` has words half..half + distinct.
    for i in 0..distinct {
        a.add(&word(i), 1 + rng.next_u64() % 1000);
        b.add(&word(half + i), 1 + rng.next_u64() % 1000);
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use coop::partial::Combine;

    use super::*;

    #[test]
    fn words_are_distinct_and_partials_overlap_by_half() {
        let (a, b) = word_count_partials(10_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(b.len(), 10_000);
        let mut ab = a.clone();
        ab.combine(b);
        assert_eq!(ab.len(), 15_000);
        assert!(word(0).iter().all(u8::is_ascii_lowercase));
        assert_eq!(word(7), word(7));
    }

    #[test]
    fn touch_splits_into_hint_tasks_in_bounds() {
        let input = Input::from_bytes(&[1, 2, 3, 4, 5]);
        assert_eq!(Touch.split(&input, 2).unwrap(), vec![0, 4]);
        assert_eq!(Touch.split(&input, 1).unwrap(), vec![0]);
        assert_eq!(Touch.split(&input, 3).unwrap(), vec![0, 2, 4]);
    }
}
