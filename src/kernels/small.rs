//! The short-row driver: rows too short to fill a vector register, taken `LANES` at a time with
//! one row per lane.
//!
//! With ten classes a row-by-row kernel spends its time on per-row work (horizontal maxima and
//! sums, scalar logs, padding) rather than on the classes. Transposed into columns, a block of
//! rows runs the objective's per-element steps as the long-row driver does, and the per-row
//! work (maxima, sums, logs, coefficients) happens once per block, vectorized across rows. Lanes
//! never interact, so a row's result does not depend on which rows share its block.

use ndarray::{ArrayView2, Axis};

use super::chunk::{Chunk, LANES};
use super::float::{Float, Level};
use super::objective::{Objective, KEPT, SUMS};
use super::reduce::Terms;
use super::row::max_into;
use super::simd::Kernel;

/// Rows with at most this many classes take the blocked path.
pub const SMALL_CLASSES: usize = 24;

/// Chunks of scratch a block of `c` classes needs: the student and teacher columns, the kept
/// values, and the gradient's columns.
pub const fn scratch_cols(c: usize) -> usize {
    (3 + KEPT) * c
}

/// One block of rows in column form: `s[j][k]` is class `j` of the block's row `k`.
pub(crate) struct SmallBlock<'a, T, O> {
    pub obj: O,
    pub s: &'a [Chunk<T>],
    pub t: &'a [Chunk<T>],
    /// Each row's student logit at its label (NaN for rows without one).
    pub s_y: Chunk<T>,
    /// Each row's cross-entropy factors (`Objective::weighed`), if the rows have them.
    pub ce_factors: Option<[(f64, f64); LANES]>,
    /// `KEPT` column sets of scratch (`KEPT * s.len()`), used with `grad`.
    pub keep: &'a mut [Chunk<T>],
    /// The gradient in column form, without the label's term.
    pub grad: Option<&'a mut [Chunk<T>]>,
}

#[inline(always)]
fn add_f64<T: Float>(sum: &mut [f64; LANES], part: &Chunk<T>) {
    for k in 0..LANES {
        sum[k] += part[k].to_f64();
    }
}

impl<T: Float, O: Objective<T>> Kernel for SmallBlock<'_, T, O> {
    /// Each row's terms.
    type Output = [Terms; LANES];

    #[inline(always)]
    fn run<L: Level>(self) -> [Terms; LANES] {
        let c = self.s.len();
        let obj = &self.obj;
        let t = if O::TEACHER { self.t } else { self.s };
        let mut max_s = [T::NEG_INFINITY; LANES];
        let mut max_t = [T::NEG_INFINITY; LANES];
        for (cs, ct) in self.s.iter().zip(t) {
            max_into(&mut max_s, cs);
            if O::TEACHER {
                max_into(&mut max_t, ct);
            }
        }
        let keeping = self.grad.is_some();
        let mut sums = [[0.0f64; LANES]; SUMS];
        for (j, (cs, ct)) in self.s.iter().zip(t).enumerate() {
            let mut parts = [[T::ZERO; LANES]; SUMS];
            let kept = obj.stats::<L>(cs, ct, &max_s, &max_t, &mut parts);
            // One sum at a time: a loop across the sums is vectorized with gathers.
            for (i, (sum, part)) in sums.iter_mut().zip(&parts).enumerate() {
                if O::USED[i] {
                    add_f64(sum, part);
                }
            }
            if keeping {
                for (m, kept) in kept.iter().enumerate() {
                    if O::KEEP[m] {
                        self.keep[m * c + j] = *kept;
                    }
                }
            }
        }
        // Each lane's sums gathered inside the loop over lanes, so that the loop (the objective's
        // logs and divisions) is vectorized across rows. Plain loops, not `array::map` or
        // `from_fn`: a closure that is not inlined is compiled outside the level's
        // `#[target_feature]` entry, without its instructions.
        let mut loss = [[0.0f64; 2]; LANES];
        for k in 0..LANES {
            let mut lane = [0.0f64; SUMS];
            for (v, sum) in lane.iter_mut().zip(&sums) {
                *v = sum[k];
            }
            loss[k] = obj.loss::<L>(&lane, self.s_y[k].to_f64() - max_s[k].to_f64());
        }
        if let Some(grad) = self.grad {
            let mut coeffs = [[T::ZERO; LANES]; KEPT];
            for k in 0..LANES {
                let mut lane = [0.0f64; SUMS];
                for (v, sum) in lane.iter_mut().zip(&sums) {
                    *v = sum[k];
                }
                let c = match self.ce_factors {
                    Some(f) => obj.weighed(f[k].0, f[k].1).coeffs::<L>(&lane, 0.0, 0.0),
                    None => obj.coeffs::<L>(&lane, 0.0, 0.0),
                };
                for (m, v) in c.iter().enumerate() {
                    coeffs[m][k] = T::from_f64(*v);
                }
            }
            let keep = &*self.keep;
            let col = |m: usize, j: usize| &keep[if O::KEEP[m] { m * c + j } else { j }];
            for (j, g) in grad.iter_mut().enumerate().take(c) {
                *g = obj.grad_step::<L>(&coeffs, [col(0, j), col(1, j), col(2, j)]);
            }
        }
        loss
    }
}

/// Copies row `r` of `x` into lane `k` of `cols` (one chunk per class).
#[inline]
pub(crate) fn transpose_row<T: Float>(x: ArrayView2<T>, r: usize, cols: &mut [Chunk<T>], k: usize) {
    let row = x.index_axis_move(Axis(0), r);
    match row.to_slice() {
        Some(v) => {
            for (col, &v) in cols.iter_mut().zip(v) {
                col[k] = v;
            }
        }
        None => {
            for (col, &v) in cols.iter_mut().zip(row.iter()) {
                col[k] = v;
            }
        }
    }
}
