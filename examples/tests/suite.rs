//! The Phoenix suite's programs (`linreg`, `strmatch`, `histogram`) as real
//! processes on every engine, against independent computations: plain loops
//! in this file, and GNU `grep -c -F` for `strmatch`. Empty and one-element
//! inputs, odd sizes, records longer than a task, and hostile files (each
//! one `error:` line and exit 2).

#[allow(dead_code, unused_macros)]
#[macro_use]
mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Outcome, assert_bad_input_says, run};
use coop_examples::histogram::encode_bmp;
use serde_json::Value;

const LINREG: &str = env!("CARGO_BIN_EXE_linreg");
const STRMATCH: &str = env!("CARGO_BIN_EXE_strmatch");
const HISTOGRAM: &str = env!("CARGO_BIN_EXE_histogram");

/// Every engine, as the programs' options name it.
const ENGINES: [&[&str]; 4] = [
    &["--engine", "sequential"],
    &["--engine", "threads", "-w", "2"],
    &["-w", "2"],
    &["-w", "2", "--ipc", "messages"],
];

/// `bin` with `engine`'s options, then `args`, then `files`; it must succeed.
fn run_ok(bin: &str, engine: &[&str], args: &[&str], files: &[PathBuf]) -> Outcome {
    let mut argv: Vec<OsString> = engine.iter().chain(args).map(OsString::from).collect();
    argv.extend(files.iter().map(OsString::from));
    let outcome = run(bin, &argv);
    assert_eq!(outcome.code, Some(0), "{}", outcome.describe());
    outcome
}

fn json(outcome: &Outcome) -> Value {
    serde_json::from_slice(&outcome.stdout).unwrap_or_else(|e| panic!("{e}\n{}", outcome.describe()))
}

/// Pseudo-random bytes, the same on every run.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

// ---------------------------------------------------------------------------
// linreg
// ---------------------------------------------------------------------------

#[test]
fn linreg_sums_and_fits_as_a_plain_loop_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    // Points around y = x / 2 + 3 (clamped to a signed byte), an empty
    // file and a file of one point.
    let mut points = noise(2 * 300_001, 5);
    for pair in points.chunks_exact_mut(2) {
        let x = pair[0] as i8;
        pair[1] = (x / 2).saturating_add(3).saturating_add((pair[1] as i8) >> 5) as u8;
    }
    let files = [
        write(dir.path(), "points", &points),
        write(dir.path(), "empty", b""),
        write(dir.path(), "one", &[0xFF, 0x05]),
    ];
    let all: Vec<(f64, f64)> = (points.chunks_exact(2).chain([&[0xFFu8, 0x05][..]]))
        .map(|p| (f64::from(p[0] as i8), f64::from(p[1] as i8)))
        .collect();
    let n = all.len() as f64;
    let sum = |f: &dyn Fn(&(f64, f64)) -> f64| all.iter().map(f).sum::<f64>();
    let (mean_x, mean_y) = (sum(&|p| p.0) / n, sum(&|p| p.1) / n);
    let (sxx, syy, sxy) = (
        sum(&|p| (p.0 - mean_x).powi(2)),
        sum(&|p| (p.1 - mean_y).powi(2)),
        sum(&|p| (p.0 - mean_x) * (p.1 - mean_y)),
    );
    let slope = sxy / sxx;
    let expected_floats = [
        ("slope", slope),
        ("intercept", mean_y - slope * mean_x),
        ("r2", sxy * sxy / (sxx * syy)),
    ];
    let expected_ints = [
        ("n", all.len() as i64),
        ("sx", sum(&|p| p.0) as i64),
        ("sy", sum(&|p| p.1) as i64),
        ("sxx", sum(&|p| p.0 * p.0) as i64),
        ("syy", sum(&|p| p.1 * p.1) as i64),
        ("sxy", sum(&|p| p.0 * p.1) as i64),
    ];
    for engine in ENGINES {
        let report = json(&run_ok(LINREG, engine, &["--format", "json"], &files));
        for (key, value) in expected_ints {
            assert_eq!(report[key].as_i64(), Some(value), "{key} on {engine:?}: {report}");
        }
        for (key, value) in expected_floats {
            let got = report[key].as_f64().unwrap();
            assert!(
                (got - value).abs() <= 1e-9 * value.abs().max(1.0),
                "{key} on {engine:?}: {got} against {value}"
            );
        }
    }
    // No point, and points on one vertical line: no line to speak of.
    let vertical = write(dir.path(), "vertical", &[3, 1, 3, 9]);
    for (files, n) in [(&files[1..2], 0), (std::slice::from_ref(&vertical), 2)] {
        let tsv = run_ok(LINREG, &[], &["--format", "tsv"], files).stdout_text();
        assert!(
            tsv.starts_with(&format!("n\t{n}\n")) && tsv.contains("slope\tnone\n"),
            "{tsv}"
        );
    }
}

