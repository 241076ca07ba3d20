//! Summaries of repeated runs and how they are written: an aligned text
//! table ([`write_table`]), a CSV file ([`write_csv`], same columns plus the
//! coordinator's time breakdown and every run's time), and the breakdown of a
//! job's time into its serial pieces ([`write_breakdown`]).

use std::io::{self, Write};
use std::time::Duration;

use coop::JobStats;

/// Median, smallest and largest of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Summary {
    /// The summary of `values`; `None` if there are none (NaNs sort last).
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        Some(Summary {
            median: median_of_sorted(&sorted),
            min,
            max,
        })
    }
}

fn median_of_sorted(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The median of `values` (0 if empty).
pub fn median(values: &[f64]) -> f64 {
    Summary::of(values).map_or(0.0, |s| s.median)
}

/// Medians over runs of what [`JobStats`] reports, each field on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatsSummary {
    /// Tasks per job.
    pub tasks: f64,
    /// Time in `Job::split` and output checks, seconds.
    pub split: f64,
    /// Time encoding and sending tasks, seconds.
    pub dispatch: f64,
    /// Time decoding and merging partials, seconds.
    pub merge: f64,
    /// Wall time of the job as the engine measured it, seconds.
    pub total: f64,
    /// Bytes of messages to workers.
    pub bytes_to_workers: f64,
    /// Bytes of messages from workers.
    pub bytes_from_workers: f64,
}

impl StatsSummary {
    /// Field-by-field medians of `stats`.
    pub fn of(stats: &[JobStats]) -> StatsSummary {
        let med = |f: &dyn Fn(&JobStats) -> f64| median(&stats.iter().map(f).collect::<Vec<_>>());
        let secs = Duration::as_secs_f64;
        StatsSummary {
            tasks: med(&|s| s.tasks as f64),
            split: med(&|s| secs(&s.split)),
            dispatch: med(&|s| secs(&s.dispatch)),
            merge: med(&|s| secs(&s.merge)),
            total: med(&|s| secs(&s.total)),
            bytes_to_workers: med(&|s| s.bytes_to_workers as f64),
            bytes_from_workers: med(&|s| s.bytes_from_workers as f64),
        }
    }

    /// The coordinator's serial pieces together: split, dispatch and merge.
    pub fn serial(&self) -> f64 {
        self.split + self.dispatch + self.merge
    }
}

/// How fast a run went, in the workload's own unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throughput {
    /// Megabytes (10^6 bytes) of input per second.
    MegabytesPerSecond(f64),
    /// Billions of floating-point operations per second.
    GigaflopsPerSecond(f64),
    /// Millions of the workload's items (pixels, points) per second.
    MillionsPerSecond {
        /// How many millions.
        value: f64,
        /// The unit, as printed: `Mpixel/s`.
        unit: &'static str,
    },
}

impl Throughput {
    /// The number, without its unit.
    pub fn value(self) -> f64 {
        match self {
            Throughput::MegabytesPerSecond(v)
            | Throughput::GigaflopsPerSecond(v)
            | Throughput::MillionsPerSecond { value: v, .. } => v,
        }
    }

    /// The unit, as printed.
    pub fn unit(self) -> &'static str {
        match self {
            Throughput::MegabytesPerSecond(_) => "MB/s",
            Throughput::GigaflopsPerSecond(_) => "GFLOP/s",
            Throughput::MillionsPerSecond { unit, .. } => unit,
        }
    }
}

/// One engine at one worker count on one workload: every run's time and what
/// was derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The workload's name.
    pub workload: String,
    /// The engine's label (`sequential`, `threads`, `processes`, `processes/messages`).
    pub engine: String,
    /// Workers (threads or processes); 1 for the sequential engine.
    pub workers: usize,
    /// Seconds of each run, in order.
    pub times: Vec<f64>,
    /// The sequential engine's median over this row's median.
    pub speedup: f64,
    /// At the median time.
    pub throughput: Throughput,
    /// The largest summed PSS of the coordinator and the workers over all runs.
    pub peak_pss: Option<u64>,
    /// Median seconds it took to start the engine (a pool, a thread pool);
    /// not part of any run.
    pub start: f64,
    /// Seconds of the engine's first job, run before the timed rounds.
    pub first: f64,
    /// Medians of the engine's [`JobStats`].
    pub stats: StatsSummary,
    /// CPU time other processes on the machine used during this row's runs,
    /// as a share of all cores over the runs' time (0.5: half the machine).
    pub others_cpu: Option<f64>,
}

