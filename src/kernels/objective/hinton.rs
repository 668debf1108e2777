//! Hinton's distillation objective: `kl_weight·KL(softmax(t/T) ‖ softmax(s/T)) +
//! ce_weight·CE(s, y)`, and its gradient, with the terms switched on at compile time (KL alone
//! is `kl_divergence`, CE alone `cross_entropy`).
//!
//! With `zs = (s − m_s)/T`, `zt = (t − m_t)/T`, `z1 = s − m_s` and the row sums
//! `Ss = Σ e^zs`, `St = Σ e^zt`, `S1 = Σ e^z1`, `A = Σ e^zt (zt − zs)`:
//! `KL = A/St + ln(Ss/St)`, `CE = ln S1 − z1[y]`, and
//! `grad = gk·(e^zs/Ss − e^zt/St) + gc·(e^z1/S1 − onehot(y))` for the gradient weights `gk`, `gc`.
//! A teacher class at `-inf` is left out of `A` (a class masked in both rows would otherwise give
//! `0·(−inf − −inf) = NaN`); a teacher class that is not, against a student class at `-inf`,
//! makes `A` `+inf` even where its exp underflows. When T is a small integer,
//! `e^z1 = (e^zs)^T` replaces an exp by multiplies.

use super::{add_split, ln_f64, ln_sum, scaled, Objective, Sums, KEPT, SUMS};
use crate::kernels::chunk::{Chunk, LANES};
use crate::kernels::float::{Float, Level};

// Where each sum lives. `S1 = ONES_1 + REST_1` (see `add_split`): CE is `ln S1 − z1[y]`, which
// for a confident row is `ln(1 + small)`, so the 1 must stay out of the float lanes. KL's sums
// are kept whole: ln(Ss/St) has the absolute accuracy of the inputs' scale either way (README).
const SUM_S: usize = 0;
const SUM_T: usize = 1;
const CROSS: usize = 2;
const REST_1: usize = 3;
const ONES_1: usize = 4;

/// The objective with KL on or off, CE on or off, and `POW` the integer temperature used to get
/// `e^z1` from `e^zs` (0: computed; with KL alone, T = 1, 2 or 4 is still passed on, for the
/// scaling of the logits).
#[derive(Clone, Copy, Debug)]
pub struct Hinton<T, const KL: bool, const CE: bool, const POW: u32> {
    inv_t: T,
    inv_t64: f64,
    kl_weight: f64,
    ce_weight: f64,
    /// The gradient's weights of `(e^zs/Ss − e^zt/St)` and `(e^z1/S1 − onehot(y))`, with the
    /// reduction's scale.
    grad_kl: f64,
    grad_ce: f64,
}

/// The loss and gradient weights of a Hinton objective, decided per call.
#[derive(Clone, Copy, Debug)]
pub struct Weights {
    pub temperature: f64,
    pub kl_weight: f64,
    pub ce_weight: f64,
    /// Multiplies the gradient (1/count for "mean").
    pub scale: f64,
}

impl<T: Float, const KL: bool, const CE: bool, const POW: u32> Hinton<T, KL, CE, POW> {
    pub fn new(w: Weights) -> Self {
        // Saturated as `inv_t` is, so that a shift that did not move (0) scales by 0, not NaN.
        let inv_t64 = f64::from_f64_saturating(1.0 / w.temperature);
        Hinton {
            inv_t: T::from_f64_saturating(inv_t64),
            inv_t64,
            kl_weight: w.kl_weight,
            ce_weight: w.ce_weight,
            // d/ds of w·KL(p_t ‖ softmax(s/T)) is (w/T)·(softmax(s/T) − p_t).
            grad_kl: w.kl_weight / w.temperature * w.scale,
            grad_ce: w.ce_weight * w.scale,
        }
    }