#[test]
fn linreg_refuses_a_file_of_half_a_point() {
    let dir = tempfile::tempdir().unwrap();
    let odd = write(dir.path(), "odd", &[1, 2, 3]);
    let outcome = run(LINREG, &argv![&odd]);
    assert_bad_input_says(
        &outcome,
        "odd length",
        "3 bytes, not a whole number of 2-byte points",
    );
    let outcome = run(LINREG, &argv![dir.path().join("missing")]);
    assert_bad_input_says(&outcome, "missing file", "missing");
}

// ---------------------------------------------------------------------------
// strmatch
// ---------------------------------------------------------------------------

/// `grep -c -F` over each file (in the C locale, binary files as text),
/// summed.
fn grep_count(patterns: &[&[u8]], files: &[PathBuf]) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    files
        .iter()
        .map(|file| {
            let mut cmd = Command::new("grep");
            cmd.env("LC_ALL", "C").args(["-c", "-a", "-F"]);
            for pattern in patterns {
                cmd.arg("-e").arg(std::ffi::OsStr::from_bytes(pattern));
            }
            let out = cmd.arg("--").arg(file).output().expect("grep runs");
            // 1: no line matched, which -c reports as 0.
            assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn strmatch_counts_lines_as_grep_does_on_every_engine() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    // Lines of words with a few markers, one line longer than a task, an
    // empty file, a file of one line without its newline, and bytes that
    // are not UTF-8.
    let mut text = Vec::new();
    for (i, byte) in noise(40_000, 9).into_iter().enumerate() {
        let word: &[u8] = match byte % 9 {
            0 => b"needle",
            1 => b"need",
            2 => b"eedle",
            3 => b"\xff\xfe",
            _ => b"hay",
        };
        text.extend_from_slice(word);
        text.push(if i % 7 == 0 { b'\n' } else { b' ' });
    }
    text.extend(std::iter::repeat_n(b'x', 3 << 20));
    text.extend_from_slice(b"needle at the end of a long line\n\nlast line needle");
    let files = [
        write(dir.path(), "text", &text),
        write(dir.path(), "empty", b""),
        write(dir.path(), "one", b"one needle, no newline"),
    ];
    let patterns: [&[u8]; 6] = [b"needle", b"need", b"eedle", b"\xff\xfe", b"absent", b"x needle"];
    let expected: Vec<u64> = patterns.iter().map(|p| grep_count(&[p], &files)).collect();
    let any = grep_count(&patterns, &files);
    assert!(
        expected[0] > 0 && expected[4] == 0 && any > expected[0],
        "{expected:?}"
    );
    for engine in ENGINES {
        let mut args: Vec<OsString> = engine.iter().map(OsString::from).collect();
        args.extend(["--format", "tsv"].map(OsString::from));
        for pattern in patterns {
            args.extend([OsString::from("-e"), std::ffi::OsStr::from_bytes(pattern).into()]);
        }
        args.extend(files.iter().map(OsString::from));
        let outcome = run(STRMATCH, &args);
        assert_eq!(outcome.code, Some(0), "{}", outcome.describe());
        let mut want = Vec::new();
        for (pattern, lines) in patterns.iter().zip(&expected) {
            want.extend_from_slice(b"pattern\t");
            want.extend_from_slice(pattern);
            want.extend_from_slice(format!("\t{lines}\n").as_bytes());
        }
        want.extend_from_slice(format!("any\t\t{any}\n").as_bytes());
        assert_eq!(outcome.stdout, want, "{engine:?}\n{}", outcome.describe());
    }
}

#[test]
fn strmatch_reads_patterns_from_a_file_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "text", b"alpha beta\ngamma\n\nbeta delta\n");
    // An empty line is the empty pattern, which every line contains.
    let list = write(dir.path(), "patterns", b"beta\nzeta\n\n");
    let report = json(&run_ok(
        STRMATCH,
        &[],
        &["--format", "json", "-e", "gamma", "-f"],
        &[list.clone(), text.clone()],
    ));
    let expected = serde_json::json!({
        "patterns": [
            {"pattern": "gamma", "lines": 1},
            {"pattern": "beta", "lines": 2},
            {"pattern": "zeta", "lines": 0},
            {"pattern": "", "lines": 4},
        ],
        "any": 4,
    });
    assert_eq!(report, expected);
    assert_eq!(
        grep_count(&[b"gamma", b"beta", b"zeta", b""], std::slice::from_ref(&text)),
        4
    );
    let outcome = run(STRMATCH, &argv!["-e", "two\nlines", &text]);
    assert_bad_input_says(&outcome, "newline in a pattern", "newline");
    let outcome = run(STRMATCH, &argv!["-f", dir.path().join("missing"), &text]);
    assert_bad_input_says(&outcome, "missing pattern file", "missing");
}

