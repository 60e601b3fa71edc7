//! KQL's `series_decompose_anomalies`, rebuilt so the job's scores are the ones an analyst gets
//! from Kusto on the same daily series.
//!
//! `series_decompose` splits a series into seasonal (the median of the points in the same phase),
//! trend (`avg`: the mean of the deseasonalized points; `linefit`: least squares) and residual
//! (`x - seasonal - trend`); `Test_points` at the end are left out of the fitting and get the
//! fitted seasonal and trend extended to them. `series_outliers` with the default `ctukey` kind
//! then scores each residual against the 10th and 90th percentiles (linear interpolation):
//! `(x - P90) / (P90 - P10) * F` above, `(x - P10) / (P90 - P10) * F` below, 0 between, with
//! Kusto's own normalisation `F = 2.7726056055079` (not published; solved from, and checked
//! against, the output Kusto gives for a documented input, see the tests).

/// Kusto's `ctukey` normalisation, so that a score of 1.5 still means a "mild" outlier.
pub const CTUKEY_FACTOR: f64 = 2.772_605_605_507_9;

/// How the trend of the deseasonalized series is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// The mean (`avg`, Kusto's default).
    Average,
    /// A least-squares line (`linefit`).
    LineFit,
    /// No trend (`none`).
    None,
}

/// What `series_decompose` returns, one value per point.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    pub seasonal: Vec<f64>,
    pub trend: Vec<f64>,
    pub baseline: Vec<f64>,
    pub residual: Vec<f64>,
}

/// What `series_decompose_anomalies` returns, plus the residual that was scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomalies {
    /// +1 a rise beyond the threshold, -1 a decline, 0 neither.
    pub flags: Vec<i8>,
    pub scores: Vec<f64>,
    pub baseline: Vec<f64>,
    pub residual: Vec<f64>,
}

/// The `p`-quantile (0..=1) of sorted values with linear interpolation between closest ranks
/// (position `p * (n - 1)`), numpy's default and what Kusto's percentiles here follow.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let position = p * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 0.5)
}

