//! Softmax and log-softmax along rows, at a temperature.

use ndarray::ArrayView2;

use super::check::{check_logits, check_out_len, check_temperature};
use super::chunk::{Chunk, LANES};
use super::float::{Float, Level};
use super::row::{add_into, fold2_keep, map2, max2};
use super::scratch::{row_of, Scratch};
use super::simd::{dispatch, Kernel};
use super::small::{transpose_row, SoftmaxBlock, SMALL_CLASSES};
use crate::error::KdError;
use crate::parallel::{for_each_block, for_each_row};

struct SoftmaxRow<'a, T, const LOG: bool> {
    x: &'a [T],
    inv_t: f64,
    out: &'a mut [T],
    /// The row processed next, to prefetch.
    next: Option<&'a [T]>,
}

/// `e^((x - m)·inv_t)` of one chunk.
#[inline(always)]
fn scaled_exps<T: Float, L: Level>(c: &Chunk<T>, m: &Chunk<T>, inv_t: T) -> Chunk<T> {
    let mut e = [T::ZERO; LANES];
    for k in 0..LANES {
        e[k] = ((c[k] - m[k]) * inv_t).fast_exp::<L>();
    }
    e
}

impl<T: Float, const LOG: bool> Kernel for SoftmaxRow<'_, T, LOG> {
    type Output = ();

    #[inline(always)]
    fn run<L: Level>(self) {
        let (x, out) = (self.x, self.out);
        let (m, _) = max2(x, x);
        let lane_m = [m; LANES];
        let inv_t = T::from_f64_saturating(self.inv_t);
        let next = self.next.map(|n| (n, n));
        if LOG {
            let [sum] = fold2_keep(
                x,
                x,
                [],
                [],
                next,
                #[inline(always)]
                |c, _, [sum]| {
                    add_into(sum, &scaled_exps::<T, L>(c, &lane_m, inv_t));
                    []
                },
            );
            // (x - max)/T - ln(sum): the large terms cancel before the small one is added.
            let log_sum = T::from_f64(sum.ln());
            map2::<T, L>(
                x,
                x,
                out,
                #[inline(always)]
                |c, _| {
                    let mut r = [T::ZERO; LANES];
                    for k in 0..LANES {
                        r[k] = (c[k] - m) * inv_t - log_sum;
                    }
                    r
                },
            );
        } else {
            // The exps go straight into `out`, then are scaled: one exp per element.
            let [sum] = fold2_keep(
                x,
                x,
                [&mut *out],
                [true],
                next,
                #[inline(always)]
                |c, _, [sum]| {
                    let e = scaled_exps::<T, L>(c, &lane_m, inv_t);
                    add_into(sum, &e);
                    [e]
                },
            );
            let inv_sum = T::from_f64(1.0 / sum);
            for v in out.iter_mut() {
                *v = *v * inv_sum;
            }
        }
    }
}

/// Writes `softmax(x / temperature)` (or its log, with `log`) of every row of `x` into `out`,
/// a C-contiguous buffer of `x`'s shape.
pub fn softmax_into<T: Float>(
    x: ArrayView2<T>,
    temperature: f64,
    log: bool,
    out: &mut [T],
) -> Result<(), KdError> {
    check_temperature(temperature)?;
    let (rows, c) = check_logits(&x, "x")?;
    check_out_len(out.len(), rows, c)?;
    let inv_t = 1.0 / temperature;
    let mut unused = vec![0.0; rows];
    if c <= SMALL_CLASSES {
        return for_each_block(
            LANES,
            c,
            &mut unused,
            Some(out),
            |scratch: &mut Scratch<T>, r0, ps, o| {
                let Some(o) = o else { return };
                let n = ps.len();
                let cols = &mut scratch.cols;
                if cols.len() < c {
                    cols.resize(c, [T::ZERO; LANES]);
                }
                let cols = &mut cols[..c];
                for k in 0..LANES {
                    if k < n {
                        transpose_row(x, r0 + k, cols, k);
                    } else {
                        cols.iter_mut().for_each(|col| col[k] = T::ZERO);
                    }
                }
                if log {
                    dispatch(SoftmaxBlock::<T, true> { cols, inv_t });
                } else {
                    dispatch(SoftmaxBlock::<T, false> { cols, inv_t });
                }
                for (k, row) in o.chunks_mut(c).enumerate() {
                    for (v, col) in row.iter_mut().zip(cols.iter()) {
                        *v = col[k];
                    }
                }
            },
        );
    }
    for_each_row(
        c,
        &mut unused,
        Some(out),
        |scratch: &mut Scratch<T>, i, _, o| {
            let Some(out) = o else { return };
            let row = row_of(x, i, &mut scratch.a);
            let next = (i + 1 < rows).then(|| x.row(i + 1).to_slice()).flatten();
            if log {
                dispatch(SoftmaxRow::<T, true> {
                    x: row,
                    inv_t,
                    out,
                    next,
                });
            } else {
                dispatch(SoftmaxRow::<T, false> {
                    x: row,
                    inv_t,
                    out,
                    next,
                });
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::{self, Simd};
    use ndarray::Array2;

    #[test]
    fn softmax_and_log_softmax_match_the_formulas_at_every_level() {
        let best = simd::active();
        for level in Simd::available() {
            simd::set_active(level).unwrap();
            for c in [1usize, 2, 10, 24, 25, 100, 1000] {
                let x = Array2::from_shape_fn((21, c), |(i, j)| {
                    if j == 0 && c > 1 {
                        f64::NEG_INFINITY
                    } else {
                        ((i * 31 + j * 17) % 23) as f64 * 0.7 - 8.0
                    }
                });
                for temperature in [1.0, 2.0, 0.3] {
                    let mut p = vec![0.0; x.len()];
                    let mut lp = vec![0.0; x.len()];
                    softmax_into(x.view(), temperature, false, &mut p).unwrap();
                    softmax_into(x.view(), temperature, true, &mut lp).unwrap();
                    for (i, row) in x.rows().into_iter().enumerate() {
                        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let lse = row
                            .iter()
                            .map(|v| ((v - m) / temperature).exp())
                            .sum::<f64>()
                            .ln();
                        for (j, v) in row.iter().enumerate() {
                            let want = (v - m) / temperature - lse;
                            let (got_p, got_lp) = (p[i * c + j], lp[i * c + j]);
                            let where_ =
                                format!("c={c} T={temperature} [{i},{j}] {}", level.name());
                            assert!((got_p - want.exp()).abs() <= 1e-14, "softmax {where_}");
                            if want.is_finite() {
                                assert!(
                                    (got_lp - want).abs() <= 1e-12 * want.abs().max(1.0),
                                    "log {where_}"
                                );
                            } else {
                                assert_eq!(got_lp, want, "log {where_}");
                            }
                        }
                    }
                }
            }
        }
        simd::set_active(best).unwrap();
    }
}
