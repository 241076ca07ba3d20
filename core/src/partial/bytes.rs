//! [`ShortBytes`]: a byte-string key that holds short strings inline.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest string held inline: the size of a `Box<[u8]>` and a length byte,
/// rounded to 24 bytes in all.
const INLINE: usize = 22;

/// A byte string that holds up to 22 bytes inline and longer ones on the
/// heap: a [`Keyed`](super::Keyed) key for words, status lines, names, with
/// no allocation for a short one. It borrows as `[u8]`, so a table of them
/// is searched with a `&[u8]` ([`Keyed::add_ref`](super::Keyed::add_ref)),
/// and compares, hashes and travels as its bytes.
///
/// ```
/// use coop::partial::{Keyed, ShortBytes};
///
/// let mut words: Keyed<ShortBytes, u64> = Keyed::new();
/// for word in b"the cat saw the other cat".split(|&b| b == b' ') {
///     words.add_ref(word, 1);
/// }
/// assert_eq!(words.get(&b"cat"[..]), Some(&2));
/// ```
#[derive(Clone)]
pub struct ShortBytes(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl ShortBytes {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(bytes) => bytes,
        }
    }
}

impl From<&[u8]> for ShortBytes {
    fn from(bytes: &[u8]) -> Self {
        ShortBytes(match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                Repr::Inline { len, bytes: inline }
            }
            _ => Repr::Heap(bytes.into()),
        })
    }
}

impl Borrow<[u8]> for ShortBytes {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for ShortBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// As `[u8]` hashes: `Borrow` asks for it.
impl Hash for ShortBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for ShortBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShortBytes {}

impl PartialOrd for ShortBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// As a byte string literal: `b"cat\n"`.
impl std::fmt::Debug for ShortBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.as_bytes().escape_ascii())
    }
}

/// The empty string.
impl Default for ShortBytes {
    fn default() -> Self {
        ShortBytes::from(&[][..])
    }
}

impl std::ops::Deref for ShortBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<&str> for ShortBytes {
    fn from(text: &str) -> Self {
        ShortBytes::from(text.as_bytes())
    }
}

/// Keeps the vector's allocation when the bytes do not fit inline.
impl From<Vec<u8>> for ShortBytes {
    fn from(bytes: Vec<u8>) -> Self {
        match bytes.len() <= INLINE {
            true => ShortBytes::from(&bytes[..]),
            false => ShortBytes(Repr::Heap(bytes.into_boxed_slice())),
        }
    }
}

impl Serialize for ShortBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for ShortBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ShortBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<ShortBytes, E> {
                Ok(ShortBytes::from(bytes))
            }

            fn visit_str<E>(self, text: &str) -> Result<ShortBytes, E> {
                Ok(ShortBytes::from(text))
            }

            /// Formats without a byte form (JSON) write bytes as numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ShortBytes, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(ShortBytes::from(bytes))
            }
        }

        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use rustc_hash::FxBuildHasher;

    use super::*;

    #[test]
    fn short_and_long_strings_behave_as_their_bytes() {
        for text in [&b""[..], b"a", &[7; INLINE], &[8; INLINE + 1], &[0xff; 300]] {
            let key = ShortBytes::from(text);
            assert_eq!(key.as_bytes(), text);
            assert_eq!(FxBuildHasher.hash_one(&key), FxBuildHasher.hash_one(text));
            let bytes = postcard::to_allocvec(&key).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&serde_bytes_of(text)).unwrap());
            assert_eq!(postcard::from_bytes::<ShortBytes>(&bytes).unwrap(), key);
        }
        assert!(matches!(
            ShortBytes::from(&[1; INLINE][..]).0,
            Repr::Inline { .. }
        ));
        assert!(matches!(ShortBytes::from(&[1; INLINE + 1][..]).0, Repr::Heap(_)));
        assert!(ShortBytes::from(&b"ab"[..]) < ShortBytes::from(&[b'b'; 40][..]));
        assert_eq!(format!("{:?}", ShortBytes::from("a\n")), r#"b"a\n""#);
        assert_eq!(ShortBytes::from(vec![9; 30]).as_bytes(), &[9; 30]);
        assert!(ShortBytes::default().is_empty());
        // A format without bytes (JSON) hands them over as a sequence.
        use serde::de::IntoDeserializer;
        let seq: serde::de::value::SeqDeserializer<_, serde::de::value::Error> =
            b"seq".to_vec().into_deserializer();
        assert_eq!(ShortBytes::deserialize(seq).unwrap().as_bytes(), b"seq");
    }

    /// Bytes as serde's byte form, as a `Vec<u8>` key would not travel.
    fn serde_bytes_of(bytes: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        Bytes(bytes)
    }
}
