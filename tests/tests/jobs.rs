//! The example jobs on real worker processes: exact results whatever the
//! worker count, the engine, or the way the input is split.

use coop::__private::reference_counts;
use coop::partial::{Tally, WordRule};
use coop::prelude::*;
use coop::{Ipc, JobStats, Sequential, Threads};
use coop_examples::matmul::{MatMul, Matrix, Operand};
use coop_examples::npy::Dtype;
use coop_examples::wordcount::WordCount;
use std::process::{Command, Stdio};

use libtest_mimic::{Arguments, Failed, Trial};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn main() {
    coop_tests::init();
    if let Some(dir) = std::env::var_os(MANY_FILES_ROLE) {
        std::process::exit(match count_many_files(dir.as_ref()) {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("{err:?}");
                1
            }
        });
    }
    let tests = vec![
        Trial::test(
            "wordcount_matches_reference_for_1_2_3_7_workers",
            wordcount_matches_reference,
        ),
        Trial::test("words_never_span_segments", words_never_span_segments),
        Trial::test("wordcount_over_mapped_files", wordcount_over_mapped_files),
        Trial::test("matmul_odd_shapes_match_single_process", matmul_odd_shapes),
        Trial::test("matmul_fortran_order_operands", matmul_fortran_order),
        Trial::test(
            "splitting_never_changes_the_count",
            splitting_never_changes_the_count,
        ),
        Trial::test(
            "pool_count_equals_sequential_on_random_text",
            pool_count_equals_sequential,
        ),
        Trial::test(
            "jobs_sharing_a_name_each_run_their_own_code",
            jobs_sharing_a_name_each_run_their_own_code,
        ),
        Trial::test(
            "a_job_refuses_input_of_the_wrong_length_on_every_engine",
            a_job_refuses_input_of_the_wrong_length_on_every_engine,
        ),
        Trial::test(
            "an_output_in_a_file_is_written_in_place_on_every_engine",
            an_output_in_a_file_is_written_in_place_on_every_engine,
        ),
        Trial::test(
            "a_thousand_input_segments_over_shared_memory_and_messages",
            a_thousand_input_segments,
        ),
        Trial::test(
            "a_hundred_thousand_small_files_under_256_descriptors",
            a_hundred_thousand_small_files_under_256_descriptors,
        ),
        Trial::test(
            "a_mapped_file_whose_name_is_not_utf8",
            a_mapped_file_whose_name_is_not_utf8,
        ),
        Trial::test(
            "messages_give_the_same_results_as_shared_memory",
            messages_match_shared_memory,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), tests).exit();
}

