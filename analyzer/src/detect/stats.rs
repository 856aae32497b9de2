//! The statistics the detectors share: Prometheus's `histogram_quantile`, the
//! Mann–Whitney rank test, the Hodges–Lehmann shift, a two-proportion test, medians.

/// One cumulative histogram bucket: requests at or below `upper`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) upper: f64,
    pub(crate) count: f64,
}

/// The `q`-quantile of cumulative buckets, following Prometheus's documented rules:
/// linear interpolation inside the bucket the rank falls in; the lowest bucket starts at 0
/// when its bound is positive (else its bound is returned); a rank in the `+Inf` bucket
/// returns the highest finite bound; without a `+Inf` bucket, with fewer than two buckets
/// or with no observations, the result is NaN. Counts that go down (a scrape race) are
/// raised to the running maximum first, as Prometheus does.
pub(crate) fn histogram_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut sorted: Vec<Bucket> = buckets
        .iter()
        .copied()
        .filter(|b| !b.upper.is_nan())
        .collect();
    sorted.sort_by(|a, b| a.upper.total_cmp(&b.upper));
    if sorted.len() < 2 || sorted.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return f64::NAN;
    }
    let mut running = 0.0f64;
    for bucket in &mut sorted {
        running = running.max(bucket.count);
        bucket.count = running;
    }
    let total = sorted[sorted.len() - 1].count;
    if total == 0.0 || total.is_nan() {
        return f64::NAN;
    }

    let rank = q * total;
    let finite = &sorted[..sorted.len() - 1];
    let Some(index) = finite.iter().position(|b| b.count >= rank) else {
        return finite[finite.len() - 1].upper;
    };
    let bucket = finite[index];
    if index == 0 && bucket.upper <= 0.0 {
        return bucket.upper;
    }
    let (start, count_start) = if index == 0 {
        (0.0, 0.0)
    } else {
        (finite[index - 1].upper, finite[index - 1].count)
    };
    let width = bucket.count - count_start;
    if width == 0.0 {
        return bucket.upper;
    }
    start + (bucket.upper - start) * (rank - count_start) / width
}

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Standard normal upper tail, `P(Z > z)`.
pub(crate) fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function, Chebyshev fit with fractional error below 1.2e-7
/// everywhere (Press et al., *Numerical Recipes*, `erfcc`); good enough for p-values that
/// are compared with 0.01.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let value = t * poly.exp();
    if x >= 0.0 { value } else { 2.0 - value }
}

