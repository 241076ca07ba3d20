//! A [`Tally`]'s wire form, shard by shard, and merging a table from it as
//! it is decoded.

use std::borrow::Cow;
use std::fmt;

use rayon::prelude::*;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

/// One shard's part of a table's wire form: its number of words, then each
/// word's length, bytes and count, numbers in LEB128.
struct Section<'a> {
    index: usize,
    words: usize,
    /// The words.
    bytes: &'a [u8],
}

impl ShardRef<'_> {
    /// Appends this shard in its wire form (see [`Tally`]'s `Serialize`):
    /// the number of words, then each word's length, bytes and count.
    fn encode(self, out: &mut Vec<u8>) {
        // At most 10 bytes for each number, 16 for an inline word.
        out.reserve(10 + self.len * 36);
        put_varint(out, self.len as u64);
        for slot in self.occupied() {
            if slot.is_long() {
                let word = &self.arena[slot.long_range()];
                put_varint(out, word.len() as u64);
                out.extend_from_slice(word);
            } else {
                // All 16 bytes, then cut back to the word: a fixed-size copy
                // is cheaper than a call to copy a few bytes.
                let len = usize::from(slot.key[15]);
                // At most INLINE (15): its LEB128 form is the byte itself.
                out.push(len as u8);
                out.extend_from_slice(&slot.key);
                out.truncate(out.len() - 16 + len);
            }
            put_varint(out, slot.count);
        }
    }
}

impl<'a> Section<'a> {
    /// Reads the number of words of shard `index`'s section.
    fn open(index: usize, mut bytes: &'a [u8]) -> Result<Self, String> {
        let words = take_varint(&mut bytes).map_err(|what| format!("shard {index}: {what}"))?;
        // Every word takes at least two bytes (its length and its count), so a
        // lying word count cannot make a decoder reserve more than the input
        // (and slots are allocated only once every word has been read).
        if words > bytes.len() as u64 / 2 {
            return Err(format!(
                "shard {index}: {words} words cannot fit in {} bytes",
                bytes.len()
            ));
        }
        Ok(Section {
            index,
            words: words as usize,
            bytes,
        })
    }

    /// Calls `each(word, count)` on each word, in order; fails on bytes that
    /// do not parse, after `each` saw the words before them.
    fn parse(&self, mut each: impl FnMut(&'a [u8], u64)) -> Result<(), String> {
        let fail = |what: &str| format!("shard {}: {what}", self.index);
        let mut bytes = self.bytes;
        for _ in 0..self.words {
            let len = take_varint(&mut bytes).map_err(fail)?;
            let Some((word, rest)) = usize::try_from(len)
                .ok()
                .and_then(|len| bytes.split_at_checked(len))
            else {
                return Err(fail("a word runs past the end"));
            };
            bytes = rest;
            each(word, take_varint(&mut bytes).map_err(fail)?);
        }
        if !bytes.is_empty() {
            return Err(fail(&format!("{} bytes after the last word", bytes.len())));
        }
        Ok(())
    }

    /// The hashes of the words whose count is not zero, in order, for
    /// [`add_checked`](Self::add_checked); an error if the bytes do not parse
    /// or a word belongs to another shard.
    fn check(&self) -> Result<Vec<u64>, String> {
        let mut hashes = Vec::with_capacity(self.words);
        let mut misfiled = None;
        self.parse(|word, n| {
            let hash = hash_word(word);
            if shard_of(hash) != self.index {
                misfiled.get_or_insert(shard_of(hash));
            } else if n != 0 {
                hashes.push(hash);
            }
        })?;
        match misfiled {
            Some(shard) => Err(format!("shard {}: holds a word of shard {shard}", self.index)),
            None => Ok(hashes),
        }
    }

    /// Checks and adds every word of the section to `shard`, which has room
    /// for [`words`](Self::words) more words; fails at the first word that
    /// does not parse or belongs to another shard, the words before it added.
    fn add_all(&self, shard: &mut ShardMut<'_>) -> Result<(), String> {
        let mut wrong = None;
        self.parse(|word, n| {
            if wrong.is_some() {
                return;
            }
            let hash = hash_word(word);
            if shard_of(hash) != self.index {
                wrong = Some(format!(
                    "shard {}: holds a word of shard {}",
                    self.index,
                    shard_of(hash)
                ));
            } else if n != 0 && shard.add_hashed(word, hash, n).is_err() {
                // Not with the room made for every word the section declares.
                wrong = Some(format!("shard {}: more words than it declares", self.index));
            }
        })?;
        wrong.map_or(Ok(()), Err)
    }

    /// Adds the words of a section that [`check`](Self::check) passed, with
    /// the hashes it returned, from word `from` on (counting words whose
    /// count is not zero). On [`Full`], the word to go on from once the table
    /// has grown.
    fn add_checked(&self, shard: &mut ShardMut<'_>, hashes: &[u64], from: usize) -> Result<(), usize> {
        let (mut i, mut stopped) = (0, None);
        // Checked: parsing cannot fail, and there is a hash for each word.
        let _ = self.parse(|word, n| {
            if n == 0 || stopped.is_some() {
                return;
            }
            i += 1;
            if i > from
                && let Some(&hash) = hashes.get(i - 1)
                && shard.add_hashed(word, hash, n).is_err()
            {
                stopped = Some(i - 1);
            }
        });
        stopped.map_or(Ok(()), Err)
    }
}

/// Appends `v` in LEB128: 7 bits a byte, low bits first, the high bit set on
/// every byte but the last.
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 `u64` from the front of `bytes` and moves past it.
pub(super) fn take_varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = bytes.split_first() else {
            return Err("truncated");
        };
        *bytes = rest;
        // The tenth byte holds the 64th bit only.
        if shift == 63 && b > 1 {
            return Err("a number over 64 bits");
        }
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("a number over 64 bits")
}

