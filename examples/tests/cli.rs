//! End-to-end tests of the `wordcount` and `matmul` binaries, run as real
//! processes: exit codes, one-line errors, output formats, and results
//! checked against plain reference computations.

// Each test crate compiles its own copy of the shared helpers and uses only
// some of them: the rest would warn as unused.
#[allow(dead_code, unused_macros)]
#[macro_use]
mod common;

use std::ffi::OsString;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use coop::partial::WordRule;
use coop_examples::npy::{self, Dtype};

use common::{
    Counts, Outcome, TIMEOUT, add_counts, assert_bad_input, assert_bad_input_says, assert_no_panic_text,
    assert_tsv_eq, command, command_line, mkfifo, ranked, read_all, run, run_command, run_in, tsv,
};

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
const MATMUL: &str = env!("CARGO_BIN_EXE_matmul");

/// Runs `bin` with `args`, reading `file` on its standard input from where
/// its offset stands, with a timeout.
fn run_from_file(bin: &str, args: &[OsString], file: File) -> Outcome {
    let mut cmd = command(bin, args);
    cmd.stdin(file);
    run_command(&mut cmd, b"")
}

// ---------------------------------------------------------------------------
// Word counting references
// ---------------------------------------------------------------------------

/// Words of `text` between the six ASCII whitespace bytes, counted plainly.
fn whitespace_counts(text: &[u8]) -> Counts {
    let mut counts = Counts::new();
    add_counts(&mut counts, text);
    counts
}

/// Counts of each file separately, merged: words never span files.
fn reference(mode: WordRule, files: &[&[u8]]) -> Counts {
    let mut total = Counts::new();
    for text in files {
        let counts = match mode {
            WordRule::Whitespace => whitespace_counts(text),
            rule => coop::__private::reference_counts(rule, text),
        };
        for (word, n) in counts {
            *total.entry(word).or_insert(0) += n;
        }
    }
    total
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Pieces of words: ASCII, mixed case, Unicode (with lowercase mappings that
/// change length), invalid UTF-8, NUL and other control bytes, punctuation.
const TOKENS: &[&[u8]] = &[
    b"the",
    b"The",
    b"THE",
    b"a",
    b"of",
    b"word",
    b"Words",
    b"x1y2",
    b"42",
    b"don't",
    b"e-mail",
    b"caf\xC3\xA9",
    b"CAF\xC3\x89",
    b"Stra\xC3\x9Fe",
    b"\xCE\x91\xCE\x92\xCE\x93",
    b"\xCE\xB1\xCE\xB2\xCE\xB3",
    b"\xC4\xB0stanbul",
    b"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
    b"\xC7\x85",
    b"\xF0\x9F\x99\x82",
    b"e\xCC\x81",
    b"\xFF",
    b"ab\xFEcd",
    b"\xC3",
    b"\xE2\x82",
    b"\xED\xA0\x80",
    b"\xC0\xAF",
    b"\0",
    b"nul\0byte",
    b"\x1B[0m",
    b"\x7F",
    b"...",
    b"--",
    b"(x)",
];

/// Separators: the six ASCII whitespace bytes, CRLF, runs, and non-ASCII
/// spaces that only separate in `--split words`.
const SEPARATORS: &[&[u8]] = &[
    b" ",
    b" ",
    b" ",
    b"\t",
    b"\n",
    b"\r\n",
    b"\x0B",
    b"\x0C",
    b"\r",
    b"  \t ",
    b"\n\n",
    b"\xC2\xA0",
    b"\xE3\x80\x80",
    b",",
];

/// About `len` bytes of text; the first and last bytes are part of words.
fn generate_text(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut text = Vec::with_capacity(len + 64);
    while text.len() < len {
        let pieces = 1 + rng.below(3);
        for _ in 0..pieces {
            text.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
        }
        if text.len() < len {
            text.extend_from_slice(SEPARATORS[rng.below(SEPARATORS.len())]);
        }
    }
    text
}

fn write_files(dir: &Path, files: &[(&str, &[u8])]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// `--engine ENGINE --workers N`, without `--workers` for the sequential
/// engine, which has none (and refuses the option).
fn engine_args<'a>(engine: &'a str, workers: &'a str) -> Vec<&'a str> {
    match engine {
        "sequential" => vec!["--engine", engine],
        _ => vec!["--engine", engine, "--workers", workers],
    }
}

fn split_arg(mode: WordRule) -> &'static str {
    match mode {
        WordRule::Alphanumeric => "words",
        WordRule::Whitespace => "whitespace",
        rule => unreachable!("{rule:?} has no --split"),
    }
}

/// `wordcount --split MODE --all --format tsv EXTRA... FILES...`
fn wordcount_tsv(mode: WordRule, extra: &[&str], files: &[PathBuf], stdin: &[u8]) -> Outcome {
    let mut args = argv!["--split", split_arg(mode), "--all", "--format", "tsv"];
    args.extend(extra.iter().map(OsString::from));
    args.extend(files.iter().map(OsString::from));
    run_in(WORDCOUNT, &args, stdin, None)
}

// ---------------------------------------------------------------------------
// wordcount: bad input
// ---------------------------------------------------------------------------

type ArgsFor = fn(&Path) -> Vec<OsString>;

#[test]
fn wordcount_bad_input_is_one_line_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ok.txt"), "some words here\n").unwrap();
    std::fs::create_dir(d.join("subdir")).unwrap();
    std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
    std::fs::write(d.join("noperm.txt"), "secret words\n").unwrap();
    std::fs::set_permissions(
        d.join("noperm.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();

    let cases: Vec<(&str, &str, ArgsFor)> = vec![
        ("missing file", "missing.txt: No such file or directory", |d| {
            argv![d.join("missing.txt")]
        }),
        (
            "missing file after a good one",
            "missing.txt: No such file or directory",
            |d| argv![d.join("ok.txt"), d.join("missing.txt")],
        ),
        (
            "missing file, sequential engine",
            "missing.txt: No such file or directory",
            |d| argv!["--engine", "sequential", d.join("missing.txt")],
        ),
        (
            "missing file, tsv",
            "missing.txt: No such file or directory",
            |d| argv!["--format", "tsv", "--all", d.join("missing.txt")],
        ),
        ("directory", "subdir: is a directory", |d| argv![d.join("subdir")]),
        ("directory after a good one", "subdir: is a directory", |d| {
            argv![d.join("ok.txt"), d.join("subdir")]
        }),
        (
            "path below a regular file (ENOTDIR, fails for root too)",
            "ok.txt/child: Not a directory",
            |d| argv![d.join("ok.txt").join("child")],
        ),
        ("dangling symlink", "dangling: No such file or directory", |d| {
            argv![d.join("dangling")]
        }),
        ("permission denied", "noperm.txt: Permission denied", |d| {
            argv![d.join("noperm.txt")]
        }),
        ("empty file name", "a value is required for '[FILES]...'", |_| {
            argv![""]
        }),
        ("--workers 0", "0 is not in 1..=1024", |d| {
            argv!["--workers", "0", d.join("ok.txt")]
        }),
        ("--workers 100000", "100000 is not in 1..=1024", |d| {
            argv!["--workers", "100000", d.join("ok.txt")]
        }),
        ("--workers -1", "unexpected argument '-1'", |d| {
            argv!["--workers", "-1", d.join("ok.txt")]
        }),
        ("--workers abc", "invalid value 'abc' for '--workers <N>'", |d| {
            argv!["--workers", "abc", d.join("ok.txt")]
        }),
        (
            "--workers without value",
            "a value is required for '--workers <N>'",
            |_| argv!["--workers"],
        ),
        ("unknown flag", "unexpected argument '--bogus'", |d| {
            argv!["--bogus", d.join("ok.txt")]
        }),
        ("unknown short flag", "unexpected argument '-z'", |d| {
            argv!["-z", d.join("ok.txt")]
        }),
        ("--top 3 --all", "'--top <K>' cannot be used with '--all'", |d| {
            argv!["--top", "3", "--all", d.join("ok.txt")]
        }),
        ("--all --top 3", "'--all' cannot be used with '--top <K>'", |d| {
            argv!["--all", "--top", "3", d.join("ok.txt")]
        }),
        ("--top -1", "unexpected argument '-1'", |d| {
            argv!["--top", "-1", d.join("ok.txt")]
        }),
        ("--top x", "invalid value 'x' for '--top <K>'", |d| {
            argv!["--top", "x", d.join("ok.txt")]
        }),
        (
            "unknown engine",
            "invalid value 'gpu' for '--engine <ENGINE>'",
            |d| argv!["--engine", "gpu", d.join("ok.txt")],
        ),
        (
            "unknown split",
            "invalid value 'lines' for '--split <SPLIT>'",
            |d| argv!["--split", "lines", d.join("ok.txt")],
        ),
        (
            "unknown format",
            "invalid value 'xml' for '--format <FORMAT>'",
            |d| argv!["--format", "xml", d.join("ok.txt")],
        ),
        // Readable by nobody, root included: the read fails (EIO) at offset 0.
        (
            "unreadable file (read fails)",
            "/proc/self/mem: Input/output error",
            |_| argv!["/proc/self/mem"],
        ),
        (
            "missing file with a non-UTF-8 name",
            "\u{FFFD}\u{FFFD}missing: No such file or directory",
            |d| argv![d.join(std::ffi::OsStr::from_bytes(b"\xFF\xFEmissing"))],
        ),
        (
            "--split twice",
            "'--split <SPLIT>' cannot be used multiple times",
            |d| argv!["--split", "words", "--split", "whitespace", d.join("ok.txt")],
        ),
        (
            "--format twice",
            "'--format <FORMAT>' cannot be used multiple times",
            |d| argv!["--format", "tsv", "--format", "json", d.join("ok.txt")],
        ),
        ("--top 0 --all", "'--top <K>' cannot be used with '--all'", |d| {
            argv!["--top", "0", "--all", d.join("ok.txt")]
        }),
    ];
    for (name, says, args) in cases {
        if name == "permission denied" && std::fs::File::open(d.join("noperm.txt")).is_ok() {
            eprintln!("skipping `{name}`: this process can read a mode-000 file (root)");
            continue;
        }
        let outcome = run(WORDCOUNT, &args(d));
        assert_bad_input_says(&outcome, name, says);
    }
}

// ---------------------------------------------------------------------------
// wordcount: results
// ---------------------------------------------------------------------------

#[test]
fn empty_input_is_valid_and_has_no_words() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &[("empty1", b""), ("empty2", b"")]);
    for mode in [WordRule::Whitespace, WordRule::Alphanumeric] {
        let outcome = wordcount_tsv(mode, &[], &files[..1], b"");
        outcome.assert_success();
        assert!(outcome.stdout.is_empty(), "{}", outcome.describe());
        wordcount_tsv(mode, &[], &files, b"").assert_success();
        let stdin = wordcount_tsv(mode, &[], &[], b"");
        stdin.assert_success();
        assert!(stdin.stdout.is_empty(), "{}", stdin.describe());
    }
    let only_space = write_files(dir.path(), &[("space", b" \t\r\n\x0B\x0C ")]);
    let outcome = wordcount_tsv(WordRule::Whitespace, &[], &only_space, b"");
    outcome.assert_success();
    assert!(outcome.stdout.is_empty(), "{}", outcome.describe());

    let json = run(WORDCOUNT, &argv!["--format", "json", &files[0]]);
    json.assert_success();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value, serde_json::json!([]), "{}", json.describe());

    let table = run(WORDCOUNT, &argv![&files[0]]);
    table.assert_success();
    assert_eq!(
        table.stdout_text().lines().count(),
        1,
        "only the header\n{}",
        table.describe()
    );
}

