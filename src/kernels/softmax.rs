//! Softmax and log-softmax along rows, at a temperature.

use ndarray::ArrayView2;

use super::float::{Float, Level};
use super::row::{fold2_keep, map2, max2, Chunk, LANES};
use super::simd::{dispatch, Kernel};
use super::{check_logits, check_temperature};
use crate::error::KdError;
use crate::parallel::{for_each_row, row_of};

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
                |c, _| ([scaled_exps::<T, L>(c, &lane_m, inv_t)], []),
            );
            // (x - max)/T - ln(sum): the large terms cancel before the small one is added.
            let log_sum = T::from_f64(sum.ln());
            map2(
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
                |c, _| {
                    let e = scaled_exps::<T, L>(c, &lane_m, inv_t);
                    ([e], [e])
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
    if out.len() != rows * c {
        return Err(KdError::value(format!(
            "out must hold {} elements, got {}",
            rows * c,
            out.len()
        )));
    }
    let inv_t = 1.0 / temperature;
    let mut unused = vec![0.0; rows];
    for_each_row(c, &mut unused, Some(out), |scratch, i, _, o| {
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
    })
}
