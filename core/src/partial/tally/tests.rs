use proptest::prelude::*;

use super::wire::{BytesRef, UNEVEN_SLACK, put_varint, take_varint};
use super::*;
use crate::split::{Records, is_space};
use crate::testing::__private::reference_counts;

fn counts(rule: WordRule, text: &[u8]) -> Tally {
    let mut wc = Tally::new();
    wc.add_words(rule, text);
    wc
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<Vec<u8>, u64> {
    pairs.iter().map(|&(w, n)| (w.as_bytes().to_vec(), n)).collect()
}

fn check(rule: WordRule, text: &[u8], expected: &[(&str, u64)]) {
    let expected = map(expected);
    assert_eq!(counts(rule, text).to_btree(), expected, "count {text:?}");
    assert_eq!(reference_counts(rule, text), expected, "reference {text:?}");
}

fn check_raw(rule: WordRule, text: &[u8], expected: &[(&[u8], u64)]) {
    let expected: BTreeMap<Vec<u8>, u64> = expected.iter().map(|&(w, n)| (w.to_vec(), n)).collect();
    assert_eq!(counts(rule, text).to_btree(), expected, "count {text:?}");
    assert_eq!(reference_counts(rule, text), expected, "reference {text:?}");
}

use WordRule::{Alphanumeric, Whitespace};

#[test]
fn ascii_and_case() {
    check(
        Alphanumeric,
        b"The cat and the CAT, tHe end.",
        &[("the", 3), ("cat", 2), ("and", 1), ("end", 1)],
    );
    check(
        Whitespace,
        b"The cat and the CAT, tHe end.",
        &[
            ("The", 1),
            ("cat", 1),
            ("and", 1),
            ("the", 1),
            ("CAT,", 1),
            ("tHe", 1),
            ("end.", 1),
        ],
    );
    check(Alphanumeric, b"", &[]);
    check(Whitespace, b"", &[]);
    check(Alphanumeric, b"  ...  ", &[]);
    check(Whitespace, b" \t\n ", &[]);
}

#[test]
fn digits_underscores_apostrophes() {
    check(
        Alphanumeric,
        b"abc123 123 don't snake_case x1_y2",
        &[
            ("abc123", 1),
            ("123", 1),
            ("don", 1),
            ("t", 1),
            ("snake", 1),
            ("case", 1),
            ("x1", 1),
            ("y2", 1),
        ],
    );
    check(
        Whitespace,
        b"don't snake_case",
        &[("don't", 1), ("snake_case", 1)],
    );
}

#[test]
fn unicode_words() {
    check(
        Alphanumeric,
        "Straße STRASSE straße".as_bytes(),
        &[("straße", 2), ("strasse", 1)],
    );
    // 'İ' lowercases to "i\u{307}" (two chars).
    let w = counts(Alphanumeric, "İstanbul istanbul".as_bytes());
    assert_eq!(w.get("i\u{307}stanbul".as_bytes()), 1);
    assert_eq!(w.get(b"istanbul"), 1);
    check(Alphanumeric, "İstanbul".as_bytes(), &[("i\u{307}stanbul", 1)]);
    // Per-char lowercasing: a final capital sigma gives 'σ', not 'ς'.
    check(Alphanumeric, "ΟΔΟΣ οδοσ".as_bytes(), &[("οδοσ", 2)]);
    check(
        Alphanumeric,
        "中文 中文，日本語".as_bytes(),
        &[("中文", 2), ("日本語", 1)],
    );
    check(Alphanumeric, "café—Café".as_bytes(), &[("café", 2)]);
    // Non-ASCII digits are alphanumeric.
    check(Alphanumeric, "x٣y".as_bytes(), &[("x٣y", 1)]);
}

#[test]
fn invalid_utf8() {
    check(Alphanumeric, b"ab\xffcd", &[("ab", 1), ("cd", 1)]);
    check(Alphanumeric, b"ab\xc3cd", &[("ab", 1), ("cd", 1)]);
    // A valid char is not glued across an invalid byte.
    check(Alphanumeric, "é\u{0}".as_bytes(), &[("é", 1)]);
    check(Alphanumeric, b"\xc3\xa9\xff\xc3\xa9", &[("é", 2)]);
    check(Alphanumeric, b"\xc3\xc3\xa9x", &[("éx", 1)]);
    // Truncated multibyte sequences, at the end and in the middle.
    check(Alphanumeric, b"caf\xc3\xa9 caf\xc3", &[("café", 1), ("caf", 1)]);
    check(Alphanumeric, b"a\xe4\xb8b\xe4\xb8\xad", &[("a", 1), ("b中", 1)]);
    check(Alphanumeric, b"\xf0\x9f", &[]);
    // Surrogates and overlong encodings are invalid.
    check(
        Alphanumeric,
        b"a\xed\xa0\x80b\xc0\xafc",
        &[("a", 1), ("b", 1), ("c", 1)],
    );
    // Whitespace rule keeps raw bytes.
    check_raw(Whitespace, b"ab\xffcd \xc3", &[(b"ab\xffcd", 1), (b"\xc3", 1)]);
}

#[test]
fn nul_bytes() {
    check(Alphanumeric, b"a\0b\0\0a", &[("a", 2), ("b", 1)]);
    check_raw(Whitespace, b"a\0b a", &[(b"a\0b", 1), (b"a", 1)]);
}

#[test]
fn six_whitespace_bytes() {
    let text = b"a b\tc\nd\x0be\x0cf\rg";
    check(
        Whitespace,
        text,
        &[
            ("a", 1),
            ("b", 1),
            ("c", 1),
            ("d", 1),
            ("e", 1),
            ("f", 1),
            ("g", 1),
        ],
    );
    check(
        Alphanumeric,
        text,
        &[
            ("a", 1),
            ("b", 1),
            ("c", 1),
            ("d", 1),
            ("e", 1),
            ("f", 1),
            ("g", 1),
        ],
    );
    assert!(is_space(0x0B) && !0x0Bu8.is_ascii_whitespace());
}

#[test]
fn non_breaking_space() {
    let text = "a\u{a0}b a".as_bytes();
    check(Whitespace, text, &[("a\u{a0}b", 1), ("a", 1)]);
    check(Alphanumeric, text, &[("a", 2), ("b", 1)]);
}

#[test]
fn add_get_total_merge() {
    let mut a = counts(Alphanumeric, b"x y y z z z");
    assert_eq!(a.len(), 3);
    assert_eq!(a.total(), 6);
    assert_eq!(a.get(b"z"), 3);
    assert_eq!(a.get(b"w"), 0);
    a.add(b"w", 5);
    a.add(b"v", 0);
    assert_eq!(a.get(b"w"), 5);
    assert_eq!(a.get(b"v"), 0);
    assert_eq!(a.len(), 4);
    let b = counts(Alphanumeric, b"x q");
    let mut ab = a.clone();
    ab.combine(b.clone());
    let mut ba = b;
    ba.combine(a);
    assert_eq!(ab, ba);
    assert_eq!(ab.get(b"x"), 2);
    assert_eq!(ab.get(b"q"), 1);
    assert_eq!(ab.total(), 13);
}

#[test]
fn sorted_and_top_with_ties() {
    let mut wc = Tally::new();
    for (w, n) in [("d", 2), ("b", 3), ("a", 2), ("c", 3), ("e", 1), ("f", 2)] {
        wc.add(w.as_bytes(), n);
    }
    let expected: Vec<(&[u8], u64)> = vec![(b"b", 3), (b"c", 3), (b"a", 2), (b"d", 2), (b"f", 2), (b"e", 1)];
    assert_eq!(wc.sorted(), expected);
    for k in 0..10 {
        assert_eq!(wc.top(k), expected[..k.min(expected.len())], "k = {k}");
    }
    assert!(Tally::new().top(3).is_empty());
}

#[test]
fn serde_round_trip() {
    let mut wc = counts(Alphanumeric, "hello World, héllo wörld 中文 hello".as_bytes());
    wc.add(b"\xff\x00raw", 7);
    let bytes = postcard::to_allocvec(&wc).unwrap();
    let back: Tally = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, wc);
    // One byte string per shard; "abc" is in its shard's, the others
    // hold no word.
    let single = {
        let mut w = Tally::new();
        w.add(b"abc", 2);
        w
    };
    let home = shard_of(hash_word(b"abc"));
    let mut expected = vec![SHARDS as u8];
    for shard in 0..SHARDS {
        if shard == home {
            expected.extend([6, 1, 3, b'a', b'b', b'c', 2]);
        } else {
            expected.extend([1, 0]);
        }
    }
    assert_eq!(postcard::to_allocvec(&single).unwrap(), expected);
    let json = serde_json::to_string(&wc).unwrap();
    let back: Tally = serde_json::from_str(&json).unwrap();
    assert_eq!(back, wc);
    let empty: Tally = postcard::from_bytes(&postcard::to_allocvec(&Tally::new()).unwrap()).unwrap();
    assert!(empty.is_empty());
}

