//! Amdahl's law, `T(N) = T1 * (s + (1 - s) / N)`: a job of which a fraction
//! `s` runs serially takes `T(N)` on `N` workers. [`fit`] finds `s` from
//! measured times by least squares; [`Fit::speedup`] projects the speedup.

/// A serial fraction fitted to measured times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The fitted serial fraction. Can fall outside `0..=1` when the times do
    /// not follow the law (below 0: better than linear; above 1: slower with
    /// more workers).
    pub serial: f64,
    /// The one-worker time the fit is relative to, in seconds.
    pub t1: f64,
    /// Root mean square of the model's relative error over the points.
    pub rms_relative_error: f64,
    /// Points with more than one worker, the ones that carry information.
    pub points: usize,
}

/// The speedup on `workers` of a job whose serial fraction is `serial`
/// (clamped to `0..=1`): `1 / (s + (1 - s) / N)`.
pub fn speedup(serial: f64, workers: f64) -> f64 {
    let s = serial.clamp(0.0, 1.0);
    1.0 / (s + (1.0 - s) / workers)
}

impl Fit {
    /// The projected speedup over `t1` on `workers`, with the serial fraction
    /// clamped to `0..=1`.
    pub fn speedup(&self, workers: f64) -> f64 {
        speedup(self.serial, workers)
    }

    /// Whether the fitted fraction had to be clamped for projections.
    pub fn clamped(&self) -> bool {
        !(0.0..=1.0).contains(&self.serial)
    }

    /// The time the law predicts on `workers`, with the fitted (unclamped) fraction.
    pub fn time(&self, workers: f64) -> f64 {
        self.t1 * (self.serial + (1.0 - self.serial) / workers)
    }
}

/// Fits the serial fraction `s` of `T(N) = t1 * (s + (1 - s) / N)` to
/// `points` of (workers `N`, seconds `T`) by least squares on `T`.
///
/// The model is linear in `s`: `T / t1 - 1/N = s * (1 - 1/N)`, so with
/// `x = 1 - 1/N` and `y = T / t1 - 1/N`, `s = sum(x y) / sum(x x)`. Points with
/// one worker have `x = 0` and carry nothing. `None` without a point with more
/// than one worker, or without a positive `t1`.
pub fn fit(t1: f64, points: &[(f64, f64)]) -> Option<Fit> {
    if !(t1 > 0.0 && t1.is_finite()) {
        return None;
    }
    let (mut xy, mut xx, mut used) = (0.0, 0.0, 0);
    for &(n, t) in points {
        if !(n > 1.0 && t.is_finite()) {
            continue;
        }
        let x = 1.0 - 1.0 / n;
        let y = t / t1 - 1.0 / n;
        xy += x * y;
        xx += x * x;
        used += 1;
    }
    if used == 0 {
        return None;
    }
    let mut fit = Fit {
        serial: xy / xx,
        t1,
        rms_relative_error: 0.0,
        points: used,
    };
    let squares: Vec<f64> = points
        .iter()
        .filter(|&&(_, t)| t > 0.0 && t.is_finite())
        .map(|&(n, t)| ((fit.time(n) - t) / t).powi(2))
        .collect();
    fit.rms_relative_error = (squares.iter().sum::<f64>() / squares.len().max(1) as f64).sqrt();
    Some(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn law(t1: f64, s: f64, n: f64) -> f64 {
        t1 * (s + (1.0 - s) / n)
    }

    #[test]
    fn exact_times_give_back_the_fraction() {
        for s in [0.0, 0.05, 0.3, 1.0] {
            let points: Vec<(f64, f64)> = (1..=8).map(|n| (n as f64, law(12.0, s, n as f64))).collect();
            let fit = fit(12.0, &points).unwrap();
            assert!((fit.serial - s).abs() < 1e-12, "{s}: {fit:?}");
            assert!(fit.rms_relative_error < 1e-12);
            assert_eq!(fit.points, 7);
        }
    }

    #[test]
    fn noisy_times_give_a_close_fraction() {
        // +-2% noise, alternating, around s = 0.1.
        let points: Vec<(f64, f64)> = (1..=16)
            .map(|n| {
                let noise = if n % 2 == 0 { 1.02 } else { 0.98 };
                (n as f64, law(5.0, 0.1, n as f64) * noise)
            })
            .collect();
        let fit = fit(5.0, &points).unwrap();
        assert!((fit.serial - 0.1).abs() < 0.01, "{fit:?}");
        assert!(
            fit.rms_relative_error > 0.01 && fit.rms_relative_error < 0.03,
            "{fit:?}"
        );
    }

    #[test]
    fn least_squares_minimises_the_squared_error() {
        let points = [(2.0, 6.0), (3.0, 4.5), (4.0, 3.0)];
        let best = fit(10.0, &points).unwrap();
        let cost = |s: f64| -> f64 { points.iter().map(|&(n, t)| (law(10.0, s, n) - t).powi(2)).sum() };
        for delta in [-0.01, -1e-4, 1e-4, 0.01] {
            assert!(cost(best.serial) < cost(best.serial + delta), "{delta}");
        }
    }

    #[test]
    fn one_worker_points_alone_give_no_fit() {
        assert_eq!(fit(3.0, &[(1.0, 3.0), (1.0, 3.1)]), None);
        assert_eq!(fit(3.0, &[]), None);
        assert_eq!(fit(0.0, &[(2.0, 1.0)]), None);
    }

    #[test]
    fn projections_follow_the_law_and_clamp() {
        assert!((speedup(0.1, 8.0) - 1.0 / (0.1 + 0.9 / 8.0)).abs() < 1e-12);
        assert!((speedup(0.0, 64.0) - 64.0).abs() < 1e-9);
        assert!((speedup(1.0, 64.0) - 1.0).abs() < 1e-12);
        // Better than linear: a negative fraction, projected as perfect scaling.
        let fit = fit(10.0, &[(2.0, 4.0)]).unwrap();
        assert!(fit.serial < 0.0 && fit.clamped(), "{fit:?}");
        assert!((fit.speedup(16.0) - 16.0).abs() < 1e-9);
    }
}
