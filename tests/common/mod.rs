//! What the Rust integration tests share: a seeded generator and the argmax of a row.

#![allow(dead_code)]

use ndarray::ArrayView1;

/// A small deterministic generator (no dev-dependency needed): uniform in `[lo, hi)`.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// An integer in `[lo, hi)`.
    pub fn below(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.uniform(0.0, (hi - lo) as f64) as usize).min(hi - lo - 1)
    }

    /// `len` values of `f32` in `[lo, hi)`.
    pub fn vec_f32(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len)
            .map(|_| self.uniform(lo.into(), hi.into()) as f32)
            .collect()
    }
}

/// The index of the largest value of `row` (the last of equal ones); `row` has no NaN.
pub fn argmax(row: ArrayView1<f32>) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v >= row[best] {
            best = i;
        }
    }
    best
}

/// `|a − b| <= eps`, with both values in the message.
#[track_caller]
pub fn assert_close(a: f64, b: f64, eps: f64) {
    assert!(
        (a - b).abs() <= eps,
        "{a} and {b} differ by more than {eps}"
    );
}