/// Pieces of the mixed alphabet.
fn mixed_text() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&'static [u8]> = vec![
        b"a",
        b"b",
        b"Z",
        b"Q",
        b"7",
        b" ",
        b" ",
        b"\t",
        b"\n",
        b"\x0b",
        b".",
        b"_",
        b"'",
        "é".as_bytes(),
        "É".as_bytes(),
        "İ".as_bytes(),
        "ß".as_bytes(),
        "Σ".as_bytes(),
        "中".as_bytes(),
        "\u{a0}".as_bytes(),
        "—".as_bytes(),
        b"\xff",
        b"\xc3",
        b"\xe4\xb8",
        b"\xa9",
    ];
    prop::collection::vec(prop::sample::select(pieces), 0..120).prop_map(|v| v.concat())
}

fn any_rule() -> impl Strategy<Value = WordRule> {
    prop_oneof![Just(Alphanumeric), Just(Whitespace)]
}

fn check_split(rule: WordRule, text: &[u8], p: usize) -> Result<(), TestCaseError> {
    let ranges = Records::Whitespace.cut(text, p);
    let mut next = 0;
    for r in &ranges {
        prop_assert_eq!(r.start, next);
        prop_assert!(r.start < r.end);
        next = r.end;
    }
    prop_assert_eq!(next, text.len());
    prop_assert!(ranges.len() <= p.max(1));
    let mut merged = Tally::new();
    for r in ranges {
        let mut part = Tally::new();
        part.add_words(rule, &text[r]);
        merged.combine(part);
    }
    prop_assert_eq!(merged, counts(rule, text));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn count_matches_reference_bytes(
        rule in any_rule(),
        text in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        prop_assert_eq!(counts(rule, &text).to_btree(), reference_counts(rule, &text));
    }

    /// A partial from a worker gone wrong: a sound table's bytes with some
    /// changed. Decoding never panics, and a merge that fails changes
    /// nothing.
    #[test]
    fn corrupted_tables_are_rejected_or_decoded_never_half_merged(
        text in mixed_text(),
        other in mixed_text(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let into = counts(WordRule::Alphanumeric, &text);
        let mut bytes = postcard::to_allocvec(&counts(WordRule::Alphanumeric, &other)).unwrap();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let decoded = postcard::from_bytes::<Tally>(&bytes);
        let mut merged = into.clone();
        let result = merged.combine_encoded(&mut postcard::Deserializer::from_bytes(&bytes));
        match (decoded, result) {
            (Ok(table), Ok(())) => {
                let mut want = into.clone();
                want.combine(table);
                prop_assert_eq!(merged, want);
            }
            (Err(_), Err(_)) => prop_assert_eq!(merged, into),
            (decoded, result) => prop_assert!(false, "decode {:?}, merge {:?}", decoded.is_ok(), result),
        }
    }

    #[test]
    fn count_matches_reference_mixed(rule in any_rule(), text in mixed_text()) {
        prop_assert_eq!(counts(rule, &text).to_btree(), reference_counts(rule, &text));
    }

    #[test]
    fn count_matches_reference_strings(rule in any_rule(), text in any::<String>()) {
        let text = text.into_bytes();
        prop_assert_eq!(counts(rule, &text).to_btree(), reference_counts(rule, &text));
    }

    #[test]
    fn split_then_merge_equals_whole(rule in any_rule(), text in mixed_text(), p in 1usize..16) {
        check_split(rule, &text, p)?;
    }

    #[test]
    fn split_then_merge_equals_whole_bytes(
        rule in any_rule(),
        text in prop::collection::vec(any::<u8>(), 0..300),
        p in 1usize..16,
    ) {
        check_split(rule, &text, p)?;
    }

    #[test]
    fn serde_round_trip_any(text in mixed_text()) {
        let wc = counts(Whitespace, &text);
        let back: Tally = postcard::from_bytes(&postcard::to_allocvec(&wc).unwrap()).unwrap();
        prop_assert_eq!(back, wc);
    }

    #[test]
    fn top_is_prefix_of_sorted(text in mixed_text(), k in 0usize..20) {
        let wc = counts(Alphanumeric, &text);
        let sorted = wc.sorted();
        prop_assert_eq!(wc.top(k), sorted[..k.min(sorted.len())].to_vec());
        prop_assert_eq!(wc.total(), reference_counts(Alphanumeric, &text).values().sum::<u64>());
    }
}

// ---- The table itself, against a BTreeMap model. ----

type Model = BTreeMap<Vec<u8>, u64>;

/// Keys of every kind: empty, short, exactly `INLINE` and `INLINE + 1`
/// bytes, long, with zero bytes and trailing zeros (which zero-padding must
/// not confuse with shorter keys), and non-UTF-8 bytes.
fn any_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0u8, 0xff]), 0..4),
        prop::collection::vec(any::<u8>(), 0..=INLINE),
        prop::collection::vec(prop::sample::select(vec![b'x', 0u8]), INLINE - 1..=INLINE + 2),
        prop::collection::vec(any::<u8>(), INLINE + 1..64),
    ]
}

