//! End-to-end test of the `speedup` binary on a tiny study: the table, the
//! Amdahl fit, the time breakdown, the CSV file and the SVG chart.

// Each test crate compiles its own copy of the shared helpers and uses only
// some of them: the rest would warn as unused.
#[allow(dead_code, unused_macros)]
#[macro_use]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use coop_examples::study::report::CSV_COLUMNS;

use common::{Outcome, command, run_within};

const SPEEDUP: &str = env!("CARGO_BIN_EXE_speedup");

const ENGINES: [&str; 5] = [
    "sequential",
    "bare threads",
    "threads",
    "processes",
    "processes/messages",
];
const WORKLOADS: [&str; 7] = [
    "word count",
    "matmul",
    "histogram",
    "linreg",
    "kmeans",
    "pca",
    "strmatch",
];

/// A hung study fails its test instead of hanging the suite.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the binary and collects what it printed, killing it after [`TIMEOUT`]
/// (its workers die with it).
fn speedup(args: &[&str]) -> Outcome {
    let mut cmd = command(SPEEDUP, &args.iter().map(Into::into).collect::<Vec<_>>());
    cmd.stdin(Stdio::null());
    run_within(&mut cmd, b"", TIMEOUT)
}

/// The table's cells: columns are separated by at least two spaces.
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn quick_study_prints_the_table_and_writes_csv_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested").join("out");
    let started = Instant::now();
    let output = speedup(&[
        "--quick",
        "--text-mb",
        "2",
        "--vocabulary",
        "5000",
        "--size",
        "128",
        "--suite-mb",
        "1",
        "--max-workers",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.code, Some(0), "{}", output.describe());
    assert!(
        text.contains("MB of generated text (vocabulary 5000, seed 1"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(60),
        "took {took:?}\n{}",
        output.describe()
    );

    assert!(
        text.contains("started once and given a first job, then 1 timed round(s)")
            && text.contains("then one round that samples memory, each run on an engine started for it"),
        "{text}"
    );

    // The table: a row per workload, engine and worker count.
    let header = text
        .lines()
        .position(|l| l.starts_with("workload") && l.contains("median s") && l.contains("peak PSS MB"))
        .unwrap_or_else(|| panic!("no table header\n{}", output.describe()));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(header + 2)
        .take_while(|l| !l.trim().is_empty())
        .map(cells)
        .collect();
    // Sequential once, bare threads at 2, the three engines at 1 and 2.
    assert_eq!(rows.len(), WORKLOADS.len() * (1 + 1 + 3 * 2), "{text}");
    for workload in WORKLOADS {
        for engine in ENGINES {
            let workers: &[&str] = match engine {
                "sequential" => &["1"],
                "bare threads" => &["2"],
                _ => &["1", "2"],
            };
            for &n in workers {
                let row = rows
                    .iter()
                    .find(|r| r[0] == workload && r[1] == engine && r[2] == n)
                    .unwrap_or_else(|| panic!("no row {workload} / {engine} / {n}\n{text}"));
                assert_eq!(row.len(), 13, "{row:?}");
                let median: f64 = row[3].parse().unwrap();
                assert!(median >= 0.0, "{row:?}");
                let unit = match workload {
                    "matmul" => "GFLOP/s",
                    "histogram" => "Mpixel/s",
                    "linreg" | "kmeans" => "Mpoint/s",
                    "pca" => "Mrow/s",
                    _ => "MB/s",
                };
                assert!(row[8].ends_with(unit), "{row:?}");
                if engine == "sequential" {
                    assert_eq!(row[6], "1.00", "{row:?}");
                }
                // Sampled in the memory round, which every configuration runs.
                if std::path::Path::new("/proc/self/smaps_rollup").exists() {
                    let peak: f64 = row[9].parse().unwrap_or_else(|_| panic!("no peak PSS: {row:?}"));
                    assert!(peak > 0.0, "{row:?}");
                }
                // Every engine ran a first job before the timed rounds.
                let first: f64 = row[11]
                    .parse()
                    .unwrap_or_else(|_| panic!("no first job: {row:?}"));
                assert!(first > 0.0, "{row:?}");
            }
        }
    }

    // Round-by-round ratios at 2 workers, each workload.
    for workload in WORKLOADS {
        let line = text
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{workload}, 2 workers: speedup over sequential"))
            })
            .unwrap_or_else(|| panic!("no round-by-round ratios for {workload}\n{text}"));
        // One round: the median is the min and the max.
        for ratio in [
            "of bare threads ",
            "processes / threads time ",
            "processes / bare threads time ",
        ] {
            let after = line
                .split(ratio)
                .nth(1)
                .unwrap_or_else(|| panic!("no {ratio}: {line}"));
            let (median, range) = after.split_once(' ').unwrap();
            let median = median.trim_end_matches('x');
            assert!(
                range.starts_with(&format!("({median}-{median})")),
                "{ratio}: {line}"
            );
            assert!(median.parse::<f64>().unwrap() > 0.0, "{line}");
        }
    }

    // Amdahl's law, fitted per workload, with projections.
    assert!(text.contains("Amdahl's law"), "{text}");
    for workload in WORKLOADS {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                l.trim_start()
                    .starts_with(&format!("{workload}: T1 = processes at 1 worker"))
            })
            .unwrap_or_else(|| panic!("no Amdahl fit for {workload}\n{text}"));
        let fit = lines[at + 1].trim_start();
        assert!(
            fit.starts_with("s = ") && fit.contains("projected speedup on 8 cores"),
            "{fit}"
        );
        assert!(fit.contains("16: ") && fit.contains("64: "), "{fit}");
        let s: f64 = fit["s = ".len()..].split(',').next().unwrap().parse().unwrap();
        assert!(s.is_finite(), "{fit}");
    }
    // Where the time goes, for the processes engine at 2 workers.
    for workload in WORKLOADS {
        assert!(
            text.contains(&format!("{workload} / processes / 2 workers")),
            "{text}"
        );
    }
    for piece in ["split", "dispatch", "merge", "messages"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(piece)),
            "{piece}\n{text}"
        );
    }

    // The CSV: header, one line per table row, numbers that parse.
    let csv_path = out.join("speedup.csv");
    assert!(text.contains(&csv_path.display().to_string()), "{text}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    let mut expected: Vec<String> = CSV_COLUMNS.iter().map(|c| c.to_string()).collect();
    expected.push("time_1_s".to_string());
    assert_eq!(lines.next().unwrap(), expected.join(","));
    let records: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(records.len(), rows.len(), "{csv}");
    for (record, row) in records.iter().zip(&rows) {
        assert_eq!(record.len(), expected.len(), "{record:?}");
        assert_eq!(&record[..3], &row[..3]);
        let median: f64 = record[3].parse().unwrap();
        let time: f64 = record[expected.len() - 1].parse().unwrap();
        assert_eq!(median, time, "one run: its time is the median");
        let speedup: f64 = record[6].parse().unwrap();
        assert!(speedup > 0.0, "{record:?}");
        assert!(
            matches!(record[9], "MB/s" | "GFLOP/s" | "Mpixel/s" | "Mpoint/s" | "Mrow/s"),
            "{record:?}"
        );
    }
    // Messages carry the input; shared memory carries only ranges.
    let to_workers = CSV_COLUMNS.iter().position(|&c| c == "bytes_to_workers").unwrap();
    let sent = |engine: &str| -> f64 {
        let record = records
            .iter()
            .find(|r| r[0] == "word count" && r[1] == engine && r[2] == "2")
            .unwrap();
        record[to_workers].parse().unwrap()
    };
    assert!(sent("processes/messages") >= 2e6, "{csv}");
    assert!(sent("processes") < 1e5, "{csv}");

    // The chart.
    let svg_path = out.join("speedup.svg");
    assert!(text.contains(&svg_path.display().to_string()), "{text}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("<svg"), "not an SVG");
    for label in WORKLOADS
        .into_iter()
        .chain(["bare threads", "processes/messages", "ideal (y = x)"])
    {
        assert!(svg.contains(label), "{label} missing from the chart");
    }
}

#[test]
fn text_from_a_file_is_counted_and_the_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let output = speedup(&[
        "--quick",
        "--text-mb",
        "1",
        "--size",
        "16",
        "--max-workers",
        "1",
        "--text-input",
        "file",
        "--apps",
        "wordcount,matmul",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(output.code, Some(0), "{}", output.describe());
    let text = String::from_utf8_lossy(&output.stdout);
    let (_, after) = text
        .split_once("--split words) in ")
        .unwrap_or_else(|| panic!("{text}"));
    let (corpus, _) = after
        .split_once(", mapped afresh by each run")
        .unwrap_or_else(|| panic!("{text}"));
    let corpus = std::path::Path::new(corpus);
    assert_eq!(corpus.parent(), Some(dir.path()), "{text}");
    // Every engine counted the same words as the sequential one (the study
    // checks), and the file is gone.
    assert!(
        text.lines().any(|l| l.starts_with("word count  processes ")),
        "{text}"
    );
    assert!(!corpus.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn bad_arguments_end_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for args in [
        &["--runs", "0"][..],
        &["--max-workers", "0"],
        &["--size", "x"],
        &["--no-such-flag"],
        &["--text-input", "disk"],
        &["--apps", "wordcount,grep"],
        &["--quick", "--out", file.to_str().unwrap()],
    ] {
        let output = speedup(args);
        let stderr = &output.stderr;
        assert_eq!(output.code, Some(2), "{args:?}: {}", output.describe());
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: {}", output.describe());
    }
}