/// A word serialized with `serialize_bytes`.
pub(super) struct BytesRef<'a>(pub(super) &'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Serialized shard by shard, so that a decoder can build the shards in
/// parallel without hashing every word to sort it first: a sequence of
/// byte strings, one per shard (none for an empty table). Shard `k` holds
/// the words whose hash falls in shard `k`: their number, then for each its
/// length, its bytes and its count, numbers in LEB128. The decoder checks
/// every word's shard, so a table from a worker gone wrong is rejected, not
/// misfiled.
impl Serialize for Tally {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encode = |k: usize| {
            let mut section = Vec::new();
            self.shard(k).encode(&mut section);
            section
        };
        // Large tables' shards side by side: a worker's last encoding is on
        // the job's critical path, and by then other cores are often idle.
        let sections: Vec<Vec<u8>> = if self.len() >= PARALLEL_MIN {
            (0..self.lens.len()).into_par_iter().map(encode).collect()
        } else {
            (0..self.lens.len()).map(encode).collect()
        };
        let mut seq = serializer.serialize_seq(Some(sections.len()))?;
        for section in &sections {
            seq.serialize_element(&BytesRef(section))?;
        }
        seq.end()
    }
}

/// One shard's bytes: borrowed from the deserializer's input when it allows
/// it (postcard's `from_bytes` does), else copied.
struct SectionSeed;

impl<'de> DeserializeSeed<'de> for SectionSeed {
    type Value = Cow<'de, [u8]>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for SectionSeed {
    type Value = Cow<'de, [u8]>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }
    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_vec()))
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(Cow::Owned(bytes))
    }
}

/// The byte strings of a table's wire form: none, or one per shard.
fn read_sections<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<Cow<'de, [u8]>>, A::Error> {
    struct Expected;
    impl serde::de::Expected for Expected {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "no byte string or {SHARDS}, one per shard")
        }
    }
    let mut sections = Vec::with_capacity(SHARDS);
    while let Some(section) = seq.next_element_seed(SectionSeed)? {
        if sections.len() == SHARDS {
            return Err(serde::de::Error::invalid_length(SHARDS + 1, &Expected));
        }
        sections.push(section);
    }
    if !sections.is_empty() && sections.len() != SHARDS {
        return Err(serde::de::Error::invalid_length(sections.len(), &Expected));
    }
    Ok(sections)
}

/// Total length of a table's sections.
fn total_len<S: AsRef<[u8]>>(sections: &[S]) -> usize {
    sections.iter().map(|s| s.as_ref().len()).sum()
}

/// Most words a shard may hold over twice the mean of a table's shards.
pub(super) const UNEVEN_SLACK: usize = 1024;

