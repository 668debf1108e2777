//! Softmax and log-softmax at a temperature, as an objective whose "gradient" is the output:
//! `e^z / S` or `z − ln S`, with `z = (x − m)/T` and `S = Σ e^z`. No loss.

use super::{add_split, ln_sum, scaled, Objective, Sums, KEPT, SUMS};
use crate::kernels::chunk::{Chunk, LANES};
use crate::kernels::float::{Float, Level};
use crate::kernels::reduce::Terms;

const REST: usize = 0;
const ONES: usize = 1;

/// `softmax(x/T)`, or `log_softmax(x/T)` with `LOG`.
#[derive(Clone, Copy, Debug)]
pub struct Softmax<T, const LOG: bool> {
    inv_t: T,
    inv_t64: f64,
}

impl<T: Float, const LOG: bool> Softmax<T, LOG> {
    pub fn new(temperature: f64) -> Self {
        // Saturated as `inv_t` is, so that a shift that did not move (0) scales by 0, not NaN.
        let inv_t64 = f64::from_f64_saturating(1.0 / temperature);
        Softmax {
            inv_t: T::from_f64_saturating(inv_t64),
            inv_t64,
        }
    }
}

impl<T: Float, const LOG: bool> Objective<T> for Softmax<T, LOG> {
    const TEACHER: bool = false;
    const KEEP: [bool; KEPT] = [true, false, false];
    const USED: [bool; SUMS] = [true, true, false, false, false, false, false, false];

    #[inline(always)]
    fn stats<L: Level>(
        &self,
        s: &Chunk<T>,
        _t: &Chunk<T>,
        m_s: &Chunk<T>,
        _m_t: &Chunk<T>,
        acc: &mut [Chunk<T>; SUMS],
    ) -> [Chunk<T>; KEPT] {
        let mut kept = [T::ZERO; LANES];
        for k in 0..LANES {
            let z = scaled::<T, L>(s[k], m_s[k], self.inv_t, false);
            let e = z.fast_exp::<L>();
            // Only the log needs the 1 apart (`ln(1 + small)`); a probability `e/S` keeps its
            // relative accuracy with the sum whole.
            if LOG {
                add_split(acc, [REST, ONES], k, e);
            } else {
                acc[REST][k] = acc[REST][k] + e;
            }
            kept[k] = if LOG { z } else { e };
        }
        [kept, kept, kept]
    }

    #[inline(always)]
    fn rescale(&self, sums: Sums, up_s: f64, _up_t: f64) -> Sums {
        let mut r = sums;
        if up_s != 0.0 {
            r[REST] = (sums[REST] + sums[ONES]) * (-up_s * self.inv_t64).exp();
            r[ONES] = 0.0;
        }
        r
    }

    #[inline(always)]
    fn loss<L: Level>(&self, _sums: &Sums, _z_y: f64) -> Terms {
        [0.0; 2]
    }

    #[inline(always)]
    fn coeffs<L: Level>(&self, sums: &Sums, down_s: f64, _down_t: f64) -> [f64; KEPT] {
        let d = down_s * self.inv_t64;
        let c = if LOG {
            // z was taken against a shift lower by -down_s: z + d − ln S.
            d - ln_sum::<L>(sums[ONES], sums[REST])
        } else {
            let scale = if d == 0.0 { 1.0 } else { d.exp() };
            scale / (sums[ONES] + sums[REST])
        };
        [c, c, c]
    }

    #[inline(always)]
    fn grad_step<L: Level>(&self, c: &[Chunk<T>; KEPT], kept: [&Chunk<T>; KEPT]) -> Chunk<T> {
        let mut out = [T::ZERO; LANES];
        for k in 0..LANES {
            out[k] = if LOG {
                kept[0][k] + c[0][k]
            } else {
                kept[0][k] * c[0][k]
            };
        }
        out
    }

    #[inline(always)]
    fn label_weight(&self) -> Option<f64> {
        None
    }
}