#[test]
fn whitespace_split_matches_reference_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<Vec<u8>> = vec![
        generate_text(1, 40_000),
        generate_text(2, 7_000),
        Vec::new(),
        generate_text(3, 25_000),
        b"\r\n\r\nCRLF\r\nlines\r\nCRLF\r\n".to_vec(),
    ];
    let names = ["one", "two", "empty", "three", "crlf"];
    let named: Vec<(&str, &[u8])> = names
        .iter()
        .copied()
        .zip(texts.iter().map(Vec::as_slice))
        .collect();
    let files = write_files(dir.path(), &named);
    let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
    let expected = tsv(&ranked(&reference(WordRule::Whitespace, &refs)));
    for workers in ["1", "2", "3", "7"] {
        let outcome = wordcount_tsv(WordRule::Whitespace, &["--workers", workers], &files, b"");
        outcome.assert_success();
        assert_tsv_eq(&outcome, &expected, &format!("--workers {workers}"));
    }
    // Each file alone, too.
    for (file, text) in files.iter().zip(&refs) {
        let outcome = wordcount_tsv(
            WordRule::Whitespace,
            &["--workers", "3"],
            std::slice::from_ref(file),
            b"",
        );
        outcome.assert_success();
        assert_tsv_eq(
            &outcome,
            &tsv(&ranked(&whitespace_counts(text))),
            &file.display().to_string(),
        );
    }
}

#[test]
fn words_split_matches_library_reference_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<Vec<u8>> = vec![
        generate_text(11, 30_000),
        generate_text(12, 9_000),
        generate_text(13, 15_000),
    ];
    let named: Vec<(&str, &[u8])> = ["a", "b", "c"]
        .into_iter()
        .zip(texts.iter().map(Vec::as_slice))
        .collect();
    let files = write_files(dir.path(), &named);
    let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
    let expected = tsv(&ranked(&reference(WordRule::Alphanumeric, &refs)));
    for workers in ["1", "2", "3", "7"] {
        let outcome = wordcount_tsv(WordRule::Alphanumeric, &["--workers", workers], &files, b"");
        outcome.assert_success();
        assert_tsv_eq(&outcome, &expected, &format!("--split words --workers {workers}"));
    }
    // `--split words` is the default.
    let default = run(
        WORDCOUNT,
        &[
            argv!["--all", "--format", "tsv"],
            files.iter().map(OsString::from).collect(),
        ]
        .concat(),
    );
    default.assert_success();
    assert_tsv_eq(&default, &expected, "default split");
}

#[test]
fn words_never_span_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(
        dir.path(),
        &[
            ("f1", b"xx ab"),
            ("f2", b"cd yy"),
            ("f3", b"Caf"),
            ("f4", b"\xC3\xA9 zz"),
            ("f5", b"ab"),
        ],
    );
    type Expected<'a> = &'a [(&'a [u8], u64)];
    let cases: [(WordRule, Expected); 2] = [
        (
            WordRule::Whitespace,
            &[
                (b"ab", 2),
                (b"Caf", 1),
                (b"\xC3\xA9", 1),
                (b"cd", 1),
                (b"xx", 1),
                (b"yy", 1),
                (b"zz", 1),
            ],
        ),
        // "Caf" | "é zz": two words in both modes, never "café".
        (
            WordRule::Alphanumeric,
            &[
                (b"ab", 2),
                (b"caf", 1),
                (b"cd", 1),
                (b"xx", 1),
                (b"yy", 1),
                (b"zz", 1),
                (b"\xC3\xA9", 1),
            ],
        ),
    ];
    for (mode, expected) in cases {
        let counts: Counts = expected.iter().map(|(w, n)| (w.to_vec(), *n)).collect();
        let texts: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        assert_eq!(reference(mode, &refs), counts, "the test's own expectation");
        for workers in ["1", "3"] {
            let outcome = wordcount_tsv(mode, &["--workers", workers], &files, b"");
            outcome.assert_success();
            assert_tsv_eq(
                &outcome,
                &tsv(&ranked(&counts)),
                &format!("{mode:?} --workers {workers}"),
            );
        }
    }
}

#[test]
fn standard_input_is_read_without_file_and_for_dash() {
    let dir = tempfile::tempdir().unwrap();
    let stdin_text = generate_text(21, 12_000);
    let file_text = b"end of file ab".to_vec();
    let files = write_files(dir.path(), &[("file", &file_text)]);
    for mode in [WordRule::Whitespace, WordRule::Alphanumeric] {
        let alone = tsv(&ranked(&reference(mode, &[&stdin_text])));
        let no_file = wordcount_tsv(mode, &[], &[], &stdin_text);
        no_file.assert_success();
        assert_tsv_eq(&no_file, &alone, "no FILE");

        let dash = wordcount_tsv(mode, &[], &[PathBuf::from("-")], &stdin_text);
        dash.assert_success();
        assert_tsv_eq(&dash, &alone, "FILE -");

        // A file then stdin: separate segments, so no word spans them.
        let mixed = wordcount_tsv(mode, &[], &[files[0].clone(), PathBuf::from("-")], b"cd and more");
        mixed.assert_success();
        let expected = tsv(&ranked(&reference(mode, &[&file_text, b"cd and more"])));
        assert_tsv_eq(&mixed, &expected, "FILE -");
    }
}

#[test]
fn standard_input_redirected_from_a_file_is_counted_from_where_it_stands() {
    // `wordcount < FILE` maps the file, as `wordcount FILE` does; a file read
    // from already, or unlinked or renamed over since it was opened, is read
    // instead. The counts are those of what standard input holds. And
    // `wordcount /dev/stdin < FILE` gives workers the file's own path (in a
    // worker, /dev/stdin is another file).
    let dir = tempfile::tempdir().unwrap();
    let text = generate_text(23, 20_000);
    let path = write_files(dir.path(), &[("text", &text)]).remove(0);
    let mode = WordRule::Alphanumeric;
    let whole = tsv(&ranked(&reference(mode, &[&text])));
    let middle = text.len() / 2 + text[text.len() / 2..].iter().position(|&b| b == b' ').unwrap();
    let rest = tsv(&ranked(&reference(mode, &[&text[middle..]])));
    for engine in ["processes", "sequential"] {
        let args = argv![
            "--split",
            split_arg(mode),
            "--all",
            "--format",
            "tsv",
            "--engine",
            engine
        ];
        let fed = |file, context: &str, expected: &[u8]| {
            let outcome = run_from_file(WORDCOUNT, &args, file);
            outcome.assert_success();
            assert_tsv_eq(&outcome, expected, &format!("{context}, {engine}"));
        };
        fed(File::open(&path).unwrap(), "< FILE", &whole);
        let mut named = args.clone();
        named.push("/dev/stdin".into());
        let outcome = run_from_file(WORDCOUNT, &named, File::open(&path).unwrap());
        outcome.assert_success();
        assert_tsv_eq(&outcome, &whole, &format!("/dev/stdin < FILE, {engine}"));

        let mut part_read = File::open(&path).unwrap();
        part_read.seek(SeekFrom::Start(middle as u64)).unwrap();
        fed(part_read, "< FILE read to its middle", &rest);

        let unlinked = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        fed(unlinked, "< FILE unlinked", &whole);
        std::fs::write(&path, &text).unwrap();

        let replaced = File::open(&path).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"other words").unwrap();
        std::fs::rename(&other, &path).unwrap();
        fed(replaced, "< FILE renamed over", &whole);
        std::fs::write(&path, &text).unwrap();
    }
}

