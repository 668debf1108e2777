//! The long-row driver: one row at a time through an objective, from one statistics pass and
//! one gradient pass. A long row is summed a tile at a time against the running maxima, so it
//! is read from memory once; the gradient pass works from the values the first pass kept.

use super::chunk::{Chunk, LANES};
use super::float::{store_fence, Float, Level};
use super::objective::{Objective, Sums, KEPT, SUMS};
use super::reduce::Terms;
use super::row::{fold2_keep, map3, map_in_place, max2};
use super::simd::Kernel;

/// Elements per tile of a long row. The statistics pass takes such a row a tile at a time
/// (the tile's maxima, then its sums from L1), so the row is read from memory once, and only
/// its kept values, not the logits, need to stay in L2 for the gradient pass.
pub const TILE: usize = 2048;

/// Rows whose logits and kept values (four row lengths) exceed this many bytes are tiled;
/// shorter ones are one tile, against the row's own maxima, after a max pass that finds the row
/// in L2 (prefetched while the row before was summed). Measured on a 2 MiB L2: 1.00 against
/// 1.05 ns/element untiled at C = 16384 and 1.07 against 1.31 tiled at C = 128256.
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

/// The two shifts of each tile of a row of `n`, as `row_stats` keeps them.
#[inline(always)]
pub fn shifts_len<T>(n: usize) -> usize {
    2 * n.div_ceil(tile_len::<T>(n)).max(1)
}

/// Scratch length `row_stats` needs to keep a row of `n` for `row_grad`: `KEPT` row lengths of
/// values and the tiles' shifts.
#[inline(always)]
pub fn keep_len<T>(n: usize) -> usize {
    KEPT * n + shifts_len::<T>(n)
}

/// The first `len` elements of `buf`, grown to hold them.
#[inline(always)]
fn grown<T: Float>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::ZERO);
    }
    &mut buf[..len]
}

/// What the statistics pass learns about a row: its shifts (the maxima) and its sums.
#[derive(Clone, Copy, Debug)]
pub struct RowStats<T> {
    pub max_s: T,
    pub max_t: T,
    pub sums: Sums,
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

/// Where `row_stats` keeps a row's values for the gradient pass: one row length per value the
/// objective keeps (`&mut []` for the others), and the two shifts of each tile.
pub struct Keep<'a, T> {
    pub vals: [&'a mut [T]; KEPT],
    pub shifts: &'a mut [T],
}

impl<'a, T> Keep<'a, T> {
    /// `keep_len` of scratch, as the kept values of a row of `n` and the tile shifts.
    #[inline(always)]
    pub fn in_scratch(buf: &'a mut [T], n: usize) -> Self {
        let (k0, rest) = buf.split_at_mut(n);
        let (k1, rest) = rest.split_at_mut(n);
        let (k2, shifts) = rest.split_at_mut(n);
        Keep {
            vals: [k0, k1, k2],
            shifts,
        }
    }