/// Deterministic text with ASCII, Unicode, mixed case, invalid UTF-8 and NULs.
fn corpus(words: usize, seed: u64) -> Vec<u8> {
    const VOCAB: &[&[u8]] = &[
        b"the",
        b"The",
        b"THE",
        b"of",
        b"and",
        b"Stra\xc3\x9fe",
        b"\xc4\xb0stanbul",
        b"\xce\xa3\xce\xb9",
        b"\xe4\xb8\xad\xe6\x96\x87",
        b"caf\xc3\xa9",
        b"bad\xffbyte",
        b"nul\0word",
        b"x1",
        b"don't",
        b"a-b",
        b"\xc3",
        b"end.",
    ];
    const SEPARATORS: &[&[u8]] = &[
        b" ",
        b"\n",
        b"\t",
        b"\r\n",
        b"  ",
        b"\x0b",
        b"\x0c",
        b", ",
        b"\xc2\xa0",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut text = Vec::new();
    for _ in 0..words {
        // Zipf-like: small indices far more often.
        let pick = (next() % VOCAB.len()).min(next() % VOCAB.len());
        text.extend_from_slice(VOCAB[pick]);
        text.extend_from_slice(SEPARATORS[next() % SEPARATORS.len()]);
    }
    text
}

fn counts_of(counts: &Tally) -> std::collections::BTreeMap<Vec<u8>, u64> {
    counts
        .sorted()
        .into_iter()
        .map(|(w, c)| (w.to_vec(), c))
        .collect()
}

fn wordcount_matches_reference() -> Result<(), Failed> {
    let text = corpus(40_000, 1);
    let input = Input::from_bytes(&text);
    for mode in [WordRule::Alphanumeric, WordRule::Whitespace] {
        let expected = reference_counts(mode, &text);
        for workers in [1, 2, 3, 7] {
            let pool = Pool::builder().workers(workers).build()?;
            let counts = pool.run(&WordCount { rule: mode }, &input)?;
            assert_eq!(counts_of(&counts), expected, "{mode:?} with {workers} workers");
        }
    }
    Ok(())
}

fn words_never_span_segments() -> Result<(), Failed> {
    let mut input = Input::new();
    input.push_bytes(b"alpha be");
    input.push_bytes(b"ta gamma");
    input.push_bytes(b"");
    let pool = Pool::builder().workers(2).build()?;
    let counts = pool.run(
        &WordCount {
            rule: WordRule::Alphanumeric,
        },
        &input,
    )?;
    let words: Vec<&[u8]> = counts.sorted().into_iter().map(|(w, _)| w).collect();
    assert_eq!(words, vec![&b"alpha"[..], b"be", b"gamma", b"ta"]);
    Ok(())
}

fn wordcount_over_mapped_files() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mut input = Input::new();
    let mut all = Vec::new();
    for (i, size) in [0usize, 1, 5_000, 50_000].into_iter().enumerate() {
        let text = corpus(size, i as u64 + 10);
        let path = dir.path().join(format!("f{i}.txt"));
        std::fs::write(&path, &text)?;
        input.push_file(&path)?;
        all.push(text);
    }
    let pool = Pool::builder().workers(3).build()?;
    for mode in [WordRule::Alphanumeric, WordRule::Whitespace] {
        let mut expected = std::collections::BTreeMap::new();
        for text in &all {
            for (word, count) in reference_counts(mode, text) {
                *expected.entry(word).or_insert(0) += count;
            }
        }
        assert_eq!(
            counts_of(&pool.run(&WordCount { rule: mode }, &input)?),
            expected,
            "{mode:?}"
        );
    }
    Ok(())
}

fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

fn values(count: usize, seed: u64) -> Vec<f64> {
    (0..count)
        .map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f64 / 500.0 - 1.0)
        .collect()
}

/// A and B (f64, both in the same order) in two shared segments, and the job
/// multiplying them.
fn matmul_of(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize), fortran: bool) -> (Input, MatMul) {
    let mut input = Input::new();
    input.push_slice(a);
    input.push_slice(b);
    let op = |segment| Operand {
        segment,
        offset: 0,
        fortran,
    };
    let job = MatMul {
        dtype: Dtype::F64,
        m,
        k,
        n,
        a: op(0),
        b: op(1),
    };
    (input, job)
}

fn matmul_odd_shapes() -> Result<(), Failed> {
    let pool = Pool::builder().workers(3).build()?;
    let threads = Threads::new(2)?;
    for (m, k, n) in [
        (1, 1, 1),
        (1, 7, 1),
        (1, 9, 13),
        (13, 9, 1),
        (127, 131, 3),
        (64, 64, 64),
        (0, 3, 4),
        (3, 0, 4),
        (5, 5, 0),
    ] {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let (input, job) = matmul_of(&a, &b, (m, k, n), false);
        let mut products = Vec::new();
        for engine in 0..3 {
            let mut c = SharedOutput::new(job.output_len());
            let run = Run::new(&job, &input).output(&mut c);
            match engine {
                0 => run.on(&pool)?,
                1 => run.on(&threads)?,
                _ => run.on(&Sequential)?,
            }
            products.push(c.as_slice::<f64>().to_vec());
        }
        assert!(
            products.windows(2).all(|w| w[0] == w[1]),
            "{m}x{k}x{n}: engines disagree"
        );
        let expected = naive(&a, &b, m, k, n);
        for (got, want) in products[0].iter().zip(&expected) {
            assert!(
                (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "{m}x{k}x{n}: {got} vs {want}"
            );
        }
        assert_eq!(products[0].len(), expected.len());
    }
    Ok(())
}

fn matmul_fortran_order() -> Result<(), Failed> {
    let (m, k, n) = (31, 17, 23);
    let (a, b) = (values(m * k, 3), values(k * n, 4));
    let transpose = |x: &[f64], rows: usize, cols: usize| {
        (0..rows * cols)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect::<Vec<f64>>()
    };
    let mut input = Input::new();
    input.push_slice(&transpose(&a, m, k));
    input.push_slice(&transpose(&b, k, n));
    let op = |segment| Operand {
        segment,
        offset: 0,
        fortran: true,
    };
    let job = MatMul {
        dtype: Dtype::F64,
        m,
        k,
        n,
        a: op(0),
        b: op(1),
    };
    let mut c = SharedOutput::new(job.output_len());
    Run::new(&job, &input)
        .output(&mut c)
        .on(&Pool::builder().workers(2).build()?)?;
    let mut single = vec![0.0; m * n];
    coop_examples::matmul::multiply_rows(
        Matrix {
            data: &a,
            rows: m,
            cols: k,
            fortran: false,
        },
        Matrix {
            data: &b,
            rows: k,
            cols: n,
            fortran: false,
        },
        0..m,
        &mut single,
    );
    for (got, want) in c.as_slice::<f64>().iter().zip(&single) {
        assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()));
    }
    Ok(())
}

