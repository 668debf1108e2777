//! Rows too short to fill a vector register, taken `LANES` at a time with one row per lane.
//!
//! With ten classes a row-by-row kernel spends its time on per-row work (horizontal maxima and
//! sums, three scalar logs, padding) rather than on the classes. Transposed into columns, a
//! block of rows runs the same per-element math as `distill.rs` (`stats_step`), and the per-row
//! work (maxima, sums, logs, gradient weights) happens once per block, vectorized across rows.
//! Lanes never interact, so a row's result does not depend on which rows share its block.

use ndarray::{ArrayView2, Axis};

use super::chunk::{Chunk, LANES};
use super::distill::{keeps_e1, powi, stats_step, GradWeights};
use super::float::{ln_f64, Float, Level};

/// Rows with at most this many classes take the blocked path.
pub const SMALL_CLASSES: usize = 24;

/// One block of rows in column form: `s[j][k]` is class `j` of the block's row `k`.
pub struct SmallBlock<'a, T, const KL: bool, const CE: bool, const POW: u32> {
    pub s: &'a [Chunk<T>],
    pub t: &'a [Chunk<T>],
    /// Each row's student logit at its label (any value for rows without one).
    pub s_y: Chunk<T>,
    pub inv_t: f64,
    pub kl_weight: f64,
    pub ce_weight: f64,
    pub grad_weights: GradWeights,
    /// Three column sets of scratch (`3 * s.len()`), used with `grad`.
    pub keep: &'a mut [Chunk<T>],
    /// The gradient in column form, without the one-hot term.
    pub grad: Option<&'a mut [Chunk<T>]>,
}

#[inline(always)]
fn lane_max<T: Float>(m: &mut Chunk<T>, c: &Chunk<T>) {
    for k in 0..LANES {
        m[k] = if c[k] > m[k] { c[k] } else { m[k] };
    }
}

#[inline(always)]
fn add_f64<T: Float>(sum: &mut [f64; LANES], part: &Chunk<T>) {
    for k in 0..LANES {
        sum[k] += part[k].to_f64();
    }
}

impl<T: Float, const KL: bool, const CE: bool, const POW: u32> super::simd::Kernel
    for SmallBlock<'_, T, KL, CE, POW>
{
    /// Each row's loss.
    type Output = [f64; LANES];

    #[inline(always)]
    fn run<L: Level>(self) -> [f64; LANES] {
        let c = self.s.len();
        let t = if KL { self.t } else { self.s };
        let mut max_s = [T::NEG_INFINITY; LANES];
        let mut max_t = [T::NEG_INFINITY; LANES];
        for (cs, ct) in self.s.iter().zip(t) {
            lane_max(&mut max_s, cs);
            if KL {
                lane_max(&mut max_t, ct);
            }
        }
        let inv_t = T::from_f64_saturating(self.inv_t);
        let keeping = self.grad.is_some();
        let mut sum_s = [0.0f64; LANES];
        let mut sum_t = [0.0f64; LANES];
        let mut cross = [0.0f64; LANES];
        let mut sum_1 = [0.0f64; LANES];
        for (j, (cs, ct)) in self.s.iter().zip(t).enumerate() {
            let (parts, kept) = stats_step::<T, L, KL, CE, POW>(cs, ct, &max_s, &max_t, inv_t);
            // One sum at a time: a loop across the sums is vectorized with gathers.
            add_f64(&mut sum_s, &parts[0]);
            if KL {
                add_f64(&mut sum_t, &parts[1]);
                add_f64(&mut cross, &parts[2]);
            }
            if CE {
                add_f64(&mut sum_1, &parts[3]);
            }
            if keeping {
                self.keep[j] = kept[0];
                self.keep[c + j] = kept[1];
                self.keep[2 * c + j] = kept[2];
            }
        }
        let mut loss = [0.0f64; LANES];
        for k in 0..LANES {
            if KL {
                let kl = cross[k] / sum_t[k] + ln_f64::<L>(sum_s[k]) - ln_f64::<L>(sum_t[k]);
                loss[k] += self.kl_weight * kl;
            }
            if CE {
                let z_y = self.s_y[k].to_f64() - max_s[k].to_f64();
                loss[k] += self.ce_weight * (ln_f64::<L>(sum_1[k]) - z_y);
            }
        }
        if let Some(grad) = self.grad {
            let w = self.grad_weights;
            let mut cs = [T::ZERO; LANES];
            let mut ct = [T::ZERO; LANES];
            let mut c1 = [T::ZERO; LANES];
            for k in 0..LANES {
                cs[k] = T::from_f64(w.kl_weight / sum_s[k]);
                ct[k] = T::from_f64(w.kl_weight / sum_t[k]);
                c1[k] = T::from_f64(w.ce_weight / sum_1[k]);
            }
            for (j, g) in grad.iter_mut().enumerate().take(c) {
                let (es, et) = (&self.keep[j], &self.keep[c + j]);
                let e1 = if keeps_e1::<KL, CE, POW>() {
                    &self.keep[2 * c + j]
                } else {
                    es
                };
                for k in 0..LANES {
                    let mut v = T::ZERO;
                    if KL {
                        v = T::madd::<L>(cs[k], es[k], -(ct[k] * et[k]));
                    }
                    if CE {
                        let e = if keeps_e1::<KL, CE, POW>() {
                            e1[k]
                        } else {
                            powi::<T, POW>(e1[k])
                        };
                        v = T::madd::<L>(c1[k], e, v);
                    }
                    g[k] = v;
                }
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

/// Softmax (or log-softmax, with `LOG`) of a block of rows in column form, in place.
pub struct SoftmaxBlock<'a, T, const LOG: bool> {
    pub cols: &'a mut [Chunk<T>],
    pub inv_t: f64,
}

impl<T: Float, const LOG: bool> super::simd::Kernel for SoftmaxBlock<'_, T, LOG> {
    type Output = ();

    #[inline(always)]
    fn run<L: Level>(self) {
        let cols = self.cols;
        let mut max = [T::NEG_INFINITY; LANES];
        for c in cols.iter() {
            lane_max(&mut max, c);
        }
        let inv_t = T::from_f64_saturating(self.inv_t);
        let mut sum = [0.0f64; LANES];
        for col in cols.iter_mut() {
            let mut e = [T::ZERO; LANES];
            for k in 0..LANES {
                let z = (col[k] - max[k]) * inv_t;
                e[k] = z.fast_exp::<L>();
                col[k] = if LOG { z } else { e[k] };
            }
            add_f64(&mut sum, &e);
        }
        let mut adjust = [T::ZERO; LANES];
        for k in 0..LANES {
            adjust[k] = T::from_f64(if LOG {
                ln_f64::<L>(sum[k])
            } else {
                1.0 / sum[k]
            });
        }
        for col in cols.iter_mut() {
            for k in 0..LANES {
                // (x - max)/T - ln(sum) for the log; e/sum otherwise.
                col[k] = if LOG {
                    col[k] - adjust[k]
                } else {
                    col[k] * adjust[k]
                };
            }
        }
    }
}