    /// The kept values of elements `lo..hi` (empty for values not kept).
    #[inline(always)]
    fn tile(&mut self, kept: [bool; KEPT], lo: usize, hi: usize) -> [&mut [T]; KEPT] {
        let [a, b, c] = &mut self.vals;
        [
            part(a, kept[0], lo, hi),
            part(b, kept[1], lo, hi),
            part(c, kept[2], lo, hi),
        ]
    }
}

#[inline(always)]
fn part<T>(v: &mut [T], on: bool, lo: usize, hi: usize) -> &mut [T] {
    if on {
        &mut v[lo..hi]
    } else {
        &mut []
    }
}

/// One tile's sums against the shifts `(sh_s, sh_t)`, storing its kept values in `keep` when
/// given. `ahead` is prefetched meanwhile.
#[inline(always)]
fn tile_sums<T: Float, L: Level, O: Objective<T>>(
    obj: &O,
    cs: &[T],
    ct: &[T],
    (sh_s, sh_t): (T, T),
    keep: Option<[&mut [T]; KEPT]>,
    ahead: Option<(&[T], &[T])>,
) -> Sums {
    let (lane_s, lane_t) = ([sh_s; LANES], [sh_t; LANES]);
    // Every closure on the way to the loop is inlined: one that is not is compiled outside the
    // level's `#[target_feature]` entry, without its instructions.
    match keep {
        None => fold2_keep(
            cs,
            ct,
            O::USED,
            [],
            [],
            ahead,
            #[inline(always)]
            |a, b, acc| {
                obj.stats::<L>(a, b, &lane_s, &lane_t, acc);
                []
            },
        ),
        Some(kept) => fold2_keep(
            cs,
            ct,
            O::USED,
            kept,
            O::KEEP,
            ahead,
            #[inline(always)]
            |a, b, acc| obj.stats::<L>(a, b, &lane_s, &lane_t, acc),
        ),
    }
}

/// The maxima of `s` and `t`; without the teacher, `t` may alias `s` and is never read.
#[inline(always)]
fn maxima<T: Float, O: Objective<T>>(s: &[T], t: &[T]) -> (T, T) {
    if O::TEACHER {
        max2(s, t)
    } else {
        max2(s, s)
    }
}

/// The statistics pass. A row of one tile (`tile_len`): both maxima, then the sums in one
/// sweep. A longer row, a tile at a time: the tile's maxima raise the row's shifts (rescaling
/// the sums so far), then one sweep adds the tile's sums. With `keep`, the kept values and
/// each tile's shifts are also stored there for `row_grad`.
#[inline(always)]
pub fn row_stats<T: Float, L: Level, O: Objective<T>>(
    obj: &O,
    s: &[T],
    t: &[T],
    mut keep: Option<&mut Keep<'_, T>>,
    next: Option<(&[T], &[T])>,
) -> RowStats<T> {
    let n = s.len();
    let tile_n = tile_len::<T>(n);
    if tile_n >= n {
        let (max_s, max_t) = maxima::<T, O>(s, t);
        let kept = keep.as_mut().map(|k| {
            k.shifts[0] = max_s;
            k.shifts[1] = max_t;
            k.tile(O::KEEP, 0, n)
        });
        let sums = tile_sums::<T, L, O>(obj, s, t, (max_s, max_t), kept, next);
        return RowStats { max_s, max_t, sums };
    }
    let (mut shift_s, mut shift_t) = (Shift(None), Shift(None));
    let mut sums = [0.0; SUMS];
    for (tile, lo) in (0..n).step_by(tile_n).enumerate() {
        let hi = n.min(lo + tile_n);
        let (cs, ct) = (&s[lo..hi], &t[lo..hi]);
        let (m_s, m_t) = maxima::<T, O>(cs, ct);
        let (sh_s, up_s) = shift_s.cover(m_s);
        let (sh_t, up_t) = shift_t.cover(m_t);
        if up_s != 0.0 || up_t != 0.0 {
            sums = obj.rescale(sums, up_s, up_t);
        }
        // While this tile is summed, the next one (or the next row) is fetched.
        let ahead = if hi < n {
            let end = n.min(hi + tile_n);
            Some((&s[hi..end], &t[hi..end]))
        } else {
            next
        };
        let kept = keep.as_mut().map(|k| {
            k.shifts[2 * tile] = sh_s;
            k.shifts[2 * tile + 1] = sh_t;
            k.tile(O::KEEP, lo, hi)
        });
        let part = tile_sums::<T, L, O>(obj, cs, ct, (sh_s, sh_t), kept, ahead);
        for (a, b) in sums.iter_mut().zip(part) {
            *a += b;
        }
    }
    RowStats {
        max_s: shift_s.value(),
        max_t: shift_t.value(),
        sums,
    }
}

/// Calls `f(lo, hi, coefficients)` for each tile `lo..hi` of a row of `n`: each tile's values
/// were taken against its own shifts, which its coefficients make up for.
#[inline(always)]
fn for_each_tile<T: Float, L: Level, O: Objective<T>>(
    obj: &O,
    st: &RowStats<T>,
    shifts: &[T],
    n: usize,
    mut f: impl FnMut(usize, usize, &[Chunk<T>; KEPT]),
) {
    let (max_s, max_t) = (st.max_s.to_f64(), st.max_t.to_f64());
    let tile_n = tile_len::<T>(n);
    for (tile, lo) in (0..n).step_by(tile_n).enumerate() {
        let hi = n.min(lo + tile_n);
        // A tile's shifts are at most the row's; only a tile taken against the stand-in 0
        // can be above, and its values are 0 (or NaN) whatever the scale.
        let down_s = (shifts[2 * tile].to_f64() - max_s).min(0.0);
        let down_t = (shifts[2 * tile + 1].to_f64() - max_t).min(0.0);
        let mut c = [[T::ZERO; LANES]; KEPT];
        for (c, v) in c.iter_mut().zip(obj.coeffs::<L>(&st.sums, down_s, down_t)) {
            *c = [T::from_f64(v); LANES];
        }
        f(lo, hi, &c);
    }
}

/// The label's term of the gradient, once the rest of the row is written.
#[inline(always)]
fn label_term<T: Float, O: Objective<T>>(obj: &O, label: Option<usize>, grad: &mut [T]) {
    if let (Some(y), Some(w)) = (label, obj.label_weight()) {
        grad[y] = grad[y] - T::from_f64(w);
    }
}

/// The gradient pass: writes the whole row of `grad` (the label's term included when `label`
/// is given) from the values `row_stats` kept (`vals[m]` for `O::KEEP[m]`) and the tiles'
/// shifts.
#[inline(always)]
pub fn row_grad<T: Float, L: Level, O: Objective<T>>(
    obj: &O,
    vals: [&[T]; KEPT],
    shifts: &[T],
    st: &RowStats<T>,
    label: Option<usize>,
    grad: &mut [T],
    stream: bool,
) {
    let n = grad.len();
    // Values an objective does not keep are not read: the first row stands in for them.
    let [k0, k1, k2] = vals;
    let k1 = if O::KEEP[1] { k1 } else { k0 };
    let k2 = if O::KEEP[2] { k2 } else { k0 };
    for_each_tile::<T, L, O>(
        obj,
        st,
        shifts,
        n,
        #[inline(always)]
        |lo, hi, c| {
            map3::<T, L>(
                &k0[lo..hi],
                &k1[lo..hi],
                &k2[lo..hi],
                &mut grad[lo..hi],
                stream,
                #[inline(always)]
                |a, b, d| obj.grad_step::<L>(c, [a, b, d]),
            )
        },
    );
    if stream {
        store_fence();
    }
    label_term(obj, label, grad);
}

/// `row_grad` for an objective that keeps one value, which `row_stats` stored in `grad` itself:
/// the gradient is written over it, with no second buffer to read.
#[inline(always)]
pub fn row_grad_in_place<T: Float, L: Level, O: Objective<T>>(
    obj: &O,
    shifts: &[T],
    st: &RowStats<T>,
    label: Option<usize>,
    grad: &mut [T],
) {
    let n = grad.len();
    for_each_tile::<T, L, O>(
        obj,
        st,
        shifts,
        n,
        #[inline(always)]
        |lo, hi, c| {
            map_in_place::<T>(
                &mut grad[lo..hi],
                #[inline(always)]
                |v| obj.grad_step::<L>(c, [v, v, v]),
            )
        },
    );
    label_term(obj, label, grad);
}

/// Whether an objective keeps exactly one value (which can then live in the output itself).
#[inline(always)]
const fn keeps_one(keep: [bool; KEPT]) -> bool {
    (keep[0] as u8 + keep[1] as u8 + keep[2] as u8) == 1
}

/// One row through an objective: its loss, and its gradient written into `grad` when given.
pub(crate) struct LongRow<'a, T, O> {
    pub obj: O,
    pub s: &'a [T],
    pub t: &'a [T],
    pub label: Option<usize>,
    pub grad: Option<&'a mut [T]>,
    /// Write the gradient with non-temporal stores (it is too large to stay in cache).
    pub stream: bool,
    /// Scratch for the kept values, used with `grad`.
    pub keep: &'a mut Vec<T>,
    /// The rows processed next, to prefetch.
    pub next: Option<(&'a [T], &'a [T])>,
}