// ---------------------------------------------------------------------------
// histogram
// ---------------------------------------------------------------------------

#[test]
fn histogram_counts_each_channel_as_a_plain_loop_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let colour = |seed: u64| {
        move |x: usize, y: usize| {
            let n = (x as u64 * 31 + y as u64 * 17 + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            [(n >> 40) as u8, (n >> 48) as u8, (n >> 56) as u8]
        }
    };
    // Odd widths (rows padded), one pixel, a row longer than a task, no
    // pixels at all, and an image stored top down.
    let shapes = [(1001, 333), (1, 1), (3 << 20, 1), (0, 5), (7, 0), (6, 9)];
    let mut files = Vec::new();
    let mut expected = vec![0u64; 3 * 256];
    for (k, &(width, height)) in shapes.iter().enumerate() {
        let mut bytes = encode_bmp(width, height, colour(k as u64));
        if k == shapes.len() - 1 {
            bytes[22..26].copy_from_slice(&(-(height as i32)).to_le_bytes());
        }
        for y in 0..height {
            for x in 0..width {
                for (channel, value) in colour(k as u64)(x, y).into_iter().enumerate() {
                    expected[channel * 256 + usize::from(value)] += 1;
                }
            }
        }
        files.push(write(dir.path(), &format!("{k}.bmp"), &bytes));
    }
    for engine in ENGINES {
        let report = json(&run_ok(HISTOGRAM, engine, &["--format", "json"], &files));
        for (channel, name) in ["b", "g", "r"].into_iter().enumerate() {
            let got: Vec<u64> = serde_json::from_value(report[name].clone()).unwrap();
            assert_eq!(got, expected[channel * 256..][..256], "{name} on {engine:?}");
        }
    }
    let tsv = run_ok(HISTOGRAM, &[], &["--format", "tsv"], &files[1..2]).stdout_text();
    assert_eq!(tsv.lines().count(), 768);
    // One pixel: a 1 in each channel, 765 zeros, values 0 to 255 in order.
    let rows: Vec<Vec<&str>> = tsv.lines().map(|line| line.split('\t').collect()).collect();
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, row)| row[0] == ["b", "g", "r"][i / 256] && row[1] == (i % 256).to_string())
    );
    assert_eq!(rows.iter().filter(|row| row[2] == "1").count(), 3);
    assert_eq!(rows.iter().filter(|row| row[2] == "0").count(), 765);
}

