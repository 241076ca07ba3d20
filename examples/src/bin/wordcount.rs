//! `wordcount`: word frequencies of files (or stdin), counted by cooperating
//! worker processes over shared memory.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use coop::prelude::*;
use coop_examples::cli::{self, BadInput, EngineArgs, EngineKind, Failure, ProgressBar};
use coop_examples::wordcount::WordCount;
use coop_examples::words::{SplitMode, WordCounts};

/// Count word frequencies across FILEs (standard input if none, or "-").
/// Each file counts separately: a word never spans two files.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Files to count; "-" or nothing reads standard input.
    files: Vec<PathBuf>,

    #[command(flatten)]
    engine: EngineArgs,

    /// What a word is: runs of alphanumeric characters, lowercased (words), or
    /// runs of bytes between ASCII whitespace, as they are (whitespace, like `wc -w`).
    #[arg(long, value_enum, default_value_t = Split::Words)]
    split: Split,

    /// Print the K most frequent words.
    #[arg(long, value_name = "K", default_value_t = 20, conflicts_with = "all")]
    top: usize,

    /// Print every word.
    #[arg(long)]
    all: bool,

    /// Output format. In json, a word that is not valid UTF-8 is written with
    /// U+FFFD in place of its invalid bytes; tsv writes the bytes as found.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Split {
    Words,
    Whitespace,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Tsv,
    Json,
}

fn main() -> ExitCode {
    coop::init(&[coop_examples::wordcount::register()]).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    let mode = match args.split {
        Split::Words => SplitMode::Words,
        Split::Whitespace => SplitMode::Whitespace,
    };
    let mut input = Input::new();
    let stdin = PathBuf::from("-");
    let files = if args.files.is_empty() {
        std::slice::from_ref(&stdin)
    } else {
        &args.files[..]
    };
    for file in files {
        if *file == stdin {
            // `push_file` maps the file by its own path, or reads it if no
            // path names it; one that cannot be opened again (its path
            // unreadable here, say) is read through standard input.
            let mapped = stdin_is_unread_file(args.engine.engine) && input.push_file("/dev/stdin").is_ok();
            if !mapped {
                input
                    .push_reader(io::stdin().lock())
                    .map_err(|err| anyhow::anyhow!("standard input: {err}"))
                    .bad_input()?;
            }
        } else {
            input.push_file(file).bad_input()?;
        }
    }

    let started = Instant::now();
    let engine = args.engine.start()?;
    let bar = ProgressBar::default();
    let report = |p| bar.report(p);
    let counts: WordCounts = Run::new(&WordCount { mode }, &input)
        .progress(&report)
        .on(&engine)?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();

    let words = if args.all {
        counts.sorted()
    } else {
        counts.top(args.top)
    };
    let mut out = BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Table => write_table(&mut out, &words)?,
        Format::Tsv => {
            for (word, count) in &words {
                write!(out, "{count}\t")?;
                out.write_all(word)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Json => {
            let entries: Vec<_> = words
                .iter()
                .map(|(word, count)| serde_json::json!({ "word": String::from_utf8_lossy(word), "count": count }))
                .collect();
            serde_json::to_writer_pretty(&mut out, &entries)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;

    let bytes = input.total_bytes();
    eprintln!(
        "{} file(s), {bytes} bytes, {} words, {} distinct, {} worker(s) ({}), {seconds:.3} s, {:.1} MB/s",
        input.len(),
        counts.total(),
        counts.distinct(),
        engine.workers(),
        engine.name(),
        bytes as f64 / 1e6 / seconds.max(1e-9),
    );
    Ok(())
}

/// Whether standard input can be mapped as `/dev/stdin`, like a FILE
/// argument, instead of copied into shared memory (which takes about as long
/// as counting it on 2 cores): a regular file not read from yet (the mapping
/// starts at its beginning). Never with `--engine mpi`, whose ranks on other
/// hosts may not see the file: rank 0 sends them standard input.
#[cfg(target_os = "linux")]
fn stdin_is_unread_file(engine: EngineKind) -> bool {
    use std::io::Seek;
    use std::os::fd::AsFd;

    // A duplicate of the descriptor, which shares its offset.
    let stdin = io::stdin().as_fd().try_clone_to_owned().map(std::fs::File::from);
    engine != EngineKind::Mpi
        && stdin.is_ok_and(|mut file| {
            file.metadata().is_ok_and(|meta| meta.is_file()) && file.stream_position().is_ok_and(|at| at == 0)
        })
}

#[cfg(not(target_os = "linux"))]
fn stdin_is_unread_file(_: EngineKind) -> bool {
    false
}

fn write_table(out: &mut impl Write, words: &[(&[u8], u64)]) -> io::Result<()> {
    let width = words
        .iter()
        .map(|(_, c)| c.to_string().len())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(out, "{:>width$}  word", "count")?;
    for (word, count) in words {
        // Control characters (NUL, escape...) would garble a terminal: show them escaped.
        let word: String = String::from_utf8_lossy(word)
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect();
        writeln!(out, "{count:>width$}  {word}")?;
    }
    Ok(())
}
