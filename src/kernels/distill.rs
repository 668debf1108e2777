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

use super::chunk::{Chunk, LANES};
use super::float::{store_fence, Float, Level};
use super::row::{fold2_keep, map3, max2};

/// Which terms a row computes, fixed at compile time so that unused work is not even emitted.
/// `POW` is the integer temperature used to get `e^z1` from `e^zs`, or 0 to compute it (with
/// KL alone, T = 1, 2 or 4 is still passed on, for the scaling of the logits).
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
    /// `KL(softmax(t/T) || softmax(s/T))` of the row. `ln(Ss/St)` rather than `ln Ss - ln St`:
    /// one log fewer, and no cancellation (both sums are in `[1, C]`, or 0 or NaN, where the
    /// two forms agree).
    #[inline(always)]
    pub fn kl(&self) -> f64 {
        self.cross / self.sum_t + (self.sum_s / self.sum_t).ln()
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
    // With an FMA and 1/T a power of two, `x·(1/T) − m·(1/T)` in one rounding is the same
    // number as `(x − m)·(1/T)`, in one operation instead of two (except where `x − m` is
    // subnormal, or overflows, which the fused form avoids; the exps are the same).
    let fold = L::FMA && matches!(POW, 1 | 2 | 4);
    for k in 0..LANES {
        if KL {
            if fold {
                zs[k] = T::madd::<L>(cs[k], inv_t, -(max_s[k] * inv_t));
                zt[k] = T::madd::<L>(ct[k], inv_t, -(max_t[k] * inv_t));
            } else {
                zs[k] = (cs[k] - max_s[k]) * inv_t;
                zt[k] = (ct[k] - max_t[k]) * inv_t;
            }
            es[k] = zs[k].fast_exp::<L>();
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
    let mut parts = [[T::ZERO; LANES]; 4];
    let kept = stats_into::<T, L, KL, CE, POW>(cs, ct, max_s, max_t, inv_t, &mut parts);
    (parts, kept)
}

/// `stats_step` adding its summands to `acc` itself, where a product and its sum make one FMA:
/// `e^zt (zt - zs)` and, with the integer-temperature shortcut, `e^z1`.
#[inline(always)]
pub(crate) fn stats_into<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    cs: &Chunk<T>,
    ct: &Chunk<T>,
    max_s: &Chunk<T>,
    max_t: &Chunk<T>,
    inv_t: T,
    acc: &mut [Chunk<T>; 4],
) -> [Chunk<T>; 3] {
    let ChunkExps { zs, es, zt, et, e1 } =
        chunk_exps::<T, L, KL, CE, POW>(cs, ct, max_s, max_t, inv_t);
    let [sum_s, sum_t, cross, sum_1] = acc;
    for k in 0..LANES {
        if KL {
            sum_s[k] = sum_s[k] + es[k];
            sum_t[k] = sum_t[k] + et[k];
            // NaN != 0, so a NaN teacher still reaches the sum.
            let c = T::madd::<L>(et[k], zt[k] - zs[k], cross[k]);
            cross[k] = if et[k] != T::ZERO { c } else { cross[k] };
        }
        if CE {
            sum_1[k] = match (KL, POW) {
                (true, 2) => T::madd::<L>(es[k], es[k], sum_1[k]),
                (true, 3) => T::madd::<L>(es[k] * es[k], es[k], sum_1[k]),
                (true, 4) => {
                    let e2 = es[k] * es[k];
                    T::madd::<L>(e2, e2, sum_1[k])
                }
                _ => sum_1[k] + e1[k],
            };
        }
    }
    [es, et, e1]
}

/// Elements per tile of a long row. The statistics pass takes such a row a tile at a time
/// (the tile's maxima, then its sums from L1), so the row is read from memory once, and only
/// its kept exps, not the logits, need to stay in L2 for the gradient pass.
pub const TILE: usize = 2048;

/// Rows whose logits and kept exps (four row lengths) exceed this many bytes are tiled; shorter
/// ones are one tile, against the row's own maxima, after a max pass that finds the row in L2
/// (prefetched while the row before was summed). Measured on a 2 MiB L2: 1.00 against 1.05
/// ns/element untiled at C = 16384 and 1.07 against 1.31 tiled at C = 128256.
const TILED_MIN_BYTES: usize = 1 << 20;

/// The tile length for a row of `n` elements.
#[inline(always)]
pub fn tile_len<T>(n: usize) -> usize {
    if 4 * n * std::mem::size_of::<T>() > TILED_MIN_BYTES {
        TILE
    } else {
        n.max(1)
    }
}

/// Scratch length `row_stats` needs to keep a row of `n` for `row_grad`: three row lengths of
/// exps and the two shifts of each tile.
#[inline(always)]
pub fn keep_len<T>(n: usize) -> usize {
    3 * n + 2 * n.div_ceil(tile_len::<T>(n)).max(1)
}

/// The shift of one row's exps: the running maximum of the tiles seen, or `None` while every
/// element so far was `-inf` or NaN. Those tiles take their exps against 0, which gives the
/// true values 0 (or NaN) whatever the shift turns out to be.
#[derive(Clone, Copy)]
struct Shift<T>(Option<T>);

impl<T: Float> Shift<T> {
    /// Raises the shift to cover a tile of maximum `m`; returns the shift for that tile and
    /// how much higher it is than the old one (0 when there was none: nothing to rescale).
    #[inline(always)]
    fn cover(&mut self, m: T) -> (T, f64) {
        match self.0 {
            None if m == T::NEG_INFINITY => (T::ZERO, 0.0),
            None => {
                self.0 = Some(m);
                (m, 0.0)
            }
            Some(r) if m > r => {
                self.0 = Some(m);
                (m, m.to_f64() - r.to_f64())
            }
            Some(r) => (r, 0.0),
        }
    }

    #[inline(always)]
    fn value(self) -> T {
        self.0.unwrap_or(T::ZERO)
    }
}

/// The row's sums `[Ss, St, A, S1]` so far, relative to the current shifts.
struct Running<T> {
    s: Shift<T>,
    t: Shift<T>,
    inv_t: f64,
    sums: [f64; 4],
}

impl<T: Float> Running<T> {
    /// Raises the shifts to cover a tile of maxima `(m_s, m_t)`, rescaling the sums so far;
    /// returns the shifts the tile's exps are taken against.
    #[inline(always)]
    fn cover(&mut self, m_s: T, m_t: T) -> (T, T) {
        let (sh_s, up_s) = self.s.cover(m_s);
        let (sh_t, up_t) = self.t.cover(m_t);
        if up_s != 0.0 || up_t != 0.0 {
            let (ds, dt) = (up_s * self.inv_t, up_t * self.inv_t);
            let [ss, st, cross, s1] = self.sums;
            // zs and zt drop by ds and dt: e^zs scales by e^-ds, e^zt by e^-dt, e^z1 by
            // e^-up_s, and Σ e^zt (zt - zs) becomes e^-dt (A + (ds - dt) St).
            let ft = (-dt).exp();
            self.sums = [
                ss * (-ds).exp(),
                st * ft,
                ft * (cross + (ds - dt) * st),
                s1 * (-up_s).exp(),
            ];
        }
        (sh_s, sh_t)
    }

    #[inline(always)]
    fn add(&mut self, tile: [f64; 4]) {
        for (a, b) in self.sums.iter_mut().zip(tile) {
            *a += b;
        }
    }
}

/// The parts of `row_stats`'s scratch for a row of `n`: the tile shifts, and the three kept
/// exps of elements `lo..hi`.
#[inline(always)]
fn split_keep<T>(buf: &mut [T], n: usize, lo: usize, hi: usize) -> (&mut [T], [&mut [T]; 3]) {
    let (es, rest) = buf.split_at_mut(n);
    let (et, rest) = rest.split_at_mut(n);
    let (e1, shifts) = rest.split_at_mut(n);
    (shifts, [&mut es[lo..hi], &mut et[lo..hi], &mut e1[lo..hi]])
}

/// One tile's sums `[Ss, St, A, S1]` against the shifts `(sh_s, sh_t)`, storing its exps in
/// `keep` when given. `ahead` is prefetched meanwhile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_sums<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    cs: &[T],
    ct: &[T],
    sh_s: T,
    sh_t: T,
    inv_t: T,
    keep: Option<[&mut [T]; 3]>,
    ahead: Option<(&[T], &[T])>,
) -> [f64; 4] {
    let (lane_s, lane_t) = ([sh_s; LANES], [sh_t; LANES]);
    match keep {
        None => fold2_keep(
            cs,
            ct,
            [],
            [],
            ahead,
            #[inline(always)]
            |a, b, acc| {
                stats_into::<T, L, KL, CE, POW>(a, b, &lane_s, &lane_t, inv_t, acc);
                []
            },
        ),
        Some(kept) => fold2_keep(
            cs,
            ct,
            kept,
            [KL, KL, keeps_e1::<KL, CE, POW>()],
            ahead,
            #[inline(always)]
            |a, b, acc| stats_into::<T, L, KL, CE, POW>(a, b, &lane_s, &lane_t, inv_t, acc),
        ),
    }
}