/// `n` distinct keys of lengths 1 to 40: enough of them force many
/// growths and fill every shard.
fn many_keys(n: usize, salt: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let base = format!("{i:x}-{salt}");
            let len = 1 + (i * 7 + salt as usize) % 40;
            let mut key: Vec<u8> = base.bytes().cycle().take(len.max(base.len())).collect();
            if i % 5 == 0 {
                key.push(0);
            }
            key
        })
        .collect()
}

fn table_of(adds: &[(Vec<u8>, u64)]) -> (Tally, Model) {
    let mut table = Tally::new();
    let mut model = Model::new();
    for (key, n) in adds {
        table.add(key, *n);
        if *n != 0 {
            *model.entry(key.clone()).or_insert(0) += n;
        }
    }
    (table, model)
}

fn check_table(table: &Tally, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(&table.to_btree(), model);
    prop_assert_eq!(table.len(), model.len());
    prop_assert_eq!(table.is_empty(), model.is_empty());
    prop_assert_eq!(table.total(), model.values().sum::<u64>());
    for (key, &n) in model {
        prop_assert_eq!(table.get(key), n, "get {:?}", key);
        let mut longer = key.clone();
        longer.push(0);
        prop_assert_eq!(table.get(&longer), model.get(&longer).copied().unwrap_or(0));
    }
    prop_assert_eq!(table.iter().count(), model.len());
    Ok(())
}

