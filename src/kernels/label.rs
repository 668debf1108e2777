//! Class weights and label smoothing: how a row's plain cross-entropy `CE = LSE(s) − s[y]`, the
//! one every objective computes, becomes PyTorch's `F.cross_entropy(weight=w,
//! label_smoothing=ε)` of the row,
//!
//! `(1 − ε)·w[y]·CE + (ε/C)·Σ_c w[c]·(LSE(s) − s[c])`,
//!
//! and its gradient `((1 − ε)·w[y] + (ε/C)·W)·q1 − (1 − ε)·w[y]·onehot(y) − (ε/C)·w` with
//! `W = Σ_c w[c]` and `q1 = softmax(s)` (the objective's own gradient, scaled). A part whose
//! weight is 0 (a label or class of weight 0, `ε` of 0 or 1) contributes 0, even where its
//! log-probability is `−inf`. Without weights `w` is all 1.
//!
//! The smoothing part is a sum over the classes of the logits themselves, taken after the
//! kernel, in float64: `LSE(s) − s[c] = CE + (s[y] − s[c])`, each a positive term, so nothing
//! cancels.

use ndarray::ArrayView1;

use super::check::check_class_weight;
use super::float::{Float, Level};
use super::reduce::Terms;
use super::simd::{self, dispatch_at, Kernel, Simd};
use crate::error::KdError;

/// Class weights, checked once (finite, `>= 0`) and summed.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassWeights {
    w: Vec<f64>,
    total: f64,
}

impl ClassWeights {
    pub fn new(w: Vec<f64>) -> Result<Self, KdError> {
        let (low, total) = min_and_sum(simd::active(), &w);
        // A finite sum of weights >= 0 has only finite ones (unless it overflowed).
        if !(total.is_finite() && low >= 0.0) {
            check_class_weight(&w)?;
        }
        Ok(ClassWeights { w, total })
    }

    pub fn as_slice(&self) -> &[f64] {
        &self.w
    }

    /// `Σ_c w[c]`.
    pub fn total(&self) -> f64 {
        self.total
    }
}

/// A call's class weights and smoothing, with each row's label weight.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LabelTerms<'a> {
    /// `ε`, in `[0, 1]`.
    smoothing: f64,
    /// One weight per class (`None`: all 1).
    class_weight: Option<&'a [f64]>,
    /// Each row's label weight `w[y]` (0 for rows that do not count; `None`: all 1).
    row_weights: Option<&'a [f64]>,
    /// `ε/C` and `W`.
    per_class: f64,
    total: f64,
    level: Simd,
}

impl<'a> LabelTerms<'a> {
    /// The terms of `classes` classes whose weights sum to `total` (`classes` without
    /// weights); `None` when the cross-entropy is the plain one. Sums run at `level`.
    pub fn new(
        smoothing: f64,
        class_weight: Option<&'a [f64]>,
        row_weights: Option<&'a [f64]>,
        classes: usize,
        total: f64,
        level: Simd,
    ) -> Option<Self> {
        if smoothing == 0.0 && class_weight.is_none() {
            return None;
        }
        Some(LabelTerms {
            smoothing,
            class_weight,
            row_weights,
            per_class: smoothing / classes as f64,
            total,
            level,
        })
    }

    /// `w[c]`.
    #[inline]
    fn class(&self, c: usize) -> f64 {
        self.class_weight.map_or(1.0, |w| w[c])
    }

    /// Row `i`'s gradient factors: of the objective's `q1` term, and of its label's term.
    #[inline]
    pub fn factors(&self, i: usize) -> (f64, f64) {
        let label = (1.0 - self.smoothing) * self.row_weights.map_or(1.0, |w| w[i]);
        (label + self.per_class * self.total, label)
    }

    /// Row `i`'s terms from the objective's (its plain cross-entropy `ce`), with its logits
    /// `s` and label `y`.
    pub fn row<T: Float>(&self, i: usize, [div, ce]: Terms, s: ArrayView1<T>, y: usize) -> Terms {
        let (_, label) = self.factors(i);
        let mut value = if label == 0.0 { 0.0 } else { label * ce };
        if self.smoothing != 0.0 {
            let s_y = s[y].to_f64();
            // Σ_c w[c]·(LSE − s[c]) = W·LSE − Σ_c w[c]·s[c], LSE = CE + s[y]: every term of
            // the first form is >= 0, so the second loses nothing that matters in float64.
            let lse = if s_y == f64::NEG_INFINITY {
                // CE is +inf: LSE from the logits (a row of the caller's making).
                log_sum_exp(s)
            } else {
                ce + s_y
            };
            let ws = match s.as_slice() {
                Some(x) => weighted_sum(self.level, x, self.class_weight),
                None => weighted_sum(self.level, &s.to_vec(), self.class_weight),
            };
            value += self.per_class * (self.total * lse - ws);
        }
        [div, value]
    }

