//! Partials a job can use as they are, and [`Combine`], how two partials of
//! one kind combine (Phoenix++'s combiners): sums for numbers, [`Dense`]
//! arrays merged element by element (a histogram, per-class sums),
//! [`Keyed`] tables and maps merged key by key (reduce by key; keys of
//! [`ShortBytes`] hold short byte strings inline), [`Tally`], the counts of
//! byte strings (words) built for speed, [`Min`], [`Max`], a column's
//! [`Summary`], and tuples of these.
//!
//! ```
//! use coop::partial::{Dense, Combine};
//!
//! // Two workers' histograms of byte values...
//! let mut a = Dense::<u64>::new(256);
//! let mut b = Dense::<u64>::new(256);
//! for &byte in b"hello" { a.add(byte as usize, 1) }
//! for &byte in b"world" { b.add(byte as usize, 1) }
//! // ...merge bin by bin.
//! a.combine(b);
//! assert_eq!(a[b'l' as usize], 3);
//! assert_eq!(a.iter().sum::<u64>(), 10);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use serde::{Deserialize, Serialize};

mod bytes;
mod dense;
mod keyed;
mod tally;

pub use bytes::ShortBytes;
pub use dense::Dense;
pub use keyed::Keyed;
pub use tally::{Tally, WordRule};

/// How two partials of one kind combine into one: associative and
/// commutative, as [`Job::merge`](crate::Job::merge) must be. A job over
/// records ([`RecordJob`](crate::RecordJob)) whose partial combines need not
/// write its own merge.
///
/// Sums of `f32` and `f64` are commutative but not associative: their last
/// bits depend on how the input was split and which worker ran what (see
/// the README on floating-point reductions). Every other combiner here is
/// exact.
pub trait Combine {
    /// Folds `other` into `self`.
    fn combine(&mut self, other: Self);

    /// Folds a partial that a worker sent, still encoded, into `self`: what a
    /// [`RecordJob`](crate::RecordJob) runs as its
    /// [`Job::merge_encoded`](crate::Job::merge_encoded). The default decodes
    /// `other`, then combines it; a partial that can merge straight from its
    /// bytes ([`Tally`]) overrides it.
    fn combine_encoded<'de, D: serde::Deserializer<'de>>(&mut self, other: D) -> Result<(), D::Error>
    where
        Self: Deserialize<'de> + Sized,
    {
        self.combine(Self::deserialize(other)?);
        Ok(())
    }
}

macro_rules! combine_by_adding {
    ($($number:ty),*) => {$(
        /// Sums.
        impl Combine for $number {
            fn combine(&mut self, other: $number) {
                *self += other;
            }
        }
    )*};
}

combine_by_adding!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);

/// Key by key: a key in both merges its values.
impl<K: Ord, V: Combine> Combine for BTreeMap<K, V> {
    fn combine(&mut self, other: BTreeMap<K, V>) {
        for (key, value) in other {
            match self.entry(key) {
                std::collections::btree_map::Entry::Occupied(mut entry) => entry.get_mut().combine(value),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(value);
                }
            }
        }
    }
}

/// Key by key: a key in both merges its values.
impl<K: Eq + Hash, V: Combine, S: BuildHasher> Combine for HashMap<K, V, S> {
    fn combine(&mut self, other: HashMap<K, V, S>) {
        for (key, value) in other {
            match self.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut entry) => entry.get_mut().combine(value),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(value);
                }
            }
        }
    }
}

macro_rules! combine_each {
    ($(($($name:ident $index:tt),+))*) => {$(
        /// Each with its own.
        impl<$($name: Combine),+> Combine for ($($name,)+) {
            fn combine(&mut self, other: ($($name,)+)) {
                $(self.$index.combine(other.$index);)+
            }
        }
    )*};
}

combine_each! {
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
}

/// The least value seen, if any: a partial that starts empty, without a
/// hand-written "infinity".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Min<T>(pub Option<T>);

/// The greatest value seen, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Max<T>(pub Option<T>);

/// Whether `value` should take the place of `kept` (none yet, or a value
/// that compares with nothing, NaN) given `better`: a value that compares
/// with nothing never replaces one that does, so that the result does not
/// depend on the order values come in (which workers finish first).
fn replaces<T: PartialOrd>(kept: Option<&T>, value: &T, better: std::cmp::Ordering) -> bool {
    let comparable = |x: &T| x.partial_cmp(x).is_some();
    match kept {
        None => true,
        Some(kept) if !comparable(kept) => comparable(value),
        Some(kept) => value.partial_cmp(kept) == Some(better),
    }
}

impl<T: PartialOrd> Min<T> {
    /// Keeps `value` if it is less than the least so far (or the first). A
    /// value that compares with nothing (NaN) is kept only while no other
    /// value is.
    pub fn add(&mut self, value: T) {
        if replaces(self.0.as_ref(), &value, std::cmp::Ordering::Less) {
            self.0 = Some(value);
        }
    }
}