fn round_trips(table: &Tally) -> Result<(), TestCaseError> {
    let bytes = postcard::to_allocvec(table).unwrap();
    let back: Tally = postcard::from_bytes(&bytes).unwrap();
    prop_assert_eq!(&back, table);
    let json = serde_json::to_string(table).unwrap();
    let back: Tally = serde_json::from_str(&json).unwrap();
    prop_assert_eq!(&back, table);
    // A reader: nothing can be borrowed from the input.
    let back: Tally = serde_json::from_reader(json.as_bytes()).unwrap();
    prop_assert_eq!(&back, table);
    Ok(())
}

#[test]
fn growth_and_parallel_paths_match_the_model() {
    // Over PARALLEL_MIN distinct words: parallel merges and decoding.
    let keys = many_keys(3 * PARALLEL_MIN, 1);
    let adds: Vec<(Vec<u8>, u64)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), 1 + i as u64 % 3))
        .collect();
    let (a, model_a) = table_of(&adds);
    check_table(&a, &model_a).unwrap();
    // Half the keys shared, half new, with long ones among both.
    let other = many_keys(3 * PARALLEL_MIN, 2);
    let adds_b: Vec<(Vec<u8>, u64)> = keys[..PARALLEL_MIN * 2]
        .iter()
        .chain(&other[..PARALLEL_MIN * 2])
        .map(|k| (k.clone(), 5))
        .collect();
    let (b, model_b) = table_of(&adds_b);
    let mut model = model_a.clone();
    for (k, n) in &model_b {
        *model.entry(k.clone()).or_insert(0) += n;
    }
    let mut ab = a.clone();
    ab.combine(b.clone());
    check_table(&ab, &model).unwrap();
    let mut ba = b.clone();
    ba.combine(a.clone());
    assert_eq!(ab, ba);
    round_trips(&ab).unwrap();
    let sized = Tally::with_capacity(model.len());
    let mut sized_ab = sized.clone();
    sized_ab.combine(a);
    sized_ab.combine(b);
    assert_eq!(sized_ab, ab);
    // Every shard is used, and evenly: the hash's top bits are mixed.
    let per_shard = ab.lens.clone();
    let mean = ab.len() / SHARDS;
    assert!(
        per_shard.iter().all(|&n| n > mean * 3 / 4 && n < mean * 5 / 4),
        "{per_shard:?}"
    );
}