#[test]
fn histogram_refuses_what_is_not_a_24_bit_bmp() {
    let dir = tempfile::tempdir().unwrap();
    let image = encode_bmp(10, 10, |x, y| [x as u8, y as u8, 0]);
    let mut eight_bit = image.clone();
    eight_bit[28] = 8;
    let mut lying = image.clone();
    lying[22..26].copy_from_slice(&1_000_000i32.to_le_bytes());
    for (name, bytes, says) in [
        ("truncated", &image[..image.len() - 5], "but the file has"),
        ("eight-bit", &eight_bit[..], "8-bit BMP"),
        ("lying", &lying[..], "10 x 1000000 pixels"),
        (
            "not-bmp",
            b"GIF89a, not a bitmap at all",
            "does not start with \"BM\"",
        ),
        ("empty", b"", "shorter than its headers"),
    ] {
        let good = write(dir.path(), "good.bmp", &image);
        let bad = write(dir.path(), name, bytes);
        let outcome = run(HISTOGRAM, &argv![&good, &bad]);
        assert_bad_input_says(&outcome, name, says);
        assert!(
            outcome.stderr.contains(name),
            "the message names the file\n{}",
            outcome.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// kmeans
// ---------------------------------------------------------------------------

const KMEANS: &str = env!("CARGO_BIN_EXE_kmeans");

/// Lloyd's algorithm the plain way, stopping when a pass assigns every point
/// as the pass before: the passes, the means.
fn plain_lloyd(points: &[Vec<i32>], k: usize, max_iter: usize) -> (usize, Vec<Vec<f64>>) {
    let mut means: Vec<Vec<f64>> = points[..k]
        .iter()
        .map(|p| p.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let mut before: Option<Vec<usize>> = None;
    for pass in 1..=max_iter {
        let assigned: Vec<usize> = points
            .iter()
            .map(|p| {
                let distance = |m: &Vec<f64>| {
                    p.iter()
                        .zip(m)
                        .map(|(&x, m)| (f64::from(x) - m).powi(2))
                        .sum::<f64>()
                };
                // The first of the nearest.
                (0..k).fold(0, |best, c| {
                    if distance(&means[c]) < distance(&means[best]) {
                        c
                    } else {
                        best
                    }
                })
            })
            .collect();
        for (c, mean) in means.iter_mut().enumerate() {
            let members: Vec<&Vec<i32>> = points
                .iter()
                .zip(&assigned)
                .filter(|(_, a)| **a == c)
                .map(|(p, _)| p)
                .collect();
            if !members.is_empty() {
                for (j, m) in mean.iter_mut().enumerate() {
                    *m = members.iter().map(|p| i128::from(p[j])).sum::<i128>() as f64 / members.len() as f64;
                }
            }
        }
        if before.as_ref() == Some(&assigned) {
            return (pass, means);
        }
        before = Some(assigned);
    }
    (max_iter, means)
}

fn npy_i32(points: &[Vec<i32>], dims: usize) -> Vec<u8> {
    let mut bytes =
        coop_examples::npy::encode_header(coop_examples::npy::Dtype::I32, false, &[points.len(), dims]);
    bytes.extend(points.iter().flatten().flat_map(|x| x.to_le_bytes()));
    bytes
}

#[test]
fn kmeans_matches_a_plain_lloyd_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let noise = noise(4 * 3 * 3_001, 11);
    let points: Vec<Vec<i32>> = (noise.chunks_exact(12))
        .enumerate()
        .map(|(i, c)| {
            let centre = [(i % 5) as i32 * 1_000, (i % 3) as i32 * -700, 40];
            (0..3)
                .map(|j| centre[j] + i32::from(i16::from_le_bytes([c[4 * j], c[4 * j + 1]]) / 100))
                .collect()
        })
        .collect();
    let file = write(dir.path(), "points.npy", &npy_i32(&points, 3));
    let (passes, means) = plain_lloyd(&points, 6, 50);
    assert!(passes > 1 && passes < 50, "{passes} passes: the test wants a few");
    let out = dir.path().join("means.npy");
    for engine in ENGINES {
        let args = [
            "--format",
            "json",
            "-k",
            "6",
            "--max-iter",
            "50",
            "-o",
            out.to_str().unwrap(),
        ];
        let report = json(&run_ok(KMEANS, engine, &args, std::slice::from_ref(&file)));
        assert_eq!(report["iterations"], passes, "{engine:?}: {report}");
        assert_eq!(report["converged"], true);
        // The file's means are the bits computed; JSON's, text that
        // serde_json parses back to within an ulp or so.
        let got: Vec<f64> = serde_json::from_value::<Vec<Vec<f64>>>(report["means"].clone())
            .unwrap()
            .concat();
        assert!(
            got.iter()
                .zip(means.concat())
                .all(|(g, m)| (g - m).abs() <= 1e-12 * m.abs()),
            "{engine:?}"
        );
        let written = std::fs::read(&out).unwrap();
        let header = coop_examples::npy::parse_header(&written).unwrap();
        assert_eq!(
            (header.dtype, &header.shape[..]),
            (coop_examples::npy::Dtype::F64, &[6, 3][..])
        );
        let data: Vec<f64> = bytemuck::pod_collect_to_vec(&written[header.data_offset..]);
        assert_eq!(data, means.concat());
    }
    // One point, one cluster; and a pass limit that ends it early.
    let one = write(dir.path(), "one.npy", &npy_i32(&[vec![-5, 7]], 2));
    let report = json(&run_ok(KMEANS, &[], &["--format", "json", "-k", "1"], &[one]));
    assert_eq!(
        (report["iterations"].as_u64(), &report["means"]),
        (Some(2), &serde_json::json!([[-5.0, 7.0]]))
    );
    let report = json(&run_ok(
        KMEANS,
        &[],
        &["--format", "json", "-k", "6", "--max-iter", "1"],
        &[file],
    ));
    assert_eq!(
        (report["iterations"].as_u64(), report["converged"].as_bool()),
        (Some(1), Some(false))
    );
}

#[test]
fn kmeans_refuses_points_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let good = npy_i32(&[vec![1, 2], vec![3, 4]], 2);
    let mut floats = coop_examples::npy::encode_header(coop_examples::npy::Dtype::F64, false, &[2, 2]);
    floats.extend([0u8; 32]);
    for (name, bytes, args, says) in [
        ("floats.npy", floats, &["-k", "1"][..], "points are '<i4'"),
        (
            "short.npy",
            good[..good.len() - 3].to_vec(),
            &["-k", "1"],
            "truncated",
        ),
        (
            "good.npy",
            good.clone(),
            &["-k", "3"],
            "-k 3: must be from 1 to the number of points, 2",
        ),
        (
            "text.npy",
            b"1 2\n3 4\n".to_vec(),
            &["-k", "1"],
            "not a .npy file",
        ),
    ] {
        let path = write(dir.path(), name, &bytes);
        let mut argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        argv.push(path.into());
        assert_bad_input_says(&run(KMEANS, &argv), name, says);
    }
}

// ---------------------------------------------------------------------------
// pca
// ---------------------------------------------------------------------------

const PCA: &str = env!("CARGO_BIN_EXE_pca");

/// An `rows x cols` `.npy` of f64, `value(r, c)` each, in C or Fortran order.
fn npy_f64(rows: usize, cols: usize, fortran: bool, value: impl Fn(usize, usize) -> f64) -> Vec<u8> {
    let mut bytes = coop_examples::npy::encode_header(coop_examples::npy::Dtype::F64, fortran, &[rows, cols]);
    let order: Vec<(usize, usize)> = if fortran {
        (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).collect()
    } else {
        (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).collect()
    };
    bytes.extend(order.into_iter().flat_map(|(r, c)| value(r, c).to_le_bytes()));
    bytes
}

#[test]
fn pca_gives_numpys_covariance_and_the_same_bits_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    // More rows than one block of the column sums; correlated columns.
    let (rows, cols) = (9_001, 7);
    let noise = noise(rows * cols, 21);
    let value = |r: usize, c: usize| f64::from(noise[r * cols + c]) / 7.0 + (r % 13) as f64 * c as f64 - 50.0;
    let means: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| value(r, c)).sum::<f64>() / rows as f64)
        .collect();
    let expected: Vec<f64> = (0..cols * cols)
        .map(|k| {
            let (i, j) = (k / cols, k % cols);
            (0..rows)
                .map(|r| (value(r, i) - means[i]) * (value(r, j) - means[j]))
                .sum::<f64>()
                / (rows - 1) as f64
        })
        .collect();
    let mut first: Option<Vec<u8>> = None;
    for fortran in [false, true] {
        let file = write(dir.path(), "x.npy", &npy_f64(rows, cols, fortran, value));
        for engine in ENGINES {
            let out = dir.path().join("cov.npy");
            let args = ["--format", "json", "-o", out.to_str().unwrap()];
            let report = json(&run_ok(PCA, engine, &args, std::slice::from_ref(&file)));
            assert_eq!(
                (report["rows"].as_u64(), report["cols"].as_u64()),
                (Some(rows as u64), Some(cols as u64))
            );
            let got_means: Vec<f64> = serde_json::from_value(report["means"].clone()).unwrap();
            assert!(
                got_means
                    .iter()
                    .zip(&means)
                    .all(|(g, m)| (g - m).abs() <= 1e-9 * m.abs().max(1.0))
            );
            let written = std::fs::read(&out).unwrap();
            let header = coop_examples::npy::parse_header(&written).unwrap();
            assert_eq!(&header.shape[..], &[cols, cols]);
            let got: Vec<f64> = bytemuck::pod_collect_to_vec(&written[header.data_offset..]);
            for (g, e) in got.iter().zip(&expected) {
                assert!(
                    (g - e).abs() <= 1e-9 * e.abs().max(1.0),
                    "{g} against {e} on {engine:?}"
                );
            }
            // Bit for bit the same, whatever the engine and the order.
            match &first {
                None => first = Some(written),
                Some(first) => assert_eq!(first, &written, "{engine:?}, fortran {fortran}"),
            }
        }
    }
}

#[test]
fn pca_of_one_row_is_nan_as_numpy_and_other_dtypes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let one = write(dir.path(), "one.npy", &npy_f64(1, 2, false, |_, c| c as f64));
    let out = dir.path().join("cov.npy");
    let report = json(&run_ok(
        PCA,
        &[],
        &["--format", "json", "-o", out.to_str().unwrap()],
        &[one],
    ));
    assert_eq!(report["means"], serde_json::json!([0.0, 1.0]));
    let written = std::fs::read(&out).unwrap();
    let header = coop_examples::npy::parse_header(&written).unwrap();
    let cov: Vec<f64> = bytemuck::pod_collect_to_vec(&written[header.data_offset..]);
    assert!(cov.len() == 4 && cov.iter().all(|x| x.is_nan()), "{cov:?}");
    let ints = write(dir.path(), "ints.npy", &npy_i32(&[vec![1, 2]], 2));
    assert_bad_input_says(&run(PCA, &argv![&ints, "-o", &out]), "ints", "pca takes '<f8'");
    let short = write(dir.path(), "short.npy", &npy_f64(3, 3, false, |_, _| 1.0)[..100]);
    assert_bad_input_says(&run(PCA, &argv![&short, "-o", &out]), "short", "short.npy");
}
