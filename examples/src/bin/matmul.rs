//! `matmul`: multiplies two matrices with cooperating worker processes. A and
//! B are shared read-only, C is shared writable, each task writes its own tile.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::anyhow;
use clap::Parser;
use coop::prelude::*;
use coop::{AnyEngine, Sequential};
use coop_examples::array::{self, Operand};
use coop_examples::cli::{self, BadInput, EngineArgs, Failure, ProgressBar};
use coop_examples::matmul::MatMul;
use coop_examples::npy::{self, Dtype, ShapeDisplay};
use coop_examples::output::{self, Output};
use rand::{RngExt, SeedableRng};

/// Multiply two matrices: `matmul A.npy B.npy -o C.npy`, or time random ones
/// with `matmul --size N`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The two factors, 2-D `.npy` files of the same dtype (little-endian f4 or f8, C or Fortran order).
    #[arg(value_names = ["A.npy", "B.npy"], num_args = 2, conflicts_with_all = ["size", "dtype", "seed", "check"], requires = "output")]
    inputs: Vec<PathBuf>,

    /// Where to write the product (`.npy`, C order).
    ///
    /// A regular file (or a new one) is written beside it under a hidden
    /// temporary name and renamed into place, so that a failed or interrupted
    /// run leaves the old file or none; a replaced file keeps its permissions,
    /// a new one gets 0666 less the umask. A symbolic link is followed: its
    /// target is written that way and the link stays. A device or a FIFO
    /// (/dev/null, /dev/stdout to a pipe) is written to directly, never
    /// replaced. A directory or a socket is refused.
    #[arg(short, long, value_name = "C.npy")]
    output: Option<PathBuf>,

    /// Multiply two random N x N matrices instead, and report the time.
    #[arg(long, value_name = "N", conflicts_with = "output")]
    size: Option<usize>,

    /// Element type of the random matrices.
    #[arg(long, value_enum, requires = "size", default_value_t = DtypeArg::F64)]
    dtype: DtypeArg,

    /// Seed of the random matrices.
    #[arg(long, value_name = "S", requires = "size", default_value_t = 0)]
    seed: u64,

    /// Also multiply in a single process with the same kernel and print the largest relative error.
    #[arg(long, requires = "size")]
    check: bool,

    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DtypeArg {
    F32,
    F64,
}

fn main() -> ExitCode {
    coop::init(&[coop_examples::matmul::register()]).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    match (&args.inputs[..], args.size) {
        ([a, b], None) => multiply_files(&args, a, b),
        ([], Some(n)) => multiply_random(&args, n),
        _ => Err(anyhow!("give A.npy B.npy -o C.npy, or --size N")).bad_input(),
    }
}

/// Maps a `.npy` file as input segment and checks its header and dtype.
fn add_matrix(input: &mut Input, path: &Path) -> Result<(npy::Header, Operand), Failure> {
    let (header, operand) = array::add_npy(input, path).bad_input()?;
    if header.dtype == Dtype::I32 {
        return Err(anyhow!(
            "{}: dtype '<i4': matmul multiplies '<f4' or '<f8' matrices",
            path.display()
        ))
        .bad_input();
    }
    Ok((header, operand))
}