#[test]
fn shards_that_fill_up_in_a_merge_grow_and_go_on() {
    // `b`'s words are all new to `a`: every shard of `a` fills up in the
    // middle of the merge, the table grows, and each shard goes on where
    // it stopped. One thread, then in parallel, then past 2 MiB of slots
    // (a mapping of its own).
    for size in [2000, 3 * PARALLEL_MIN, 120_000] {
        let adds = |salt, n| {
            many_keys(size, salt)
                .into_iter()
                .map(|k| (k, n))
                .collect::<Vec<_>>()
        };
        let (a, model_a) = table_of(&adds(6, 1));
        let (b, model_b) = table_of(&adds(7, 2));
        let mut model = model_a;
        model.extend(model_b);
        assert_eq!(model.len(), 2 * size, "disjoint keys");
        let mut ab = a.clone();
        ab.combine(b.clone());
        check_table(&ab, &model).unwrap();
        assert!(
            ab.region_len() > a.region_len(),
            "{size}: the merge grew the table"
        );
        let mut encoded = a.clone();
        merge_encoded(&mut encoded, &postcard::to_allocvec(&b).unwrap()).unwrap();
        check_table(&encoded, &model).unwrap();
    }
    let large = Tally::with_capacity(200_000);
    assert!(large.slots.mapping.is_some(), "a mapping of its own");
    assert_eq!(large.slots.as_slice().as_ptr() as usize % HUGE_PAGE, 0);
    assert!(
        large
            .slots
            .as_slice()
            .iter()
            .all(|s| s.count == 0 && s.key == [0; 16])
    );
    assert!(large.is_empty() && large.clone().is_empty());
    let small = Tally::with_capacity(1000);
    assert!(small.slots.mapping.is_none(), "from the allocator");
}

/// The shards' sections of a table holding `pairs` as given: repeats and
/// zero counts included, each word in its own shard.
fn sections_of(pairs: &[(&[u8], u64)]) -> Vec<Vec<u8>> {
    let mut words = [0u64; SHARDS];
    let mut bodies = vec![Vec::new(); SHARDS];
    for &(word, n) in pairs {
        let shard = shard_of(hash_word(word));
        words[shard] += 1;
        put_varint(&mut bodies[shard], word.len() as u64);
        bodies[shard].extend_from_slice(word);
        put_varint(&mut bodies[shard], n);
    }
    (0..SHARDS)
        .map(|shard| {
            let mut section = Vec::new();
            put_varint(&mut section, words[shard]);
            section.extend_from_slice(&bodies[shard]);
            section
        })
        .collect()
}

/// A table's wire form, made of these sections.
fn encode_sections(sections: &[Vec<u8>]) -> Vec<u8> {
    postcard::to_allocvec(&sections.iter().map(|s| BytesRef(s)).collect::<Vec<_>>()).unwrap()
}

/// The wire form of a table holding `pairs` as given.
fn wire(pairs: &[(&[u8], u64)]) -> Vec<u8> {
    encode_sections(&sections_of(pairs))
}

