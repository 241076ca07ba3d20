//! `kmeans`: Lloyd's algorithm over `i32` points, each pass a job on one
//! pool of cooperating worker processes that keep the points mapped.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::anyhow;
use clap::Parser;
use coop::prelude::*;
use coop_examples::cli::{self, BadInput, EngineArgs, Failure, Format};
use coop_examples::kmeans::{self, Clustering, Points};
use coop_examples::npy::{self, Dtype};
use coop_examples::output::{self, Output};
use rand::{RngExt, SeedableRng};

/// Cluster the points of POINTS.npy (an N x D array of '<i4', C order) into
/// K clusters with Lloyd's algorithm, from the first K points, until a pass
/// changes no cluster or --max-iter passes; or points made up with
/// --generate.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The points: a 2-D `.npy` of little-endian i32, C order.
    #[arg(
        value_name = "POINTS.npy",
        required_unless_present = "generate",
        conflicts_with = "generate"
    )]
    points: Option<PathBuf>,

    /// Number of clusters (1 to the number of points).
    #[arg(short, value_name = "K")]
    k: usize,

    /// Make up N points of D coordinates instead (around 16 random centres).
    #[arg(long, value_name = "N,D", value_parser = parse_shape)]
    generate: Option<(usize, usize)>,

    /// Seed of --generate.
    #[arg(long, value_name = "S", requires = "generate", default_value_t = 1)]
    seed: u64,

    /// Most assignment passes.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    max_iter: u64,

    /// Write the means to MEANS.npy (K x D, '<f8', C order), replaced
    /// atomically as matmul writes its product.
    #[arg(short, long, value_name = "MEANS.npy")]
    output: Option<PathBuf>,

    /// Output format. table and tsv: a line a cluster (its count, then its
    /// mean); json: `{"iterations", "converged", "points", "dims", "counts",
    /// "means", "seconds_per_pass"}`.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_shape(text: &str) -> Result<(usize, usize), String> {
    let (n, d) = text.split_once(',').ok_or("expected N,D")?;
    let (n, d) = (
        n.trim().parse().map_err(|e| format!("N: {e}"))?,
        d.trim().parse().map_err(|e| format!("D: {e}"))?,
    );
    if d == 0 {
        return Err("D must be at least 1".into());
    }
    Ok((n, d))
}

fn main() -> ExitCode {
    coop::init(&[kmeans::register()]).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    let (input, points) = match (&args.points, args.generate) {
        (Some(path), _) => read_points(path)?,
        (None, Some((n, d))) => generate(n, d, args.seed)?,
        (None, None) => unreachable!("clap requires POINTS.npy or --generate"),
    };
    if !(1..=points.rows).contains(&args.k) {
        return Err(anyhow!(
            "-k {}: must be from 1 to the number of points, {}",
            args.k,
            points.rows
        ))
        .bad_input();
    }
    let output = match &args.output {
        Some(path) => {
            output::clean_up_on_signals()?;
            Some(Output::open(path, ".kmeans-").bad_input()?)
        }
        None => None,
    };
    let engine = args.engine.start()?;
    let started = Instant::now();
    let max_iter = usize::try_from(args.max_iter).unwrap_or(usize::MAX);
    let result = kmeans::lloyd(&engine, &input, points, args.k, max_iter).map_err(cli::job_failure)?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(output) = output {
        output.write_with(|file| {
            file.write_all(&npy::encode_header(Dtype::F64, false, &[args.k, points.dims]))?;
            file.write_all(bytemuck::cast_slice(&result.means))
        })?;
    }
    print(&args, points, &result)?;
    let passes = &result.pass_times;
    let later =
        passes.iter().skip(1).map(|t| t.as_secs_f64()).sum::<f64>() / (passes.len() - 1).max(1) as f64;
    eprintln!(
        "{} points of {} dims, k {}, {} pass(es){}, {seconds:.3} s: first pass {:.4} s, each later one {later:.4} s on average, {} worker(s) ({})",
        points.rows,
        points.dims,
        args.k,
        result.iterations,
        if result.converged {
            ""
        } else {
            " (--max-iter reached)"
        },
        passes[0].as_secs_f64(),
        engine.workers(),
        engine.name(),
    );
    Ok(())
}

fn print(args: &Args, points: Points, result: &Clustering) -> Result<(), Failure> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let means = result.means.chunks_exact(points.dims);
    match args.format {
        Format::Table => {
            writeln!(
                out,
                "{} pass(es), {}",
                result.iterations,
                if result.converged {
                    "converged"
                } else {
                    "not converged"
                }
            )?;
            writeln!(out, "{:>7}  {:>12}  MEAN", "CLUSTER", "POINTS")?;
            for (c, (mean, count)) in means.zip(&result.counts).enumerate() {
                let mean: Vec<String> = mean.iter().map(|m| format!("{m:.3}")).collect();
                writeln!(out, "{c:>7}  {count:>12}  {}", mean.join(" "))?;
            }
        }
        Format::Tsv => {
            for (c, (mean, count)) in means.zip(&result.counts).enumerate() {
                let mean: Vec<String> = mean.iter().map(f64::to_string).collect();
                writeln!(out, "{c}\t{count}\t{}", mean.join("\t"))?;
            }
        }
        Format::Json => {
            let report = serde_json::json!({
                "iterations": result.iterations,
                "converged": result.converged,
                "points": points.rows,
                "dims": points.dims,
                "counts": result.counts,
                "means": means.collect::<Vec<_>>(),
                "seconds_per_pass": result.pass_times.iter().map(|t| t.as_secs_f64()).collect::<Vec<_>>(),
            });
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Maps POINTS.npy and checks that it is an N x D array of '<i4' in C order.
fn read_points(path: &Path) -> Result<(Input, Points), Failure> {
    let name = path.display();
    let input = Input::from_files([path]).bad_input()?;
    let bytes = input.bytes(0);
    let header = npy::parse_header(bytes)
        .map_err(|e| anyhow!("{name}: {e}"))
        .bad_input()?;
    npy::check_len(&header, bytes.len() as u64)
        .map_err(|e| anyhow!("{name}: {e}"))
        .bad_input()?;
    if header.dtype != Dtype::I32 {
        return Err(anyhow!(
            "{name}: dtype '{}': points are '<i4'",
            header.dtype.descr()
        ))
        .bad_input();
    }
    if header.fortran_order {
        return Err(anyhow!(
            "{name}: Fortran order: points are rows in C order (numpy.ascontiguousarray)"
        ))
        .bad_input();
    }
    let (rows, dims) = (header.shape[0], header.shape[1]);
    if dims == 0 {
        return Err(anyhow!("{name}: points of 0 coordinates")).bad_input();
    }
    Ok((
        input,
        Points {
            offset: header.data_offset,
            rows,
            dims,
        },
    ))
}

/// `n` points of `d` coordinates around 16 random centres, in shared memory.
fn generate(n: usize, d: usize, seed: u64) -> Result<(Input, Points), Failure> {
    let bytes = (n as u128) * (d as u128) * 4;
    cli::check_fits_in_memory(bytes, &format!("--generate {n},{d}"))?;
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let centres: Vec<i32> = (0..16 * d).map(|_| rng.random_range(-10_000..10_000)).collect();
    let data: Vec<i32> = (0..n * d)
        .map(|i| centres[(i / d) % 16 * d + i % d] + rng.random_range(-1_500..1_500))
        .collect();
    let mut input = Input::new();
    input.push_slice(&data);
    Ok((
        input,
        Points {
            offset: 0,
            rows: n,
            dims: d,
        },
    ))
}
