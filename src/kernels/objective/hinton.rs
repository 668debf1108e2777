//! Hinton's distillation objective: `kl_weight·KL + ce_weight·CE(s, y)`, and its gradient, with
//! the terms switched on at compile time (KL alone is `kl_divergence`, CE alone
//! `cross_entropy`). KL is forward, `KL(p ‖ q)`, or reverse, `KL(q ‖ p)`, for
//! `p = softmax(t/T)` and `q = softmax(s/T)`.
//!
//! With `zs = (s − m_s)/T`, `zt = (t − m_t)/T`, `z1 = s − m_s` and the row sums
//! `Ss = Σ e^zs`, `St = Σ e^zt`, `S1 = Σ e^z1`, and, from the distribution `a` (`p` forward,
//! `q` reverse) to `b`, `A = Σ e^za (za − zb)`: `KL = A/Sa + ln(Sb/Sa)`, `CE = ln S1 − z1[y]`.
//! The gradient is `gc·(e^z1/S1 − onehot(y))` plus, for the gradient weight `gk`,
//! `gk·(q − p)` forward and `gk·q·(zs − zt − A/Ss)` reverse (the row's logs cancel).
//! A class at `-inf` in `a` is left out of `A` (a class masked in both rows would otherwise give
//! `0·(−inf − −inf) = NaN`); a class of `a` that is not, against `b` at `-inf`, makes `A` `+inf`
//! even where its exp underflows. When T is a small integer, `e^z1 = (e^zs)^T` replaces an exp
//! by multiplies.

use super::{add_split, ln_f64, ln_sum, scaled, Objective, Sums, KEPT, SUMS};
use crate::kernels::chunk::{Chunk, LANES};
use crate::kernels::float::{Float, Level};
use crate::kernels::reduce::Terms;

// Where each sum lives. `S1 = ONES_1 + REST_1` (see `add_split`): CE is `ln S1 − z1[y]`, which
// for a confident row is `ln(1 + small)`, so the 1 must stay out of the float lanes. KL's sums
// are kept whole: ln(Ss/St) has the absolute accuracy of the inputs' scale either way (README).
const SUM_S: usize = 0;
const SUM_T: usize = 1;
const CROSS: usize = 2;
const REST_1: usize = 3;
const ONES_1: usize = 4;

/// The KL term's direction (`Hinton`'s `KL`): none, forward `KL(p ‖ q)` or reverse `KL(q ‖ p)`.
pub const NO_KL: u8 = 0;
pub const FORWARD: u8 = 1;
pub const REVERSE: u8 = 2;

/// The objective with KL off, forward or reverse, CE on or off, and `POW` the integer
/// temperature used to get `e^z1` from `e^zs` (0: computed; with KL alone, T = 1, 2 or 4 is
/// still passed on, for the scaling of the logits).
#[derive(Clone, Copy, Debug)]
pub struct Hinton<T, const KL: u8, const CE: bool, const POW: u32> {
    inv_t: T,
    inv_t64: f64,
    /// The gradient's weights of `(e^zs/Ss − e^zt/St)` and `(e^z1/S1 − onehot(y))`, with the
    /// reduction's scale.
    grad_kl: f64,
    grad_ce: f64,
    /// The weight taken off the gradient at the label (`grad_ce` unless `weighed`).
    grad_label: f64,
}

/// The loss and gradient weights of a Hinton objective, decided per call.
#[derive(Clone, Copy, Debug)]
pub struct Weights {
    pub temperature: f64,
    pub kl_weight: f64,
    pub ce_weight: f64,
    /// Multiply the two terms' gradients (`1/count` and `1/Σ w[y]` for "mean").
    pub scales: [f64; 2],
}

impl<T: Float, const KL: u8, const CE: bool, const POW: u32> Hinton<T, KL, CE, POW> {
    pub fn new(w: Weights) -> Self {
        // Saturated as `inv_t` is, so that a shift that did not move (0) scales by 0, not NaN.
        let inv_t64 = f64::from_f64_saturating(1.0 / w.temperature);
        Hinton {
            inv_t: T::from_f64_saturating(inv_t64),
            inv_t64,
            // d/ds of w·KL(p_t ‖ softmax(s/T)) is (w/T)·(softmax(s/T) − p_t).
            grad_kl: w.kl_weight / w.temperature * w.scales[0],
            grad_ce: w.ce_weight * w.scales[1],
            grad_label: w.ce_weight * w.scales[1],
        }
    }

