//! PCA's first two steps, as the Phoenix suite has them: the column means of
//! an `f64` matrix, then its covariance matrix (as
//! `numpy.cov(x, rowvar=False)`), two jobs on one engine and input.
//!
//! Both results are the same, bit for bit, on every engine and worker
//! count, although they are floating-point sums: the column sums are taken
//! over blocks of a fixed number of rows, each written to its own place in
//! the output and added in block order at the end; each covariance entry is
//! computed whole by one task, over the rows in order.

use std::ops::Range;

use coop::prelude::*;
use serde::{Deserialize, Serialize};

use crate::array::{Operand, elements};

/// Rows a task of [`ColumnSums`] sums: fixed, not derived from the worker
/// count, so that the sums do not depend on it.
pub const BLOCK_ROWS: usize = 4096;

/// An `f64` matrix in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    /// Where its elements are.
    pub operand: Operand,
    /// Rows (observations).
    pub rows: usize,
    /// Columns (variables).
    pub cols: usize,
}

impl Matrix {
    fn data<'i>(&self, input: &'i Input) -> Result<&'i [f64], TaskError> {
        elements(input, self.operand, self.rows * self.cols)
    }

    /// Element `(r, c)` of `data`, in either order.
    #[inline]
    fn at(&self, data: &[f64], r: usize, c: usize) -> f64 {
        if self.operand.fortran {
            data[c * self.rows + r]
        } else {
            data[r * self.cols + c]
        }
    }
}

/// The sums of each column over blocks of [`BLOCK_ROWS`] rows: the output
/// holds block `b`'s `cols` sums at `b * cols`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnSums {
    /// The matrix.
    pub matrix: Matrix,
}

impl ColumnSums {
    /// Bytes of the output: `cols` sums a block.
    pub fn output_len(&self) -> usize {
        self.matrix.rows.div_ceil(BLOCK_ROWS) * self.matrix.cols * 8
    }

    /// The column means from this job's output, its blocks added in order.
    pub fn means(&self, output: &[f64]) -> Vec<f64> {
        let mut sums = vec![0.0; self.matrix.cols];
        for block in output.chunks_exact(self.matrix.cols.max(1)) {
            sums.iter_mut().zip(block).for_each(|(sum, x)| *sum += x);
        }
        sums.iter().map(|sum| sum / self.matrix.rows as f64).collect()
    }
}

impl Job for ColumnSums {
    const NAME: &'static str = "coop-examples/pca-column-sums";
    /// A block's index.
    type Task = usize;
    type Partial = ();

    fn split(&self, _: &Input, _: usize) -> Result<Vec<usize>, TaskError> {
        Ok((0..self.matrix.rows.div_ceil(BLOCK_ROWS)).collect())
    }

    fn output_range(&self, block: &usize) -> Range<usize> {
        let len = self.matrix.cols * 8;
        block * len..(block + 1) * len
    }

    fn map(&self, _: &usize, _: &Input, _: &mut ()) -> Result<(), TaskError> {
        Err("column sums are written to the output: engines run `map_with_output`".into())
    }

    fn map_with_output(
        &self,
        block: &usize,
        input: &Input,
        out: &mut [u8],
        _: &mut (),
    ) -> Result<(), TaskError> {
        let data = self.matrix.data(input)?;
        let rows = block * BLOCK_ROWS..((block + 1) * BLOCK_ROWS).min(self.matrix.rows);
        let mut sums = vec![0.0f64; self.matrix.cols];
        for r in rows {
            for (c, sum) in sums.iter_mut().enumerate() {
                *sum += self.matrix.at(data, r, c);
            }
        }
        out.copy_from_slice(bytemuck::cast_slice(&sums));
        Ok(())
    }

    fn merge(&self, _: &mut (), _: ()) {}
}

/// The covariance matrix (`cols` x `cols`, C order), row blocks of it a
/// task, each entry summed over every row in order and divided by
/// `rows - 1` (NaN for fewer than two rows, as numpy gives).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Covariance {
    /// The matrix.
    pub matrix: Matrix,
    /// Its column means.
    pub means: Vec<f64>,
}

impl Covariance {
    /// Bytes of the output.
    pub fn output_len(&self) -> usize {
        self.matrix.cols * self.matrix.cols * 8
    }
}

impl Job for Covariance {
    const NAME: &'static str = "coop-examples/pca-covariance";
    /// Rows of the covariance matrix.
    type Task = Range<usize>;
    type Partial = ();

    /// One task a worker: every task reads the whole matrix, so more tasks
    /// would read it more times (16 tasks on 2 workers took 1.8 times as
    /// long as 2).
    fn split(&self, _: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        let cols = self.matrix.cols;
        let tasks = (hint / coop::DEFAULT_TASKS_PER_WORKER).max(1);
        let step = cols.div_ceil(tasks).max(1);
        Ok((0..cols).step_by(step).map(|i| i..(i + step).min(cols)).collect())
    }

    fn output_range(&self, rows: &Range<usize>) -> Range<usize> {
        let row = self.matrix.cols * 8;
        rows.start * row..rows.end * row
    }

    fn map(&self, _: &Range<usize>, _: &Input, _: &mut ()) -> Result<(), TaskError> {
        Err("a covariance matrix is written to the output: engines run `map_with_output`".into())
    }

    fn map_with_output(
        &self,
        block: &Range<usize>,
        input: &Input,
        out: &mut [u8],
        _: &mut (),
    ) -> Result<(), TaskError> {
        let (matrix, cols) = (&self.matrix, self.matrix.cols);
        let data = matrix.data(input)?;
        let mut sums = vec![0.0f64; block.len() * cols];
        let mut centred = vec![0.0f64; cols];
        for r in 0..matrix.rows {
            for (c, x) in centred.iter_mut().enumerate() {
                *x = matrix.at(data, r, c) - self.means[c];
            }
            for (i, row) in block.clone().zip(sums.chunks_exact_mut(cols)) {
                let di = centred[i];
                row.iter_mut().zip(&centred).for_each(|(sum, dj)| *sum += di * dj);
            }
        }
        let scale = 1.0 / (matrix.rows as f64 - 1.0);
        sums.iter_mut().for_each(|sum| *sum *= scale);
        out.copy_from_slice(bytemuck::cast_slice(&sums));
        Ok(())
    }

    fn merge(&self, _: &mut (), _: ()) {}
}

/// The entries that let workers run PCA's two jobs; list them in `coop::init`.
pub fn register() -> [coop::JobEntry; 2] {
    [coop::register::<ColumnSums>(), coop::register::<Covariance>()]
}

/// The column means and the covariance matrix (C order) of `matrix`, two
/// jobs on `engine`.
pub fn means_and_covariance(
    engine: &impl Engine,
    input: &Input,
    matrix: Matrix,
) -> coop::Result<(Vec<f64>, SharedOutput)> {
    let job = ColumnSums { matrix };
    let mut sums = SharedOutput::new(job.output_len());
    Run::new(&job, input).output(&mut sums).on(engine)?;
    let means = job.means(sums.as_slice::<f64>());
    let job = Covariance { matrix, means };
    let mut covariance = SharedOutput::new(job.output_len());
    Run::new(&job, input).output(&mut covariance).on(engine)?;
    Ok((job.means, covariance))
}