/// `series_outliers(values)` with the default `ctukey` kind (P10/P90). A series whose P10 and
/// P90 are equal (a flat series) scores 0 everywhere rather than dividing by zero.
pub fn series_outliers(values: &[f64]) -> Vec<f64> {
    if values.is_empty() {
        return Vec::new();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (low, high) = (percentile(&sorted, 0.10), percentile(&sorted, 0.90));
    let range = high - low;
    values
        .iter()
        .map(|&x| {
            if range <= 0.0 {
                0.0
            } else if x > high {
                (x - high) / range * CTUKEY_FACTOR
            } else if x < low {
                (x - low) / range * CTUKEY_FACTOR
            } else {
                0.0
            }
        })
        .collect()
}

/// `series_decompose(values, seasonality, trend, test_points)`. `seasonality` is the period in
/// points (0 or 1: no seasonal part). The last `test_points` points are not used for fitting.
pub fn decompose(values: &[f64], seasonality: usize, trend: Trend, test_points: usize) -> Decomposition {
    let n = values.len();
    let fitted = n.saturating_sub(test_points);
    let training = &values[..fitted];

    let mut seasonal = vec![0.0; n];
    if seasonality >= 2 {
        let phases: Vec<f64> = (0..seasonality)
            .map(|phase| {
                let mut same: Vec<f64> = training.iter().skip(phase).step_by(seasonality).copied().collect();
                if same.is_empty() {
                    0.0
                } else {
                    median(&mut same)
                }
            })
            .collect();
        for (i, s) in seasonal.iter_mut().enumerate() {
            *s = phases[i % seasonality];
        }
    }

    let deseasonal: Vec<f64> = training.iter().zip(&seasonal).map(|(x, s)| x - s).collect();
    let trend_values: Vec<f64> = match trend {
        Trend::None => vec![0.0; n],
        _ if deseasonal.is_empty() => vec![0.0; n],
        Trend::Average => vec![deseasonal.iter().sum::<f64>() / deseasonal.len() as f64; n],
        Trend::LineFit => {
            let m = deseasonal.len() as f64;
            let mean_x = (m - 1.0) / 2.0;
            let mean_y = deseasonal.iter().sum::<f64>() / m;
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (i, y) in deseasonal.iter().enumerate() {
                let dx = i as f64 - mean_x;
                sxy += dx * (y - mean_y);
                sxx += dx * dx;
            }
            let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            (0..n).map(|i| mean_y + slope * (i as f64 - mean_x)).collect()
        }
    };

    let baseline: Vec<f64> = seasonal.iter().zip(&trend_values).map(|(s, t)| s + t).collect();
    let residual = values.iter().zip(&baseline).map(|(x, b)| x - b).collect();
    Decomposition { seasonal, trend: trend_values, baseline, residual }
}

/// `series_decompose_anomalies(values, threshold, seasonality, trend, test_points)` with the
/// default `ctukey` method: the residual of [`decompose`] scored by [`series_outliers`].
pub fn decompose_anomalies(
    values: &[f64],
    threshold: f64,
    seasonality: usize,
    trend: Trend,
    test_points: usize,
) -> Anomalies {
    let parts = decompose(values, seasonality, trend, test_points);
    let scores = series_outliers(&parts.residual);
    let flags = scores
        .iter()
        .map(|&s| {
            if s > threshold {
                1
            } else if s < -threshold {
                -1
            } else {
                0
            }
        })
        .collect();
    Anomalies { flags, scores, baseline: parts.baseline, residual: parts.residual }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f64], want: &[f64], tolerance: f64) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tolerance, "point {i}: got {g}, want {w} (all: {got:?})");
        }
    }

    /// The output Kusto gives for this input (research note §1.4), to 1e-12.
    #[test]
    fn series_outliers_reproduces_the_verified_kusto_vector() {
        let input = [-3.0, 2.4, 15.0, 3.9, 5.0, 6.0, 4.5, 5.2, 3.0, 4.0, 5.0, 16.0, 7.0, 5.0, 5.0, 4.0];
        let kusto = [
            -1.9040785483608571,
            -0.10021466044004519,
            1.3361954725339347,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            1.6702443406674186,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        close(&series_outliers(&input), &kusto, 1e-12);
        let mut sorted = input.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert!((percentile(&sorted, 0.10) - 2.7).abs() < 1e-12);
        assert!((percentile(&sorted, 0.90) - 11.0).abs() < 1e-12);
    }

    #[test]
    fn series_outliers_edge_cases() {
        assert_eq!(series_outliers(&[]), Vec::<f64>::new());
        assert_eq!(series_outliers(&[4.0]), vec![0.0]);
        // flat: P10 = P90, nothing is an outlier (no division by zero)
        assert_eq!(series_outliers(&[3.0; 10]), vec![0.0; 10]);
        // two points: P10 = 1.1, P90 = 1.9 (interpolated), both outside by 0.1 of a 0.8 range
        let two = series_outliers(&[1.0, 2.0]);
        close(&two, &[-0.125 * CTUKEY_FACTOR, 0.125 * CTUKEY_FACTOR], 1e-12);
    }

    /// Period 3, three clean cycles, then a spike as the test point. By hand: the phase medians
    /// of the nine training points are 10, 20, 30; the deseasonalized training points are all 0,
    /// so the avg trend is 0; the residuals are nine zeros and 90; P10 = 0 and P90 = 9 (position
    /// 0.9 * 9 = 8.1 between 0 and 90), so the spike scores (90 - 9) / 9 * F = 9F.
    #[test]
    fn decomposition_golden_period_three_with_a_spike() {
        let y = [10.0, 20.0, 30.0, 10.0, 20.0, 30.0, 10.0, 20.0, 30.0, 100.0];
        let d = decompose(&y, 3, Trend::Average, 1);
        close(&d.seasonal, &[10.0, 20.0, 30.0, 10.0, 20.0, 30.0, 10.0, 20.0, 30.0, 10.0], 0.0);
        close(&d.trend, &[0.0; 10], 0.0);
        close(&d.baseline, &d.seasonal, 0.0);
        close(&d.residual, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 90.0], 0.0);
        let a = decompose_anomalies(&y, 3.0, 3, Trend::Average, 1);
        close(&a.scores, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0 * CTUKEY_FACTOR], 1e-12);
        assert_eq!(a.flags, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(a.baseline[9], 10.0);
    }

    /// Phase medians over an even count average the middle two; the avg trend is the mean of the
    /// deseasonalized training points; the test point is left out of both. By hand, period 2,
    /// training [1, 10, 3, 12, 5, 20], test point 0:
    /// phase 0 = median(1, 3, 5) = 3, phase 1 = median(10, 12, 20) = 12;
    /// deseasonalized = [-2, -2, 0, 0, 2, 8], mean 1 = trend;
    /// baseline = [4, 13, 4, 13, 4, 13, 4]; residual = [-3, -3, -1, -1, 1, 7, -4].
    #[test]
    fn decomposition_golden_test_point_is_not_fitted() {
        let y = [1.0, 10.0, 3.0, 12.0, 5.0, 20.0, 0.0];
        let d = decompose(&y, 2, Trend::Average, 1);
        close(&d.seasonal, &[3.0, 12.0, 3.0, 12.0, 3.0, 12.0, 3.0], 1e-12);
        close(&d.trend, &[1.0; 7], 1e-12);
        close(&d.baseline, &[4.0, 13.0, 4.0, 13.0, 4.0, 13.0, 4.0], 1e-12);
        close(&d.residual, &[-3.0, -3.0, -1.0, -1.0, 1.0, 7.0, -4.0], 1e-12);
        // Fitting the test point as well would move phase 0 to median(1, 3, 5, 0) = 2 and the
        // trend with it: the drop would partly explain itself.
        let fitted_too = decompose(&y, 2, Trend::Average, 0);
        assert!((fitted_too.seasonal[6] - 2.0).abs() < 1e-12);
        // Residuals sorted: -4 -3 -3 -1 -1 1 7; P10 at position 0.6 = -3.4, P90 at 5.4 = 3.4,
        // range 6.8. The test point -4 scores (-4 + 3.4) / 6.8 * F; 7 scores (7 - 3.4) / 6.8 * F.
        let a = decompose_anomalies(&y, 1.5, 2, Trend::Average, 1);
        let f = CTUKEY_FACTOR;
        close(&a.scores, &[0.0, 0.0, 0.0, 0.0, 0.0, 3.6 / 6.8 * f, -0.6 / 6.8 * f], 1e-12);
        assert_eq!(a.flags, vec![0, 0, 0, 0, 0, 0, 0]);
    }

    /// Without seasonality the baseline is the mean of the training points (trend avg), and
    /// `linefit` extends the fitted line to the test point.
    #[test]
    fn decomposition_golden_trends() {
        let y = [2.0, 4.0, 6.0, 8.0, 0.0];
        let avg = decompose(&y, 0, Trend::Average, 1);
        close(&avg.seasonal, &[0.0; 5], 0.0);
        close(&avg.baseline, &[5.0; 5], 1e-12);
        let line = decompose(&y, 0, Trend::LineFit, 1);
        close(&line.baseline, &[2.0, 4.0, 6.0, 8.0, 10.0], 1e-12);
        close(&line.residual, &[0.0, 0.0, 0.0, 0.0, -10.0], 1e-12);
        let none = decompose(&y, 0, Trend::None, 1);
        close(&none.residual, &y, 0.0);
        // a seasonality longer than the training part leaves the missing phases at 0
        let short = decompose(&[5.0, 7.0, 9.0], 7, Trend::None, 1);
        close(&short.seasonal, &[5.0, 7.0, 0.0], 0.0);
    }

    /// A weekly pattern with a weekend dip is explained by the phase medians: four clean weeks
    /// score 0 everywhere, and a weekday drop in week five is flagged as a decline.
    #[test]
    fn weekly_seasonality_absorbs_weekends_but_not_a_weekday_drop() {
        let week = [100.0, 102.0, 101.0, 99.0, 100.0, 40.0, 38.0];
        let mut y: Vec<f64> = week.iter().cycle().take(28).copied().collect();
        for (i, v) in y.iter_mut().enumerate() {
            *v += [0.0, 1.0, -1.0, 2.0][i % 4];
        }
        let quiet = decompose_anomalies(&y, 3.0, 7, Trend::Average, 1);
        assert!(quiet.flags.iter().all(|&f| f == 0), "{:?}", quiet.scores);
        y.push(60.0); // a Monday at 60 instead of about 100
        let drop = decompose_anomalies(&y, 3.0, 7, Trend::Average, 1);
        assert_eq!(drop.flags[28], -1, "{:?}", drop.scores);
        assert!(drop.flags[..28].iter().all(|&f| f == 0));
    }
}
