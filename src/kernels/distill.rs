//! The fused distillation row kernel: KL at temperature T, cross-entropy at T = 1, and the
//! gradient of their weighted sum, from one statistics pass and one gradient pass per row.
//!
//! With `zs = (s - max s)/T`, `zt = (t - max t)/T`, `z1 = s - max s` and the sums
//! `Ss = Σ e^zs`, `St = Σ e^zt`, `S1 = Σ e^z1`, `A = Σ e^zt (zt - zs)`:
//! `KL = A/St + ln Ss - ln St`, `CE = ln S1 - z1[y]`, and
//! `grad = a·T·(e^zs/Ss - e^zt/St) + b·(e^z1/S1 - onehot(y))` for weights `a`, `b`.
//! Terms with `e^zt == 0` are left out of `A` (a class masked by `-inf` in both rows would
//! otherwise give `0·(-inf - -inf) = NaN`). When T is a small integer, `e^z1 = (e^zs)^T`
//! replaces an exp by multiplies.

use super::float::{store_fence, Float, Level};
use super::row::{fold2_keep, map3, max2, Chunk, LANES};

/// Which terms a row computes, fixed at compile time so that unused work is not even emitted.
/// `POW` is the integer temperature used to get `e^z1` from `e^zs`, or 0 to compute it.
#[derive(Clone, Copy, Debug)]
pub struct Terms<const KL: bool, const CE: bool, const POW: u32>;

/// Per-row constants shared by the passes.
#[derive(Clone, Copy, Debug)]
pub struct RowParams {
    pub inv_t: f64,
}

/// What the statistics pass learns about a row.
#[derive(Clone, Copy, Debug)]
pub struct RowStats<T> {
    pub max_s: T,
    pub max_t: T,
    pub sum_s: f64,
    pub sum_t: f64,
    pub cross: f64,
    pub sum_1: f64,
}

impl<T: Float> RowStats<T> {
    /// `KL(softmax(t/T) || softmax(s/T))` of the row.
    #[inline(always)]
    pub fn kl(&self) -> f64 {
        self.cross / self.sum_t + self.sum_s.ln() - self.sum_t.ln()
    }

    /// Cross-entropy of the row at T = 1 against class `y` whose logit is `s_y`.
    #[inline(always)]
    pub fn ce(&self, s_y: T) -> f64 {
        self.sum_1.ln() - (s_y.to_f64() - self.max_s.to_f64())
    }
}

#[inline(always)]
pub(crate) fn powi<T: Float, const POW: u32>(e: T) -> T {
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

/// One chunk's scaled logits and their exps: `zs = (s - max s)/T`, `es = e^zs`, likewise `zt`,
/// `et` for the teacher, and `e1 = e^(s - max s)`.
struct ChunkExps<T> {
    zs: Chunk<T>,
    es: Chunk<T>,
    zt: Chunk<T>,
    et: Chunk<T>,
    e1: Chunk<T>,
}

/// Per-chunk exponentials of the terms switched on.
#[inline(always)]
fn chunk_exps<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    cs: &Chunk<T>,
    ct: &Chunk<T>,
    max_s: &Chunk<T>,
    max_t: &Chunk<T>,
    inv_t: T,
) -> ChunkExps<T> {
    let mut zs = [T::ZERO; LANES];
    let mut es = [T::ZERO; LANES];
    let mut zt = [T::ZERO; LANES];
    let mut et = [T::ZERO; LANES];
    let mut e1 = [T::ZERO; LANES];
    for k in 0..LANES {
        if KL {
            zs[k] = (cs[k] - max_s[k]) * inv_t;
            es[k] = zs[k].fast_exp::<L>();
            zt[k] = (ct[k] - max_t[k]) * inv_t;
            et[k] = zt[k].fast_exp::<L>();
        }
        if CE {
            e1[k] = if KL && POW != 0 {
                powi::<T, POW>(es[k])
            } else {
                (cs[k] - max_s[k]).fast_exp::<L>()
            };
        }
    }
    ChunkExps { zs, es, zt, et, e1 }
}

