//! The matrix-multiply job: C = A x B, each task computing a block of C's rows
//! with a well-kept GEMM kernel (`matrixmultiply`) straight into the shared output.

use std::ops::Range;

use bytemuck::Pod;
use coop::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::array::Operand;
use crate::array::elements;
use crate::npy::Dtype;

/// C (m x n, row-major, in the shared output) = A (m x k) x B (k x n).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatMul {
    /// Element type of A, B and C.
    pub dtype: Dtype,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Where A is.
    pub a: Operand,
    /// Where B is.
    pub b: Operand,
}

impl MatMul {
    /// Size of C in bytes.
    pub fn output_len(&self) -> usize {
        self.m * self.n * self.dtype.size()
    }

    fn run<T: Element>(&self, rows: &Range<usize>, input: &Input, out: &mut [u8]) -> Result<(), TaskError> {
        let a = elements::<T>(input, self.a, self.m * self.k)?;
        let b = elements::<T>(input, self.b, self.k * self.n)?;
        // An empty slice's pointer may be misaligned: no cast needed for it.
        let c: &mut [T] = if out.is_empty() {
            &mut []
        } else {
            bytemuck::try_cast_slice_mut(out).map_err(|e| format!("output tile: {e}"))?
        };
        multiply_rows(
            Matrix {
                data: a,
                rows: self.m,
                cols: self.k,
                fortran: self.a.fortran,
            },
            Matrix {
                data: b,
                rows: self.k,
                cols: self.n,
                fortran: self.b.fortran,
            },
            rows.clone(),
            c,
        );
        Ok(())
    }
}

impl Job for MatMul {
    const NAME: &'static str = "coop-examples/matmul";
    type Task = Range<usize>;
    type Partial = ();

    fn split(&self, _: &Input, hint: usize) -> Result<Vec<Range<usize>>, TaskError> {
        // Each task packs all of B again (matrixmultiply packs per call, about
        // 10 ms for n = 2048 here), so tasks are as large as one per worker
        // (hint / DEFAULT_TASKS_PER_WORKER of them), up to 1,024 rows so that
        // progress still moves. Two per worker balanced little: the pool hands
        // each worker its second task ahead of time, so they were split
        // evenly from the start, and a slow worker still held up the job. The
        // engines that do balance (threads steal, MPI ranks ask as they
        // finish) lose that on uneven cores; on even ones all gained 5 to 10 %.
        let hint = hint.max(1);
        let workers = hint.div_ceil(coop::DEFAULT_TASKS_PER_WORKER);
        let step = self
            .m
            .div_ceil(hint)
            .max(self.m.div_ceil(workers).min(1024))
            .max(1);
        Ok((0..self.m)
            .step_by(step)
            .map(|r| r..(r + step).min(self.m))
            .collect())
    }

    /// A's rows for the task (all of A in Fortran order, whose rows are not
    /// contiguous) and all of B.
    fn input_ranges(&self, rows: &Range<usize>, _: &Input) -> Vec<(usize, Range<usize>)> {
        let size = self.dtype.size();
        let a_len = self.m * self.k * size;
        let a = if self.a.fortran {
            0..a_len
        } else {
            rows.start * self.k * size..rows.end * self.k * size
        };
        let b_len = self.k * self.n * size;
        vec![
            (self.a.segment, self.a.offset + a.start..self.a.offset + a.end),
            (self.b.segment, self.b.offset..self.b.offset + b_len),
        ]
    }

    fn output_range(&self, rows: &Range<usize>) -> Range<usize> {
        let row = self.n * self.dtype.size();
        rows.start * row..rows.end * row
    }

    fn map(&self, _: &Range<usize>, _: &Input, _: &mut ()) -> Result<(), TaskError> {
        Err("a product is written to the output: engines run `map_with_output`".into())
    }

