//! [`Keyed`]: values combined per key (reduce by key), in shards by hash.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

use rayon::prelude::*;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Combine;

/// Number of shards: enough for every core of a large machine to merge its
/// own share, few enough that a small table stays small.
const SHARDS: usize = 64;

/// Keys past which two tables merge shard by shard on every core, rather
/// than in the calling thread.
const PARALLEL_FROM: usize = 1 << 14;

/// One shard: each key with its value, found by the key's hash.
type Shard<K, V> = HashTable<(K, V)>;

/// A reduce-by-key partial: for each key, its values [combined](Combine)
/// (counts add up, [`Min`](super::Min) keeps the least, ...). Keys are any
/// hashable type: byte strings (`Vec<u8>`, `Box<[u8]>`), integers, the
/// user's own.
///
/// The table is cut into shards by the keys' hash, so that two tables
/// merge shard by shard, on every core when they are large (rayon's global
/// thread pool, one thread per core of the coordinator's machine): what the
/// coordinator does with each worker's partial. Keys are hashed with FxHash,
/// fast and unseeded: input chosen to collide slows a table down, as it
/// would a `HashMap` with that hasher.
///
/// ```
/// use coop::partial::{Combine, Keyed};
///
/// let mut a = Keyed::new();
/// a.add(b"GET".to_vec(), 2u64);
/// let mut b = Keyed::new();
/// b.add(b"GET".to_vec(), 1);
/// b.add(b"POST".to_vec(), 1);
/// a.combine(b);
/// assert_eq!(a.get(&b"GET"[..]), Some(&3));
/// assert_eq!(a.len(), 2);
///
/// // Folding the words of a text: a word seen before allocates nothing.
/// let mut words: Keyed<Vec<u8>, u64> = Keyed::new();
/// for word in b"to be or not to be".split(|&b| b == b' ') {
///     words.add_ref(word, 1);
/// }
/// assert_eq!(words.get(&b"be"[..]), Some(&2));
/// ```
#[derive(Clone)]
pub struct Keyed<K, V> {
    /// Each key hashed once ([`hash_of`]): the hash picks the shard and
    /// the bucket in it.
    shards: Vec<Shard<K, V>>,
}

/// As a map of its keys and values.
impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Keyed<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Keyed {
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
        }
    }
}

/// A key's hash. A key and what it borrows as hash alike (`Borrow`'s
/// contract), so both find one shard and one bucket.
fn hash_of<Q: Hash + ?Sized>(key: &Q) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// The shard of a hash: the top bits of the hash mixed once more, so that
/// the keys of one shard still spread over its table's buckets (which the
/// hash's low bits pick).
fn shard_of(hash: u64) -> usize {
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros())) as usize
}

impl<K, V> Keyed<K, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashTable::is_empty)
    }

    /// Every key and its value, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flatten().map(|(key, value)| (key, value))
    }
}

