//! Objectives: what a row computes, each written once for every driver.
//!
//! An objective says three things, generic over the element type and the SIMD level:
//! - `stats`: the per-element step of the statistics pass, the summands it adds to the row's
//!   lane sums (against per-lane shifts, the maxima of the row so far) and the per-element
//!   values it keeps for the gradient pass;
//! - `rescale` and `loss`: how the sums follow a rise of the shifts (a long row is summed a tile
//!   at a time), and how a row's sums become its loss;
//! - `coeffs` and `grad_step`: the row's gradient coefficients, and the gradient element from
//!   them and the kept values.
//!
//! The long-row driver (`long.rs`, one row at a time, tiled) and the short-row driver
//! (`small.rs`, `LANES` rows at a time, one per lane) run any objective; `driver.rs` schedules
//! the rows. Adding an objective is a file here and the match arm that picks it.
//!
//! The helpers below are the numerics every objective shares: scaled logits that cannot
//! overflow, sums that keep the shift's exact 1s out of the lane partials, and the log of such
//! a sum.

pub mod hinton;
pub mod softmax;

use super::chunk::Chunk;
use super::float::{ln_f64, Float, Level};
use super::reduce::Terms;

/// Row sums a statistics pass keeps, in f64 (an objective uses some of them).
pub const SUMS: usize = 8;
/// Per-element values a statistics pass keeps for the gradient pass.
pub const KEPT: usize = 3;

pub type Sums = [f64; SUMS];

/// What a row computes; see the module doc. Every method is `#[inline(always)]` in its
/// implementations: they are the bodies of the drivers' loops.
pub trait Objective<T: Float>: Copy + Send + Sync {
    /// Whether the teacher row is read (when not, the drivers pass the student for it).
    const TEACHER: bool;
    /// Which of the `KEPT` values `grad_step` reads (the others are not stored).
    const KEEP: [bool; KEPT];
    /// Which of the `SUMS` sums `stats` adds to (the others stay 0 and are not summed).
    const USED: [bool; SUMS];

    /// One chunk of the statistics pass: adds the summands of `s`, `t` (the student and
    /// teacher logits) to `acc`, with exps taken against the per-lane shifts `m_s`, `m_t`,
    /// and returns the values to keep. Must work lane by lane, each lane from its own inputs.
    fn stats<L: Level>(
        &self,
        s: &Chunk<T>,
        t: &Chunk<T>,
        m_s: &Chunk<T>,
        m_t: &Chunk<T>,
        acc: &mut [Chunk<T>; SUMS],
    ) -> [Chunk<T>; KEPT];

    /// The sums after the shifts rise by `up_s`, `up_t` (in logits, `>= 0`).
    fn rescale(&self, sums: Sums, up_s: f64, up_t: f64) -> Sums;

    /// The row's two terms, unweighted (the divergence and the cross-entropy; 0 for a term the
    /// objective does not have), from its sums; `z_y` is the student's logit at the label minus
    /// the student's shift (NaN when the row has no label).
    fn loss<L: Level>(&self, sums: &Sums, z_y: f64) -> Terms;

    /// The gradient coefficients of a row with `sums`, for values kept against shifts lower
    /// than the row's by `down_s`, `down_t` (in logits, `<= 0`).
    fn coeffs<L: Level>(&self, sums: &Sums, down_s: f64, down_t: f64) -> [f64; KEPT];

    /// One chunk of the gradient (or of the output) from per-lane coefficients and kept values.
    fn grad_step<L: Level>(&self, c: &[Chunk<T>; KEPT], kept: [&Chunk<T>; KEPT]) -> Chunk<T>;

    /// The weight taken off the gradient at the row's label, if the objective has one.
    fn label_weight(&self) -> Option<f64>;

    /// The objective for a row whose cross-entropy's gradient has its `softmax(s)` term
    /// scaled by `coef` and its label's term by `label` (class weights and label smoothing,
    /// `label.rs`). An objective without a cross-entropy is itself.
    #[inline(always)]
    fn weighed(self, coef: f64, label: f64) -> Self {
        let _ = (coef, label);
        self
    }
}