#[test]
fn engines_give_identical_tsv() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [generate_text(31, 30_000), generate_text(32, 5_000)];
    let files = write_files(dir.path(), &[("a", &texts[0]), ("b", &texts[1])]);
    for mode in [WordRule::Whitespace, WordRule::Alphanumeric] {
        let expected = tsv(&ranked(&reference(mode, &[&texts[0], &texts[1]])));
        let outputs: Vec<(&str, Outcome)> = ["sequential", "threads", "processes"]
            .into_iter()
            .map(|engine| {
                (
                    engine,
                    wordcount_tsv(mode, &engine_args(engine, "3"), &files, b""),
                )
            })
            .collect();
        for (engine, outcome) in &outputs {
            outcome.assert_success();
            assert_tsv_eq(outcome, &expected, &format!("{mode:?} --engine {engine}"));
        }
        assert!(outputs.windows(2).all(|w| w[0].1.stdout == w[1].1.stdout));
    }
}

/// The rows of a `--format json` output.
fn json_rows(outcome: &Outcome) -> Vec<(String, u64)> {
    let value: serde_json::Value = serde_json::from_slice(&outcome.stdout)
        .unwrap_or_else(|e| panic!("stdout is not valid JSON: {e}\n{}", outcome.describe()));
    let array = value
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array\n{}", outcome.describe()));
    array
        .iter()
        .map(|entry| {
            let object = entry
                .as_object()
                .unwrap_or_else(|| panic!("{entry} is not an object"));
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["count", "word"], "keys of {entry}");
            let word = object["word"]
                .as_str()
                .unwrap_or_else(|| panic!("word of {entry}"))
                .to_owned();
            let count = object["count"]
                .as_u64()
                .unwrap_or_else(|| panic!("count of {entry}"));
            (word, count)
        })
        .collect()
}

#[test]
fn json_output_is_valid_and_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let text = generate_text(41, 20_000);
    let files = write_files(dir.path(), &[("t", &text)]);

    // Words mode: every word is valid UTF-8, so the JSON rows equal the reference.
    let expected: Vec<(String, u64)> = ranked(&reference(WordRule::Alphanumeric, &[&text]))
        .into_iter()
        .map(|(w, n)| (String::from_utf8(w.to_vec()).unwrap(), n))
        .collect();
    let all = run(WORDCOUNT, &argv!["--all", "--format", "json", &files[0]]);
    all.assert_success();
    assert_eq!(json_rows(&all), expected, "{}", all.describe());

    let top = run(WORDCOUNT, &argv!["--top", "5", "--format", "json", &files[0]]);
    top.assert_success();
    assert_eq!(json_rows(&top), expected[..5], "{}", top.describe());

    // Whitespace mode with invalid UTF-8, NUL and escape bytes: still valid
    // JSON, the same counts, invalid bytes shown as U+FFFD.
    let counts = reference(WordRule::Whitespace, &[&text]);
    let reference = ranked(&counts);
    let raw = run(
        WORDCOUNT,
        &argv!["--split", "whitespace", "--all", "--format", "json", &files[0]],
    );
    raw.assert_success();
    let rows = json_rows(&raw);
    let lossy: Vec<(String, u64)> = reference
        .iter()
        .map(|(w, n)| (String::from_utf8_lossy(w).into_owned(), *n))
        .collect();
    assert_eq!(rows, lossy, "{}", raw.describe());
    assert!(
        rows.iter().any(|(w, _)| w.contains('\u{FFFD}')),
        "the text has invalid UTF-8 words"
    );
    assert!(
        rows.iter().any(|(w, _)| w.contains('\0')),
        "the text has NUL bytes"
    );
}

#[test]
fn top_k_prints_k_rows_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    // Plain ASCII so that the table shows words unescaped.
    let mut text = String::new();
    for i in 0..40 {
        for _ in 0..(i % 7 + 1) {
            text.push_str(&format!("w{i} "));
        }
        text.push('\n');
    }
    let files = write_files(dir.path(), &[("t", text.as_bytes())]);
    let counts = reference(WordRule::Whitespace, &[text.as_bytes()]);
    let reference = ranked(&counts);
    assert_eq!(reference.len(), 40);
    for k in [0usize, 1, 3, 20, 40, 100] {
        let rows = &reference[..k.min(reference.len())];
        let k_arg = k.to_string();

        let tsv_out = run(
            WORDCOUNT,
            &argv![
                "--split",
                "whitespace",
                "--top",
                &k_arg,
                "--format",
                "tsv",
                &files[0]
            ],
        );
        tsv_out.assert_success();
        assert_tsv_eq(&tsv_out, &tsv(rows), &format!("--top {k}"));

        let json_out = run(
            WORDCOUNT,
            &argv![
                "--split",
                "whitespace",
                "--top",
                &k_arg,
                "--format",
                "json",
                &files[0]
            ],
        );
        json_out.assert_success();
        assert_eq!(json_rows(&json_out).len(), rows.len(), "{}", json_out.describe());

        let table = run(
            WORDCOUNT,
            &argv!["--split", "whitespace", "--top", &k_arg, &files[0]],
        );
        table.assert_success();
        let text = table.stdout_text();
        let mut lines = text.lines();
        let header = lines
            .next()
            .unwrap_or_else(|| panic!("no header\n{}", table.describe()));
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["count", "word"],
            "{}",
            table.describe()
        );
        let body: Vec<(String, u64)> = lines
            .map(|line| {
                let mut parts = line.split_whitespace();
                let count = parts
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|_| panic!("row {line:?}"));
                let word = parts.next().unwrap_or_else(|| panic!("row {line:?}")).to_owned();
                assert!(parts.next().is_none(), "row {line:?}");
                (word, count)
            })
            .collect();
        let expected: Vec<(String, u64)> = rows
            .iter()
            .map(|(w, n)| (String::from_utf8(w.to_vec()).unwrap(), *n))
            .collect();
        assert_eq!(body, expected, "--top {k} table\n{}", table.describe());
    }
    // The default is the top 20.
    let default = run(
        WORDCOUNT,
        &argv!["--split", "whitespace", "--format", "tsv", &files[0]],
    );
    default.assert_success();
    assert_tsv_eq(&default, &tsv(&reference[..20]), "default --top");
}

// ---------------------------------------------------------------------------
// matmul helpers
// ---------------------------------------------------------------------------