impl<K: Hash + Eq, V> Keyed<K, V> {
    /// The value of `key` (or of what borrows as it), if it has one.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(key);
        let shard = &self.shards[shard_of(hash)];
        shard
            .find(hash, |(mine, _)| mine.borrow() == key)
            .map(|(_, value)| value)
    }

    /// The value of `key`, made with `empty` if it has none: to fold into in
    /// place, where [`add`](Keyed::add) would build a value to combine.
    pub fn get_or_insert_with(&mut self, key: K, empty: impl FnOnce() -> V) -> &mut V {
        let hash = hash_of(&key);
        let shard = &mut self.shards[shard_of(hash)];
        let entry = shard.entry(hash, |(mine, _)| *mine == key, |(key, _)| hash_of(key));
        &mut entry.or_insert_with(|| (key, empty())).into_mut().1
    }

    /// Every key and its value, sorted by key.
    pub fn into_sorted_vec(self) -> Vec<(K, V)>
    where
        K: Ord,
    {
        let mut all: Vec<(K, V)> = self.into_iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl<K: Hash + Eq, V: Combine> Keyed<K, V> {
    /// Combines `value` into the key's value, or makes it the key's value.
    pub fn add(&mut self, key: K, value: V) {
        let hash = hash_of(&key);
        let shard = &mut self.shards[shard_of(hash)];
        match shard.find_mut(hash, |(mine, _)| *mine == key) {
            Some((_, into)) => into.combine(value),
            None => {
                shard.insert_unique(hash, (key, value), |(key, _)| hash_of(key));
            }
        }
    }

    /// Combines `value` into the value of the key `key` borrows as (a word
    /// of a text as `&[u8]` for `Vec<u8>` or [`ShortBytes`](super::ShortBytes)
    /// keys): the key is made only if it is new, so a key seen before costs
    /// no allocation.
    pub fn add_ref<Q>(&mut self, key: &Q, value: V)
    where
        K: Borrow<Q> + for<'q> From<&'q Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(key);
        let shard = &mut self.shards[shard_of(hash)];
        match shard.find_mut(hash, |(mine, _)| mine.borrow() == key) {
            Some((_, into)) => into.combine(value),
            None => {
                shard.insert_unique(hash, (K::from(key), value), |(key, _)| hash_of(key));
            }
        }
    }
}

impl<K, V> IntoIterator for Keyed<K, V> {
    type Item = (K, V);
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<HashTable<(K, V)>>>;

    /// Every key and its value, in no order.
    fn into_iter(self) -> Self::IntoIter {
        self.shards.into_iter().flatten()
    }
}

impl<'a, K, V> IntoIterator for &'a Keyed<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    /// Every key and its value, in no order.
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Each pair [added](Keyed::add).
impl<K: Hash + Eq, V: Combine> Extend<(K, V)> for Keyed<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, pairs: I) {
        for (key, value) in pairs {
            self.add(key, value);
        }
    }
}

impl<K: Hash + Eq, V: Combine> FromIterator<(K, V)> for Keyed<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut table = Keyed::new();
        for (key, value) in pairs {
            table.add(key, value);
        }
        table
    }
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for Keyed<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.shards.len() == other.shards.len()
            && self.shards.iter().zip(&other.shards).all(|(mine, theirs)| {
                mine.len() == theirs.len()
                    && mine.iter().all(|(key, value)| {
                        let found = theirs.find(hash_of(key), |(other, _)| other == key);
                        found.is_some_and(|(_, other)| other == value)
                    })
            })
    }
}

/// Shard by shard, on every core when the tables are large.
impl<K: Hash + Eq + Send, V: Combine + Send> Combine for Keyed<K, V> {
    fn combine(&mut self, other: Keyed<K, V>) {
        let merge = |(into, from): (&mut Shard<K, V>, Shard<K, V>)| {
            // The larger of the two takes the other's keys.
            let (mut into_table, from) = match into.len() < from.len() {
                true => (from, std::mem::take(into)),
                false => (std::mem::take(into), from),
            };
            for (key, value) in from {
                let hash = hash_of(&key);
                match into_table.find_mut(hash, |(mine, _)| *mine == key) {
                    Some((_, mine)) => mine.combine(value),
                    None => {
                        into_table.insert_unique(hash, (key, value), |(key, _)| hash_of(key));
                    }
                }
            }
            *into = into_table;
        };
        let large = self.len().max(other.len()) >= PARALLEL_FROM;
        let pairs = self.shards.iter_mut().zip(other.shards);
        if large {
            pairs.collect::<Vec<_>>().into_par_iter().for_each(merge);
        } else {
            pairs.for_each(merge);
        }
    }
}