    fn map_with_output(
        &self,
        rows: &Range<usize>,
        input: &Input,
        out: &mut [u8],
        _: &mut (),
    ) -> Result<(), TaskError> {
        match self.dtype {
            Dtype::F32 => self.run::<f32>(rows, input, out),
            Dtype::F64 => self.run::<f64>(rows, input, out),
            Dtype::I32 => Err("matmul multiplies f32 or f64 matrices".into()),
        }
    }

    fn merge(&self, _: &mut (), _: ()) {}
}

/// The entry that lets workers run [`MatMul`]; list it in `coop::init`.
pub fn register() -> coop::JobEntry {
    coop::register::<MatMul>()
}

/// A float type with a GEMM kernel.
pub trait Element: Pod + Default + Send + Sync {
    /// `c = a x b` on raw strided matrices (see `matrixmultiply::dgemm`).
    ///
    /// # Safety
    /// The pointers and strides must address valid `m x k`, `k x n` and `m x n`
    /// matrices, `c` writable and not overlapping `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Element for f32 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }
}

impl Element for f64 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }
}

/// A dense matrix in row-major or column-major order.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a, T> {
    /// `rows * cols` elements.
    pub data: &'a [T],
    /// Row count.
    pub rows: usize,
    /// Column count.
    pub cols: usize,
    /// Column-major order.
    pub fortran: bool,
}

impl<T> Matrix<'_, T> {
    fn strides(&self) -> (isize, isize) {
        if self.fortran {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// Computes rows `rows` of `a x b` into `c` (row-major, `rows.len() x b.cols`).
///
/// # Panics
/// If the shapes or lengths do not agree.
pub fn multiply_rows<T: Element>(a: Matrix<'_, T>, b: Matrix<'_, T>, rows: Range<usize>, c: &mut [T]) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!(
        a.data.len(),
        a.rows * a.cols,
        "A's length does not match its shape"
    );
    assert_eq!(
        b.data.len(),
        b.rows * b.cols,
        "B's length does not match its shape"
    );
    assert!(rows.start <= rows.end && rows.end <= a.rows, "rows out of range");
    assert_eq!(c.len(), rows.len() * b.cols, "C tile's length does not match");
    if rows.is_empty() || b.cols == 0 {
        return;
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    let a_start = if rows.start < a.rows {
        rows.start as isize * rsa
    } else {
        0
    };
    // SAFETY: the asserts above guarantee that A (from row `rows.start`, with
    // strides rsa/csa), B and C address exactly the elements of the checked
    // slices; `c` is a distinct `&mut` so it overlaps neither input. With
    // k == 0 no element of A or B is read and C is written with zeros.
    unsafe {
        T::gemm(
            rows.len(),
            a.cols,
            b.cols,
            a.data.as_ptr().offset(a_start),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            c.as_mut_ptr(),
            b.cols as isize,
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(m: usize) -> MatMul {
        let operand = |segment| Operand {
            segment,
            offset: 0,
            fortran: false,
        };
        MatMul {
            dtype: Dtype::F64,
            m,
            k: 8,
            n: 8,
            a: operand(0),
            b: operand(1),
        }
    }

    #[test]
    fn tasks_cover_every_row_once_one_per_worker_up_to_1024_rows() {
        let input = Input::new();
        for m in [0, 1, 7, 100, 2048, 4096, 10_000] {
            for workers in [1, 2, 3, 16] {
                let tasks = job(m)
                    .split(&input, workers * coop::DEFAULT_TASKS_PER_WORKER)
                    .unwrap();
                let mut next = 0;
                for rows in &tasks {
                    assert_eq!(rows.start, next, "m = {m}, {workers} workers: {tasks:?}");
                    assert!(!rows.is_empty() && rows.len() <= 1024.max(m.div_ceil(8 * workers)));
                    next = rows.end;
                }
                assert_eq!(next, m, "m = {m}, {workers} workers: {tasks:?}");
                // B is packed once per task: no more tasks than needed to
                // give every worker one of at most 1,024 rows.
                let wanted = workers.max(m.div_ceil(1024)).min(m);
                assert!(tasks.len() <= wanted, "m = {m}, {workers} workers: {tasks:?}");
            }
        }
    }
}