/// Two-sided Mann–Whitney U test of `after` against `before` by the normal approximation
/// with the tie correction and a continuity correction of one half. Returns `(U_after,
/// p)`; p is 1 when every value is tied (no evidence either way).
pub(crate) fn mann_whitney(before: &[f64], after: &[f64]) -> (f64, f64) {
    let n_before = before.len() as f64;
    let n_after = after.len() as f64;
    if before.is_empty() || after.is_empty() {
        return (f64::NAN, 1.0);
    }
    let mut pooled: Vec<(f64, bool)> = before
        .iter()
        .map(|&v| (v, false))
        .chain(after.iter().map(|&v| (v, true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut rank_sum_after = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j + 1 < pooled.len() && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        // Ranks are 1-based; a tied run shares the mean of its ranks.
        let shared = (i + j) as f64 / 2.0 + 1.0;
        let run = (j - i + 1) as f64;
        tie_term += run * run * run - run;
        rank_sum_after += shared * pooled[i..=j].iter().filter(|(_, a)| *a).count() as f64;
        i = j + 1;
    }

    let n = n_before + n_after;
    let u_after = rank_sum_after - n_after * (n_after + 1.0) / 2.0;
    let mean = n_before * n_after / 2.0;
    let variance = n_before * n_after / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return (u_after, 1.0);
    }
    let distance = ((u_after - mean).abs() - 0.5).max(0.0);
    let p = (2.0 * normal_sf(distance / variance.sqrt())).min(1.0);
    (u_after, p)
}

/// Hodges–Lehmann estimate of the shift `after − before` (the median of all pairwise
/// differences) and its distribution-free confidence interval from the normal
/// approximation: with `k = ⌊n·m/2 − z·√(n·m·(n+m+1)/12)⌋` (at least 1), the interval is
/// the k-th smallest and k-th largest difference. `z` is 1.96 for 95 %.
pub(crate) fn hodges_lehmann(before: &[f64], after: &[f64], z: f64) -> (f64, (f64, f64)) {
    let mut differences: Vec<f64> = after
        .iter()
        .flat_map(|a| before.iter().map(move |b| a - b))
        .collect();
    if differences.is_empty() {
        return (f64::NAN, (f64::NAN, f64::NAN));
    }
    differences.sort_by(f64::total_cmp);
    let shift = median(&differences);
    let pairs = differences.len() as f64;
    let n = (before.len() + after.len()) as f64;
    let k = (pairs / 2.0 - z * (pairs * (n + 1.0) / 12.0).sqrt()).floor();
    let k = (k.max(1.0) as usize).min(differences.len());
    let interval = (differences[k - 1], differences[differences.len() - k]);
    (shift, interval)
}

/// One-sided test that the after proportion exceeds the before one (pooled z test).
/// Returns 1 when there is nothing to compare.
pub(crate) fn two_proportion_greater(
    errors_before: f64,
    total_before: f64,
    errors_after: f64,
    total_after: f64,
) -> f64 {
    if total_before <= 0.0 || total_after <= 0.0 {
        return 1.0;
    }
    let p_before = errors_before / total_before;
    let p_after = errors_after / total_after;
    let pooled = (errors_before + errors_after) / (total_before + total_after);
    let se = (pooled * (1.0 - pooled) * (1.0 / total_before + 1.0 / total_after)).sqrt();
    if se == 0.0 || se.is_nan() {
        return if p_after > p_before { 0.0 } else { 1.0 };
    }
    normal_sf((p_after - p_before) / se)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(upper: f64, count: f64) -> Bucket {
        Bucket { upper, count }
    }

    fn close(got: f64, want: f64, tolerance: f64) -> bool {
        (got.is_nan() && want.is_nan()) || got == want || (got - want).abs() <= tolerance
    }

    #[test]
    fn histogram_quantile_follows_prometheus_rules() {
        let inf = f64::INFINITY;
        // Before checkout's rollout: 97 % at or below 0.1 s, all at or below 0.25 s.
        let before = [
            b(0.05, 50.0),
            b(0.1, 97.0),
            b(0.25, 100.0),
            b(0.5, 100.0),
            b(inf, 100.0),
        ];
        // After: 95 % at or below 0.5 s, all at or below 1 s.
        let after = [b(0.25, 10.0), b(0.5, 95.0), b(1.0, 100.0), b(inf, 100.0)];
        let cases: &[(&str, f64, &[Bucket], f64)] = &[
            // 0.1 + 0.15 × (99 − 97) / 3.
            ("checkout before", 0.99, &before, 0.2),
            // 0.5 + 0.5 × (99 − 95) / 5.
            ("checkout after", 0.99, &after, 0.9),
            // Rank 25 lies in the lowest bucket, which starts at 0: 0.05 × 25 / 50.
            ("lowest bucket from zero", 0.25, &before, 0.025),
            // Rank 9 of 10 falls in +Inf: the highest finite bound is returned.
            (
                "rank in +Inf",
                0.9,
                &[b(0.1, 5.0), b(0.2, 8.0), b(inf, 10.0)],
                0.2,
            ),
            (
                "no observations",
                0.99,
                &[b(0.1, 0.0), b(inf, 0.0)],
                f64::NAN,
            ),
            ("no +Inf bucket", 0.5, &[b(0.1, 1.0), b(0.2, 2.0)], f64::NAN),
            ("one bucket", 0.5, &[b(inf, 2.0)], f64::NAN),
            ("empty buckets", 0.5, &[], f64::NAN),
            // An empty middle bucket is skipped: rank 5 of 10 is in (0.2, 0.4]:
            // 0.2 + 0.2 × (5 − 4) / 6.
            (
                "empty middle bucket",
                0.5,
                &[b(0.1, 4.0), b(0.2, 4.0), b(0.4, 10.0), b(inf, 10.0)],
                0.2 + 0.2 / 6.0,
            ),
            (
                "negative lowest bound",
                0.1,
                &[b(-1.0, 5.0), b(1.0, 10.0), b(inf, 10.0)],
                -1.0,
            ),
            (
                "unsorted input",
                0.99,
                &[b(inf, 100.0), b(0.25, 100.0), b(0.1, 97.0)],
                0.2,
            ),
            ("q above 1", 1.5, &before, inf),
            ("q below 0", -0.5, &before, f64::NEG_INFINITY),
        ];
        for (name, q, buckets, want) in cases {
            let got = histogram_quantile(*q, buckets);
            assert!(close(got, *want, 1e-12), "{name}: got {got}, want {want}");
        }
    }

    #[test]
    fn mann_whitney_matches_hand_computation() {
        // No ties: ranks of after are 4, 5, 6, U = 15 − 6 = 9, mean 4.5, variance
        // 9/12 × 7 = 5.25; z = (9 − 4.5 − 0.5)/√5.25 = 1.74574; p = 2·P(Z > z) = 0.080856.
        let (u, p) = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert_eq!(u, 9.0);
        assert!(close(p, 0.080856, 2e-5), "{p}");

        // Ties: pooled 1, 2, 2, 2, 3, 4 → ranks 1, 3, 3, 3, 5, 6; after holds 2, 3, 4 →
        // rank sum 14, U = 8. Tie term 3³ − 3 = 24; variance 9/12 × (7 − 24/30) = 4.65;
        // z = 3/√4.65 = 1.39122; p = 0.164160.
        let (u, p) = mann_whitney(&[1.0, 2.0, 2.0], &[2.0, 3.0, 4.0]);
        assert_eq!(u, 8.0);
        assert!(close(p, 0.164160, 2e-5), "{p}");

        // All tied: the variance is zero and nothing can be claimed.
        assert_eq!(mann_whitney(&[1.0; 4], &[1.0; 4]).1, 1.0);
    }

    #[test]
    fn hodges_lehmann_is_the_median_pairwise_difference() {
        // Differences of [4, 5, 6] − [1, 2, 3]: 1, 2, 2, 3, 3, 3, 4, 4, 5 → median 3.
        // k = ⌊4.5 − 1.96·√(9·7/12)⌋ = ⌊0.0091⌋ → 1: the interval is the extremes.
        let (shift, ci) = hodges_lehmann(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 1.96);
        assert_eq!(shift, 3.0);
        assert_eq!(ci, (1.0, 5.0));

        // Ten against ten shifted by exactly 10: all 100 differences lie in [1, 19], the
        // median is 10; k = ⌊50 − 1.96·√(100·21/12)⌋ = ⌊24.07⌋ = 24, so the interval is
        // the 24th smallest and 24th largest difference. Differences j − i + 10 with
        // i, j in 0..10: value 10 + d occurs 10 − |d| times; cumulative counts from the
        // bottom reach 21 at 6 and 28 at 7, so the 24th smallest is 7 and, by symmetry,
        // the 24th largest is 13.
        let before: Vec<f64> = (0..10).map(f64::from).collect();
        let after: Vec<f64> = (0..10).map(|i| f64::from(i) + 10.0).collect();
        let (shift, ci) = hodges_lehmann(&before, &after, 1.96);
        assert_eq!(shift, 10.0);
        assert_eq!(ci, (7.0, 13.0));
    }

    #[test]
    fn two_proportion_matches_hand_computation() {
        // 10/1000 against 30/1000: pooled 0.02, se = √(0.02·0.98·0.002) = 0.0062610,
        // z = 0.02/se = 3.19438, P(Z > z) = 0.000700.
        let p = two_proportion_greater(10.0, 1000.0, 30.0, 1000.0);
        assert!(close(p, 0.000700, 1e-5), "{p}");
        // Equal proportions: z = 0, p = 0.5.
        assert!(close(
            two_proportion_greater(5.0, 1000.0, 5.0, 1000.0),
            0.5,
            1e-7
        ));
        assert_eq!(two_proportion_greater(0.0, 0.0, 1.0, 10.0), 1.0);
    }

    #[test]
    fn normal_tail_is_accurate() {
        // Standard table values.
        for (z, want) in [
            (0.0, 0.5),
            (1.959964, 0.025),
            (2.575829, 0.005),
            (-1.0, 0.841345),
        ] {
            assert!(close(normal_sf(z), want, 1e-6), "{z}");
        }
    }
}