fn text_strategy() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        Just(b"a".to_vec()),
        Just(b"B".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just("İ".as_bytes().to_vec()),
        Just("中".as_bytes().to_vec()),
        Just(vec![0xff]),
        Just(vec![0xc3]),
        Just("\u{a0}".as_bytes().to_vec()),
        Just(b"\0".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(pieces, 0..400).prop_map(|v| v.concat())
}

/// Property: however the engine asks the job to split (any task count), the
/// merged count equals the count of the whole text.
fn splitting_never_changes_the_count() -> Result<(), Failed> {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(text_strategy(), 1usize..40, any::<bool>()),
            |(text, tasks, words)| {
                let mode = if words {
                    WordRule::Alphanumeric
                } else {
                    WordRule::Whitespace
                };
                let input = Input::from_bytes(&text);
                let counts = Run::new(&WordCount { rule: mode }, &input)
                    .tasks_per_worker(tasks)
                    .on(&Sequential)
                    .unwrap();
                prop_assert_eq!(counts_of(&counts), reference_counts(mode, &text));
                Ok(())
            },
        )
        .map_err(|e| Failed::from(e.to_string()))
}

/// Property: the pool (processes) gives what the sequential engine gives.
fn pool_count_equals_sequential() -> Result<(), Failed> {
    let pool = Pool::builder().workers(3).build()?;
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(text_strategy(), 1usize..20), |(text, tasks)| {
            let input = Input::from_bytes(&text);
            let job = WordCount {
                rule: WordRule::Alphanumeric,
            };
            let on_pool = Run::new(&job, &input).tasks_per_worker(tasks).on(&pool).unwrap();
            let alone = Run::new(&job, &input).on(&Sequential).unwrap();
            prop_assert_eq!(on_pool, alone);
            Ok(())
        })
        .map_err(|e| Failed::from(e.to_string()))
}

/// Message passing copies each task's input into its messages and sends tiles
/// back; results are identical to shared memory, and the bytes moved show it.
fn messages_match_shared_memory() -> Result<(), Failed> {
    let shared = Pool::builder().workers(3).build()?;
    let messages = Pool::builder().workers(3).ipc(Ipc::Messages).build()?;

    let text = corpus(30_000, 5);
    let mut input = Input::new();
    input.push_bytes(&text);
    input.push_bytes(b"");
    input.push_bytes(&corpus(1_000, 6));
    let job = WordCount {
        rule: WordRule::Alphanumeric,
    };
    let (mut by_shm, mut by_msg) = (JobStats::default(), JobStats::default());
    let a = Run::new(&job, &input).stats(&mut by_shm).on(&shared)?;
    let b = Run::new(&job, &input).stats(&mut by_msg).on(&messages)?;
    assert_eq!(a, b, "word counts differ");
    assert!(by_msg.bytes_to_workers >= input.total_bytes(), "{by_msg:?}");
    assert!(by_shm.bytes_to_workers < input.total_bytes() / 10, "{by_shm:?}");

    for (m, k, n, fortran) in [
        (67, 45, 23, false),
        (31, 17, 29, true),
        (0, 4, 5, false),
        (1, 1, 1, false),
    ] {
        let (a, b) = (values(m * k, 7), values(k * n, 8));
        let (input, job) = matmul_of(&a, &b, (m, k, n), fortran);
        let mut outputs = Vec::new();
        for pool in [&shared, &messages] {
            let mut c = SharedOutput::new(job.output_len());
            Run::new(&job, &input)
                .output(&mut c)
                .tasks_per_worker(3)
                .on(pool)?;
            outputs.push(c.bytes().to_vec());
        }
        assert_eq!(
            outputs[0], outputs[1],
            "{m}x{k}x{n} fortran={fortran}: products differ"
        );
    }

    // A job that keeps the default input ranges (every segment) still works.
    let data: Vec<u64> = (0..5_000).collect();
    let mut input = Input::new();
    input.push_slice(&data);
    let mut out = SharedOutput::zeroed::<u64>(data.len());
    Run::new(&coop_tests::Squares, &input)
        .output(&mut out)
        .on(&messages)?;
    assert!(out.as_slice::<u64>().iter().zip(&data).all(|(s, x)| *s == x * x));
    Ok(())
}

