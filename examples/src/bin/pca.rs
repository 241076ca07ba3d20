//! `pca`: the column means and the covariance matrix of an f64 matrix, two
//! jobs on one pool of cooperating worker processes.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::anyhow;
use clap::Parser;
use coop::prelude::*;
use coop_examples::array;
use coop_examples::cli::{self, BadInput, EngineArgs, Failure, Format};
use coop_examples::npy::{self, Dtype};
use coop_examples::output::{self, Output};
use coop_examples::pca::{self, Matrix};

/// The column means of MATRIX.npy (N observations x D variables, '<f8', C or
/// Fortran order), printed, and its covariance matrix, written to COV.npy
/// (D x D, '<f8', C order): what `numpy.cov(x, rowvar=False)` gives.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The matrix: a 2-D `.npy` of little-endian f64.
    #[arg(value_name = "MATRIX.npy")]
    matrix: PathBuf,

    /// Where to write the covariance matrix, replaced atomically as matmul
    /// writes its product.
    #[arg(short, long, value_name = "COV.npy")]
    output: PathBuf,

    /// Output format of the means. table and tsv: a line a column (its
    /// index, its mean); json: `{"rows", "cols", "means"}`.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    coop::init(&pca::register()).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    let mut input = Input::new();
    let (header, operand) = array::add_npy(&mut input, &args.matrix).bad_input()?;
    if header.dtype != Dtype::F64 {
        return Err(anyhow!(
            "{}: dtype '{}': pca takes '<f8'",
            args.matrix.display(),
            header.dtype.descr()
        ))
        .bad_input();
    }
    let matrix = Matrix {
        operand,
        rows: header.shape[0],
        cols: header.shape[1],
    };
    cli::check_fits_in_memory(
        matrix.cols as u128 * matrix.cols as u128 * 8,
        "the covariance matrix",
    )?;
    output::clean_up_on_signals()?;
    let out = Output::open(&args.output, ".pca-").bad_input()?;
    let engine = args.engine.start()?;
    let started = Instant::now();
    let (means, covariance) = pca::means_and_covariance(&engine, &input, matrix).map_err(cli::job_failure)?;
    let seconds = started.elapsed().as_secs_f64();
    out.write_with(|file| {
        file.write_all(&npy::encode_header(
            Dtype::F64,
            false,
            &[matrix.cols, matrix.cols],
        ))?;
        file.write_all(covariance.as_slice::<u8>())
    })?;

    let mut stdout = io::BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Table => {
            writeln!(stdout, "{:>6}  MEAN", "COLUMN")?;
            for (c, mean) in means.iter().enumerate() {
                writeln!(stdout, "{c:>6}  {mean}")?;
            }
        }
        Format::Tsv => {
            for (c, mean) in means.iter().enumerate() {
                writeln!(stdout, "{c}\t{mean}")?;
            }
        }
        Format::Json => {
            let report = serde_json::json!({ "rows": matrix.rows, "cols": matrix.cols, "means": means });
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        }
    }
    stdout.flush()?;
    eprintln!(
        "{} x {} matrix, {seconds:.3} s, {} worker(s) ({})",
        matrix.rows,
        matrix.cols,
        engine.workers(),
        engine.name(),
    );
    Ok(())
}