impl<T: Float, O: Objective<T>> Kernel for LongRow<'_, T, O> {
    /// The row's terms.
    type Output = Terms;

    #[inline(always)]
    fn run<L: Level>(self) -> Terms {
        let n = self.s.len();
        let obj = &self.obj;
        // Rows reach here only with a checked label; NaN would flag a broken invariant.
        let z_y = |st: &RowStats<T>| {
            self.label
                .and_then(|y| self.s.get(y))
                .map_or(f64::NAN, |v| v.to_f64() - st.max_s.to_f64())
        };
        let Some(grad) = self.grad else {
            let st = row_stats::<T, L, O>(obj, self.s, self.t, None, self.next);
            return obj.loss::<L>(&st.sums, z_y(&st));
        };
        if keeps_one(O::KEEP) && !self.stream {
            // The one kept value goes into the gradient's row, and the gradient over it.
            let mut vals: [&mut [T]; KEPT] = [&mut [], &mut [], &mut []];
            for (m, v) in vals.iter_mut().enumerate() {
                if O::KEEP[m] {
                    *v = &mut *grad;
                    break;
                }
            }
            let tiles = shifts_len::<T>(n);
            let shifts = grown(self.keep, tiles);
            let mut keep = Keep { vals, shifts };
            let st = row_stats::<T, L, O>(obj, self.s, self.t, Some(&mut keep), self.next);
            // (`keep` ties the shifts to the gradient's borrow; read them back from scratch.)
            row_grad_in_place::<T, L, O>(obj, &self.keep[..tiles], &st, self.label, grad);
            return obj.loss::<L>(&st.sums, z_y(&st));
        }
        let mut keep = Keep::in_scratch(grown(self.keep, keep_len::<T>(n)), n);
        let st = row_stats::<T, L, O>(obj, self.s, self.t, Some(&mut keep), self.next);
        let [k0, k1, k2] = &keep.vals;
        let vals = [&**k0, &**k1, &**k2];
        row_grad::<T, L, O>(obj, vals, keep.shifts, &st, self.label, grad, self.stream);
        obj.loss::<L>(&st.sums, z_y(&st))
    }
}
