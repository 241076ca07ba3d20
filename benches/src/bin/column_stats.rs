//! Count, mean, min, max and a histogram of one column of a file of
//! little-endian f64 rows: an everyday job written on coop's library, to
//! compare with `column_stats_rayon` (lines and speed, in BENCHMARKS).
//!
//! `column_stats FILE COLUMNS COLUMN BINS LOW HIGH`
use coop::partial::{Dense, Max, Min};
use coop::prelude::*;
use coop::split::Records;

#[derive(serde::Serialize, serde::Deserialize)]
struct ColumnStats {
    columns: usize,
    column: usize,
    bins: usize,
    low: f64,
    high: f64,
}

impl RecordJob for ColumnStats {
    const NAME: &'static str = "column-stats";
    type Partial = (u64, f64, Min<f64>, Max<f64>, Dense<u64>);

    fn records(&self) -> Records {
        Records::Fixed(8 * self.columns)
    }

    fn empty_partial(&self) -> Self::Partial {
        (0, 0.0, Min::default(), Max::default(), Dense::new(self.bins))
    }

    fn fold(&self, row: &[u8], (n, sum, min, max, bins): &mut Self::Partial) -> Result<(), TaskError> {
        let x = f64::from_le_bytes(row[8 * self.column..][..8].try_into()?);
        (*n, *sum) = (*n + 1, *sum + x);
        min.add(x);
        max.add(x);
        let bin = ((x - self.low) / (self.high - self.low) * self.bins as f64).floor();
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
        low: low.parse()?,
        high: high.parse()?,
    };
    let mut input = Input::new();
    input.push_file(path)?;
    let (n, sum, min, max, bins) = Pool::new()?.run(&job, &input)?;
    println!("n {n} mean {:.6} min {:?} max {:?}", sum / n as f64, min.0, max.0);
    println!("{:?}", bins.into_vec());
    Ok(())
}
