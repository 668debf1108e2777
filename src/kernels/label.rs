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

use super::float::Float;
use super::reduce::Terms;

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
}

impl<'a> LabelTerms<'a> {
    /// The terms of `classes` classes; `None` when the cross-entropy is the plain one.
    pub fn new(
        smoothing: f64,
        class_weight: Option<&'a [f64]>,
        row_weights: Option<&'a [f64]>,
        classes: usize,
    ) -> Option<Self> {
        if smoothing == 0.0 && class_weight.is_none() {
            return None;
        }
        Some(LabelTerms {
            smoothing,
            class_weight,
            row_weights,
            per_class: smoothing / classes as f64,
            total: class_weight.map_or(classes as f64, |w| w.iter().sum()),
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
            let mut sum = 0.0;
            if s_y == f64::NEG_INFINITY {
                // CE is +inf: LSE(s) − s[c] from LSE itself (a row of the caller's making).
                let lse = log_sum_exp(s);
                for (c, &v) in s.iter().enumerate() {
                    let w = self.class(c);
                    if w != 0.0 {
                        sum += w * (lse - v.to_f64());
                    }
                }
            } else {
                for (c, &v) in s.iter().enumerate() {
                    let w = self.class(c);
                    if w != 0.0 {
                        sum += w * (ce + (s_y - v.to_f64()));
                    }
                }
            }
            value += self.per_class * sum;
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
        if !self.smooths() {
            return;
        }
        for (c, v) in row.iter_mut().enumerate() {
            *v = *v + T::from_f64(self.smooth_grad(g, c));
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
