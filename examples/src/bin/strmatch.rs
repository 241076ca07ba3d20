//! `strmatch`: how many lines of FILEs contain each of a few fixed strings,
//! counted by cooperating worker processes (what `grep -c -F` counts).

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use coop::prelude::*;
use coop_examples::cli::{self, BadInput, EngineArgs, Failure, Format};
use coop_examples::strmatch::{LineCounts, StrMatch};

/// For each fixed string, count the lines of FILEs that contain it, and the
/// lines that contain any (as `grep -c -F` counts them, over all FILEs
/// together). A line ends at `\n`; bytes are compared as bytes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A string to look for; give -e once per string.
    #[arg(
        short = 'e',
        long = "regexp",
        value_name = "PATTERN",
        required_unless_present = "file"
    )]
    patterns: Vec<OsString>,

    /// Read the strings from F, one a line (after those of -e).
    #[arg(short = 'f', long = "file", value_name = "F")]
    file: Option<PathBuf>,

    /// Files to search.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Output format. tsv: `pattern<TAB>PATTERN<TAB>LINES` a string, then
    /// `any<TAB><TAB>LINES`; the strings' bytes as given. In json, a string
    /// that is not UTF-8 has U+FFFD in place of its invalid bytes.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    coop::init(&[coop_examples::strmatch::register()]).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    let mut patterns: Vec<Vec<u8>> = args.patterns.iter().cloned().map(OsString::into_vec).collect();
    if let Some(path) = &args.file {
        let list = std::fs::read(path)
            .with_context(|| path.display().to_string())
            .bad_input()?;
        if !list.is_empty() {
            let list = list.strip_suffix(b"\n").unwrap_or(&list);
            patterns.extend(list.split(|&b| b == b'\n').map(<[u8]>::to_vec));
        }
    }
    let job = StrMatch::new(patterns).bad_input()?;
    let input = Input::from_files(&args.files).bad_input()?;
    let started = Instant::now();
    let engine = args.engine.start()?;
    let counts: LineCounts = engine.run(&job, &input).map_err(cli::job_failure)?;
    let seconds = started.elapsed().as_secs_f64();

    let rows: Vec<(&[u8], u64)> = job
        .patterns()
        .iter()
        .map(Vec::as_slice)
        .zip(counts.patterns.iter().copied())
        .collect();
    let mut out = io::BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Table => {
            let width = rows
                .iter()
                .map(|(p, _)| p.escape_ascii().to_string().len())
                .max()
                .unwrap_or(0)
                .max(7);
            writeln!(out, "{:width$}  LINES", "PATTERN")?;
            for (pattern, lines) in &rows {
                writeln!(out, "{:width$}  {lines}", pattern.escape_ascii().to_string())?;
            }
            writeln!(out, "{:width$}  {}", "(any)", counts.any)?;
        }
        Format::Tsv => {
            for (pattern, lines) in &rows {
                out.write_all(b"pattern\t")?;
                out.write_all(pattern)?;
                writeln!(out, "\t{lines}")?;
            }
            writeln!(out, "any\t\t{}", counts.any)?;
        }
        Format::Json => {
            #[derive(serde::Serialize)]
            struct Row<'a> {
                pattern: std::borrow::Cow<'a, str>,
                lines: u64,
            }
            #[derive(serde::Serialize)]
            struct Report<'a> {
                patterns: Vec<Row<'a>>,
                any: u64,
            }
            let patterns = (rows.iter())
                .map(|&(p, lines)| Row {
                    pattern: String::from_utf8_lossy(p),
                    lines,
                })
                .collect();
            serde_json::to_writer_pretty(
                &mut out,
                &Report {
                    patterns,
                    any: counts.any,
                },
            )?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    let bytes = input.total_bytes();
    eprintln!(
        "{} file(s), {bytes} bytes, {} pattern(s), {} worker(s) ({}), {seconds:.3} s, {:.1} MB/s",
        input.len(),
        rows.len(),
        engine.workers(),
        engine.name(),
        bytes as f64 / 1e6 / seconds.max(1e-9),
    );
    Ok(())
}
