//! k-means, as the Phoenix suite has it: Lloyd's algorithm over `i32`
//! points, each iteration a job on the same engine and input (a pool's
//! workers keep the points mapped from one iteration to the next).
//!
//! The means start as the first `k` points. Each pass assigns every point to
//! its nearest mean (squared Euclidean distance in `f64`; the lowest index
//! on ties) and sums each cluster's points exactly (`i128`); a cluster's new
//! mean is its sum divided by its count in `f64`, and an empty cluster keeps
//! its mean. The result is the same on every engine and worker count.

use std::ops::Range;
use std::time::{Duration, Instant};

use coop::partial::Dense;
use coop::prelude::*;
use serde::{Deserialize, Serialize};

/// Where the points lie: `rows` rows of `dims` little-endian `i32`s, one
/// after the other, from byte `offset` of segment 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Points {
    /// Byte offset of the first point.
    pub offset: usize,
    /// Number of points.
    pub rows: usize,
    /// Coordinates a point.
    pub dims: usize,
}

impl Points {
    fn bytes(&self) -> Range<usize> {
        self.offset..self.offset + self.rows * self.dims * 4
    }

    /// Point `i` of `input`.
    pub fn point(&self, input: &Input, i: usize) -> Vec<i32> {
        let row = 4 * self.dims;
        decode(&input.bytes(0)[self.offset + i * row..][..row]).collect()
    }
}

fn decode(row: &[u8]) -> impl Iterator<Item = i32> + '_ {
    row.chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
}

/// One assignment pass: each point to its nearest mean, each cluster's
/// points summed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assign {
    /// The points.
    pub points: Points,
    /// `k` means of `dims` coordinates, row by row.
    pub means: Vec<f64>,
}

/// Per cluster, the sum of its points (`k * dims`, row by row) and their
/// count: exact, whatever the split.
pub type Clusters = (Dense<i128>, Dense<u64>);

impl Assign {
    fn k(&self) -> usize {
        self.means.len() / self.points.dims.max(1)
    }

    /// The nearest mean to `point`, the lowest index on ties.
    fn nearest(&self, point: &[i32]) -> usize {
        let mut best = (f64::INFINITY, 0);
        for (c, mean) in self.means.chunks_exact(self.points.dims).enumerate() {
            let distance: f64 = point
                .iter()
                .zip(mean)
                .map(|(&x, m)| (f64::from(x) - m).powi(2))
                .sum();
            if distance < best.0 {
                best = (distance, c);
            }
        }
        best.1
    }
}

impl RecordJob for Assign {
    const NAME: &'static str = "coop-examples/kmeans";
    type Partial = Clusters;

    fn records(&self) -> Records {
        Records::Fixed(4 * self.points.dims)
    }

    fn ranges(&self, _: &Input) -> Vec<(usize, Range<usize>)> {
        vec![(0, self.points.bytes())]
    }

    fn empty_partial(&self) -> Clusters {
        (Dense::new(self.k() * self.points.dims), Dense::new(self.k()))
    }

    fn fold(&self, row: &[u8], clusters: &mut Clusters) -> Result<(), TaskError> {
        self.fold_all(row, clusters)
    }

    /// Each point of the span to its nearest mean, one buffer for all.
    fn fold_all(&self, rows: &[u8], (sums, counts): &mut Clusters) -> Result<(), TaskError> {
        let mut point = vec![0i32; self.points.dims];
        for row in rows.chunks_exact(4 * self.points.dims) {
            point.iter_mut().zip(decode(row)).for_each(|(p, x)| *p = x);
            let c = self.nearest(&point);
            for (sum, &x) in sums[c * self.points.dims..][..self.points.dims]
                .iter_mut()
                .zip(&point)
            {
                *sum += i128::from(x);
            }
            counts.add(c, 1);
        }
        Ok(())
    }
}

/// The entry that lets workers run [`Assign`]; list it in `coop::init`.
pub fn register() -> coop::JobEntry {
    coop::register::<Assign>()
}

/// Where Lloyd's algorithm ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clustering {
    /// Assignment passes, the last one (which changed nothing, unless
    /// `max_iter` ran out) included.
    pub iterations: usize,
    /// Whether the last pass changed nothing.
    pub converged: bool,
    /// `k` means of `dims` coordinates, row by row.
    pub means: Vec<f64>,
    /// Points in each cluster.
    pub counts: Vec<u64>,
    /// How long each pass took, the first (which maps the points in a
    /// pool's workers) included.
    #[serde(skip)]
    pub pass_times: Vec<Duration>,
}

/// Runs Lloyd's algorithm from the first `k` points (`1 <= k <= rows`) on
/// `engine`, at most `max_iter` passes (at least 1). A pass changes nothing
/// when every cluster has the same sum and count as after the pass before
/// (so the means stay as they are).
pub fn lloyd(
    engine: &impl Engine,
    input: &Input,
    points: Points,
    k: usize,
    max_iter: usize,
) -> coop::Result<Clustering> {
    assert!(
        (1..=points.rows).contains(&k) && max_iter >= 1,
        "1 <= k <= rows, max_iter >= 1"
    );
    let means: Vec<f64> = (0..k)
        .flat_map(|i| points.point(input, i))
        .map(f64::from)
        .collect();
    let mut job = Assign { points, means };
    let (mut last, mut pass_times) = (None, Vec::new());
    loop {
        let started = Instant::now();
        let (sums, counts) = engine.run(&job, input)?;
        pass_times.push(started.elapsed());
        let changed = last.as_ref() != Some(&(sums.clone(), counts.clone()));
        for (c, mean) in job.means.chunks_exact_mut(points.dims).enumerate() {
            if counts[c] > 0 {
                for (m, &sum) in mean.iter_mut().zip(&sums[c * points.dims..][..points.dims]) {
                    *m = sum as f64 / counts[c] as f64;
                }
            }
        }
        if !changed || pass_times.len() == max_iter {
            return Ok(Clustering {
                iterations: pass_times.len(),
                converged: !changed,
                means: job.means,
                counts: counts.into_vec(),
                pass_times,
            });
        }
        last = Some((sums, counts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_clear_clusters_converge_and_ties_go_to_the_lower_mean() {
        // Two groups around (0, 0) and (100, 100), interleaved; the first two
        // points start the means.
        let rows: Vec<[i32; 2]> = vec![[0, 1], [2, 0], [100, 99], [101, 100], [1, 0], [99, 101], [50, 50]];
        let mut input = Input::new();
        input.push_slice(&rows.iter().flatten().copied().collect::<Vec<i32>>());
        let points = Points {
            offset: 0,
            rows: rows.len(),
            dims: 2,
        };
        let result = lloyd(&coop::Sequential, &input, points, 2, 20).unwrap();
        assert!(result.converged);
        assert_eq!(result.counts.iter().sum::<u64>(), 7);
        // Cluster 0 ends around (0, 0) with 3 points, cluster 1 takes the
        // rest, (50, 50) included (nearer the heavier group's mean).
        assert_eq!(result.counts, [3, 4]);
        assert_eq!(&result.means[..2], [1.0, 1.0 / 3.0]);
        // A point equally far from two means goes to the lower index.
        let job = Assign {
            points,
            means: vec![0.0, 0.0, 2.0, 0.0],
        };
        assert_eq!(job.nearest(&[1, 0]), 0);
        assert_eq!(job.nearest(&[2, 0]), 1);
        // One pass at most: not converged, one iteration.
        let once = lloyd(&coop::Sequential, &input, points, 2, 1).unwrap();
        assert_eq!((once.iterations, once.converged), (1, false));
    }
}