impl<T: PartialOrd> Max<T> {
    /// Keeps `value` if it is greater than the greatest so far (or the
    /// first). A value that compares with nothing (NaN) is kept only while
    /// no other value is.
    pub fn add(&mut self, value: T) {
        if replaces(self.0.as_ref(), &value, std::cmp::Ordering::Greater) {
            self.0 = Some(value);
        }
    }
}

impl<T: PartialOrd> Combine for Min<T> {
    fn combine(&mut self, other: Min<T>) {
        if let Some(value) = other.0 {
            self.add(value);
        }
    }
}

impl<T: PartialOrd> Combine for Max<T> {
    fn combine(&mut self, other: Max<T>) {
        if let Some(value) = other.0 {
            self.add(value);
        }
    }
}

/// Count, sum, least and greatest of the `f64` values seen: what a column's
/// statistics need (the mean is [`mean`](Summary::mean)). Its sum varies in
/// its last bits with the split, as every floating-point sum does; the
/// rest is exact.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// How many values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The least, if any (as [`Min`] keeps it: NaN only if every value is).
    pub min: Option<f64>,
    /// The greatest, if any (as [`Max`] keeps it).
    pub max: Option<f64>,
}

impl Summary {
    /// Counts `value` in.
    pub fn add(&mut self, value: f64) {
        self.combine(Summary {
            count: 1,
            sum: value,
            min: Some(value),
            max: Some(value),
        });
    }

    /// The mean of the values, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

impl Combine for Summary {
    fn combine(&mut self, other: Summary) {
        self.count += other.count;
        self.sum += other.sum;
        for (kept, value, better) in [
            (&mut self.min, other.min, std::cmp::Ordering::Less),
            (&mut self.max, other.max, std::cmp::Ordering::Greater),
        ] {
            if let Some(value) = value.filter(|value| replaces(kept.as_ref(), value, better)) {
                *kept = Some(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    #[test]
    fn maps_merge_key_by_key_and_extremes_keep_theirs() {
        let mut a = BTreeMap::from([("x", 1u64), ("y", 2)]);
        a.combine(BTreeMap::from([("y", 3), ("z", 4)]));
        assert_eq!(a, BTreeMap::from([("x", 1), ("y", 5), ("z", 4)]));
        let mut h: HashMap<u16, (u64, Max<f64>)> = HashMap::new();
        h.combine(HashMap::from([(200, (1, Max(Some(0.5))))]));
        h.combine(HashMap::from([
            (200, (2, Max(Some(0.25)))),
            (404, (1, Max(None))),
        ]));
        assert_eq!(h[&200], (3, Max(Some(0.5))));
        assert_eq!(h[&404], (1, Max(None)));
        let mut least = Min::default();
        for value in [3, 1, 2] {
            least.add(value);
        }
        least.combine(Min(Some(0)));
        least.combine(Min(None));
        assert_eq!(least, Min(Some(0)));
    }

    #[test]
    fn nan_never_wins_whatever_the_order() {
        for values in [[f64::NAN, 1.0, 2.0], [1.0, f64::NAN, 2.0], [2.0, 1.0, f64::NAN]] {
            let (mut least, mut most) = (Min::default(), Max::default());
            for value in values {
                least.add(value);
                most.add(value);
            }
            assert_eq!((least.0, most.0), (Some(1.0), Some(2.0)), "{values:?}");
        }
        let mut a = Min(Some(f64::NAN));
        a.combine(Min(Some(1.0)));
        let mut b = Min(Some(1.0));
        b.combine(Min(Some(f64::NAN)));
        assert_eq!((a.0, b.0), (Some(1.0), Some(1.0)));
        let mut only = Max::default();
        only.add(f64::NAN);
        assert!(only.0.is_some_and(f64::is_nan));
    }

    #[test]
    fn a_summary_splits_and_combines_as_one() {
        let values = [2.5, -1.0, f64::NAN, 4.0, 0.5];
        let mut whole = Summary::default();
        values.iter().for_each(|&v| whole.add(v));
        assert_eq!((whole.count, whole.min, whole.max), (5, Some(-1.0), Some(4.0)));
        assert!(whole.sum.is_nan() && whole.mean().unwrap().is_nan());
        let finite = [2.5, -1.0, 4.0, 0.5];
        let (mut a, mut b) = (Summary::default(), Summary::default());
        finite[..1].iter().for_each(|&v| a.add(v));
        finite[1..].iter().for_each(|&v| b.add(v));
        a.combine(b);
        assert_eq!((a.count, a.sum, a.min, a.max), (4, 6.0, Some(-1.0), Some(4.0)));
        assert_eq!(a.mean(), Some(1.5));
        assert_eq!(Summary::default().mean(), None);
        a.combine(Summary::default());
        assert_eq!(a.count, 4);
    }
}