/// `(x − m)·inv_t`, per lane, without overflow in `x − m`: when `inv_t < 1` the difference is
/// taken of halves (exact for normal numbers, and the same number as `(x − m)/2`), so logits
/// near the type's limit still give their true scaled value. With `fold` (an FMA level, `inv_t`
/// a power of two), `x·inv_t − m·inv_t` in one rounding, which is the same number.
#[inline(always)]
pub(crate) fn scaled<T: Float, L: Level>(x: T, m: T, inv_t: T, fold: bool) -> T {
    if fold {
        return T::madd::<L>(x, inv_t, -(m * inv_t));
    }
    let half = T::from_f64(0.5);
    let (h, scale) = if inv_t < T::ONE {
        (half, inv_t + inv_t)
    } else {
        (T::ONE, inv_t)
    };
    T::madd::<L>(x, h, -(m * h)) * scale
}

/// Adds `e`, lane `k`'s value, to a row sum kept as `acc[ones] + acc[rest]`: an `e` of exactly 1
/// (the shift's own element) is counted in `ones`, the rest summed in `rest`. In `T` lanes,
/// `1 + small` would round the small terms away, and with them the whole loss of a confident
/// row.
#[inline(always)]
pub(crate) fn add_split<T: Float>(
    acc: &mut [Chunk<T>; SUMS],
    [rest, ones]: [usize; 2],
    k: usize,
    e: T,
) {
    // Selects of the addends, then plain adds: a select of the sums became a masked store,
    // which the next chunk's load of the sum waited on. (Testing each chunk for a 1 first, to
    // skip this, cost more than it saved.)
    let one = e == T::ONE;
    acc[rest][k] = acc[rest][k] + if one { T::ZERO } else { e };
    acc[ones][k] = acc[ones][k] + if one { T::ONE } else { T::ZERO };
}

/// `ln(ones + rest)`, through `ln(1 + rest)` when `ones == 1` so that a sum just above 1 keeps
/// its relative accuracy.
#[inline(always)]
pub(crate) fn ln_sum<L: Level>(ones: f64, rest: f64) -> f64 {
    if ones == 1.0 {
        ln_1p::<L>(rest)
    } else {
        ln_f64::<L>(ones + rest)
    }
}

/// `ln(1 + r)` for `r >= 0` (or NaN) to a few ulps, without branches: `ln(u)·r/(u − 1)` with
/// `u = 1 + r` corrects the rounding of `u` (Goldberg).
#[inline(always)]
pub(crate) fn ln_1p<L: Level>(r: f64) -> f64 {
    let u = 1.0 + r;
    let v = ln_f64::<L>(u) * (r / (u - 1.0));
    if u == 1.0 {
        r
    } else if u == f64::INFINITY {
        u
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::ScalarLevel;

    #[test]
    fn ln_1p_keeps_relative_accuracy() {
        for r in [0.0, 1e-300, 6.389_6e-8, 1e-17, 1e-9, 0.3, 1.0, 7.0, 1e300] {
            let got = ln_1p::<ScalarLevel>(r);
            let want = r.ln_1p();
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
                "{r}: {got} {want}"
            );
        }
        assert_eq!(ln_1p::<ScalarLevel>(f64::INFINITY), f64::INFINITY);
        assert!(ln_1p::<ScalarLevel>(f64::NAN).is_nan());
    }

    #[test]
    fn scaled_does_not_overflow_at_the_limit() {
        let z = scaled::<f32, ScalarLevel>(-1e38, 3e38, 0.5, false);
        assert_eq!(z, -2e38);
        // Away from the limit the halves give the same number as the plain form.
        for (x, m, inv_t) in [(1.5f32, 3.25, 0.3), (-7.0, 2.0, 0.7), (0.1, 0.1, 0.9)] {
            assert_eq!(
                scaled::<f32, ScalarLevel>(x, m, inv_t, false),
                (x - m) * inv_t
            );
        }
        assert_eq!(scaled::<f64, ScalarLevel>(1.0, 3.0, 2.0, false), -4.0);
    }
}