/// One chunk of the statistics pass: the summands `[e^zs, e^zt, e^zt (zt - zs), e^z1]` and
/// the exps worth keeping, `[e^zs, e^zt, e^z1]`. The maxima are per lane: the same value in
/// every lane for a row, one row's maximum per lane for `small.rs`'s blocks of rows.
#[inline(always)]
#[allow(clippy::type_complexity)]
pub(crate) fn stats_step<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    cs: &Chunk<T>,
    ct: &Chunk<T>,
    max_s: &Chunk<T>,
    max_t: &Chunk<T>,
    inv_t: T,
) -> ([Chunk<T>; 4], [Chunk<T>; 3]) {
    let ChunkExps { zs, es, zt, et, e1 } =
        chunk_exps::<T, L, KL, CE, POW>(cs, ct, max_s, max_t, inv_t);
    let mut cross = [T::ZERO; LANES];
    if KL {
        for k in 0..LANES {
            // NaN != 0, so a NaN teacher still reaches the sum.
            cross[k] = if et[k] != T::ZERO {
                et[k] * (zt[k] - zs[k])
            } else {
                T::ZERO
            };
        }
    }
    ([es, et, cross, e1], [es, et, e1])
}

/// The statistics pass: both maxima, then the exp sums (and `A`) in one sweep. With `keep`
/// (three row lengths of scratch), the exps are also stored there for `row_grad`.
#[inline(always)]
pub fn row_stats<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    s: &[T],
    t: &[T],
    p: RowParams,
    keep: Option<&mut [T]>,
    next: Option<(&[T], &[T])>,
) -> RowStats<T> {
    // Without KL the teacher is never read: `t` may alias `s`.
    let (max_s, max_t) = if KL { max2(s, t) } else { max2(s, s) };
    let inv_t = T::from_f64_saturating(p.inv_t);
    let (lane_s, lane_t) = ([max_s; LANES], [max_t; LANES]);
    let [sum_s, sum_t, cross, sum_1] = match keep {
        None => fold2_keep(
            s,
            t,
            [],
            [],
            next,
            #[inline(always)]
            |cs, ct| {
                (
                    stats_step::<T, L, KL, CE, POW>(cs, ct, &lane_s, &lane_t, inv_t).0,
                    [],
                )
            },
        ),
        Some(buf) => {
            let (es, rest) = buf.split_at_mut(s.len());
            let (et, rest) = rest.split_at_mut(s.len());
            let e1 = &mut rest[..s.len()];
            let mask = [KL, KL, keeps_e1::<KL, CE, POW>()];
            fold2_keep(
                s,
                t,
                [es, et, e1],
                mask,
                next,
                #[inline(always)]
                |cs, ct| stats_step::<T, L, KL, CE, POW>(cs, ct, &lane_s, &lane_t, inv_t),
            )
        }
    };
    RowStats {
        max_s,
        max_t,
        sum_s,
        sum_t,
        cross,
        sum_1,
    }
}

/// Whether `e^z1` must be kept, rather than rebuilt from `e^zs` as a power.
#[inline(always)]
pub(crate) const fn keeps_e1<const KL: bool, const CE: bool, const POW: u32>() -> bool {
    CE && !(KL && POW != 0)
}

/// Weights of the gradient: `kl_weight` multiplies `(e^zs/Ss - e^zt/St)` and `ce_weight`
/// multiplies `(e^z1/S1 - onehot(y))`. Both already include the reduction's scale.
#[derive(Clone, Copy, Debug)]
pub struct GradWeights {
    pub kl_weight: f64,
    pub ce_weight: f64,
}

/// The gradient pass: writes the whole row of `grad` (the one-hot term included when `label`
/// is given and CE is on) from the exps `row_stats` kept.
#[inline(always)]
pub fn row_grad<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    kept: &[T],
    st: &RowStats<T>,
    w: GradWeights,
    label: Option<usize>,
    grad: &mut [T],
    stream: bool,
) {
    let n = grad.len();
    let (es, rest) = kept.split_at(n);
    let (et, rest) = rest.split_at(n);
    let e1 = if keeps_e1::<KL, CE, POW>() {
        &rest[..n]
    } else {
        es
    };
    let cs_ = T::from_f64(w.kl_weight / st.sum_s);
    let ct_ = T::from_f64(w.kl_weight / st.sum_t);
    let c1_ = T::from_f64(w.ce_weight / st.sum_1);
    map3(
        es,
        et,
        e1,
        grad,
        stream,
        #[inline(always)]
        |es, et, e1| {
            let mut g = [T::ZERO; LANES];
            for k in 0..LANES {
                let mut v = T::ZERO;
                if KL {
                    v = T::madd::<L>(cs_, es[k], -(ct_ * et[k]));
                }
                if CE {
                    let e = if keeps_e1::<KL, CE, POW>() {
                        e1[k]
                    } else {
                        powi::<T, POW>(e1[k])
                    };
                    v = T::madd::<L>(c1_, e, v);
                }
                g[k] = v;
            }
            g
        },
    );
    if stream {
        store_fence();
    }
    if CE {
        if let Some(y) = label {
            grad[y] = grad[y] - T::from_f64(w.ce_weight);
        }
    }
}