    /// Whether `e^z1` is computed and kept, rather than rebuilt from `e^zs` as a power.
    const OWN_E1: bool = CE && !(KL && POW != 0);
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

impl<T: Float, const KL: bool, const CE: bool, const POW: u32> Objective<T>
    for Hinton<T, KL, CE, POW>
{
    const TEACHER: bool = KL;
    const KEEP: [bool; KEPT] = [KL, KL, Self::OWN_E1];
    const USED: [bool; SUMS] = [KL, KL, KL, CE, CE, false, false, false];

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
        let mut et = [T::ZERO; LANES];
        let mut e1 = [T::ZERO; LANES];
        let fold = L::FMA && matches!(POW, 1 | 2 | 4);
        let inv_t = self.inv_t;
        for k in 0..LANES {
            if KL {
                let zs = scaled::<T, L>(s[k], m_s[k], inv_t, fold);
                let zt = scaled::<T, L>(t[k], m_t[k], inv_t, fold);
                es[k] = zs.fast_exp::<L>();
                et[k] = zt.fast_exp::<L>();
                acc[SUM_S][k] = acc[SUM_S][k] + es[k];
                acc[SUM_T][k] = acc[SUM_T][k] + et[k];
                // A student class at -inf where the teacher's is not costs +inf, even where the
                // teacher's exp underflowed to 0; a teacher class at -inf costs nothing. NaN
                // is not -inf, so a NaN teacher still reaches the sum.
                let d = if zt != T::NEG_INFINITY {
                    zt - zs
                } else {
                    T::ZERO
                };
                let w = if d == T::INFINITY { T::ONE } else { et[k] };
                acc[CROSS][k] = T::madd::<L>(w, d, acc[CROSS][k]);
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
        [es, et, e1]
    }

    #[inline(always)]
    fn rescale(&self, sums: Sums, up_s: f64, up_t: f64) -> Sums {
        // zs and zt drop by ds and dt: e^zs scales by e^-ds, e^zt by e^-dt, e^z1 by e^-up_s,
        // and Σ e^zt (zt − zs) becomes e^-dt (A + (ds − dt) St). S1's 1s are no longer 1s once
        // its shift rose: the count joins the rest.
        let (ds, dt) = (up_s * self.inv_t64, up_t * self.inv_t64);
        let mut r = sums;
        let ft = if up_t != 0.0 { (-dt).exp() } else { 1.0 };
        r[SUM_T] = sums[SUM_T] * ft;
        r[CROSS] = ft * (sums[CROSS] + (ds - dt) * sums[SUM_T]);
        if up_s != 0.0 {
            r[SUM_S] = sums[SUM_S] * (-ds).exp();
            r[REST_1] = Self::sum_1(&sums) * (-up_s).exp();
            r[ONES_1] = 0.0;
        }
        r
    }

    #[inline(always)]
    fn loss<L: Level>(&self, sums: &Sums, z_y: f64) -> f64 {
        let mut loss = 0.0;
        if KL {
            let (ss, st) = (sums[SUM_S], sums[SUM_T]);
            loss += self.kl_weight * (sums[CROSS] / st + ln_f64::<L>(ss / st));
        }
        if CE {
            let ln_s1 = ln_sum::<L>(sums[ONES_1], sums[REST_1]);
            loss += self.ce_weight * (ln_s1 - z_y);
        }
        loss
    }

    #[inline(always)]
    fn coeffs<L: Level>(&self, sums: &Sums, down_s: f64, down_t: f64) -> [f64; KEPT] {
        // Most tiles (every one of a short row) are at the row's shifts: no exp to call.
        let scale = |d: f64| if d == 0.0 { 1.0 } else { d.exp() };
        [
            self.grad_kl / sums[SUM_S] * scale(down_s * self.inv_t64),
            self.grad_kl / sums[SUM_T] * scale(down_t * self.inv_t64),
            self.grad_ce / Self::sum_1(sums) * scale(down_s),
        ]
    }

    #[inline(always)]
    fn grad_step<L: Level>(&self, c: &[Chunk<T>; KEPT], kept: [&Chunk<T>; KEPT]) -> Chunk<T> {
        let [es, et, e1] = kept;
        let mut g = [T::ZERO; LANES];
        for k in 0..LANES {
            let mut v = T::ZERO;
            if KL {
                v = T::madd::<L>(c[0][k], es[k], -(c[1][k] * et[k]));
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
        CE.then_some(self.grad_ce)
    }
}

/// Expands `$go!(KL, CE, POW)` for the runtime choice of terms, so that each combination is
/// its own compiled objective; `$none` is the value when neither term is on.
#[macro_export]
#[doc(hidden)]
macro_rules! with_hinton_terms {
    ($kl:expr, $ce:expr, $pow:expr, $go:ident, $none:expr) => {
        match ($kl, $ce, $pow) {
            (true, true, 1) => $go!(true, true, 1),
            (true, true, 2) => $go!(true, true, 2),
            (true, true, 3) => $go!(true, true, 3),
            (true, true, 4) => $go!(true, true, 4),
            (true, true, _) => $go!(true, true, 0),
            (true, false, 1) => $go!(true, false, 1),
            (true, false, 2) => $go!(true, false, 2),
            (true, false, 4) => $go!(true, false, 4),
            (true, false, _) => $go!(true, false, 0),
            (false, true, _) => $go!(false, true, 0),
            (false, false, _) => $none,
        }
    };
}