/// The sections of a table's wire form (one per shard), each read through
/// and checked, with the hashes of their words ([`Section::check`]), before
/// anything is allocated for them. A table far more uneven than hashing makes
/// one (a shard with over twice the mean and [`UNEVEN_SLACK`] more) is refused:
/// every shard of a table has as many slots as its largest, so such a table
/// would cost up to 64 times its size.
fn check_sections<S: AsRef<[u8]> + Sync>(
    sections: &[S],
) -> Result<(Vec<Section<'_>>, Vec<Vec<u64>>), String> {
    let opened = open_sections(sections)?;
    let hashes: Vec<Vec<u64>> = if total_len(sections) >= PARALLEL_MIN_BYTES {
        opened.par_iter().map(Section::check).collect::<Result<_, _>>()?
    } else {
        opened.iter().map(Section::check).collect::<Result<_, _>>()?
    };
    Ok((opened, hashes))
}

/// The sections of a table's wire form (one per shard), opened: the number
/// of words each declares is read and checked against its bytes and, before
/// anything is allocated for them, against the others' (see
/// [`check_sections`]).
fn open_sections<S: AsRef<[u8]>>(sections: &[S]) -> Result<Vec<Section<'_>>, String> {
    let opened: Vec<Section<'_>> = (sections.iter().enumerate())
        .map(|(k, s)| Section::open(k, s.as_ref()))
        .collect::<Result<_, _>>()?;
    let words: usize = opened.iter().map(|s| s.words).sum();
    let most = words / SHARDS * 2 + UNEVEN_SLACK;
    if let Some(shard) = opened.iter().find(|s| s.words > most) {
        return Err(format!(
            "shard {}: {} of the table's {words} words, far more than hashing puts in one shard",
            shard.index, shard.words
        ));
    }
    Ok(opened)
}

/// Reads the shards written by `Serialize`, in parallel when they are large.
impl<'de> Deserialize<'de> for Tally {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tally;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a word-count table: {SHARDS} byte strings, or none")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Tally, A::Error> {
                Tally::decode(&read_sections(seq)?).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

impl Tally {
    /// A table made of the sections of its wire form (none, or one per
    /// shard). Each word is parsed, checked and added in one pass, with room
    /// made first for as many words as the sections declare; on an error the
    /// table is dropped. (Adding to a table that holds words already takes a
    /// checking pass first: see [`add_encoded`](Self::add_encoded).)
    pub(super) fn decode<S: AsRef<[u8]> + Sync>(sections: &[S]) -> Result<Tally, String> {
        let mut table = Tally::default();
        if sections.is_empty() {
            return Ok(table);
        }
        let opened = open_sections(sections)?;
        table.reserve(opened.iter().map(|s| s.words).max().unwrap_or(0));
        let add = |(mut shard, section): (ShardMut<'_>, &Section<'_>)| section.add_all(&mut shard);
        if total_len(sections) >= PARALLEL_MIN_BYTES {
            (table.par_shards_mut().zip(&opened)).try_for_each(add)?;
        } else {
            table.shards_mut().zip(&opened).try_for_each(add)?;
        }
        Ok(table)
    }

    /// Adds checked sections (see [`check_sections`]), one per shard.
    fn add_sections(&mut self, sections: &[Section<'_>], hashes: &[Vec<u64>], parallel: bool) {
        self.add_per_shard(parallel, |k, shard, from| {
            sections[k].add_checked(shard, &hashes[k], from)
        });
    }

    /// Adds a table in its serialized form into this one, as it decodes it
    /// ([`Combine::combine_encoded`](crate::partial::Combine::combine_encoded)). On an error, `self` is unchanged: every shard is checked
    /// before any is added. A table whose words are far more uneven across
    /// shards than hashing makes them (over twice the mean and 1,024 more in
    /// one shard) is an error: no worker counting ordinary text sends one.
    pub(super) fn add_encoded<'de, D: Deserializer<'de>>(&mut self, deserializer: D) -> Result<(), D::Error> {
        struct V<'a>(&'a mut Tally);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a word-count table: {SHARDS} byte strings, or none")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
                let sections = read_sections(seq)?;
                let table = self.0;
                if table.is_empty() {
                    *table = Tally::decode(&sections).map_err(serde::de::Error::custom)?;
                    return Ok(());
                }
                if sections.is_empty() {
                    return Ok(());
                }
                let (opened, hashes) = check_sections(&sections).map_err(serde::de::Error::custom)?;
                table.add_sections(&opened, &hashes, total_len(&sections) >= PARALLEL_MIN_BYTES);
                Ok(())
            }
        }
        deserializer.deserialize_seq(V(self))
    }
}
