//! A deterministic synthetic text corpus for benchmarks: a Zipf-distributed
//! vocabulary of realistic size (English-like words, some Unicode, mixed case)
//! with punctuation and line breaks. Generated in parallel, identical for the
//! same size and seed whatever the thread count.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use rustc_hash::FxHashSet;

/// Distinct words in the default vocabulary: about what 400 MB of real English
/// text holds (668,163 distinct whitespace tokens were measured on such a corpus).
pub const DEFAULT_VOCABULARY: usize = 600_000;

/// Bytes generated per independently seeded chunk.
const CHUNK: usize = 1 << 20;

/// Letters weighted by their frequency in English text (per mille, roughly).
const LETTERS: &[(u8, u32)] = &[
    (b'e', 127),
    (b't', 91),
    (b'a', 82),
    (b'o', 75),
    (b'i', 70),
    (b'n', 67),
    (b's', 63),
    (b'h', 61),
    (b'r', 60),
    (b'd', 43),
    (b'l', 40),
    (b'c', 28),
    (b'u', 28),
    (b'm', 24),
    (b'w', 24),
    (b'f', 22),
    (b'g', 20),
    (b'y', 20),
    (b'p', 19),
    (b'b', 15),
    (b'v', 10),
    (b'k', 8),
    (b'j', 2),
    (b'x', 2),
    (b'q', 1),
    (b'z', 1),
];

/// Non-ASCII letters mixed into some words (accents, German, Nordic).
const ACCENTED: &[&str] = &["é", "è", "ü", "ö", "ä", "ñ", "ç", "ß", "ø", "å", "í", "ó"];

/// Whole words from other scripts, for a small share of the vocabulary.
const SCRIPTS: &[&[&str]] = &[
    &["д", "о", "м", "с", "л", "в", "к", "а", "и", "р"],
    &["α", "β", "γ", "δ", "λ", "μ", "ο", "ς", "τ", "ω"],
    &["中", "文", "字", "本", "日", "語", "学", "生", "人", "大"],
];

/// A Zipf(1) distribution over word ranks, sampled in O(1) (Vose's alias method).
struct Zipf {
    probability: Vec<f64>,
    alias: Vec<u32>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let weights: Vec<f64> = (1..=n).map(|rank| 1.0 / rank as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias = vec![0u32; n];
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        for i in small.into_iter().chain(large) {
            scaled[i] = 1.0;
        }
        Zipf {
            probability: scaled,
            alias,
        }
    }

    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> usize {
        let i = rng.random_range(0..self.probability.len());
        if rng.random::<f64>() < self.probability[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

fn letter(rng: &mut Xoshiro256PlusPlus) -> u8 {
    let total: u32 = LETTERS.iter().map(|&(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for &(letter, weight) in LETTERS {
        if pick < weight {
            return letter;
        }
        pick -= weight;
    }
    b'e'
}

/// `size` distinct words, most frequent first: short words are common.
fn vocabulary(size: usize, seed: u64) -> Vec<String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut seen = FxHashSet::default();
    let mut words = Vec::with_capacity(size);
    while words.len() < size {
        let rank = words.len() + 1;
        // Frequent words are short (the, of, and), rare ones longer.
        let typical = 2.0 + (rank as f64).log10() * 1.4;
        let len = (typical + rng.random_range(-2.0..3.0)).clamp(1.0, 18.0) as usize;
        let word = match rng.random_range(0..100) {
            0 => {
                let script = SCRIPTS[rng.random_range(0..SCRIPTS.len())];
                (0..len.div_ceil(2))
                    .map(|_| script[rng.random_range(0..script.len())])
                    .collect::<String>()
            }
            1..=3 => {
                let mut word: String = (0..len).map(|_| letter(&mut rng) as char).collect();
                let at = rng.random_range(0..word.len());
                word.replace_range(at..at + 1, ACCENTED[rng.random_range(0..ACCENTED.len())]);
                word
            }
            _ => (0..len).map(|_| letter(&mut rng) as char).collect(),
        };
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// About `bytes` bytes of text (whole words: a few bytes more at most) drawn
/// from a Zipf-distributed vocabulary of `vocabulary` words.
pub fn generate(bytes: usize, vocabulary_size: usize, seed: u64) -> Vec<u8> {
    let words = vocabulary(vocabulary_size.max(1), seed);
    let zipf = Zipf::new(words.len());
    let chunks = bytes.div_ceil(CHUNK);
    let parts: Vec<Vec<u8>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let want = CHUNK.min(bytes - chunk * CHUNK);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(
                seed ^ (chunk as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            let mut text = Vec::with_capacity(want + 64);
            let mut sentence_start = true;
            while text.len() < want {
                let word = words[zipf.sample(&mut rng)].as_bytes();
                match rng.random_range(0..100) {
                    0 => text.extend(word.iter().map(u8::to_ascii_uppercase)),
                    _ if sentence_start && word[0].is_ascii_lowercase() => {
                        text.push(word[0].to_ascii_uppercase());
                        text.extend_from_slice(&word[1..]);
                    }
                    _ => text.extend_from_slice(word),
                }
                sentence_start = false;
                match rng.random_range(0..100) {
                    0..=5 => text.extend_from_slice(b", "),
                    6..=9 => {
                        text.extend_from_slice(if rng.random_range(0..8) == 0 {
                            b".\n"
                        } else {
                            b". "
                        });
                        sentence_start = true;
                    }
                    10 => text.extend_from_slice("\u{2014}".as_bytes()),
                    11 => text.extend_from_slice(b"'s "),
                    _ => text.push(b' '),
                }
            }
            text
        })
        .collect();
    parts.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use coop::partial::{Tally, WordRule};

    #[test]
    fn same_seed_same_text_different_seed_different_text() {
        let a = generate(300_000, 5_000, 7);
        assert_eq!(a, generate(300_000, 5_000, 7));
        assert_ne!(a, generate(300_000, 5_000, 8));
        assert!(a.len() >= 300_000 && a.len() < 300_000 + 64 * 3);
    }

    #[test]
    fn text_is_utf8_with_zipf_like_counts() {
        let text = generate(2_000_000, 50_000, 1);
        assert!(std::str::from_utf8(&text).is_ok());
        let mut counts = Tally::new();
        counts.add_words(WordRule::Alphanumeric, &text);
        let top = counts.top(10);
        // Zipf(1): the most frequent word is about twice as frequent as the second.
        let ratio = top[0].1 as f64 / top[1].1 as f64;
        assert!((1.5..2.7).contains(&ratio), "ratio {ratio}");
        assert!(counts.len() > 20_000, "{} distinct", counts.len());
        assert!(
            counts.sorted().iter().any(|(w, _)| !w.is_ascii()),
            "some Unicode words"
        );
    }

    #[test]
    fn alias_table_matches_weights() {
        let zipf = Zipf::new(4);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut hits = [0u32; 4];
        for _ in 0..200_000 {
            hits[zipf.sample(&mut rng)] += 1;
        }
        // Weights 1, 1/2, 1/3, 1/4 over 25/12.
        let expected = [0.48, 0.24, 0.16, 0.12];
        for (h, e) in hits.iter().zip(expected) {
            assert!((*h as f64 / 200_000.0 - e).abs() < 0.01, "{hits:?}");
        }
    }
}