/// A row-major matrix of f64 values (exactly representable in its dtype).
#[derive(Debug, Clone, PartialEq)]
struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Mat {
    fn random(rng: &mut Rng, rows: usize, cols: usize, dtype: Dtype) -> Mat {
        let data = (0..rows * cols)
            .map(|_| match dtype {
                Dtype::F32 => rng.unit() as f32 as f64,
                Dtype::F64 => rng.unit(),
                Dtype::I32 => (rng.unit() * 1000.0).floor(),
            })
            .collect();
        Mat { rows, cols, data }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    /// The `.npy` file of this matrix.
    fn npy(&self, dtype: Dtype, fortran: bool) -> Vec<u8> {
        let mut out = npy::encode_header(dtype, fortran, &[self.rows, self.cols]);
        let order: Vec<(usize, usize)> = if fortran {
            (0..self.cols)
                .flat_map(|j| (0..self.rows).map(move |i| (i, j)))
                .collect()
        } else {
            (0..self.rows)
                .flat_map(|i| (0..self.cols).map(move |j| (i, j)))
                .collect()
        };
        for (i, j) in order {
            match dtype {
                Dtype::F32 => out.extend_from_slice(&(self.at(i, j) as f32).to_le_bytes()),
                Dtype::F64 => out.extend_from_slice(&self.at(i, j).to_le_bytes()),
                Dtype::I32 => out.extend_from_slice(&(self.at(i, j) as i32).to_le_bytes()),
            }
        }
        out
    }
}

/// Parses a `.npy` file the binary wrote: C order, 2-D, exact length.
fn read_npy(bytes: &[u8]) -> (npy::Header, Mat) {
    let header = npy::parse_header(bytes).unwrap_or_else(|e| panic!("output header: {e}"));
    npy::check_len(&header, bytes.len() as u64).unwrap_or_else(|e| panic!("output length: {e}"));
    let (rows, cols) = (header.shape[0], header.shape[1]);
    let data: Vec<f64> = match header.dtype {
        Dtype::F32 => bytes[header.data_offset..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => bytes[header.data_offset..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I32 => bytes[header.data_offset..]
            .chunks_exact(4)
            .map(|c| f64::from(i32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
    };
    let mat = if header.fortran_order {
        let mut c_order = vec![0.0; rows * cols];
        for j in 0..cols {
            for i in 0..rows {
                c_order[i * cols + j] = data[j * rows + i];
            }
        }
        Mat {
            rows,
            cols,
            data: c_order,
        }
    } else {
        Mat { rows, cols, data }
    };
    (header, mat)
}

/// Checks `c` against the naive product: |c - ref| <= tol * sum |a_ik b_kj|.
fn assert_product(a: &Mat, b: &Mat, c: &Mat, tolerance: f64, context: &str) {
    assert_eq!((c.rows, c.cols), (a.rows, b.cols), "{context}: shape of C");
    for i in 0..a.rows {
        for j in 0..b.cols {
            let (mut sum, mut scale) = (0.0f64, 0.0f64);
            for k in 0..a.cols {
                sum += a.at(i, k) * b.at(k, j);
                scale += (a.at(i, k) * b.at(k, j)).abs();
            }
            let got = c.at(i, j);
            assert!(
                (got - sum).abs() <= tolerance * scale,
                "{context}: C[{i}][{j}] = {got}, expected {sum} (tolerance {tolerance} x {scale})"
            );
        }
    }
}

fn tolerance(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 1e-5,
        Dtype::F64 => 1e-12,
        Dtype::I32 => unreachable!("matmul refuses i4"),
    }
}

/// Writes A and B, runs `matmul A B -o C EXTRA...`; the outcome and C's bytes.
fn matmul_files(dir: &Path, a: &[u8], b: &[u8], extra: &[&str]) -> (Outcome, Option<Vec<u8>>) {
    let (a_path, b_path, c_path) = (dir.join("A.npy"), dir.join("B.npy"), dir.join("C.npy"));
    std::fs::write(&a_path, a).unwrap();
    std::fs::write(&b_path, b).unwrap();
    let _ = std::fs::remove_file(&c_path);
    let mut args = argv![&a_path, &b_path, "-o", &c_path];
    args.extend(extra.iter().map(OsString::from));
    let outcome = run(MATMUL, &args);
    let c = std::fs::read(&c_path).ok();
    (outcome, c)
}

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "f4",
        Dtype::F64 => "f8",
        Dtype::I32 => "i4",
    }
}

/// `.matmul-*` temporary files in `dir`.
fn stray_temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".matmul-"))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// matmul: results
// ---------------------------------------------------------------------------

#[test]
fn matmul_matches_naive_product_in_both_dtypes_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let shapes = [(1, 1, 1), (1, 257, 1), (6, 1, 5), (127, 131, 3), (3, 131, 127)];
    for dtype in [Dtype::F64, Dtype::F32] {
        for (m, k, n) in shapes {
            let a = Mat::random(&mut rng, m, k, dtype);
            let b = Mat::random(&mut rng, k, n, dtype);
            for (a_fortran, b_fortran) in [(false, false), (true, true), (false, true), (true, false)] {
                let context = format!(
                    "{}x{k} . {k}x{n} {}, A {} B {}",
                    m,
                    dtype_name(dtype),
                    if a_fortran { "F" } else { "C" },
                    if b_fortran { "F" } else { "C" }
                );
                let (outcome, c) = matmul_files(
                    dir.path(),
                    &a.npy(dtype, a_fortran),
                    &b.npy(dtype, b_fortran),
                    &[],
                );
                outcome.assert_success();
                assert!(
                    outcome.stdout.is_empty(),
                    "{context}: nothing on stdout\n{}",
                    outcome.describe()
                );
                let (header, c) =
                    read_npy(&c.unwrap_or_else(|| panic!("{context}: no C.npy\n{}", outcome.describe())));
                assert_eq!(header.dtype, dtype, "{context}: C keeps the dtype");
                assert!(!header.fortran_order, "{context}: C is written in C order");
                assert_eq!(header.shape, [m, n], "{context}");
                assert_eq!(
                    &std::fs::read(dir.path().join("C.npy")).unwrap()[..header.data_offset],
                    npy::encode_header(dtype, false, &[m, n]),
                    "{context}: header as numpy.save writes it"
                );
                assert_product(&a, &b, &c, tolerance(dtype), &context);
                assert!(
                    stray_temp_files(dir.path()).is_empty(),
                    "{context}: temporary file left behind"
                );
            }
        }
    }
}

#[test]
fn matmul_worker_counts_and_relative_output_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(8);
    let a = Mat::random(&mut rng, 37, 20, Dtype::F64);
    let b = Mat::random(&mut rng, 20, 9, Dtype::F64);
    for workers in ["1", "3", "7"] {
        let (outcome, c) = matmul_files(
            dir.path(),
            &a.npy(Dtype::F64, false),
            &b.npy(Dtype::F64, true),
            &["--workers", workers],
        );
        outcome.assert_success();
        assert_product(
            &a,
            &b,
            &read_npy(&c.unwrap()).1,
            1e-12,
            &format!("--workers {workers}"),
        );
    }
    // `-o C.npy` relative to the working directory: written there, no temp file left.
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let outcome = run_in(
        MATMUL,
        &argv![
            dir.path().join("A.npy"),
            dir.path().join("B.npy"),
            "-o",
            "rel.npy"
        ],
        b"",
        Some(&out),
    );
    outcome.assert_success();
    assert_product(
        &a,
        &b,
        &read_npy(&std::fs::read(out.join("rel.npy")).unwrap()).1,
        1e-12,
        "relative -o",
    );
    assert!(stray_temp_files(&out).is_empty());
    // An existing output file is replaced.
    let outcome = run_in(
        MATMUL,
        &argv![
            dir.path().join("A.npy"),
            dir.path().join("B.npy"),
            "-o",
            "rel.npy"
        ],
        b"",
        Some(&out),
    );
    outcome.assert_success();
    assert_product(
        &a,
        &b,
        &read_npy(&std::fs::read(out.join("rel.npy")).unwrap()).1,
        1e-12,
        "replaced -o",
    );
}

#[test]
fn matmul_zero_sized_matrices_multiply() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(9);
    // (m, k, n): zero rows, zero inner dimension (C is all zeros), zero columns.
    let shapes = [
        (0, 3, 2),
        (2, 0, 3),
        (2, 3, 0),
        (0, 3, 0),
        (0, 0, 0),
        (0, 0, 4),
        (4, 0, 0),
    ];
    for dtype in [Dtype::F64, Dtype::F32] {
        for (m, k, n) in shapes {
            let context = format!("{m}x{k} . {k}x{n} {}", dtype_name(dtype));
            let a = Mat::random(&mut rng, m, k, dtype);
            let b = Mat::random(&mut rng, k, n, dtype);
            for fortran in [false, true] {
                let (outcome, c) =
                    matmul_files(dir.path(), &a.npy(dtype, fortran), &b.npy(dtype, fortran), &[]);
                outcome.assert_success();
                let (header, c) = read_npy(&c.unwrap_or_else(|| panic!("{context}: no C.npy")));
                assert_eq!(header.shape, [m, n], "{context}");
                assert_eq!(header.dtype, dtype, "{context}");
                assert!(
                    c.data.iter().all(|&x| x == 0.0) || k > 0,
                    "{context}: k = 0 gives zeros"
                );
                assert_product(&a, &b, &c, 0.0, &context);
            }
        }
    }
}

#[test]
fn matmul_engines_write_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(10);
    for (dtype, fortran) in [(Dtype::F64, false), (Dtype::F32, true)] {
        let a = Mat::random(&mut rng, 127, 131, dtype);
        let b = Mat::random(&mut rng, 131, 3, dtype);
        let files: Vec<Vec<u8>> = ["sequential", "threads", "processes"]
            .into_iter()
            .map(|engine| {
                let (outcome, c) = matmul_files(
                    dir.path(),
                    &a.npy(dtype, fortran),
                    &b.npy(dtype, !fortran),
                    &["--engine", engine],
                );
                outcome.assert_success();
                c.unwrap()
            })
            .collect();
        assert!(
            files[0] == files[1] && files[1] == files[2],
            "{}: engines differ",
            dtype_name(dtype)
        );
        assert_product(&a, &b, &read_npy(&files[0]).1, tolerance(dtype), "engines");
    }
}