/// `Total<u32>`, `Total<u64>` and `ByteCount` all have `NAME = "total"`: each
/// must run its own code on the pool, as on the sequential engine.
fn jobs_sharing_a_name_each_run_their_own_code() -> Result<(), Failed> {
    use coop_tests::{ByteCount, Total};
    let numbers: Vec<u64> = (1..=1000).collect();
    let mut input = Input::new();
    input.push_slice(&numbers);
    let pool = Pool::builder().workers(2).build()?;
    let wide = Total::<u64>::default();
    let narrow = Total::<u32>::default();
    // Read as u32, each u64 is itself and a zero: the same sum.
    assert_eq!(pool.run(&wide, &input)?, 500_500);
    assert_eq!(
        pool.run(&narrow, &input)?,
        Run::new(&narrow, &input).on(&Sequential)?
    );
    assert_eq!(pool.run(&ByteCount, &input)?, 8000);
    // Another order: the job a worker last opened must not be reused.
    assert_eq!(pool.run(&narrow, &input)?, 500_500);
    assert_eq!(pool.run(&ByteCount, &input)?, 8000);
    assert_eq!(pool.run(&wide, &input)?, 500_500);
    Ok(())
}

/// A file of 13 bytes is not a slice of `f64`: `split` refuses it with an
/// error naming the job and the segment, on every engine, and the pool goes on.
fn a_job_refuses_input_of_the_wrong_length_on_every_engine() -> Result<(), Failed> {
    use coop_tests::SumFloats;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("floats.bin");
    std::fs::write(&path, [0u8; 13])?;
    let mut input = Input::new();
    input.push_file(&path)?;
    let pool = Pool::builder().workers(2).build()?;
    let expected = "job `sum-floats` refused its input: input segment 0 (13 bytes) cannot be viewed as [f64]: \
                    its length is not a multiple of 8 bytes";
    let errors = [
        pool.run(&SumFloats, &input).unwrap_err(),
        Run::new(&SumFloats, &input).on(&Sequential).unwrap_err(),
        Run::new(&SumFloats, &input).on(&Threads::new(2)?).unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, coop::Error::Split { .. }), "{err:?}");
        assert_eq!(err.to_string(), expected);
    }
    let mut whole = Input::new();
    whole.push_slice(&[1.5f64, 2.5]);
    assert_eq!(pool.run(&SumFloats, &whole)?, 4.0);
    Ok(())
}

/// Every shared-memory segment is a file descriptor in the message that
/// describes it, and a message carries at most 64: 1,000 segments (and mapped
/// files among them) must still reach every worker, twice (the second job
/// names the segments the workers kept).
fn a_thousand_input_segments() -> Result<(), Failed> {
    use coop_tests::SumSegments;
    let dir = tempfile::tempdir()?;
    let mut input = Input::new();
    let mut expected = 0u64;
    for i in 0..1000u64 {
        let numbers = [i, 2 * i, 3];
        expected += numbers.iter().sum::<u64>();
        if i % 10 == 0 {
            let path = dir.path().join(format!("{i:0>200}")); // long paths, many bytes of them
            std::fs::write(&path, bytemuck::cast_slice(&numbers))?;
            input.push_file(&path)?;
        } else {
            input.push_slice(&numbers);
        }
    }
    for ipc in [Ipc::SharedMemory, Ipc::Messages] {
        let pool = Pool::builder().workers(2).ipc(ipc).build()?;
        for round in 0..2 {
            assert_eq!(
                pool.run(&SumSegments, &input)?,
                expected,
                "{ipc:?}, round {round}"
            );
        }
    }
    Ok(())
}

/// Set in a child copy of this test binary that counts the files in a directory.
const MANY_FILES_ROLE: &str = "COOP_TEST_MANY_FILES";