/// The statistics pass. A row of one tile (`tile_len`): both maxima, then the exp sums (and
/// `A`) in one sweep. A longer row, a tile at a time: the tile's maxima raise the row's shifts
/// (`Running`), then one sweep adds the tile's sums. With `keep` (`keep_len` of scratch), the
/// exps are also stored there for `row_grad`, with each tile's shifts after the exps.
#[inline(always)]
pub fn row_stats<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    s: &[T],
    t: &[T],
    p: RowParams,
    mut keep: Option<&mut [T]>,
    next: Option<(&[T], &[T])>,
) -> RowStats<T> {
    let n = s.len();
    let inv_t = T::from_f64_saturating(p.inv_t);
    let tile_n = tile_len::<T>(n);
    if tile_n >= n {
        // Without KL the teacher is never read: `t` may alias `s`.
        let (max_s, max_t) = if KL { max2(s, t) } else { max2(s, s) };
        let kept = keep.map(|buf| {
            let (shifts, kept) = split_keep(buf, n, 0, n);
            shifts[0] = max_s;
            shifts[1] = max_t;
            kept
        });
        let [sum_s, sum_t, cross, sum_1] =
            tile_sums::<T, L, KL, CE, POW>(s, t, max_s, max_t, inv_t, kept, next);
        return RowStats {
            max_s,
            max_t,
            sum_s,
            sum_t,
            cross,
            sum_1,
        };
    }
    let mut run = Running {
        s: Shift(None),
        t: Shift(None),
        inv_t: p.inv_t,
        sums: [0.0; 4],
    };
    for (tile, lo) in (0..n).step_by(tile_n).enumerate() {
        let hi = n.min(lo + tile_n);
        let (cs, ct) = (&s[lo..hi], &t[lo..hi]);
        let (m_s, m_t) = if KL { max2(cs, ct) } else { max2(cs, cs) };
        let (sh_s, sh_t) = run.cover(m_s, m_t);
        // While this tile is summed, the next one (or the next row) is fetched.
        let ahead = if hi < n {
            let end = n.min(hi + tile_n);
            Some((&s[hi..end], &t[hi..end]))
        } else {
            next
        };
        let kept = keep.as_deref_mut().map(|buf| {
            let (shifts, kept) = split_keep(buf, n, lo, hi);
            shifts[2 * tile] = sh_s;
            shifts[2 * tile + 1] = sh_t;
            kept
        });
        run.add(tile_sums::<T, L, KL, CE, POW>(
            cs, ct, sh_s, sh_t, inv_t, kept, ahead,
        ));
    }
    let [sum_s, sum_t, cross, sum_1] = run.sums;
    RowStats {
        max_s: run.s.value(),
        max_t: run.t.value(),
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
/// is given and CE is on) from the exps `row_stats` kept, a tile at a time: each tile's exps
/// were taken against its own shifts, which its coefficients make up for.
#[inline(always)]
pub fn row_grad<T: Float, L: Level, const KL: bool, const CE: bool, const POW: u32>(
    kept: &[T],
    st: &RowStats<T>,
    p: RowParams,
    w: GradWeights,
    label: Option<usize>,
    grad: &mut [T],
    stream: bool,
) {
    let n = grad.len();
    let (es, rest) = kept.split_at(n);
    let (et, rest) = rest.split_at(n);
    let (e1, shifts) = rest.split_at(n);
    let e1 = if keeps_e1::<KL, CE, POW>() { e1 } else { es };
    let (max_s, max_t) = (st.max_s.to_f64(), st.max_t.to_f64());
    let (a_s, a_t, a_1) = (
        w.kl_weight / st.sum_s,
        w.kl_weight / st.sum_t,
        w.ce_weight / st.sum_1,
    );
    let tile_n = tile_len::<T>(n);
    for (tile, lo) in (0..n).step_by(tile_n).enumerate() {
        let hi = n.min(lo + tile_n);
        // A tile's shifts are at most the row's; only a tile taken against the stand-in 0
        // can be above, and its exps are 0 (or NaN) whatever the scale.
        let up_s = (shifts[2 * tile].to_f64() - max_s).min(0.0);
        let up_t = (shifts[2 * tile + 1].to_f64() - max_t).min(0.0);
        // Most tiles (every one of a short row) are at the row's shifts: no exp to call.
        let scale = |d: f64| if d == 0.0 { 1.0 } else { d.exp() };
        let cs_ = T::from_f64(a_s * scale(up_s * p.inv_t));
        let ct_ = T::from_f64(a_t * scale(up_t * p.inv_t));
        let c1_ = T::from_f64(a_1 * scale(up_s));
        map3::<T, L>(
            &es[lo..hi],
            &et[lo..hi],
            &e1[lo..hi],
            &mut grad[lo..hi],
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
    }
    if stream {
        store_fence();
    }
    if CE {
        if let Some(y) = label {
            grad[y] = grad[y] - T::from_f64(w.ce_weight);
        }
    }
}