/// The `check: largest relative error E ...` value of a `--check` run.
fn reported_error(outcome: &Outcome) -> f64 {
    let text = outcome.stdout_text();
    let line = text
        .lines()
        .find(|l| l.contains("relative error"))
        .unwrap_or_else(|| panic!("no relative error printed\n{}", outcome.describe()));
    let after = line.split("relative error").nth(1).unwrap();
    let number = after.split_whitespace().next().unwrap_or("");
    number
        .parse()
        .unwrap_or_else(|_| panic!("cannot read the error in {line:?}"))
}

#[test]
fn matmul_size_check_reports_small_relative_error() {
    for (extra, limit) in [
        (&[][..], 1e-10),
        (&["--dtype", "f64", "--engine", "threads"][..], 1e-10),
        (&["--dtype", "f32", "--workers", "3"][..], 1e-4),
        (&["--engine", "sequential"][..], 1e-10),
    ] {
        let mut args = argv!["--size", "64", "--check"];
        args.extend(extra.iter().map(OsString::from));
        let outcome = run(MATMUL, &args);
        outcome.assert_success();
        let error = reported_error(&outcome);
        assert!(
            (0.0..=limit).contains(&error),
            "relative error {error} over {limit}\n{}",
            outcome.describe()
        );
    }
}

/// A line with its timings (`0.003 s`, `1.2 GFLOP/s`) replaced by `#`.
fn without_timings(line: &str) -> String {
    let tokens: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let unit = tokens.get(i + 1).map(|t| t.trim_end_matches([',', ';']));
        if token.parse::<f64>().is_ok() && matches!(unit, Some("s" | "GFLOP/s" | "MB/s")) {
            out.push("#");
        } else {
            out.push(token);
        }
    }
    out.join(" ")
}

