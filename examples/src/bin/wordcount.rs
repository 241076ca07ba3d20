//! `wordcount`: word frequencies of files (or stdin), counted by cooperating
//! worker processes over shared memory.

use std::ffi::OsStr;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use coop::EngineKind;
use coop::partial::{Tally, WordRule};
use coop::prelude::*;
use coop_examples::cli::{self, BadInput, EngineArgs, Failure, Format, ProgressBar};
use coop_examples::wordcount::WordCount;

/// Count word frequencies across FILEs (standard input if none, or "-").
/// Each file counts separately: a word never spans two files.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Files to count; "-" or nothing reads standard input.
    files: Vec<PathBuf>,

    /// Count every regular file under each directory named, recursively, in
    /// sorted order. Symbolic links named as FILE (or in --files0-from) are
    /// followed; links met while walking a directory are not, as with `grep -r`.
    #[arg(short, long)]
    recursive: bool,

    /// Count the files named in F, each name ended by a NUL byte (as `find
    /// -print0` writes them), instead of FILEs; "-" reads the names from
    /// standard input.
    #[arg(long, value_name = "F")]
    files0_from: Option<PathBuf>,

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

    /// End the count with an error (exit 1) if it has not finished DURATION
    /// after it started (the workers' start not counted): "2s", "500ms",
    /// "1m 30s". Workers still counting are stopped.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Split {
    Words,
    Whitespace,
}

fn main() -> ExitCode {
    coop::init(&[coop_examples::wordcount::register()]).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    let rule = match args.split {
        Split::Words => WordRule::Alphanumeric,
        Split::Whitespace => WordRule::Whitespace,
    };
    let names = match &args.files0_from {
        Some(list) => {
            if let Some(extra) = args.files.first() {
                return Err(anyhow::anyhow!(
                    "extra operand '{}': file operands cannot be combined with --files0-from",
                    extra.display()
                ))
                .bad_input();
            }
            read_files0(list).bad_input()?
        }
        None if args.files.is_empty() => vec![PathBuf::from("-")],
        None => args.files.clone(),
    };
    let mut input = Input::new();
    for name in &names {
        push_name(&mut input, name, &args).bad_input()?;
    }

    let started = Instant::now();
    let engine = args.engine.start()?;
    let bar = ProgressBar::default();
    let report = |p| bar.report(p);
    let job = WordCount { rule };
    let mut run = Run::new(&job, &input).progress(&report);
    if let Some(timeout) = args.timeout {
        run = run.deadline(Instant::now() + timeout);
    }
    let counts: Tally = run.on(&engine)?;
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
        counts.len(),
        engine.workers(),
        engine.name(),
        bytes as f64 / 1e6 / seconds.max(1e-9),
    );
    Ok(())
}

/// Adds what `name` names: standard input for "-", the regular files under
/// a directory with `-r`, or the file.
fn push_name(input: &mut Input, name: &Path, args: &Args) -> anyhow::Result<()> {
    if name == Path::new("-") {
        // `push_file` maps the file by its own path, or reads it if no path
        // names it; one that cannot be opened again (its path unreadable
        // here, say) is read through standard input.
        let mapped = stdin_is_unread_file(args.engine.engine) && input.push_file("/dev/stdin").is_ok();
        if !mapped {
            input
                .push_reader(io::stdin().lock())
                .map_err(|err| anyhow::anyhow!("standard input: {err}"))?;
        }
        return Ok(());
    }
    // `metadata` follows links: a link named by the user is followed. Any
    // error is left to `push_file`, which says it with the path.
    if !std::fs::metadata(name).is_ok_and(|meta| meta.is_dir()) {
        input.push_file(name)?;
        return Ok(());
    }
    if !args.recursive {
        anyhow::bail!(
            "{}: is a directory (use -r to count the files under it)",
            name.display()
        );
    }
    // Siblings sorted by name, so that the files (and their segment order)
    // do not depend on the order the file system lists them in. Links met in
    // the walk are not followed: they would count a file twice, or loop.
    for entry in walkdir::WalkDir::new(name)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|err| match (err.path(), err.io_error()) {
            (Some(path), Some(io)) => anyhow::anyhow!("{}: {io}", path.display()),
            _ => anyhow::anyhow!("{err}"),
        })?;
        if entry.file_type().is_file() {
            input.push_file(entry.path())?;
        }
    }
    Ok(())
}

/// The file names in `list` (standard input for "-"), each ended by a NUL
/// byte (the last one may lack it), as `wc --files0-from` reads them.
fn read_files0(list: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let from_stdin = list == Path::new("-");
    let mut bytes = Vec::new();
    let read = if from_stdin {
        io::stdin().lock().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(list).and_then(|mut file| file.read_to_end(&mut bytes))
    };
    read.map_err(|err| anyhow::anyhow!("--files0-from {}: {err}", list.display()))?;
    let mut names: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    // What follows the last NUL: nothing, or a last name without its NUL.
    if names.last().is_some_and(|last| last.is_empty()) {
        names.pop();
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let at = format!("{}:{}", list.display(), i + 1);
            match name {
                b"" => Err(anyhow::anyhow!("{at}: invalid zero-length file name")),
                // Standard input holds the list: it cannot be counted too.
                b"-" if from_stdin => Err(anyhow::anyhow!(
                    "{at}: when reading file names from standard input, no file name of '-' allowed"
                )),
                _ => Ok(PathBuf::from(OsStr::from_bytes(name))),
            }
        })
        .collect()
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