/// 100,000 small files in one input, in a process allowed 256 descriptors
/// (its workers inherit the limit): more files than descriptors, and more
/// than the kernel's 65,530 mappings a process, which one mapping or one
/// shared region per file would need.
fn a_hundred_thousand_small_files_under_256_descriptors() -> Result<(), Failed> {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir()?;
    for i in 0..100_000u64 {
        let numbers = &[i, 1, 2][..(i % 3 + 1) as usize];
        std::fs::write(dir.path().join(format!("{i}")), bytemuck::cast_slice(numbers))?;
    }
    let mut child = Command::new(std::env::current_exe()?);
    child.env(MANY_FILES_ROLE, dir.path()).stdin(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        child.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 256, 256)
                .map_err(Into::into)
        });
    }
    let output = child.output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    Ok(())
}

fn count_many_files(dir: &std::path::Path) -> Result<(), Failed> {
    let mut input = Input::new();
    let mut expected = 0u64;
    for i in 0..100_000u64 {
        input.push_file(dir.join(format!("{i}")))?;
        expected += [i, 1, 2][..(i % 3 + 1) as usize].iter().sum::<u64>();
    }
    let pool = Pool::builder().workers(2).build()?;
    for round in 0..2 {
        assert_eq!(
            pool.run(&coop_tests::SumSegments, &input)?,
            expected,
            "round {round}"
        );
    }
    assert_eq!(
        Run::new(&coop_tests::SumSegments, &input).on(&Sequential)?,
        expected
    );
    Ok(())
}

/// Workers map a file by its path: one that is not UTF-8 must reach them
/// (it could not be sent at all, and the job waited for ever).
fn a_mapped_file_whose_name_is_not_utf8() -> Result<(), Failed> {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.bin"));
    let numbers: Vec<u64> = (0..Input::PACKED_BELOW as u64).collect(); // large enough to be mapped
    std::fs::write(&path, bytemuck::cast_slice(&numbers))?;
    let mut input = Input::new();
    input.push_file(&path)?;
    let pool = Pool::builder()
        .workers(2)
        .task_timeout(std::time::Duration::from_secs(20))
        .build()?;
    assert_eq!(
        pool.run(&coop_tests::SumSegments, &input)?,
        numbers.iter().sum::<u64>()
    );
    Ok(())
}

fn an_output_in_a_file_is_written_in_place_on_every_engine() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("squares.bin");
    // A header the output must leave alone, then the squares.
    std::fs::write(&path, [0xAB; 128])?;
    let values: Vec<u64> = (0..50_001).map(|i| i * 3 + 1).collect();
    let mut input = Input::new();
    input.push_slice(&values);
    let mut output = SharedOutput::map_file(&path, 128, values.len() * 8)?;
    let engines: Vec<(&str, coop::AnyEngine)> = vec![
        (
            "sequential",
            coop::AnyEngine::builder(coop::EngineKind::Sequential).build()?,
        ),
        (
            "threads",
            coop::AnyEngine::builder(coop::EngineKind::Threads)
                .workers(2)
                .build()?,
        ),
        (
            "processes",
            coop::AnyEngine::builder(coop::EngineKind::Processes)
                .workers(2)
                .build()?,
        ),
        (
            "messages",
            coop::AnyEngine::builder(coop::EngineKind::Processes)
                .workers(2)
                .ipc(Ipc::Messages)
                .build()?,
        ),
    ];
    for (name, engine) in &engines {
        output.bytes_mut().fill(0);
        let written = Run::new(&coop_tests::Squares, &input)
            .output(&mut output)
            .on(engine)?;
        let file = std::fs::read(&path)?;
        let squares: Vec<u64> = bytemuck::pod_collect_to_vec(&file[128..]);
        let want: Vec<u64> = values.iter().map(|x| x * x).collect();
        if written != values.len() as u64
            || file[..128] != [0xAB; 128]
            || squares != want
            || output.as_slice::<u64>() != want
        {
            return Err(format!("{name}: the file does not hold the squares after its header").into());
        }
    }
    // A file that cannot be made is an input error naming it.
    let err = SharedOutput::map_file(dir.path().join("no-such-dir/out"), 0, 8).unwrap_err();
    assert!(
        matches!(err, coop::Error::Input { .. }) && err.to_string().contains("no-such-dir"),
        "{err}"
    );
    Ok(())
}