#[test]
fn decoding_sums_repeats_and_drops_zeros() {
    let bytes = wire(&[
        (b"a", 1),
        (b"a", 2),
        (b"zero", 0),
        (&[7; 40], 3),
        (&[7; 40], 4),
        (b"", 1),
    ]);
    let table: Tally = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(
        table.to_btree(),
        map(&[("a", 3), ("", 1)])
            .into_iter()
            .chain([(vec![7; 40], 7)])
            .collect()
    );
    assert!(postcard::from_bytes::<Tally>(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn decoding_rejects_malformed_shards() {
    let sections = |list: &[&[u8]]| {
        postcard::to_allocvec(&list.iter().map(|s| BytesRef(s)).collect::<Vec<_>>()).unwrap()
    };
    let empty: &[u8] = &[0];
    // Not one byte string per shard.
    assert!(postcard::from_bytes::<Tally>(&sections(&[empty; SHARDS - 1])).is_err());
    assert!(postcard::from_bytes::<Tally>(&sections(&[empty; SHARDS + 1])).is_err());
    // postcard keeps no message of its own errors: the messages are those
    // of decoding one shard.
    let decode_shard = |k: usize, bytes: &[u8]| {
        let mut list = vec![empty; SHARDS];
        list[k] = bytes;
        Tally::decode(&list)
    };
    let error = |bytes: &[u8]| decode_shard(0, bytes).unwrap_err();
    // A word count larger than the bytes could hold.
    assert_eq!(error(&[100, 1]), "shard 0: 100 words cannot fit in 1 bytes");
    // A word longer than what is left, and bytes left over.
    assert_eq!(error(&[1, 5, b'a', 1]), "shard 0: a word runs past the end");
    assert_eq!(error(&[0, 9]), "shard 0: 1 bytes after the last word");
    // Numbers: truncated, and over 64 bits.
    assert_eq!(error(&[1, 0, 0x80]), "shard 0: truncated");
    let too_big = [1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
    assert_eq!(error(&too_big), "shard 0: a number over 64 bits");
    // A word filed in a shard other than its own, alone or in a table.
    let word = b"misfiled";
    let home = shard_of(hash_word(word));
    let section = [&[1, word.len() as u8][..], word, &[1]].concat();
    let elsewhere = (home + 1) % SHARDS;
    assert_eq!(
        decode_shard(elsewhere, &section).unwrap_err(),
        format!("shard {elsewhere}: holds a word of shard {home}")
    );
    let mut list = vec![empty; SHARDS];
    list[elsewhere] = &section;
    assert!(postcard::from_bytes::<Tally>(&sections(&list)).is_err());
    list.swap(elsewhere, home);
    let table: Tally = postcard::from_bytes(&sections(&list)).unwrap();
    assert_eq!(table.get(word), 1);
}

/// `into.merge_encoded` of `other`'s postcard bytes.
fn merge_encoded(into: &mut Tally, other: &[u8]) -> postcard::Result<()> {
    into.combine_encoded(&mut postcard::Deserializer::from_bytes(other))
}

#[test]
fn merging_encoded_tables_equals_merging_decoded_ones() {
    // Small (one thread) and large (parallel) tables, into empty and full ones.
    for size in [50, 3 * PARALLEL_MIN] {
        let keys = many_keys(size, 3);
        let (a, _) = table_of(&keys.iter().map(|k| (k.clone(), 2)).collect::<Vec<_>>());
        let (b, _) = table_of(
            &keys[size / 2..]
                .iter()
                .chain(&many_keys(size, 4))
                .map(|k| (k.clone(), 3))
                .collect::<Vec<_>>(),
        );
        let mut want = a.clone();
        want.combine(b.clone());
        let mut got = a.clone();
        merge_encoded(&mut got, &postcard::to_allocvec(&b).unwrap()).unwrap();
        assert_eq!(got, want, "{size} words");
        let mut from_empty = Tally::new();
        merge_encoded(&mut from_empty, &postcard::to_allocvec(&b).unwrap()).unwrap();
        assert_eq!(from_empty, b);
        merge_encoded(&mut from_empty, &postcard::to_allocvec(&Tally::new()).unwrap()).unwrap();
        assert_eq!(from_empty, b);
    }
}

#[test]
fn a_table_that_fails_to_merge_leaves_the_result_unchanged() {
    let keys = many_keys(3 * PARALLEL_MIN, 5);
    let (a, _) = table_of(&keys.iter().map(|k| (k.clone(), 1)).collect::<Vec<_>>());
    // Every shard is sound but the last, which holds a word of another
    // shard: all are checked before any is added.
    let pairs: Vec<(&[u8], u64)> = keys.iter().map(|k| (&k[..], 7)).collect();
    let mut sections = sections_of(&pairs);
    let misfiled: &[u8] = b"misfiled";
    assert_ne!(shard_of(hash_word(misfiled)), SHARDS - 1, "pick another word");
    sections[SHARDS - 1] = [&[1, misfiled.len() as u8][..], misfiled, &[1]].concat();
    let bytes = encode_sections(&sections);
    let mut result = a.clone();
    assert!(merge_encoded(&mut result, &bytes).is_err());
    assert_eq!(result, a);
}

#[test]
fn tables_far_more_uneven_than_hashing_are_refused() {
    // 3,000 words in one shard, none elsewhere: every shard would get the
    // slots of that one. The same word repeated counts as much.
    let home = shard_of(hash_word(b"a"));
    let many: Vec<Vec<u8>> = many_keys(200_000, 9)
        .into_iter()
        .filter(|k| shard_of(hash_word(k)) == home)
        .take(3000)
        .collect();
    assert_eq!(many.len(), 3000);
    let distinct: Vec<(&[u8], u64)> = many.iter().map(|k| (&k[..], 1)).collect();
    let repeated: Vec<(&[u8], u64)> = vec![(b"a", 1); 3000];
    for pairs in [distinct, repeated] {
        let bytes = encode_sections(&sections_of(&pairs));
        let error = postcard::from_bytes::<Tally>(&bytes).unwrap_err();
        assert!(matches!(error, postcard::Error::SerdeDeCustom), "{error:?}");
        let sections = sections_of(&pairs);
        let message = Tally::decode(&sections).unwrap_err();
        assert_eq!(
            message,
            format!("shard {home}: 3000 of the table's 3000 words, far more than hashing puts in one shard")
        );
        let (a, _) = table_of(&[(b"b".to_vec(), 2)]);
        let mut result = a.clone();
        assert!(merge_encoded(&mut result, &bytes).is_err());
        assert_eq!(result, a);
    }
    // Up to twice the mean and the slack is fine.
    let fine: Vec<(&[u8], u64)> = many[..UNEVEN_SLACK].iter().map(|k| (&k[..], 1)).collect();
    let table = Tally::decode(&sections_of(&fine)).unwrap();
    assert_eq!(table.len(), UNEVEN_SLACK);
}

#[test]
fn counts_saturate_instead_of_wrapping() {
    // A worker gone wrong may send any count: the sum stays a count, and
    // the table stays whole.
    let (a, _) = table_of(&[(b"word".to_vec(), 5), (b"other".to_vec(), 1)]);
    let (b, _) = table_of(&[(b"word".to_vec(), u64::MAX)]);
    let mut result = a.clone();
    merge_encoded(&mut result, &postcard::to_allocvec(&b).unwrap()).unwrap();
    assert_eq!(result.get(b"word"), u64::MAX);
    assert_eq!(result.len(), 2);
    round_trips(&result).unwrap();
    let mut merged = a;
    merged.combine(b);
    assert_eq!(merged, result);
}

#[test]
fn varints_round_trip() {
    for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
        let mut bytes = Vec::new();
        put_varint(&mut bytes, v);
        assert_eq!(bytes.len(), (64 - v.leading_zeros() as usize).div_ceil(7).max(1));
        let mut rest = &bytes[..];
        assert_eq!(take_varint(&mut rest), Ok(v));
        assert!(rest.is_empty());
    }
}

#[test]
fn swar_classes_match_the_tables() {
    for b in 0..=255u8 {
        for at in 0..8 {
            // The byte among others of every class.
            for fill in [b'a', b' ', 0x80, b'Z', 0, 0xff] {
                let mut bytes = [fill; 8];
                bytes[at] = b;
                let x = u64::from_le_bytes(bytes);
                let (sep, high, lower) = swar_word(x);
                let space = swar_space(x);
                for (i, &c) in bytes.iter().enumerate() {
                    let bit = |m: u64| m >> (8 * i + 7) & 1 == 1;
                    assert_eq!(bit(space), is_space(c), "{c:#x}");
                    assert_eq!(bit(sep), WORD_CLASS[c as usize] == SEP, "{c:#x}");
                    assert_eq!(bit(high), c >= 0x80, "{c:#x}");
                    if WORD_CLASS[c as usize] & (KEEP | UPPER) != 0 {
                        assert_eq!(lower.to_le_bytes()[i], c.to_ascii_lowercase(), "{c:#x}");
                    }
                    assert_eq!(movemask(space) >> i & 1 == 1, is_space(c));
                }
            }
        }
    }
}

#[test]
fn inline_values_pad_with_zeros_and_hold_the_length() {
    for len in 0..=INLINE {
        let word: Vec<u8> = (0..len as u8)
            .map(|b| b.wrapping_mul(37).wrapping_add(0xC1))
            .collect();
        let mut padded = [0u8; 16];
        padded[..len].copy_from_slice(&word);
        padded[15] = len as u8;
        let expected = u128::from_le_bytes(padded);
        assert_eq!(inline_key(&word), expected, "len {len}");
        // From two words read past the end, as the tokenizers do.
        let mut window = [0xEEu8; 16];
        window[..len].copy_from_slice(&word);
        let (lo, hi) = load16(&window, 0);
        assert_eq!(inline_value(lo, hi, len), expected, "len {len}");
        assert_eq!(hash_word(&word), hash_inline(expected));
    }
}

#[test]
fn debug_lists_words() {
    let mut wc = Tally::new();
    wc.add(b"a\xff", 2);
    assert_eq!(format!("{wc:?}"), r#"{"a\xff": 2}"#);
}

/// Text made of words of 0 to 40 bytes (ASCII of both cases, digits,
/// accented letters, invalid bytes) between separators of both rules: long
/// tokens, tokens across the 16-byte windows and the tail.
fn long_word_text() -> impl Strategy<Value = Vec<u8>> {
    let letters: Vec<&'static [u8]> = vec![b"a", b"q", b"Z", b"7", "é".as_bytes(), "Σ".as_bytes(), b"\xff"];
    let word = prop::collection::vec(prop::sample::select(letters), 0..40).prop_map(|v| v.concat());
    let sep: Vec<&'static [u8]> = vec![b" ", b"  ", b"\n", b", ", b".", b"\x0c", b"   \t\t\r\n    \n    "];
    prop::collection::vec((word, prop::sample::select(sep)), 0..40).prop_map(|v| {
        v.into_iter()
            .flat_map(|(w, s)| w.into_iter().chain(s.iter().copied()))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn table_matches_model(adds in prop::collection::vec((any_key(), 0u64..4), 0..200)) {
        let (table, model) = table_of(&adds);
        check_table(&table, &model)?;
        round_trips(&table)?;
    }

    #[test]
    fn merge_matches_model(
        a in prop::collection::vec((any_key(), 0u64..4), 0..150),
        b in prop::collection::vec((any_key(), 0u64..4), 0..150),
        extra in 0usize..3000,
    ) {
        // Many more keys in one of the two (growth while merging, every
        // shard non-empty on one side only or on both).
        let mut b = b;
        b.extend(many_keys(extra, 3).into_iter().map(|k| (k, 1)));
        let (ta, ma) = table_of(&a);
        let (tb, mb) = table_of(&b);
        let mut model = ma;
        for (k, n) in mb {
            *model.entry(k).or_insert(0) += n;
        }
        let mut ab = ta.clone();
        ab.combine(tb.clone());
        check_table(&ab, &model)?;
        let mut ba = tb;
        ba.combine(ta);
        prop_assert_eq!(&ba, &ab);
        let mut empty = Tally::new();
        empty.combine(ab.clone());
        prop_assert_eq!(&empty, &ab);
        round_trips(&ab)?;
    }

    #[test]
    fn long_words_match_reference(rule in any_rule(), text in long_word_text(), p in 1usize..6) {
        prop_assert_eq!(counts(rule, &text).to_btree(), reference_counts(rule, &text));
        check_split(rule, &text, p)?;
    }
}