impl Row {
    /// Median, min and max of the runs' times.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.times).unwrap_or(Summary {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        })
    }

    /// Parallel efficiency: speedup per worker.
    pub fn efficiency(&self) -> f64 {
        self.speedup / self.workers.max(1) as f64
    }
}

/// `numerator`'s time over `denominator`'s, run by run: run `i` of each row
/// ran in the same round, close in time, so that a machine that drifts
/// (shared, throttled) weighs on both alike. `None` if the rows do not have
/// as many runs, or have none.
pub fn paired_ratios(numerator: &Row, denominator: &Row) -> Option<Summary> {
    if numerator.times.len() != denominator.times.len() {
        return None;
    }
    let ratios: Vec<f64> = (numerator.times.iter().zip(&denominator.times))
        .map(|(a, b)| a / b)
        .collect();
    Summary::of(&ratios)
}

fn megabytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_string(), |b| format!("{:.0}", b as f64 / 1e6))
}

/// The table's column titles.
pub const TABLE_COLUMNS: [&str; 13] = [
    "workload",
    "engine",
    "workers",
    "median s",
    "min s",
    "max s",
    "speedup",
    "efficiency",
    "throughput",
    "peak PSS MB",
    "start s",
    "first s",
    "others %",
];

/// Writes `rows` as an aligned table: text columns left, numbers right.
pub fn write_table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    let cells: Vec<[String; 13]> = rows
        .iter()
        .map(|row| {
            let s = row.summary();
            [
                row.workload.clone(),
                row.engine.clone(),
                row.workers.to_string(),
                format!("{:.3}", s.median),
                format!("{:.3}", s.min),
                format!("{:.3}", s.max),
                format!("{:.2}", row.speedup),
                format!("{:.2}", row.efficiency()),
                format!("{:.1} {}", row.throughput.value(), row.throughput.unit()),
                megabytes(row.peak_pss),
                format!("{:.3}", row.start),
                format!("{:.3}", row.first),
                row.others_cpu
                    .map_or_else(|| "-".to_string(), |share| format!("{:.0}", 100.0 * share)),
            ]
        })
        .collect();
    let mut widths = TABLE_COLUMNS.map(str::len);
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let print = |out: &mut dyn Write, line: &[&str]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, &width)) in line.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if i < 2 {
                text.push_str(&format!("{cell:<width$}"));
            } else {
                text.push_str(&format!("{cell:>width$}"));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    print(out, &TABLE_COLUMNS)?;
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    print(out, &rule.iter().map(String::as_str).collect::<Vec<_>>())?;
    for line in &cells {
        print(out, &line.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// The CSV columns before the runs' times (`time_1_s`, `time_2_s`, ...).
pub const CSV_COLUMNS: [&str; 20] = [
    "workload",
    "engine",
    "workers",
    "median_s",
    "min_s",
    "max_s",
    "speedup",
    "efficiency",
    "throughput",
    "throughput_unit",
    "peak_pss_mb",
    "start_s",
    "first_job_s",
    "tasks",
    "split_s",
    "dispatch_s",
    "merge_s",
    "bytes_to_workers",
    "bytes_from_workers",
    "others_cpu_share",
];

/// A CSV field, quoted when it must be.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Writes `rows` as CSV: a header of [`CSV_COLUMNS`] then `time_1_s` up to
/// the most runs of any row, and one line per row. Times in seconds with
/// microsecond precision; a missing value is an empty field.
pub fn write_csv(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    let runs = rows.iter().map(|r| r.times.len()).max().unwrap_or(0);
    let mut header: Vec<String> = CSV_COLUMNS.iter().map(|c| c.to_string()).collect();
    header.extend((1..=runs).map(|i| format!("time_{i}_s")));
    writeln!(out, "{}", header.join(","))?;
    for row in rows {
        let s = row.summary();
        let mut line = vec![
            field(&row.workload),
            field(&row.engine),
            row.workers.to_string(),
            format!("{:.6}", s.median),
            format!("{:.6}", s.min),
            format!("{:.6}", s.max),
            format!("{:.4}", row.speedup),
            format!("{:.4}", row.efficiency()),
            format!("{:.3}", row.throughput.value()),
            field(row.throughput.unit()),
            row.peak_pss
                .map_or(String::new(), |b| format!("{:.1}", b as f64 / 1e6)),
            format!("{:.6}", row.start),
            format!("{:.6}", row.first),
            format!("{}", row.stats.tasks),
            format!("{:.6}", row.stats.split),
            format!("{:.6}", row.stats.dispatch),
            format!("{:.6}", row.stats.merge),
            format!("{}", row.stats.bytes_to_workers),
            format!("{}", row.stats.bytes_from_workers),
            row.others_cpu
                .map_or(String::new(), |share| format!("{share:.4}")),
        ];
        line.extend((0..runs).map(|i| row.times.get(i).map_or(String::new(), |t| format!("{t:.6}"))));
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

fn piece(seconds: f64, of: f64) -> String {
    if of > 0.0 {
        format!("{:.4} s {:>5.1}%", seconds, 100.0 * seconds / of)
    } else {
        format!("{seconds:.4} s      ")
    }
}

/// Writes where the time of each row's jobs went (medians over runs): the
/// coordinator's serial pieces (split, dispatch, merge) in seconds and as a
/// share of the job's time, the rest (the workers' parallel work and the
/// waiting for it), and the bytes that travelled in messages.
pub fn write_breakdown(out: &mut impl Write, rows: &[&Row]) -> io::Result<()> {
    for row in rows {
        let stats = &row.stats;
        let job = if stats.total > 0.0 {
            stats.total
        } else {
            row.summary().median
        };
        writeln!(
            out,
            "  {} / {} / {} workers: job {:.4} s, {} tasks",
            row.workload, row.engine, row.workers, job, stats.tasks
        )?;
        if stats.total == 0.0 {
            writeln!(out, "    (the engine reported no breakdown)")?;
            continue;
        }
        let rest = (job - stats.serial()).max(0.0);
        writeln!(out, "    split     {}", piece(stats.split, job))?;
        writeln!(out, "    dispatch  {}", piece(stats.dispatch, job))?;
        writeln!(out, "    merge     {}", piece(stats.merge, job))?;
        writeln!(
            out,
            "    serial    {}  (split + dispatch + merge)",
            piece(stats.serial(), job)
        )?;
        writeln!(out, "    rest      {}  (workers' map, waiting)", piece(rest, job))?;
        writeln!(
            out,
            "    messages  {:.3} MB to workers, {:.3} MB from workers",
            stats.bytes_to_workers / 1e6,
            stats.bytes_from_workers / 1e6
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(engine: &str, times: Vec<f64>) -> Row {
        Row {
            workload: "word count".into(),
            engine: engine.into(),
            workers: 2,
            times,
            speedup: 1.5,
            throughput: Throughput::MegabytesPerSecond(123.45),
            peak_pss: Some(12_345_678),
            start: 0.01,
            first: 0.5,
            stats: StatsSummary::default(),
            others_cpu: Some(0.25),
        }
    }

    #[test]
    fn summaries_take_the_middle() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn paired_ratios_divide_run_by_run() {
        // The machine slows down by half in the second round: each round's
        // ratio is still 2.
        let slow = row("threads", vec![2.0, 4.0, 3.0]);
        let fast = row("processes", vec![1.0, 2.0, 1.5]);
        let ratios = paired_ratios(&slow, &fast).unwrap();
        assert_eq!((ratios.median, ratios.min, ratios.max), (2.0, 2.0, 2.0));
        let uneven = paired_ratios(&slow, &row("processes", vec![1.0, 4.0, 0.75])).unwrap();
        assert_eq!((uneven.median, uneven.min, uneven.max), (2.0, 1.0, 4.0));
        assert_eq!(paired_ratios(&slow, &row("processes", vec![1.0])), None);
        assert_eq!(paired_ratios(&row("a", vec![]), &row("b", vec![])), None);
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let rows = [row("threads", vec![1.0, 2.0, 3.0]), row("a,b", vec![1.0])];
        let mut out = Vec::new();
        write_csv(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("workload,engine,workers,median_s"));
        assert!(lines[0].ends_with("time_1_s,time_2_s,time_3_s"));
        assert_eq!(lines[0].split(',').count(), CSV_COLUMNS.len() + 3);
        assert!(
            lines[1].starts_with(
                "word count,threads,2,2.000000,1.000000,3.000000,1.5000,0.7500,123.450,MB/s,12.3,"
            )
        );
        assert!(lines[2].starts_with("word count,\"a,b\",2,"), "{}", lines[2]);
        assert!(lines[2].ends_with("1.000000,,"), "{}", lines[2]);
    }

    #[test]
    fn table_is_aligned() {
        let mut out = Vec::new();
        write_table(&mut out, &[row("processes/messages", vec![0.5])]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("workload    engine"));
        assert!(lines[2].contains("processes/messages"));
        assert!(lines[2].contains("123.5 MB/s"));
        assert_eq!(lines[0].len(), lines[2].len(), "{text}");
    }
}
