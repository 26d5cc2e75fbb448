//! Sums over long slices in a fixed lane order: fast and deterministic.
//!
//! A plain `for v in xs { sum += v }` is a chain of dependent additions: every add waits for
//! the previous one (4 cycles each) and the compiler may not reorder float additions, so it
//! runs at a fraction of the machine's speed (a conv layer's bias gradient and batch norm's
//! statistics spent most of their time there). Here element `i` goes to partial sum `i % LANES`
//! and the partial sums are added lane by lane at the end: independent chains the compiler
//! turns into vector adds, in an order fixed by the length alone, so the result is the same
//! on every run and every number of threads.

use std::ops::Add;

/// Partial sums per reduction.
pub const LANES: usize = 16;

/// `zero + Σ f(a[i], b[i])` over the common length of `a` and `b`, in lane order (see the
/// module doc).
pub fn lane_sum2<A: Copy, B: Copy, S: Copy + Add<Output = S>>(
    a: &[A],
    b: &[B],
    zero: S,
    f: impl Fn(A, B) -> S,
) -> S {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [zero; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(xa).zip(xb) {
            *s = *s + f(x, y);
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ta).zip(tb) {
        *s = *s + f(x, y);
    }
    acc.into_iter().fold(zero, |t, s| t + s)
}

/// `zero + Σ f(a[i])` in lane order (see the module doc).
pub fn lane_sum<A: Copy, S: Copy + Add<Output = S>>(a: &[A], zero: S, f: impl Fn(A) -> S) -> S {
    lane_sum2(a, a, zero, |x, _| f(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_a_wide_reference_for_every_tail_length() {
        for n in [0, 1, 15, 16, 17, 33, 1000, 1031] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let b: Vec<f64> = (0..n).map(|i| (i % 13) as f64 * 0.25).collect();
            let exact: f64 = a.iter().map(|&v| v as f64).sum();
            let got = lane_sum(&a, 0.0, |v| v);
            assert!(
                (got as f64 - exact).abs() <= 1e-3 * (1.0 + exact.abs()),
                "{n}"
            );
            let got64 = lane_sum(&a, 0.0, f64::from);
            assert!((got64 - exact).abs() < 1e-9, "{n}");
            let dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y).sum();
            let got = lane_sum2(&a, &b, 0.0, |x, y| x as f64 * y);
            assert!((got - dot).abs() < 1e-9 * (1.0 + dot.abs()), "{n}");
        }
    }

    #[test]
    fn the_order_is_the_lane_order() {
        // 1e8 + 1 + ... in f32: a serial sum loses every 1.0, lane sums keep them in lanes 1-15
        // until the end, where they are added to lane 0's 1e8 one lane at a time.
        let mut a = vec![1.0f32; 32];
        a[0] = 1e8;
        let lanes = lane_sum(&a, 0.0, |v| v);
        let mut expected = [0.0f32; LANES];
        for (i, v) in a.iter().enumerate() {
            expected[i % LANES] += v;
        }
        assert_eq!(lanes, expected.iter().fold(0.0, |t, s| t + s));
    }

    #[test]
    fn uneven_slices_use_the_common_length() {
        assert_eq!(
            lane_sum2(&[1.0f64, 2.0, 3.0], &[1.0f64], 0.0, |x, y| x * y),
            1.0
        );
    }
}
