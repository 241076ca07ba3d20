//! Linear regression, as the Phoenix suite has it: the least-squares line
//! through points stored as pairs of signed bytes `(x, y)`. The sums are
//! integers, so the result never depends on how the input was split.

use coop::partial::Combine;
use coop::prelude::*;
use serde::{Deserialize, Serialize};

/// The least-squares line through the points of every segment, each
/// segment a run of `(x, y)` pairs of signed bytes (`i8`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LinReg;

/// The sums a least-squares line needs, exact. An `i64` holds them for
/// inputs of up to 2^63 / 128^2 points (half a petabyte).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    /// Number of points.
    pub n: u64,
    /// Σx.
    pub sx: i64,
    /// Σy.
    pub sy: i64,
    /// Σx².
    pub sxx: i64,
    /// Σy².
    pub syy: i64,
    /// Σxy.
    pub sxy: i64,
}

/// The line `y = slope * x + intercept` and its coefficient of
/// determination; none where the points do not define them (no points, all
/// on one vertical line, or for `r2` all on one horizontal line).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// The slope.
    pub slope: Option<f64>,
    /// Where the line crosses x = 0.
    pub intercept: Option<f64>,
    /// r², the share of y's variance the line explains.
    pub r2: Option<f64>,
}

impl Sums {
    /// Adds the points of `pairs` (`x` then `y`, signed bytes; an odd last
    /// byte is no point).
    pub fn add_pairs(&mut self, pairs: &[u8]) {
        // Locals, not fields, in the loop: plain integer sums that the
        // compiler can keep in vector registers.
        let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0i64, 0i64, 0i64, 0i64, 0i64);
        let points = pairs.chunks_exact(2);
        let n = points.len() as u64;
        for point in points {
            let (x, y) = (i64::from(point[0] as i8), i64::from(point[1] as i8));
            (sx, sy) = (sx + x, sy + y);
            (sxx, syy, sxy) = (sxx + x * x, syy + y * y, sxy + x * y);
        }
        self.combine(Sums {
            n,
            sx,
            sy,
            sxx,
            syy,
            sxy,
        });
    }

    /// The least-squares line through the points summed.
    pub fn fit(&self) -> Fit {
        let n = i128::from(self.n);
        let (sx, sy) = (i128::from(self.sx), i128::from(self.sy));
        let spread_x = n * i128::from(self.sxx) - sx * sx;
        let spread_y = n * i128::from(self.syy) - sy * sy;
        let covariance = n * i128::from(self.sxy) - sx * sy;
        let slope = (spread_x != 0).then(|| covariance as f64 / spread_x as f64);
        Fit {
            slope,
            intercept: slope.map(|slope| (sy as f64 - slope * sx as f64) / n as f64),
            r2: (spread_x != 0 && spread_y != 0)
                .then(|| (covariance as f64 / spread_x as f64) * (covariance as f64 / spread_y as f64)),
        }
    }
}

/// Field by field.
impl Combine for Sums {
    fn combine(&mut self, other: Sums) {
        self.n += other.n;
        self.sx += other.sx;
        self.sy += other.sy;
        self.sxx += other.sxx;
        self.syy += other.syy;
        self.sxy += other.sxy;
    }
}

impl RecordJob for LinReg {
    const NAME: &'static str = "coop-examples/linreg";
    type Partial = Sums;

    /// A point is two bytes; a segment of an odd length is refused.
    fn records(&self) -> Records {
        Records::Fixed(2)
    }

    fn fold(&self, point: &[u8], sums: &mut Sums) -> Result<(), TaskError> {
        sums.add_pairs(point);
        Ok(())
    }

    /// A task's points in one loop (a point at a time through [`fold`] is
    /// far slower for two-byte records).
    ///
    /// [`fold`]: RecordJob::fold
    fn fold_all(&self, points: &[u8], sums: &mut Sums) -> Result<(), TaskError> {
        sums.add_pairs(points);
        Ok(())
    }
}

/// The entry that lets workers run [`LinReg`]; list it in `coop::init`.
pub fn register() -> coop::JobEntry {
    coop::register::<LinReg>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_fit_of_a_known_line() {
        // y = 2x - 3 on x = -5..=5, then one point off the line.
        let mut pairs: Vec<u8> = (-5i8..=5).flat_map(|x| [x as u8, (2 * x - 3) as u8]).collect();
        let mut sums = Sums::default();
        sums.add_pairs(&pairs);
        let fit = sums.fit();
        assert_eq!((sums.n, sums.sx, sums.sy), (11, 0, -33));
        assert_eq!(
            (fit.slope, fit.intercept, fit.r2),
            (Some(2.0), Some(-3.0), Some(1.0))
        );
        pairs.extend([0, 10]);
        let mut split = Sums::default();
        split.add_pairs(&pairs[..10]);
        split.add_pairs(&pairs[10..]);
        let mut whole = Sums::default();
        whole.add_pairs(&pairs);
        assert_eq!(split, whole);
        assert!(whole.fit().r2.unwrap() < 1.0);
    }

    #[test]
    fn the_extremes_of_a_signed_byte_and_lines_without_a_fit() {
        let mut sums = Sums::default();
        sums.add_pairs(&[0x80, 0x7f, 0x7f, 0x80]);
        assert_eq!(
            (sums.sx, sums.sy, sums.sxx, sums.sxy),
            (-1, -1, 128 * 128 + 127 * 127, -2 * 128 * 127)
        );
        assert_eq!(
            Sums::default().fit(),
            Fit {
                slope: None,
                intercept: None,
                r2: None
            }
        );
        let mut vertical = Sums::default();
        vertical.add_pairs(&[3, 1, 3, 2]);
        assert_eq!(vertical.fit().slope, None);
        let mut flat = Sums::default();
        flat.add_pairs(&[1, 4, 2, 4]);
        assert_eq!(
            (flat.fit().slope, flat.fit().intercept, flat.fit().r2),
            (Some(0.0), Some(4.0), None)
        );
    }
}
