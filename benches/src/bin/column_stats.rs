//! Count, mean, min, max and a histogram of one column of a file of
//! little-endian f64 rows: an everyday job written on coop's library, to
//! compare with `column_stats_rayon` (lines and speed, in BENCHMARKS).
//!
//! `column_stats FILE COLUMNS COLUMN BINS LOW HIGH`
use coop::partial::{Dense, Summary};
use coop::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct ColumnStats {
    columns: usize,
    column: usize,
    bins: usize,
    range: std::ops::Range<f64>,
}

impl RecordJob for ColumnStats {
    const NAME: &'static str = "column-stats";
    type Partial = (Summary, Dense<u64>);

    fn records(&self) -> Records {
        Records::Fixed(8 * self.columns)
    }

    fn empty_partial(&self) -> Self::Partial {
        (Summary::default(), Dense::new(self.bins))
    }

    fn fold(&self, row: &[u8], (summary, bins): &mut Self::Partial) -> Result<(), TaskError> {
        let x = f64::from_le_bytes(row[8 * self.column..][..8].try_into()?);
        summary.add(x);
        let bin = ((x - self.range.start) / (self.range.end - self.range.start) * self.bins as f64).floor();
        if (0.0..self.bins as f64).contains(&bin) {
            bins.add(bin as usize, 1);
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    coop::init(&[coop::register::<ColumnStats>()])?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, columns, column, bins, low, high] = &args[..] else {
        anyhow::bail!("usage: column_stats FILE COLUMNS COLUMN BINS LOW HIGH");
    };
    let job = ColumnStats {
        columns: columns.parse()?,
        column: column.parse()?,
        bins: bins.parse()?,
        range: low.parse()?..high.parse()?,
    };
    let input = Input::from_files([path])?;
    let (Summary { count, sum, min, max }, bins) = Pool::new()?.run(&job, &input)?;
    println!("n {count} mean {:.6} min {min:?} max {max:?}", sum / count as f64);
    println!("{:?}", bins.into_vec());
    Ok(())
}