fn multiply_files(args: &Args, a_path: &Path, b_path: &Path) -> Result<(), Failure> {
    let out_path = args
        .output
        .as_deref()
        .expect("clap requires --output with inputs");
    let mut input = Input::new();
    let (a, a_op) = add_matrix(&mut input, a_path)?;
    let (b, b_op) = add_matrix(&mut input, b_path)?;
    if a.dtype != b.dtype {
        return Err(anyhow!(
            "{} is {} but {} is {}: both inputs must have the same dtype",
            a_path.display(),
            a.dtype,
            b_path.display(),
            b.dtype
        ))
        .bad_input();
    }
    let ((m, k), (k2, n)) = ((a.shape[0], a.shape[1]), (b.shape[0], b.shape[1]));
    if k != k2 {
        return Err(anyhow!(
            "inner dimensions differ: {} is {} and {} is {} ({k} != {k2})",
            a_path.display(),
            ShapeDisplay(&a.shape),
            b_path.display(),
            ShapeDisplay(&b.shape)
        ))
        .bad_input();
    }
    let job = MatMul {
        dtype: a.dtype,
        m,
        k,
        n,
        a: a_op,
        b: b_op,
    };
    cli::check_fits_in_memory(m as u128 * n as u128 * job.dtype.size() as u128, "the product")?;
    // Before anything makes a temporary file: an interrupted run leaves none.
    output::clean_up_on_signals()?;
    // Checked now, before the multiply: a bad path fails before it starts.
    let output = Output::open(out_path, ".matmul-").bad_input()?;

    let engine = args.engine.start()?;
    let header = npy::encode_header(job.dtype, false, &[m, n]);
    let mut writing = output.start()?;
    writing.file().write_all(&header).map_err(|e| writing.error(e))?;
    let started = Instant::now();
    match writing.path().map(Path::to_owned) {
        // A file: C straight into its pages after the header, no copy and no
        // write at the end. (The header's length keeps C aligned.)
        Some(path) => {
            let mut c = SharedOutput::map_file(&path, header.len(), job.output_len())?;
            multiply(&engine, &job, &input, &mut c)?;
        }
        // A device or a FIFO, which cannot be mapped: C in memory, then written.
        None => {
            let mut c = SharedOutput::new(job.output_len());
            multiply(&engine, &job, &input, &mut c)?;
            writing
                .file()
                .write_all(c.bytes())
                .map_err(|e| writing.error(e))?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    writing.finish()?;
    eprintln!(
        "{}: {m} x {n} {}, {seconds:.3} s, {:.1} GFLOP/s, {} worker(s) ({})",
        out_path.display(),
        job.dtype,
        gflops(&job, seconds),
        engine.workers(),
        engine.name()
    );
    Ok(())
}

fn multiply(engine: &AnyEngine, job: &MatMul, input: &Input, c: &mut SharedOutput) -> coop::Result<()> {
    let bar = ProgressBar::default();
    let report = |p| bar.report(p);
    Run::new(job, input).output(c).progress(&report).on(engine)?;
    bar.finish();
    Ok(())
}

fn gflops(job: &MatMul, seconds: f64) -> f64 {
    2.0 * job.m as f64 * job.k as f64 * job.n as f64 / seconds.max(1e-9) / 1e9
}

fn multiply_random(args: &Args, n: usize) -> Result<(), Failure> {
    let dtype = match args.dtype {
        DtypeArg::F32 => Dtype::F32,
        DtypeArg::F64 => Dtype::F64,
    };
    // Three n x n matrices: A, B and C.
    let matrix_bytes = n as u128 * n as u128 * dtype.size() as u128;
    cli::check_fits_in_memory(3 * matrix_bytes, &format!("--size {n}"))?;
    let count = n * n; // fits: 3 x n x n x size is below the machine's memory
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let mut input = Input::new();
    for _ in 0..2 {
        match args.dtype {
            DtypeArg::F32 => input.push_slice(
                &(0..count)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect::<Vec<_>>(),
            ),
            DtypeArg::F64 => input.push_slice(
                &(0..count)
                    .map(|_| rng.random_range(-1.0f64..1.0))
                    .collect::<Vec<_>>(),
            ),
        };
    }
    let c_order = |segment| Operand {
        segment,
        offset: 0,
        fortran: false,
    };
    let job = MatMul {
        dtype,
        m: n,
        k: n,
        n,
        a: c_order(0),
        b: c_order(1),
    };

    let engine = args.engine.start()?;
    let started = Instant::now();
    let mut c = SharedOutput::new(job.output_len());
    multiply(&engine, &job, &input, &mut c)?;
    let seconds = started.elapsed().as_secs_f64();
    // writeln!, not println!: a reader that went away (`| head`) is an
    // error to end on quietly, not a panic.
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{n} x {n} {dtype}: {seconds:.3} s, {:.1} GFLOP/s, {} worker(s) ({})",
        gflops(&job, seconds),
        engine.workers(),
        engine.name()
    )?;
    if args.check {
        let mut reference = SharedOutput::new(job.output_len());
        Run::new(&job, &input).output(&mut reference).on(&Sequential)?;
        let (error, tolerance) = match args.dtype {
            DtypeArg::F32 => (
                max_relative_error(c.as_slice::<f32>(), reference.as_slice::<f32>()),
                1e-4,
            ),
            DtypeArg::F64 => (
                max_relative_error(c.as_slice::<f64>(), reference.as_slice::<f64>()),
                1e-10,
            ),
        };
        writeln!(
            stdout,
            "check: largest relative error {error:e} against a single-process multiply"
        )?;
        if error.is_nan() || error > tolerance {
            return Err(anyhow!("check failed: relative error {error:e} exceeds {tolerance:e}").into());
        }
    }
    Ok(())
}

/// max |c - r| / max |r| (0 for an empty or all-zero reference that matches).
fn max_relative_error<T: Copy + Into<f64>>(c: &[T], reference: &[T]) -> f64 {
    let scale = reference.iter().map(|&r| r.into().abs()).fold(0.0, f64::max);
    let diff = c
        .iter()
        .zip(reference)
        .map(|(&c, &r)| (c.into() - r.into()).abs())
        .fold(0.0, f64::max);
    if diff == 0.0 { 0.0 } else { diff / scale }
}
