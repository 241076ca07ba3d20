//! The library's parts on every engine, against plain computations: record
//! splitting (`coop::split`: lines, delimited records, words and fixed-size
//! records; empty inputs and segments, a last record without its
//! terminator, records longer than a task), the short form of a job
//! (`RecordJob`), and partials (`coop::partial`: arrays, maps, keyed tables,
//! extremes, a partial sized from the job's parameters).

use std::collections::BTreeMap;

use coop::partial::{Summary, Tally, WordRule};
use coop::prelude::*;
use coop::split::Records;
use coop::{AnyEngine, EngineKind, Ipc, JobStats};
use coop_examples::wordcount::WordCount;
use coop_tests::{ByteHistogram, ColumnSummary, LineLengths, RecordTally, WordTally, WordsOneByOne};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    coop_tests::init();
    let tests = vec![
        Trial::test(
            "records_are_counted_alike_on_every_engine",
            records_are_counted_alike_on_every_engine,
        ),
        Trial::test(
            "over_messages_a_span_task_copies_only_its_bytes",
            over_messages_a_span_task_copies_only_its_bytes,
        ),
        Trial::test(
            "a_histogram_adds_up_bin_by_bin_on_every_engine",
            a_histogram_adds_up_bin_by_bin_on_every_engine,
        ),
        Trial::test(
            "a_partial_sized_from_the_job_is_that_size_on_every_engine",
            a_partial_sized_from_the_job_is_that_size_on_every_engine,
        ),
        Trial::test(
            "a_keyed_table_reduces_by_key_on_every_engine",
            a_keyed_table_reduces_by_key_on_every_engine,
        ),
        Trial::test(
            "a_tally_counts_alike_word_by_word_and_span_by_span_on_every_engine",
            a_tally_counts_alike_word_by_word_and_span_by_span_on_every_engine,
        ),
        Trial::test(
            "a_summary_of_a_column_is_exact_on_every_engine",
            a_summary_of_a_column_is_exact_on_every_engine,
        ),
        Trial::test(
            "a_partial_fixed_record_is_refused_on_every_engine",
            a_partial_fixed_record_is_refused,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), tests).exit();
}