    const HAS_KL: bool = KL != NO_KL;
    /// Whether `e^z1` is computed and kept, rather than rebuilt from `e^zs` as a power.
    const OWN_E1: bool = CE && !(Self::HAS_KL && POW != 0);
    /// Where the KL's sum `A` runs from: the teacher's sum forward, the student's reverse.
    const SUM_A: usize = if KL == REVERSE { SUM_S } else { SUM_T };
    const SUM_B: usize = if KL == REVERSE { SUM_T } else { SUM_S };
    #[inline(always)]
    fn sum_1(sums: &Sums) -> f64 {
        sums[ONES_1] + sums[REST_1]
    }
}

#[inline(always)]
fn powi<T: Float, const POW: u32>(e: T) -> T {
    match POW {
        1 => e,
        2 => e * e,
        3 => e * e * e,
        4 => {
            let e2 = e * e;
            e2 * e2
        }
        _ => unreachable!(),
    }
}

impl<T: Float, const KL: u8, const CE: bool, const POW: u32> Objective<T>
    for Hinton<T, KL, CE, POW>
{
    const TEACHER: bool = Self::HAS_KL;
    // Kept: e^zs, then e^zt forward or zs − zt reverse, then e^z1.
    const KEEP: [bool; KEPT] = [Self::HAS_KL, Self::HAS_KL, Self::OWN_E1];
    const USED: [bool; SUMS] = {
        let k = Self::HAS_KL;
        [k, k, k, CE, CE, false, false, false]
    };

    #[inline(always)]
    fn stats<L: Level>(
        &self,
        s: &Chunk<T>,
        t: &Chunk<T>,
        m_s: &Chunk<T>,
        m_t: &Chunk<T>,
        acc: &mut [Chunk<T>; SUMS],
    ) -> [Chunk<T>; KEPT] {
        let mut es = [T::ZERO; LANES];
        let mut second = [T::ZERO; LANES];
        let mut e1 = [T::ZERO; LANES];
        let fold = L::FMA && matches!(POW, 1 | 2 | 4);
        let inv_t = self.inv_t;
        for k in 0..LANES {
            if Self::HAS_KL {
                let zs = scaled::<T, L>(s[k], m_s[k], inv_t, fold);
                let zt = scaled::<T, L>(t[k], m_t[k], inv_t, fold);
                es[k] = zs.fast_exp::<L>();
                let et = zt.fast_exp::<L>();
                acc[SUM_S][k] = acc[SUM_S][k] + es[k];
                acc[SUM_T][k] = acc[SUM_T][k] + et;
                let (za, zb, ea) = if KL == REVERSE {
                    (zs, zt, es[k])
                } else {
                    (zt, zs, et)
                };
                // A class of `a` that is not -inf against `b` at -inf costs +inf, even where
                // `a`'s exp underflowed to 0; a class of `a` at -inf costs nothing. NaN is not
                // -inf, so a NaN still reaches the sum.
                let d = if za != T::NEG_INFINITY {
                    za - zb
                } else {
                    T::ZERO
                };
                let w = if d == T::INFINITY { T::ONE } else { ea };
                acc[CROSS][k] = T::madd::<L>(w, d, acc[CROSS][k]);
                second[k] = if KL == REVERSE { d } else { et };
            }
            if CE {
                if Self::OWN_E1 {
                    e1[k] = (s[k] - m_s[k]).fast_exp::<L>();
                    add_split(acc, [REST_1, ONES_1], k, e1[k]);
                } else {
                    // es^POW is 1 exactly where es is.
                    let one = es[k] == T::ONE;
                    let e = if one { T::ZERO } else { es[k] };
                    let r = acc[REST_1][k];
                    acc[REST_1][k] = match POW {
                        2 => T::madd::<L>(e, e, r),
                        3 => T::madd::<L>(e * e, e, r),
                        4 => {
                            let e2 = e * e;
                            T::madd::<L>(e2, e2, r)
                        }
                        _ => r + e,
                    };
                    acc[ONES_1][k] = acc[ONES_1][k] + if one { T::ONE } else { T::ZERO };
                }
            }
        }
        [es, second, e1]
    }

    #[inline(always)]
    fn rescale(&self, sums: Sums, up_s: f64, up_t: f64) -> Sums {
        // zs and zt drop by ds and dt: e^zs scales by e^-ds, e^zt by e^-dt, e^z1 by e^-up_s,
        // and Σ e^za (za − zb) becomes e^-da (A + (db − da) Sa). S1's 1s are no longer 1s once
        // its shift rose: the count joins the rest.
        let (ds, dt) = (up_s * self.inv_t64, up_t * self.inv_t64);
        let mut r = sums;
        let ft = if up_t != 0.0 { (-dt).exp() } else { 1.0 };
        let fs = if up_s != 0.0 { (-ds).exp() } else { 1.0 };
        let (fa, da, db) = if KL == REVERSE {
            (fs, ds, dt)
        } else {
            (ft, dt, ds)
        };
        r[SUM_T] = sums[SUM_T] * ft;
        r[SUM_S] = sums[SUM_S] * fs;
        r[CROSS] = fa * (sums[CROSS] + (db - da) * sums[Self::SUM_A]);
        if up_s != 0.0 {
            r[REST_1] = Self::sum_1(&sums) * (-up_s).exp();
            r[ONES_1] = 0.0;
        }
        r
    }

    #[inline(always)]
    fn loss<L: Level>(&self, sums: &Sums, z_y: f64) -> Terms {
        let mut terms = [0.0; 2];
        if Self::HAS_KL {
            let (sa, sb) = (sums[Self::SUM_A], sums[Self::SUM_B]);
            terms[0] = sums[CROSS] / sa + ln_f64::<L>(sb / sa);
        }
        if CE {
            terms[1] = ln_sum::<L>(sums[ONES_1], sums[REST_1]) - z_y;
        }
        terms
    }

    #[inline(always)]
    fn coeffs<L: Level>(&self, sums: &Sums, down_s: f64, down_t: f64) -> [f64; KEPT] {
        // Most tiles (every one of a short row) are at the row's shifts: no exp to call.
        let scale = |d: f64| if d == 0.0 { 1.0 } else { d.exp() };
        let (ds, dt) = (down_s * self.inv_t64, down_t * self.inv_t64);
        let q = self.grad_kl / sums[SUM_S] * scale(ds);
        let ce = self.grad_ce / Self::sum_1(sums) * scale(down_s);
        if KL == REVERSE {
            // gk·q·(zs − zt − A/Ss) at the row's shifts; the tile's zs − zt is lower by
            // ds − dt.
            [q, q * (ds - dt - sums[CROSS] / sums[SUM_S]), ce]
        } else {
            [q, self.grad_kl / sums[SUM_T] * scale(dt), ce]
        }
    }

    #[inline(always)]
    fn grad_step<L: Level>(&self, c: &[Chunk<T>; KEPT], kept: [&Chunk<T>; KEPT]) -> Chunk<T> {
        let [es, second, e1] = kept;
        let mut g = [T::ZERO; LANES];
        for k in 0..LANES {
            let mut v = T::ZERO;
            if KL == FORWARD {
                v = T::madd::<L>(c[0][k], es[k], -(c[1][k] * second[k]));
            } else if KL == REVERSE {
                // A class with q = 0 gets 0, also when the row's KL is +inf.
                let r = es[k] * T::madd::<L>(c[0][k], second[k], c[1][k]);
                v = if es[k] == T::ZERO { T::ZERO } else { r };
            }
            if CE {
                let e = if Self::OWN_E1 {
                    e1[k]
                } else {
                    powi::<T, POW>(es[k])
                };
                v = T::madd::<L>(c[2][k], e, v);
            }
            g[k] = v;
        }
        g
    }

    #[inline(always)]
    fn label_weight(&self) -> Option<f64> {
        CE.then_some(self.grad_label)
    }

    #[inline(always)]
    fn weighed(self, coef: f64, label: f64) -> Self {
        Hinton {
            grad_ce: self.grad_ce * coef,
            grad_label: self.grad_label * label,
            ..self
        }
    }
}