    /// Whether the gradient has a smoothing part, `smooth_grad`.
    #[inline]
    pub fn smooths(&self) -> bool {
        self.smoothing != 0.0
    }

    /// The smoothing's part of the gradient at class `c`, `−g·(ε/C)·w[c]`, `g` the
    /// cross-entropy's gradient weight.
    #[inline]
    pub fn smooth_grad(&self, g: f64, c: usize) -> f64 {
        -g * self.per_class * self.class(c)
    }

    /// Adds `smooth_grad` to a row's gradient.
    pub fn smooth_row<T: Float>(&self, g: f64, row: &mut [T]) {
        if self.smooths() {
            let step = -g * self.per_class;
            let w = self.class_weight;
            dispatch_at(self.level, AddScaled { row, step, w });
        }
    }
}

/// `ln Σ e^s`, in float64, for the rare row whose label's logit is `−inf`.
fn log_sum_exp<T: Float>(s: ArrayView1<T>) -> f64 {
    let m = s.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
    if !m.is_finite() {
        return m;
    }
    m + s.iter().map(|v| (v.to_f64() - m).exp()).sum::<f64>().ln()
}

/// Lanes of the loops below: enough independent sums to hide the adds' latency.
const LANES: usize = 16;

/// `Σ_c w[c]·x[c]` in float64 (`w` all 1 when `None`), a weight of 0 adding 0 whatever `x[c]`,
/// at `level`.
pub(crate) fn weighted_sum<T: Float>(level: Simd, x: &[T], w: Option<&[f64]>) -> f64 {
    dispatch_at(level, WeightedSum { x, w })
}

struct WeightedSum<'a, T> {
    x: &'a [T],
    w: Option<&'a [f64]>,
}

impl<T: Float> Kernel for WeightedSum<'_, T> {
    type Output = f64;

    #[inline(always)]
    fn run<L: Level>(self) -> f64 {
        let mut acc = [0.0f64; LANES];
        let term = |w: f64, x: T| if w == 0.0 { 0.0 } else { w * x.to_f64() };
        let mut tail = 0.0;
        match self.w {
            None => {
                let chunks = self.x.chunks_exact(LANES);
                tail = chunks.remainder().iter().map(|v| v.to_f64()).sum();
                for c in chunks {
                    for k in 0..LANES {
                        acc[k] += c[k].to_f64();
                    }
                }
            }
            Some(w) => {
                let (xs, ws) = (self.x.chunks_exact(LANES), w.chunks_exact(LANES));
                for (&x, &w) in xs.remainder().iter().zip(ws.remainder()) {
                    tail += term(w, x);
                }
                for (xc, wc) in xs.zip(ws) {
                    for k in 0..LANES {
                        acc[k] += term(wc[k], xc[k]);
                    }
                }
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

/// `row[c] += step·w[c]` (`w` all 1 when `None`).
struct AddScaled<'a, T> {
    row: &'a mut [T],
    step: f64,
    w: Option<&'a [f64]>,
}

impl<T: Float> Kernel for AddScaled<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<L: Level>(self) {
        match self.w {
            None => {
                let step = T::from_f64(self.step);
                self.row.iter_mut().for_each(|v| *v = *v + step);
            }
            Some(w) => {
                for (v, &w) in self.row.iter_mut().zip(w) {
                    *v = *v + T::from_f64(self.step * w);
                }
            }
        }
    }
}

/// The smallest of `w` and its sum, at `level`: a first look at class weights, which are fine
/// when the sum is finite and the smallest `>= 0`.
fn min_and_sum(level: Simd, w: &[f64]) -> (f64, f64) {
    dispatch_at(level, MinSum { w })
}

struct MinSum<'a> {
    w: &'a [f64],
}

impl Kernel for MinSum<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn run<L: Level>(self) -> (f64, f64) {
        let (mut lo, mut acc) = ([f64::INFINITY; LANES], [0.0f64; LANES]);
        let chunks = self.w.chunks_exact(LANES);
        let mut tail = (f64::INFINITY, 0.0);
        for &v in chunks.remainder() {
            tail = (tail.0.min(v), tail.1 + v);
        }
        for c in chunks {
            for k in 0..LANES {
                lo[k] = lo[k].min(c[k]);
                acc[k] += c[k];
            }
        }
        let low = lo.iter().fold(tail.0, |m, &v| m.min(v));
        (low, acc.iter().sum::<f64>() + tail.1)
    }
}