/// As a sequence of (key, value) pairs; decoded keys find their own shard,
/// so a table decodes alike in any process.
impl<K: Serialize, V: Serialize> Serialize for Keyed<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length first: postcard needs it.
        let mut seq = serializer.serialize_seq(Some(self.shards.iter().map(HashTable::len).sum()))?;
        for (key, value) in self.shards.iter().flatten() {
            let pair = (key, value);
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

/// Straight into the table, each key into its own shard; a key met twice
/// in one encoded table is refused (no table makes that).
impl<'de, K, V> Deserialize<'de> for Keyed<K, V>
where
    K: Deserialize<'de> + Hash + Eq,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs<K, V>(std::marker::PhantomData<(K, V)>);

        impl<'de, K, V> serde::de::Visitor<'de> for Pairs<K, V>
        where
            K: Deserialize<'de> + Hash + Eq,
            V: Deserialize<'de>,
        {
            type Value = Keyed<K, V>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of (key, value) pairs")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut pairs: A) -> Result<Keyed<K, V>, A::Error> {
                let mut table = Keyed::new();
                while let Some((key, value)) = pairs.next_element::<(K, V)>()? {
                    let hash = hash_of(&key);
                    let shard = &mut table.shards[shard_of(hash)];
                    if shard.find(hash, |(mine, _)| *mine == key).is_some() {
                        return Err(serde::de::Error::custom("a key appears twice"));
                    }
                    shard.insert_unique(hash, (key, value), |(key, _)| hash_of(key));
                }
                Ok(table)
            }
        }

        deserializer.deserialize_seq(Pairs(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::partial::Max;

    #[test]
    fn keys_sharing_their_low_bits_spread_over_the_shards() {
        // Integers that share their low bits still land in every shard.
        let mut seen = [0usize; SHARDS];
        for key in (0u64..100_000).map(|i| i << 20) {
            seen[shard_of(hash_of(&key))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 100_000 / SHARDS / 2), "{seen:?}");
    }

    #[test]
    fn a_key_twice_in_an_encoded_table_is_refused() {
        let bytes = postcard::to_allocvec(&vec![(1u32, 1u64), (1, 2)]).unwrap();
        assert!(postcard::from_bytes::<Keyed<u32, u64>>(&bytes).is_err());
    }

    #[test]
    fn large_tables_merge_shard_by_shard_alike() {
        let a: Keyed<u64, u64> = (0..50_000).map(|k| (k, 1)).collect();
        let b: Keyed<u64, u64> = (25_000..75_000).map(|k| (k, 2)).collect();
        let mut merged = a.clone();
        merged.combine(b.clone());
        assert_eq!(merged.len(), 75_000);
        assert_eq!(merged.get(&30_000), Some(&3));
        assert_eq!(merged.get(&70_000), Some(&2));
        assert_eq!(merged.get(&75_000), None);
        let mut other_way = b;
        other_way.combine(a);
        assert_eq!(other_way, merged);
    }

    proptest! {
        /// However pairs are cut into tables, combined, encoded and decoded,
        /// the result is what one map of every pair gives.
        #[test]
        fn tables_combine_as_one_map(
            pairs in prop::collection::vec((0u8..40, 0u32..1000), 0..300),
            cut in 0usize..300,
        ) {
            let cut = cut.min(pairs.len());
            let mut expected: BTreeMap<u8, (u64, Max<u32>)> = BTreeMap::new();
            for &(key, value) in &pairs {
                let entry = expected.entry(key).or_default();
                entry.0 += 1;
                entry.1.add(value);
            }
            let table = |pairs: &[(u8, u32)]| -> Keyed<u8, (u64, Max<u32>)> {
                pairs.iter().map(|&(k, v)| (k, (1, Max(Some(v))))).collect()
            };
            let mut a = table(&pairs[..cut]);
            let b = table(&pairs[cut..]);
            let b: Keyed<u8, (u64, Max<u32>)> = postcard::from_bytes(&postcard::to_allocvec(&b).unwrap()).unwrap();
            a.combine(b);
            prop_assert_eq!(a.into_sorted_vec(), expected.into_iter().collect::<Vec<_>>());
        }
    }
}