#[test]
fn matmul_same_seed_gives_same_output() {
    for extra in [&[][..], &["--check"][..], &["--dtype", "f32", "--check"][..]] {
        let mut args = argv!["--size", "64", "--seed", "1"];
        args.extend(extra.iter().map(OsString::from));
        let first = run(MATMUL, &args);
        let second = run(MATMUL, &args);
        first.assert_success();
        second.assert_success();
        let normalize = |o: &Outcome| o.stdout_text().lines().map(without_timings).collect::<Vec<_>>();
        assert!(!normalize(&first).is_empty(), "{}", first.describe());
        assert_eq!(
            normalize(&first),
            normalize(&second),
            "{}\n{}",
            first.describe(),
            second.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// matmul: bad input
// ---------------------------------------------------------------------------

/// A valid 2x3 f64 matrix file.
fn good_a() -> Vec<u8> {
    Mat {
        rows: 2,
        cols: 3,
        data: (0..6).map(f64::from).collect(),
    }
    .npy(Dtype::F64, false)
}

/// A valid 3x2 f64 matrix file.
fn good_b() -> Vec<u8> {
    Mat {
        rows: 3,
        cols: 2,
        data: (0..6).map(f64::from).collect(),
    }
    .npy(Dtype::F64, false)
}

/// A 2x3 f64 header with `from` replaced by `to` (same length, so the
/// header stays aligned) and data for 6 elements of 8 bytes.
fn patched_header(from: &str, to: &str) -> Vec<u8> {
    let file = good_a();
    let at = file
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in header"));
    assert_eq!(from.len(), to.len());
    let mut out = file.clone();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// A header for `shape` followed by matching f64 data.
fn array_file(shape: &[usize]) -> Vec<u8> {
    let mut out = npy::encode_header(Dtype::F64, false, shape);
    out.resize(out.len() + 8 * shape.iter().product::<usize>(), 0);
    out
}

/// A version 1.0 file with header dict `dict` (padded as numpy pads it) and
/// `data` zero bytes.
fn npy_dict(dict: &str, data: usize) -> Vec<u8> {
    let mut text = dict.as_bytes().to_vec();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(text.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&text);
    out.resize(out.len() + data, 0);
    out
}

/// An f8, C-order file with the shape written as `shape` and `data` zero bytes.
fn npy_shape(shape: &str, data: usize) -> Vec<u8> {
    npy_dict(
        &format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"),
        data,
    )
}

type MatmulCase = (&'static str, &'static str, fn(&Path, &Path) -> Vec<OsString>);

#[test]
fn matmul_bad_input_is_one_line_exit_2_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let header_len = npy::encode_header(Dtype::F64, false, &[2, 3]).len();
    let a = good_a();
    let b32 = Mat {
        rows: 3,
        cols: 2,
        data: vec![0.5; 6],
    }
    .npy(Dtype::F32, false);
    let b42 = Mat {
        rows: 4,
        cols: 2,
        data: vec![0.5; 8],
    }
    .npy(Dtype::F64, false);
    let mut bad_magic = a.clone();
    bad_magic[1] = b'X';
    let mut bad_version = a.clone();
    bad_version[6] = 9;
    let mut long_header_len = a.clone();
    long_header_len[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    let mut trailing = a.clone();
    trailing.extend_from_slice(&[0; 8]);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.npy", a.clone()),
        ("b.npy", good_b()),
        ("b_f4.npy", b32),
        ("b_4x2.npy", b42),
        ("empty.npy", Vec::new()),
        ("text.npy", b"not a matrix\n".to_vec()),
        ("bad_magic.npy", bad_magic),
        ("bad_version.npy", bad_version),
        ("header_len_past_end.npy", long_header_len),
        ("truncated_header.npy", a[..30].to_vec()),
        ("header_only_prefix.npy", a[..header_len - 5].to_vec()),
        ("truncated_data.npy", a[..a.len() - 8].to_vec()),
        ("trailing_data.npy", trailing),
        ("garbage_dict.npy", patched_header("'descr'", "'dexcr'")),
        ("unclosed_dict.npy", patched_header("}", " ")),
        ("i8.npy", patched_header("'<f8'", "'<i8'")),
        (
            "i4.npy",
            Mat {
                rows: 2,
                cols: 3,
                data: (0..6).map(f64::from).collect(),
            }
            .npy(Dtype::I32, false),
        ),
        ("big_endian.npy", patched_header("'<f8'", "'>f8'")),
        ("f2.npy", patched_header("'<f8'", "'<f2'")),
        ("fortran_maybe.npy", patched_header("False", "Maybe")),
        ("one_d.npy", array_file(&[3])),
        ("three_d.npy", array_file(&[2, 2, 2])),
        ("zero_d.npy", array_file(&[])),
        ("magic_only.npy", b"\x93NUMPY".to_vec()),
        ("v2_header_len_past_end.npy", {
            let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
            v2.extend_from_slice(&u32::MAX.to_le_bytes());
            v2.extend_from_slice(&a[10..]);
            v2
        }),
        (
            "no_shape_key.npy",
            npy_dict("{'descr': '<f8', 'fortran_order': False, }", 48),
        ),
        (
            "duplicate_key.npy",
            npy_dict(
                "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
                48,
            ),
        ),
        (
            "non_ascii_header.npy",
            npy_dict(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'n\u{e9}': 1}",
                48,
            ),
        ),
        ("nul_in_header.npy", patched_header(" 'shape'", "\0'shape'")),
        ("descr_not_a_string.npy", patched_header("'<f8'", "1.5e0")),
        ("shape_is_a_list.npy", patched_header("(2, 3)", "[2, 3]")),
        ("negative_dim.npy", patched_header("(2, 3)", "(-2,3)")),
        (
            "dim_past_usize.npy",
            npy_shape("(99999999999999999999999, 3)", 48),
        ),
        (
            "33_dims.npy",
            npy_shape(&format!("({})", ["1"; 33].join(", ")), 8),
        ),
        ("shape_overflows.npy", npy_shape("(4294967296, 4294967296)", 48)),
        (
            "huge_shape_tiny_file.npy",
            npy_shape("(1000000000, 1000000000)", 48),
        ),
        ("max_by_zero.npy", npy_shape("(18446744073709551615, 0)", 0)),
        ("tall_empty.npy", npy_shape("(100000000, 0)", 0)),
        ("wide_empty.npy", npy_shape("(0, 100000000)", 0)),
    ];
    for (name, bytes) in &files {
        std::fs::write(d.join(name), bytes).unwrap();
    }
    // The damaged headers are damaged the way their names say.
    let parsed = |name: &str| npy::parse_header(&files.iter().find(|(n, _)| *n == name).unwrap().1);
    assert!(matches!(
        parsed("i8.npy"),
        Err(npy::NpyError::UnsupportedDtype(_))
    ));
    assert!(matches!(
        parsed("f2.npy"),
        Err(npy::NpyError::UnsupportedDtype(_))
    ));
    assert!(matches!(
        parsed("big_endian.npy"),
        Err(npy::NpyError::BigEndian(_))
    ));
    assert!(matches!(
        parsed("garbage_dict.npy"),
        Err(npy::NpyError::UnknownKey(_))
    ));
    assert!(matches!(
        parsed("unclosed_dict.npy"),
        Err(npy::NpyError::Malformed(_))
    ));
    assert!(matches!(
        parsed("fortran_maybe.npy"),
        Err(npy::NpyError::BadFortranOrder(_))
    ));
    assert!(matches!(parsed("one_d.npy"), Err(npy::NpyError::NotMatrix(_))));
    assert!(matches!(parsed("three_d.npy"), Err(npy::NpyError::NotMatrix(_))));
    std::fs::create_dir(d.join("subdir")).unwrap();

    // Each case gets the input folder and an empty output folder.
    let cases: Vec<MatmulCase> = vec![
        (
            "no arguments",
            "give A.npy B.npy -o C.npy, or --size N",
            |_, _| argv![],
        ),
        (
            "one input",
            "2 values required for '[A.npy] [B.npy]...' but 1 was provided",
            |d, o| argv![d.join("a.npy"), "-o", o.join("C.npy")],
        ),
        (
            "three inputs",
            "2 values required for '[A.npy] [B.npy]...' but 3 were provided",
            |d, o| {
                argv![
                    d.join("a.npy"),
                    d.join("b.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "missing -o",
            "required arguments were not provided: --output <C.npy>",
            |d, _| argv![d.join("a.npy"), d.join("b.npy")],
        ),
        (
            "-o without value",
            "a value is required for '--output <C.npy>'",
            |d, _| argv![d.join("a.npy"), d.join("b.npy"), "-o"],
        ),
        ("--size with files", "'--size <N>' cannot be used with", |d, o| {
            argv![
                "--size",
                "4",
                d.join("a.npy"),
                d.join("b.npy"),
                "-o",
                o.join("C.npy")
            ]
        }),
        (
            "--size with -o",
            "'--size <N>' cannot be used with '--output <C.npy>'",
            |_, o| argv!["--size", "4", "-o", o.join("C.npy")],
        ),
        (
            "--dtype without --size",
            "required arguments were not provided: --size <N>",
            |_, _| argv!["--dtype", "f32"],
        ),
        (
            "--check without --size",
            "required arguments were not provided: --size <N>",
            |_, _| argv!["--check"],
        ),
        ("--seed with files", "'--seed <S>' cannot be used with", |d, o| {
            argv![
                "--seed",
                "1",
                d.join("a.npy"),
                d.join("b.npy"),
                "-o",
                o.join("C.npy")
            ]
        }),
        ("--size -1", "unexpected argument '-1'", |_, _| {
            argv!["--size", "-1"]
        }),
        ("--size abc", "invalid value 'abc' for '--size <N>'", |_, _| {
            argv!["--size", "abc"]
        }),
        (
            "--dtype f16",
            "invalid value 'f16' for '--dtype <DTYPE>'",
            |_, _| argv!["--size", "4", "--dtype", "f16"],
        ),
        ("unknown flag", "unexpected argument '--bogus'", |d, o| {
            argv!["--bogus", d.join("a.npy"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        ("--workers 0", "0 is not in 1..=1024", |d, o| {
            argv![
                "--workers",
                "0",
                d.join("a.npy"),
                d.join("b.npy"),
                "-o",
                o.join("C.npy")
            ]
        }),
        ("--workers 100000", "100000 is not in 1..=1024", |d, o| {
            argv![
                "--workers",
                "100000",
                d.join("a.npy"),
                d.join("b.npy"),
                "-o",
                o.join("C.npy")
            ]
        }),
        ("--workers 0 with --size", "0 is not in 1..=1024", |_, _| {
            argv!["--size", "4", "--workers", "0"]
        }),
        (
            "unknown engine",
            "invalid value 'gpu' for '--engine <ENGINE>'",
            |d, o| {
                argv![
                    "--engine",
                    "gpu",
                    d.join("a.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        ("missing A", "missing.npy: No such file or directory", |d, o| {
            argv![d.join("missing.npy"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        ("missing B", "missing.npy: No such file or directory", |d, o| {
            argv![d.join("a.npy"), d.join("missing.npy"), "-o", o.join("C.npy")]
        }),
        ("A is a directory", "subdir: is a directory", |d, o| {
            argv![d.join("subdir"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        ("A below a regular file", "a.npy/x: Not a directory", |d, o| {
            argv![d.join("a.npy").join("x"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        (
            "output folder missing",
            "no/C.npy: No such file or directory",
            |d, o| argv![d.join("a.npy"), d.join("b.npy"), "-o", o.join("no").join("C.npy")],
        ),
        ("empty A", "empty.npy: header is truncated", |d, o| {
            argv![d.join("empty.npy"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        (
            "text file as A",
            "text.npy: bad magic string: not a .npy file",
            |d, o| argv![d.join("text.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        ("bad magic", "bad_magic.npy: bad magic string", |d, o| {
            argv![d.join("bad_magic.npy"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        (
            "bad version",
            "bad_version.npy: unsupported format version 9.0",
            |d, o| argv![d.join("bad_version.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "header length past the end",
            "header_len_past_end.npy: header is truncated",
            |d, o| {
                argv![
                    d.join("header_len_past_end.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "truncated header",
            "truncated_header.npy: header is truncated",
            |d, o| {
                argv![
                    d.join("truncated_header.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "header cut short",
            "header_only_prefix.npy: header is truncated",
            |d, o| {
                argv![
                    d.join("a.npy"),
                    d.join("header_only_prefix.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "truncated data",
            "truncated_data.npy: file is truncated: the header promises 48 bytes of data, the file holds 40",
            |d, o| {
                argv![
                    d.join("truncated_data.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "trailing data",
            "trailing_data.npy: file has 8 bytes of trailing data",
            |d, o| {
                argv![
                    d.join("trailing_data.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        ("garbage dict", "garbage_dict.npy: unknown key 'dexcr'", |d, o| {
            argv![d.join("garbage_dict.npy"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        (
            "unclosed dict",
            "unclosed_dict.npy: malformed header dictionary",
            |d, o| {
                argv![
                    d.join("unclosed_dict.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        ("dtype <i8", "i8.npy: unsupported dtype '<i8'", |d, o| {
            argv![d.join("i8.npy"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        (
            "dtype <i4",
            "i4.npy: dtype '<i4': matmul multiplies '<f4' or '<f8'",
            |d, o| argv![d.join("i4.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "dtype >f8",
            "big_endian.npy: big-endian data ('>f8') is not supported",
            |d, o| argv![d.join("big_endian.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        ("dtype <f2", "f2.npy: unsupported dtype '<f2'", |d, o| {
            argv![d.join("a.npy"), d.join("f2.npy"), "-o", o.join("C.npy")]
        }),
        (
            "fortran_order Maybe",
            "fortran_maybe.npy: 'fortran_order' must be True or False, found Maybe",
            |d, o| {
                argv![
                    d.join("fortran_maybe.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "1-D array",
            "one_d.npy: expected a 2-D array, found shape (3,)",
            |d, o| argv![d.join("one_d.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "3-D array",
            "three_d.npy: expected a 2-D array, found shape (2, 2, 2)",
            |d, o| argv![d.join("a.npy"), d.join("three_d.npy"), "-o", o.join("C.npy")],
        ),
        (
            "0-D array",
            "zero_d.npy: expected a 2-D array, found shape ()",
            |d, o| argv![d.join("zero_d.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "mixed dtypes f8 f4",
            "b_f4.npy is f32: both inputs must have the same dtype",
            |d, o| argv![d.join("a.npy"), d.join("b_f4.npy"), "-o", o.join("C.npy")],
        ),
        ("inner dimensions differ", "inner dimensions differ", |d, o| {
            argv![d.join("a.npy"), d.join("b_4x2.npy"), "-o", o.join("C.npy")]
        }),
        ("magic only", "magic_only.npy: header is truncated", |d, o| {
            argv![d.join("magic_only.npy"), d.join("b.npy"), "-o", o.join("C.npy")]
        }),
        (
            "version 2.0 header length past the end",
            "v2_header_len_past_end.npy: header is truncated",
            |d, o| {
                argv![
                    d.join("v2_header_len_past_end.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "no 'shape' key",
            "no_shape_key.npy: header dictionary has no 'shape' key",
            |d, o| argv![d.join("no_shape_key.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "duplicate key",
            "duplicate_key.npy: duplicate key 'descr'",
            |d, o| {
                argv![
                    d.join("duplicate_key.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "non-ASCII header",
            "non_ascii_header.npy: header is not valid ASCII/UTF-8",
            |d, o| {
                argv![
                    d.join("non_ascii_header.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "NUL byte in header",
            "nul_in_header.npy: malformed header dictionary: expected a value, found '\\0'shape'",
            |d, o| {
                argv![
                    d.join("nul_in_header.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "descr not a string",
            "descr_not_a_string.npy: unsupported dtype 1.5e0",
            |d, o| {
                argv![
                    d.join("descr_not_a_string.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "shape is a list",
            "shape_is_a_list.npy: 'shape' must be a tuple of integers, found [2, 3]",
            |d, o| {
                argv![
                    d.join("shape_is_a_list.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "negative dimension",
            "negative_dim.npy: negative dimension -2 in shape",
            |d, o| argv![d.join("negative_dim.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "dimension past usize",
            "dim_past_usize.npy: dimension 99999999999999999999999 in shape is too large",
            |d, o| {
                argv![
                    d.join("dim_past_usize.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "33 dimensions",
            "33_dims.npy: expected a 2-D array, found a shape with more than 32 dimensions",
            |d, o| argv![d.join("33_dims.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "huge shape whose size overflows",
            "shape_overflows.npy: shape (4294967296, 4294967296) is too large",
            |d, o| {
                argv![
                    d.join("shape_overflows.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "huge shape, 48 bytes of data",
            "huge_shape_tiny_file.npy: file is truncated: the header promises 8000000000000000000 bytes of data, the file holds 48",
            |d, o| {
                argv![
                    d.join("huge_shape_tiny_file.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "huge shape with a zero dimension",
            "max_by_zero.npy: shape (18446744073709551615, 0) is too large",
            |d, o| argv![d.join("max_by_zero.npy"), d.join("b.npy"), "-o", o.join("C.npy")],
        ),
        (
            "empty factors, product larger than memory",
            "the product needs 74505806.0 GiB, more than this machine's",
            |d, o| {
                argv![
                    d.join("tall_empty.npy"),
                    d.join("wide_empty.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "unreadable A (read fails)",
            "/proc/self/mem: Input/output error",
            |_, o| argv!["/proc/self/mem", "/proc/self/mem", "-o", o.join("C.npy")],
        ),
        (
            "--top (a wordcount flag)",
            "unexpected argument '--top'",
            |d, o| {
                argv![
                    "--top",
                    "3",
                    d.join("a.npy"),
                    d.join("b.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
        (
            "inner dimensions differ, sequential",
            "inner dimensions differ: ",
            |d, o| {
                argv![
                    "--engine",
                    "sequential",
                    d.join("a.npy"),
                    d.join("b_4x2.npy"),
                    "-o",
                    o.join("C.npy")
                ]
            },
        ),
    ];
    for (i, (name, says, args)) in cases.into_iter().enumerate() {
        let out = d.join(format!("out{i}"));
        std::fs::create_dir(&out).unwrap();
        let outcome = run(MATMUL, &args(d, &out));
        assert_bad_input_says(&outcome, name, says);
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "case `{name}`: left {left:?} in the output folder\n{}",
            outcome.describe()
        );
        assert!(
            stray_temp_files(d).is_empty(),
            "case `{name}`: temporary file in the input folder"
        );
    }
    // The inputs are untouched.
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(d.join(name)).unwrap(), bytes, "{name} changed");
    }
}

#[test]
fn matmul_huge_size_is_one_line_error_not_abort() {
    // 10^9 x 10^9 f64 (8e18 bytes) fits isize but no address space: refuse,
    // don't abort. Run in a scratch folder in case an abort dumps core.
    let dir = tempfile::tempdir().unwrap();
    for size in ["99999999999999", "1000000000"] {
        let outcome = run_in(MATMUL, &argv!["--size", size], b"", Some(dir.path()));
        assert_bad_input(&outcome, &format!("--size {size}"));
    }
}

#[test]
fn matmul_output_path_that_is_a_directory_is_bad_input() {
    // Bad input: exit 2, one line, no temporary file left.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.npy"), good_a()).unwrap();
    std::fs::write(d.join("b.npy"), good_b()).unwrap();
    std::fs::create_dir(d.join("target")).unwrap();
    let outcome = run(
        MATMUL,
        &argv![d.join("a.npy"), d.join("b.npy"), "-o", d.join("target")],
    );
    assert_eq!(outcome.code, Some(2), "{}", outcome.describe());
    assert!(outcome.stdout.is_empty(), "{}", outcome.describe());
    assert!(outcome.stderr.starts_with("error: "), "{}", outcome.describe());
    assert_eq!(outcome.stderr.matches('\n').count(), 1, "{}", outcome.describe());
    assert_no_panic_text(&outcome);
    assert!(d.join("target").is_dir(), "the directory was replaced");
    assert_eq!(std::fs::read_dir(d.join("target")).unwrap().count(), 0);
    assert!(stray_temp_files(d).is_empty(), "temporary file left behind");
}

// ---------------------------------------------------------------------------
// Hostile but valid input: success with the exact result
// ---------------------------------------------------------------------------
//
// Hostile inputs covered by this file: 104.
//
// - 90 rows of bad input: 29 for wordcount (`wordcount_bad_input_is_one_line_exit_2`)
//   and 61 for matmul (`matmul_bad_input_is_one_line_exit_2_and_leaves_no_file`),
//   each asserting exit code 2, nothing on stdout, and one line `error: ...`
//   that says what is wrong (no usage dump, no panic text).
// - 14 valid ones, each asserting exit code 0 and the exact result:
//   wordcount on binary data, every byte value, only NUL bytes, NUL bytes in
//   words, only invalid UTF-8, invalid UTF-8 in words, a FIFO, /dev/null and
//   `--top 0` (9, `wordcount_hostile_but_valid_inputs_give_exact_counts`);
//   100 MB without whitespace (one word, in both splits, with bounds on time
//   and memory); matmul with NaN and Inf (IEEE results, engines identical bit
//   for bit), 0x0 matrices, and a FIFO as input; and a file truncated while it
//   is counted (the exact count before or after, or one error line naming the
//   file; never a death by signal).

/// Writes `data` into the FIFO at `path` from a thread (opening blocks until
/// the binary opens it for reading).
fn feed_fifo(path: &Path, data: Vec<u8>) -> std::thread::JoinHandle<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut fifo = std::fs::File::options().write(true).open(&path).unwrap();
        // A reader that stopped early is the test's failure to report, not ours.
        let _ = fifo.write_all(&data);
    })
}

#[test]
fn wordcount_hostile_but_valid_inputs_give_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng(77);
    let binary: Vec<u8> = (0..65_536).map(|_| rng.next() as u8).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary data", binary),
        ("every byte value", (0..=255u8).cycle().take(256 * 40).collect()),
        ("only NUL bytes", vec![0; 10_000]),
        ("NUL bytes inside words", b"a\0b a\0b\0 \0 x\0\0y a".to_vec()),
        (
            "only invalid UTF-8",
            b"\xFF\xFE \xC3 \xE2\x82 \xED\xA0\x80 \xC0\xAF \xFF\xFE\n\x80".to_vec(),
        ),
        (
            "invalid UTF-8 inside words",
            b"ab\xFFcd ab\xFFcd caf\xC3 CAF\xC3".to_vec(),
        ),
    ];
    for (name, text) in &cases {
        let files = write_files(d, &[("input", text)]);
        for mode in [WordRule::Whitespace, WordRule::Alphanumeric] {
            let expected = tsv(&ranked(&reference(mode, &[text])));
            for engine in ["processes", "sequential"] {
                let outcome = wordcount_tsv(mode, &engine_args(engine, "3"), &files, b"");
                outcome.assert_success();
                assert_tsv_eq(&outcome, &expected, &format!("{name}, {mode:?}, {engine}"));
            }
        }
    }
    // Spot checks of the references themselves.
    let nul_words = reference(WordRule::Whitespace, &[b"a\0b a\0b\0 \0 x\0\0y a"]);
    assert_eq!(nul_words.get(b"a\0b".as_slice()), Some(&1));
    assert_eq!(nul_words.get(b"\0".as_slice()), Some(&1));
    assert!(reference(WordRule::Alphanumeric, &[&[0u8; 100]]).is_empty());

    // A FIFO is read like standard input.
    let text = generate_text(78, 200_000);
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    for mode in [WordRule::Whitespace, WordRule::Alphanumeric] {
        let writer = feed_fifo(&fifo, text.clone());
        let outcome = wordcount_tsv(mode, &[], std::slice::from_ref(&fifo), b"");
        outcome.assert_success();
        writer.join().unwrap();
        assert_tsv_eq(&outcome, &tsv(&ranked(&reference(mode, &[&text]))), "FIFO");
    }

    // /dev/null (a character device) is empty input.
    let outcome = wordcount_tsv(WordRule::Alphanumeric, &[], &[PathBuf::from("/dev/null")], b"");
    outcome.assert_success();
    assert!(outcome.stdout.is_empty(), "{}", outcome.describe());

    // `--top 0` asks for the 0 most frequent words (the docs: "the K most
    // frequent words"): empty output, not an error.
    let files = write_files(d, &[("words", b"a b b c c c")]);
    let outcome = run(WORDCOUNT, &argv!["--top", "0", "--format", "tsv", &files[0]]);
    outcome.assert_success();
    assert!(outcome.stdout.is_empty(), "{}", outcome.describe());
    let table = run(WORDCOUNT, &argv!["--top", "0", &files[0]]);
    table.assert_success();
    assert_eq!(table.stdout_text(), "count  word\n", "{}", table.describe());
    let json = run(WORDCOUNT, &argv!["--top", "0", "--format", "json", &files[0]]);
    json.assert_success();
    assert_eq!(json_rows(&json), []);
}

/// Runs `bin` with `args` (no stdin), and returns its outcome and peak
/// resident memory in bytes, as `wait4` reports it for the process.
fn run_measured(bin: &str, args: &[OsString]) -> (Outcome, u64) {
    let mut cmd = command(bin, args);
    cmd.stdin(Stdio::null());
    let command = command_line(&cmd);
    #[allow(clippy::zombie_processes, reason = "reaped by wait4 below")]
    let mut child = cmd.spawn().unwrap();
    let out_reader = read_all(child.stdout.take().unwrap());
    let err_reader = read_all(child.stderr.take().unwrap());
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let deadline = started + TIMEOUT;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid rusage, which wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not yet reaped (nothing else waits for it).
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            break (ExitStatus::from_raw(status), usage);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command}: still running after {TIMEOUT:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let outcome = Outcome {
        command,
        code: status.code(),
        signal: status.signal(),
        stdout: out_reader.join().unwrap(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
        elapsed: started.elapsed(),
    };
    (outcome, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn wordcount_100_mb_without_whitespace_is_one_word() {
    const LEN: usize = 100_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-word");
    std::fs::write(&path, vec![b'Q'; LEN]).unwrap();
    for (split, word) in [("whitespace", b'Q'), ("words", b'q')] {
        let started = Instant::now();
        let (outcome, peak) = run_measured(
            WORDCOUNT,
            &argv![
                "--split",
                split,
                "--all",
                "--format",
                "tsv",
                "--workers",
                "2",
                &path
            ],
        );
        let seconds = started.elapsed().as_secs_f64();
        outcome.assert_success();
        // Exactly one word, the whole file (lowercased by `--split words`).
        assert_eq!(outcome.stdout.len(), 2 + LEN + 1, "--split {split}");
        assert!(outcome.stdout.starts_with(b"1\t") && outcome.stdout.ends_with(b"\n"));
        assert!(
            outcome.stdout[2..2 + LEN].iter().all(|&b| b == word),
            "--split {split}: the word is the file"
        );
        // Linear in the input: the mapping, the word and its copy in the
        // partial, with room to spare; a debug build, a loaded machine.
        assert!(
            peak < 5 * LEN as u64,
            "--split {split}: peak RSS {peak} bytes for a {LEN}-byte word"
        );
        assert!(seconds < 40.0, "--split {split}: {seconds:.1} s");
    }
}

#[test]
fn matmul_nan_and_inf_propagate_and_engines_agree_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    // C = A . B, by IEEE rules whatever the order of the sums:
    // row 0: [1 + inf, 0 - inf, 0 + inf*0, 1 - inf] = [inf, -inf, NaN, -inf]
    // row 1: NaN everywhere (NaN times anything)
    // row 2: [inf + inf, inf*0 - inf, NaN, inf - inf] = [inf, NaN, NaN, NaN]
    // row 3: finite: [2, -1, 0, 0]
    let a = Mat {
        rows: 4,
        cols: 2,
        data: vec![1.0, inf, nan, 1.0, inf, inf, 1.0, 1.0],
    };
    let b = Mat {
        rows: 2,
        cols: 4,
        data: vec![1.0, 0.0, 0.0, 1.0, 1.0, -1.0, 0.0, -1.0],
    };
    let expected = [
        [inf, -inf, nan, -inf],
        [nan, nan, nan, nan],
        [inf, nan, nan, nan],
        [2.0, -1.0, 0.0, 0.0],
    ];
    for dtype in [Dtype::F64, Dtype::F32] {
        let mut outputs = Vec::new();
        for engine in ["sequential", "threads", "processes"] {
            let (outcome, c) = matmul_files(
                dir.path(),
                &a.npy(dtype, false),
                &b.npy(dtype, true),
                &engine_args(engine, "3"),
            );
            outcome.assert_success();
            let c = c.unwrap();
            let (_, mat) = read_npy(&c);
            for (i, row) in expected.iter().enumerate() {
                for (j, &want) in row.iter().enumerate() {
                    let got = mat.at(i, j);
                    assert!(
                        got == want || (got.is_nan() && want.is_nan()),
                        "{} {engine}: C[{i}][{j}] = {got}, IEEE says {want}",
                        dtype_name(dtype)
                    );
                }
            }
            outputs.push((engine, c));
        }
        for (engine, c) in &outputs[1..] {
            assert!(
                *c == outputs[0].1,
                "{} --engine {engine} differs from sequential",
                dtype_name(dtype)
            );
        }
    }
}

#[test]
fn matmul_0x0_and_fifo_inputs_multiply() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 0x0 . 0x0 is a 0x0 product: a file of a header and nothing else.
    let empty = Mat {
        rows: 0,
        cols: 0,
        data: vec![],
    };
    let (outcome, c) = matmul_files(
        d,
        &empty.npy(Dtype::F64, false),
        &empty.npy(Dtype::F64, true),
        &[],
    );
    outcome.assert_success();
    assert_eq!(c.unwrap(), npy::encode_header(Dtype::F64, false, &[0, 0]));

    // A FIFO as A is read like a file.
    let a = Mat {
        rows: 2,
        cols: 3,
        data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    };
    std::fs::write(d.join("B.npy"), good_b()).unwrap();
    let fifo = d.join("A.fifo");
    mkfifo(&fifo);
    let writer = feed_fifo(&fifo, a.npy(Dtype::F64, false));
    let outcome = run(MATMUL, &argv![&fifo, d.join("B.npy"), "-o", d.join("C.npy")]);
    outcome.assert_success();
    writer.join().unwrap();
    let (_, c) = read_npy(&std::fs::read(d.join("C.npy")).unwrap());
    // B = [[0, 1], [2, 3], [4, 5]]
    assert_eq!(c.data, [16.0, 22.0, 34.0, 49.0]);
}

/// `wordcount --split whitespace --format tsv --engine ENGINE FILE` on a large
/// file of `"ab "` that another thread truncates (to 1,000 words) after
/// `delay`: whatever the timing, the outcome is the exact count of the file
/// as it was (before or after), or one clean error line naming the file;
/// never a death by signal.
fn truncated_while_counted(engine: &str, delay: Duration) {
    const WORDS: usize = 20_000_000;
    const KEPT: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinking.txt");
    std::fs::write(&path, b"ab ".repeat(WORDS)).unwrap();
    let truncate = {
        let path = path.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_len(3 * KEPT as u64).unwrap();
        })
    };
    let outcome = run(
        WORDCOUNT,
        &argv![
            "--split",
            "whitespace",
            "--format",
            "tsv",
            "--engine",
            engine,
            &path
        ],
    );
    truncate.join().unwrap();
    let context = format!(
        "--engine {engine}, truncated after {delay:?}\n{}",
        outcome.describe()
    );
    assert!(outcome.code.is_some(), "killed by a signal: {context}");
    assert_no_panic_text(&outcome);
    match outcome.code {
        Some(0) => {
            let text = outcome.stdout_text();
            assert!(
                text == format!("{WORDS}\tab\n") || text == format!("{KEPT}\tab\n"),
                "a success must count the file before or after: {context}"
            );
        }
        Some(1 | 2) => {
            assert!(outcome.stdout.is_empty(), "{context}");
            assert_eq!(outcome.stderr.matches('\n').count(), 1, "one line: {context}");
            assert!(outcome.stderr.starts_with("error: "), "{context}");
            assert!(
                outcome.stderr.contains(&path.display().to_string()),
                "the error names the file: {context}"
            );
        }
        _ => panic!("unexpected exit code: {context}"),
    }
}

#[test]
fn wordcount_file_truncated_mid_job_is_an_error_not_a_crash() {
    for delay_ms in [0, 30, 150, 600] {
        // The processes engine relies on the pool's run_job calling
        // `Input::check_files_intact` after the job, as the others do.
        for engine in ["sequential", "threads", "processes"] {
            truncated_while_counted(engine, Duration::from_millis(delay_ms));
        }
    }
}