/// Each record of `segment`, the plain way (no splitting).
fn plain(records: Records, segment: &[u8]) -> Vec<Vec<u8>> {
    let is_space = |b: &u8| b" \t\n\x0b\x0c\r".contains(b);
    let terminated = |end: u8| {
        let mut all: Vec<Vec<u8>> = segment.split(|&b| b == end).map(<[u8]>::to_vec).collect();
        // What follows the last terminator is a record only if not empty.
        if all.last().is_some_and(Vec::is_empty) {
            all.pop();
        }
        all
    };
    match records {
        Records::Lines => terminated(b'\n'),
        Records::Delimited(end) => terminated(end),
        Records::Whitespace => segment
            .split(is_space)
            .filter(|word| !word.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
        Records::Fixed(size) => segment.chunks(size).map(<[u8]>::to_vec).collect(),
        other => unreachable!("{other:?} is not tested here"),
    }
}

fn tally(records: Records, segments: &[Vec<u8>]) -> BTreeMap<Vec<u8>, u64> {
    let mut tally = BTreeMap::new();
    for segment in segments {
        for record in plain(records, segment) {
            *tally.entry(record).or_default() += 1;
        }
    }
    tally
}

/// Inputs that stress the cuts: empty, no terminator at the end, empty
/// segments, empty records, a record far longer than a task, many segments.
fn inputs() -> Vec<Vec<Vec<u8>>> {
    let long: Vec<u8> = [vec![b'x'; 300_000], b"\ny,z\n".to_vec()].concat();
    let mut log = Vec::new();
    for i in 0..20_000u32 {
        let code = [200, 404, 500, 301][(i % 7 % 4) as usize];
        log.extend_from_slice(format!("10.0.0.{} GET /p{} {code}\n", i % 13, i % 101).as_bytes());
    }
    vec![
        vec![],
        vec![Vec::new(), Vec::new()],
        vec![b"one\ntwo\nthree".to_vec()],
        vec![b"a\n\n\nb\n".to_vec(), Vec::new(), b"c,d e\tf".to_vec()],
        vec![long],
        vec![log.clone(), log[..log.len() / 3 + 5].to_vec()],
        (0..40)
            .map(|i| format!("s{i} w\nx,{i}\n").repeat(i).into_bytes())
            .collect(),
    ]
}

/// Every engine this machine has, by name.
fn engines() -> Result<Vec<(&'static str, AnyEngine)>, Failed> {
    let start = |kind, ipc| AnyEngine::builder(kind).workers(2).ipc(ipc).build();
    Ok(vec![
        ("sequential", start(EngineKind::Sequential, Ipc::SharedMemory)?),
        ("threads", start(EngineKind::Threads, Ipc::SharedMemory)?),
        ("processes", start(EngineKind::Processes, Ipc::SharedMemory)?),
        ("processes/messages", start(EngineKind::Processes, Ipc::Messages)?),
    ])
}

fn records_are_counted_alike_on_every_engine() -> Result<(), Failed> {
    let engines = engines()?;
    for segments in inputs() {
        let mut input = Input::new();
        for segment in &segments {
            input.push_bytes(segment);
        }
        for records in [Records::Lines, Records::Delimited(b','), Records::Whitespace] {
            let expected = tally(records, &segments);
            for (name, engine) in &engines {
                let got = engine.run(&RecordTally { records }, &input)?;
                if got != expected {
                    return Err(format!(
                        "{records:?} on {name}, segments of {:?} bytes: {} distinct records, {} expected",
                        segments.iter().map(Vec::len).collect::<Vec<_>>(),
                        got.len(),
                        expected.len()
                    )
                    .into());
                }
            }
        }
    }
    // Fixed-size records: rows of 3 bytes.
    let rows: Vec<u8> = (0..3 * 5_000u32).map(|i| (i % 3 + i / 3 % 11) as u8).collect();
    let mut input = Input::new();
    input.push_bytes(&rows);
    input.push_bytes(&[]);
    input.push_bytes(&rows[..30]);
    let expected = tally(
        Records::Fixed(3),
        &[rows.clone(), Vec::new(), rows[..30].to_vec()],
    );
    for (name, engine) in &engines {
        let got = engine.run(
            &RecordTally {
                records: Records::Fixed(3),
            },
            &input,
        )?;
        assert_eq!(got, expected, "fixed records on {name}");
    }
    Ok(())
}

fn over_messages_a_span_task_copies_only_its_bytes() -> Result<(), Failed> {
    let pool = Pool::builder().workers(2).ipc(Ipc::Messages).build()?;
    let text = "a line of a log\n".repeat(200_000).into_bytes();
    let mut input = Input::new();
    input.push_bytes(&text);
    input.push_bytes(&text);
    let mut stats = JobStats::default();
    let job = RecordTally {
        records: Records::Lines,
    };
    let tally = Run::new(&job, &input).stats(&mut stats).on(&pool)?;
    assert_eq!(tally.get(&b"a line of a log"[..]), Some(&400_000));
    assert!(stats.tasks > 4, "{} tasks", stats.tasks);
    // Every byte once, plus the job and its tasks: without the span's own
    // range, each task would carry both segments whole.
    let total = 2 * text.len() as u64;
    assert!(
        stats.bytes_to_workers < total + 64 * 1024,
        "{} bytes sent for {total} bytes of input in {} tasks",
        stats.bytes_to_workers,
        stats.tasks
    );
    Ok(())
}

fn a_partial_fixed_record_is_refused() -> Result<(), Failed> {
    let mut input = Input::new();
    input.push_bytes(&[1; 10]);
    let job = RecordTally {
        records: Records::Fixed(4),
    };
    for (name, engine) in &engines()? {
        match engine.run(&job, &input) {
            Err(coop::Error::Split { message, .. }) => assert!(
                message.contains("segment 0 has 10 bytes of records, not a whole number of 4-byte records"),
                "{name}: {message}"
            ),
            other => return Err(format!("{name}: {other:?}").into()),
        }
    }
    Ok(())
}

fn a_histogram_adds_up_bin_by_bin_on_every_engine() -> Result<(), Failed> {
    let engines = engines()?;
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for segments in [vec![], vec![&data[..1]], vec![&data[..], &[][..], &data[..777]]] {
        let mut expected = vec![0u64; 256];
        let mut input = Input::new();
        for segment in &segments {
            input.push_bytes(segment);
            for &byte in *segment {
                expected[usize::from(byte)] += 1;
            }
        }
        for (name, engine) in &engines {
            let mut bins = engine.run(&ByteHistogram, &input)?.into_vec();
            // Bins past the largest byte seen were never touched: zeros.
            bins.resize(256, 0);
            if bins != expected {
                return Err(format!("{name}: {bins:?}").into());
            }
        }
    }
    Ok(())
}

fn a_partial_sized_from_the_job_is_that_size_on_every_engine() -> Result<(), Failed> {
    let engines = engines()?;
    let job = LineLengths { bins: 40 };
    for text in [&b""[..], b"\n", b"short\nlonger line\n\nlast without newline"] {
        let long = [text, &b"x".repeat(100)[..], b"\n"].concat();
        for text in [text, &long[..]] {
            let mut expected = vec![0u64; 40];
            let mut longest = None;
            for line in text.split_inclusive(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                expected[line.len().min(39)] += 1;
                longest = longest.max(Some(line.len()));
            }
            let mut input = Input::new();
            input.push_bytes(text);
            for (name, engine) in &engines {
                let (bins, max) = engine.run(&job, &input)?;
                // Sized by the job even where no line was seen.
                assert_eq!(&*bins, &expected[..], "{name}, {text:?}");
                assert_eq!(max.0, longest, "{name}, {text:?}");
            }
        }
    }
    Ok(())
}

fn a_keyed_table_reduces_by_key_on_every_engine() -> Result<(), Failed> {
    let engines = engines()?;
    // 60,000 distinct words (tables large enough to merge on every core),
    // some many times, one longer than a key holds inline, and a word at
    // the very end without whitespace.
    let mut text = Vec::new();
    for i in 0..200_000u32 {
        let word = if i % 3 == 0 { i % 17 } else { i * 7 % 60_000 };
        text.extend_from_slice(format!("w{word}").as_bytes());
        text.push(if i % 11 == 0 { b'\n' } else { b' ' });
    }
    text.extend_from_slice(&[b'L'; 40]);
    text.extend_from_slice(b" last");
    let mut input = Input::new();
    input.push_bytes(&text);
    input.push_bytes(b"");
    input.push_bytes(b"w1 w1 last");
    let expected = tally(
        Records::Whitespace,
        &[text.clone(), Vec::new(), b"w1 w1 last".to_vec()],
    );
    for (name, engine) in &engines {
        let table = engine.run(&WordTally, &input)?;
        let got: BTreeMap<Vec<u8>, u64> = (table.into_sorted_vec().into_iter())
            .map(|(word, count)| (word.as_bytes().to_vec(), count))
            .collect();
        if got != expected {
            return Err(format!("{name}: {} keys, {} expected", got.len(), expected.len()).into());
        }
    }
    assert!(engines[0].1.run(&WordTally, &Input::new())?.is_empty());
    Ok(())
}

fn a_tally_counts_alike_word_by_word_and_span_by_span_on_every_engine() -> Result<(), Failed> {
    let engines = engines()?;
    // 50,000 distinct words (tables merged shard by shard on every core),
    // words longer than a slot holds inline, an empty segment, a segment of
    // one word longer than a task, and a last word without whitespace.
    let mut text = Vec::new();
    for i in 0..150_000u32 {
        let word = if i % 5 == 0 { i % 13 } else { i * 11 % 50_000 };
        let long = if i % 97 == 0 {
            "-and-longer-than-fifteen-bytes"
        } else {
            ""
        };
        text.extend_from_slice(format!("w{word}{long}").as_bytes());
        text.push(if i % 7 == 0 { b'\n' } else { b' ' });
    }
    text.extend_from_slice(b"end");
    let segments = [text, Vec::new(), vec![b'x'; 100_000], b"\tw1 w1\r\n".to_vec()];
    let mut input = Input::new();
    let mut expected = BTreeMap::new();
    for segment in &segments {
        input.push_bytes(segment);
        for (word, n) in coop::__private::reference_counts(WordRule::Whitespace, segment) {
            *expected.entry(word).or_insert(0) += n;
        }
    }
    let counts =
        |tally: Tally| -> BTreeMap<Vec<u8>, u64> { tally.iter().map(|(w, n)| (w.to_vec(), n)).collect() };
    for (name, engine) in &engines {
        let span_by_span = counts(engine.run(
            &WordCount {
                rule: WordRule::Whitespace,
            },
            &input,
        )?);
        let word_by_word = counts(engine.run(&WordsOneByOne, &input)?);
        if span_by_span != expected || word_by_word != expected {
            return Err(format!(
                "{name}: {} and {} words, {} expected",
                span_by_span.len(),
                word_by_word.len(),
                expected.len()
            )
            .into());
        }
    }
    assert!(engines[0].1.run(&WordsOneByOne, &Input::new())?.is_empty());
    Ok(())
}

fn a_summary_of_a_column_is_exact_on_every_engine() -> Result<(), Failed> {
    // Whole numbers, so that every sum is exact whatever the split.
    let values: Vec<f64> = (0..100_000)
        .map(|i| f64::from((i * 7919) % 10_007) - 5_000.0)
        .collect();
    let mut input = Input::new();
    input.push_slice(&values);
    input.push_slice::<f64>(&[]);
    input.push_slice(&[-9_999.5, 12_345.25]);
    let all = values.iter().chain(&[-9_999.5, 12_345.25]);
    let expected = Summary {
        count: values.len() as u64 + 2,
        sum: all.clone().sum(),
        min: all.clone().copied().reduce(f64::min),
        max: all.copied().reduce(f64::max),
    };
    for (name, engine) in &engines()? {
        let got = engine.run(&ColumnSummary, &input)?;
        if got != expected {
            return Err(format!("{name}: {got:?}, {expected:?} expected").into());
        }
    }
    Ok(())
}