/// Expands `$go!(KL, CE, POW)` for the runtime choice of terms (`$kl` one of `NO_KL`,
/// `FORWARD`, `REVERSE`), so that each combination is its own compiled objective; `$none` is
/// the value when neither term is on.
#[macro_export]
#[doc(hidden)]
macro_rules! with_hinton_terms {
    ($kl:expr, $ce:expr, $pow:expr, $go:ident, $none:expr) => {
        match ($kl, $ce, $pow) {
            (1, true, 1) => $go!(1, true, 1),
            (1, true, 2) => $go!(1, true, 2),
            (1, true, 3) => $go!(1, true, 3),
            (1, true, 4) => $go!(1, true, 4),
            (1, true, _) => $go!(1, true, 0),
            (1, false, 1) => $go!(1, false, 1),
            (1, false, 2) => $go!(1, false, 2),
            (1, false, 4) => $go!(1, false, 4),
            (1, false, _) => $go!(1, false, 0),
            (2, true, 1) => $go!(2, true, 1),
            (2, true, 2) => $go!(2, true, 2),
            (2, true, 3) => $go!(2, true, 3),
            (2, true, 4) => $go!(2, true, 4),
            (2, true, _) => $go!(2, true, 0),
            (2, false, 1) => $go!(2, false, 1),
            (2, false, 2) => $go!(2, false, 2),
            (2, false, 4) => $go!(2, false, 4),
            (2, false, _) => $go!(2, false, 0),
            (_, true, _) => $go!(0, true, 0),
            (_, false, _) => $none,
        }
    };
}
