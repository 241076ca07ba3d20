//! `histogram`: per-channel 256-bin counts of 24-bit BMP images, counted by
//! cooperating worker processes.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::anyhow;
use clap::Parser;
use coop::partial::Dense;
use coop::prelude::*;
use coop_examples::cli::{self, BadInput, EngineArgs, Failure, Format};
use coop_examples::histogram::{BINS, Bmp, Histogram};

/// Count the values of each colour channel (blue, green, red) of 24-bit
/// uncompressed BMP images, over all FILEs together.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// BMP images (24 bits a pixel, uncompressed).
    #[arg(required = true, value_name = "FILE.bmp")]
    files: Vec<PathBuf>,

    /// Output format. table: a row a value, a column a channel; tsv:
    /// `CHANNEL<TAB>VALUE<TAB>COUNT`, channels b, g, r, values 0 to 255,
    /// zeros included; json: `{"b": [256 counts], "g": [...], "r": [...]}`.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    engine: EngineArgs,
}

const CHANNELS: [&str; 3] = ["b", "g", "r"];

fn main() -> ExitCode {
    coop::init(&[coop_examples::histogram::register()]).expect("each job is listed once");
    cli::main(run)
}

fn run(args: Args) -> Result<(), Failure> {
    let input = Input::from_files(&args.files).bad_input()?;
    let images = (args.files.iter().enumerate())
        .map(|(segment, path)| {
            Bmp::parse(input.bytes(segment)).map_err(|e| anyhow!("{}: {e}", path.display()))
        })
        .collect::<Result<Vec<Bmp>, _>>()
        .bad_input()?;
    let pixels: usize = images.iter().map(|image| image.width * image.height).sum();
    let started = Instant::now();
    let engine = args.engine.start()?;
    let counts: Dense<u64> = engine
        .run(&Histogram { images }, &input)
        .map_err(cli::job_failure)?;
    let seconds = started.elapsed().as_secs_f64();
    let channels = [0, 1, 2].map(|channel| Histogram::channel(&counts, channel));

    let mut out = io::BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Table => {
            writeln!(out, "VALUE  {:>12}  {:>12}  {:>12}", "B", "G", "R")?;
            for value in 0..BINS {
                let [b, g, r] = channels.map(|channel| channel[value]);
                writeln!(out, "{value:>5}  {b:>12}  {g:>12}  {r:>12}")?;
            }
        }
        Format::Tsv => {
            for (name, channel) in CHANNELS.iter().zip(channels) {
                for (value, count) in channel.iter().enumerate() {
                    writeln!(out, "{name}\t{value}\t{count}")?;
                }
            }
        }
        Format::Json => {
            let object: serde_json::Map<String, serde_json::Value> = (CHANNELS.iter().zip(channels))
                .map(|(name, channel)| (name.to_string(), channel.into()))
                .collect();
            serde_json::to_writer(&mut out, &object)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    let bytes = input.total_bytes();
    eprintln!(
        "{} image(s), {pixels} pixels, {} worker(s) ({}), {seconds:.3} s, {:.1} MB/s",
        input.len(),
        engine.workers(),
        engine.name(),
        bytes as f64 / 1e6 / seconds.max(1e-9),
    );
    Ok(())
}
