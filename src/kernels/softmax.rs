//! Softmax and log-softmax along rows, at a temperature.

use ndarray::ArrayView2;

use super::float::{Float, Level};
use super::row::{fold2, map2, max2, LANES};
use super::simd::{dispatch, Kernel};
use super::{check_logits, check_temperature};
use crate::error::KdError;
use crate::parallel::{for_each_row, row_of};

struct SoftmaxRow<'a, T, const LOG: bool> {
    x: &'a [T],
    inv_t: f64,
    out: &'a mut [T],
}

impl<T: Float, const LOG: bool> Kernel for SoftmaxRow<'_, T, LOG> {
    type Output = ();

    #[inline(always)]
    fn run<L: Level>(self) {
        let (x, out) = (self.x, self.out);
        let (m, _) = max2(x, x);
        let inv_t = T::from_f64_saturating(self.inv_t);
        let [sum] = fold2(
            x,
            x,
            #[inline(always)]
            |c, _| {
                let mut e = [T::ZERO; LANES];
                for k in 0..LANES {
                    e[k] = ((c[k] - m) * inv_t).fast_exp::<L>();
                }
                [e]
            },
        );
        if LOG {
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
            let inv_sum = T::from_f64(1.0 / sum);
            map2(
                x,
                x,
                out,
                #[inline(always)]
                |c, _| {
                    let mut r = [T::ZERO; LANES];
                    for k in 0..LANES {
                        r[k] = ((c[k] - m) * inv_t).fast_exp::<L>() * inv_sum;
                    }
                    r
                },
            );
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
        let x = row_of(x, i, &mut scratch.a);
        if log {
            dispatch(SoftmaxRow::<T, true> { x, inv_t, out });
        } else {
            dispatch(SoftmaxRow::<T, false> { x, inv_t, out });
        }
    })
}
