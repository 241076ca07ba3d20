//! `linreg`: the least-squares line through points stored as pairs of
//! signed bytes, counted by cooperating worker processes.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::anyhow;
use clap::Parser;
use coop::prelude::*;
use coop_examples::cli::{self, BadInput, EngineArgs, Failure, Format};
use coop_examples::linreg::{LinReg, Sums};

/// Fit a line through the points in FILEs: each file a run of (x, y) pairs of
/// signed bytes, the Phoenix suite's input. Prints n, Σx, Σy, Σx², Σy², Σxy
/// (exact), the slope, the intercept and r².
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Files of points; each must be a whole number of 2-byte points.
    #[arg(required = true)]
    files: Vec<PathBuf>,

    /// Output format. A value the points do not define (the slope of points
    /// on one vertical line) is `none` in a table or tsv, `null` in json.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    coop::init(&[coop_examples::linreg::register()]).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    let input = Input::from_files(&args.files).bad_input()?;
    for (segment, path) in args.files.iter().enumerate() {
        let len = input.bytes(segment).len();
        if len % 2 != 0 {
            return Err(anyhow!(
                "{}: {len} bytes, not a whole number of 2-byte points",
                path.display()
            ))
            .bad_input();
        }
    }
    let started = Instant::now();
    let engine = args.engine.start()?;
    let sums: Sums = engine.run(&LinReg, &input).map_err(cli::job_failure)?;
    let seconds = started.elapsed().as_secs_f64();
    let fit = sums.fit();

    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => {
            /// The sums, then the fit, in one object.
            #[derive(serde::Serialize)]
            struct Report {
                #[serde(flatten)]
                sums: Sums,
                #[serde(flatten)]
                fit: coop_examples::linreg::Fit,
            }
            serde_json::to_writer_pretty(&mut out, &Report { sums, fit })?;
            writeln!(out)?;
        }
        Format::Table | Format::Tsv => {
            let (ints, floats) = (
                [
                    ("n", sums.n as i64),
                    ("sx", sums.sx),
                    ("sy", sums.sy),
                    ("sxx", sums.sxx),
                    ("syy", sums.syy),
                    ("sxy", sums.sxy),
                ],
                [("slope", fit.slope), ("intercept", fit.intercept), ("r2", fit.r2)],
            );
            let width = if args.format == Format::Table { 10 } else { 0 };
            let sep = if args.format == Format::Table { "" } else { "\t" };
            for (name, value) in ints {
                writeln!(out, "{name:width$}{sep}{value}")?;
            }
            for (name, value) in floats {
                match value {
                    Some(value) => writeln!(out, "{name:width$}{sep}{value}")?,
                    None => writeln!(out, "{name:width$}{sep}none")?,
                }
            }
        }
    }
    out.flush()?;
    let bytes = input.total_bytes();
    eprintln!(
        "{} file(s), {} points, {} worker(s) ({}), {seconds:.3} s, {:.1} MB/s",
        input.len(),
        sums.n,
        engine.workers(),
        engine.name(),
        bytes as f64 / 1e6 / seconds.max(1e-9),
    );
    Ok(())
}
