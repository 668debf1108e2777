//! Lane-parallel loops over one row: the building blocks of every kernel.
//!
//! A row is walked `LANES` elements at a time through fixed-size arrays, which the compiler
//! turns into SIMD registers at each instruction-set level. A row of at least `LANES` ends with
//! the chunk of its last `LANES` elements, which overlaps the chunk before: the overlapped lanes
//! compute again what they did (the same bits) and are left out of the sums. A shorter row is
//! copied into a chunk padded with `-inf`, which every reduction here treats as "no mass" (its
//! exp is exactly 0 and it never wins a max). Either way full and partial chunks run the same
//! code. Sums are kept per lane in `T` within a block and in f64 across blocks, then added in a
//! fixed order: the result depends only on the row, never on threads.

use super::chunk::{Chunk, LANES};
use super::float::{stream_copy, Float, Level};

/// Steps summed in `T` before the lane partials are moved into f64.
const BLOCK: usize = 8;

/// Copies `x` (fewer than `LANES` elements) into a chunk padded with `-inf`.
#[inline(always)]
fn padded<T: Float>(x: &[T]) -> Chunk<T> {
    let mut c = [T::NEG_INFINITY; LANES];
    c[..x.len()].copy_from_slice(x);
    c
}

/// How a row of `n` elements ends after its `full` elements in whole chunks (`full < n`): at
/// the overlapping chunk starting at `n - LANES`, whose first `LANES - (n - full)` lanes were
/// done already, or, for a row shorter than a chunk, at a padded copy.
#[derive(Clone, Copy)]
enum Tail {
    Overlap { start: usize, done: usize },
    Padded,
}

impl Tail {
    #[inline(always)]
    fn of(n: usize, full: usize) -> Self {
        if n >= LANES {
            Tail::Overlap {
                start: n - LANES,
                done: LANES - (n - full),
            }
        } else {
            Tail::Padded
        }
    }

    /// The tail chunk of `x`, a row of the length this tail was made for.
    #[inline(always)]
    fn chunk<T: Float>(self, x: &[T], full: usize) -> Chunk<T> {
        match self {
            Tail::Overlap { start, .. } => *chunk(x, start),
            Tail::Padded => padded(&x[full..]),
        }
    }

    /// Stores the tail chunk's results `r` into `out`: its elements from `full` on (and, for
    /// an overlapping chunk, the elements before those again, with the values they hold).
    #[inline(always)]
    fn store<T: Float>(self, out: &mut [T], full: usize, r: &Chunk<T>) {
        match self {
            // The overlapped lanes get the values they already hold.
            Tail::Overlap { start, .. } => out[start..start + LANES].copy_from_slice(r),
            Tail::Padded => self.store_new(out, full, r),
        }
    }

    /// Stores only the elements from `full` on: after non-temporal stores, a plain store to a
    /// line they wrote would flush it from the write-combining buffer and read it back.
    #[inline(always)]
    fn store_new<T: Float>(self, out: &mut [T], full: usize, r: &Chunk<T>) {
        let n = out.len();
        let first = match self {
            Tail::Overlap { done, .. } => done,
            Tail::Padded => 0,
        };
        out[full..].copy_from_slice(&r[first..first + (n - full)]);
    }

    /// Zeroes the lanes of per-lane sums that an overlapping chunk had already counted.
    #[inline(always)]
    fn forget_done<T: Float, const N: usize>(self, part: &mut [Chunk<T>; N]) {
        if let Tail::Overlap { done, .. } = self {
            for p in part.iter_mut() {
                for (k, v) in p.iter_mut().enumerate() {
                    if k < done {
                        *v = T::ZERO;
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn chunk<T: Float>(x: &[T], i: usize) -> &Chunk<T> {
    // The callers index whole chunks only; the conversion cannot fail.
    x[i..i + LANES]
        .try_into()
        .unwrap_or_else(|_| unreachable!())
}

/// Adds the lanes in a fixed pairwise order.
#[inline(always)]
fn lane_sum(v: [f64; LANES]) -> f64 {
    let mut w = v;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for k in 0..n {
            w[k] += w[k + n];
        }
    }
    w[0]
}

/// Bytes of rows ahead small enough to be fetched into L1 rather than L2: they stay there,
/// beside the row being worked on, until the next pass reads them.
const L1_AHEAD_BYTES: usize = 16 << 10;

/// Asks for the cache line holding `x[i]` to be brought into L1 (`near`) or L2 (a hint; no
/// effect elsewhere than x86-64). One call per chunk of 16 f32 covers every line once.
#[inline(always)]
pub fn prefetch<T>(x: &[T], i: usize, near: bool) {
    #[cfg(target_arch = "x86_64")]
    if i < x.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        let p = x.as_ptr().wrapping_add(i).cast::<i8>();
        // SAFETY: prefetching is a hint that never faults; the address is inside `x` anyway.
        unsafe {
            if near {
                _mm_prefetch::<_MM_HINT_T0>(p);
            } else {
                _mm_prefetch::<_MM_HINT_T1>(p);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, i, near);
}

/// Moves block partials into the f64 totals, for the sums in use.
#[inline(always)]
fn flush<T: Float, const N: usize>(
    block: &mut [Chunk<T>; N],
    total: &mut [[f64; LANES]; N],
    used: [bool; N],
) {
    for j in 0..N {
        if used[j] {
            flush_one(&mut block[j], &mut total[j]);
        }
    }
}

// One sum at a time, lane by lane: written across sums, the loop was vectorized with gathers.
#[inline(always)]
fn flush_one<T: Float>(block: &mut Chunk<T>, total: &mut [f64; LANES]) {
    for k in 0..LANES {
        total[k] += block[k].to_f64();
    }
    *block = [T::ZERO; LANES];
}

/// Lane-wise running maximum.
#[inline(always)]
pub(crate) fn max_into<T: Float>(m: &mut Chunk<T>, c: &Chunk<T>) {
    for k in 0..LANES {
        m[k] = if c[k] > m[k] { c[k] } else { m[k] };
    }
}

/// The largest lane of `m`, pairwise. The lanes of a running maximum are never NaN (a NaN
/// never wins `max_into`), so the order does not matter.
#[inline(always)]
fn max_of<T: Float>(m: &Chunk<T>) -> T {
    let mut w = *m;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for k in 0..n {
            w[k] = if w[k + n] > w[k] { w[k + n] } else { w[k] };
        }
    }
    w[0]
}

/// Sums `N` per-element quantities over the row pair `(a, b)` (equal lengths), each computed by
/// `step` for one chunk of `a` and the matching chunk of `b`.
#[inline(always)]
pub fn fold2<T: Float, const N: usize>(
    a: &[T],
    b: &[T],
    step: impl Fn(&Chunk<T>, &Chunk<T>) -> [Chunk<T>; N],
) -> [f64; N] {
    fold2_keep(
        a,
        b,
        [true; N],
        [],
        [],
        None,
        #[inline(always)]
        |ca, cb, acc| {
            for (acc, p) in acc.iter_mut().zip(&step(ca, cb)) {
                add_into(acc, p);
            }
            []
        },
    )
}

/// Lane-wise `acc += x`.
#[inline(always)]
pub fn add_into<T: Float>(acc: &mut Chunk<T>, x: &Chunk<T>) {
    for k in 0..LANES {
        acc[k] = acc[k] + x[k];
    }
}

/// `fold2` with a `step` that adds its `N` per-element quantities to the lane sums it is given
/// (so that a product and its sum can be one FMA; those not `used` are left 0 by `step` and
/// not summed) and returns `K` per-element results, those
/// for which `mask` is true to be stored in `keep` (each as long as `a`; the others are not
/// touched and may be empty) for a later pass to read instead of recomputing them. `next`,
/// the row pair to be processed after this one, is prefetched as this one is read, so that
/// its first pass finds it in cache: in L1 when it is small enough to stay there
/// (`L1_AHEAD_BYTES`), in L2 otherwise. `step` must work lane by lane, each lane from its own
/// inputs alone (no lane index, no state): the tail's overlapped lanes are computed again, their
/// sums dropped and their results stored again, which is only right if they come out the same.
#[inline(always)]
pub fn fold2_keep<T: Float, const N: usize, const K: usize>(
    a: &[T],
    b: &[T],
    used: [bool; N],
    keep: [&mut [T]; K],
    mask: [bool; K],
    next: Option<(&[T], &[T])>,
    step: impl Fn(&Chunk<T>, &Chunk<T>, &mut [Chunk<T>; N]) -> [Chunk<T>; K],
) -> [f64; N] {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let full = n - n % LANES;
    let mut total = [[0.0f64; LANES]; N];
    let mut block = [[T::ZERO; LANES]; N];
    let near = next.is_some_and(|(na, nb)| {
        std::mem::size_of_val(na) + std::mem::size_of_val(nb) <= L1_AHEAD_BYTES
    });
    let mut i = 0;
    while i < full {
        let end = full.min(i + BLOCK * LANES);
        while i < end {
            if let Some((na, nb)) = next {
                prefetch(na, i, near);
                prefetch(nb, i, near);
            }
            let kept = step(chunk(a, i), chunk(b, i), &mut block);
            for j in 0..K {
                if mask[j] {
                    keep[j][i..i + LANES].copy_from_slice(&kept[j]);
                }
            }
            i += LANES;
        }
        flush(&mut block, &mut total, used);
    }
    if full < n {
        let tail = Tail::of(n, full);
        let kept = step(&tail.chunk(a, full), &tail.chunk(b, full), &mut block);
        tail.forget_done(&mut block);
        flush(&mut block, &mut total, used);
        for j in 0..K {
            if mask[j] {
                tail.store(&mut keep[j][..n], full, &kept[j]);
            }
        }
    }
    total.map(lane_sum)
}

/// The maxima of `a` and of `b` (equal lengths). NaN is not propagated here; the sums that
/// follow every max do that, since the NaN element itself goes through them.
#[inline(always)]
pub fn max2<T: Float>(a: &[T], b: &[T]) -> (T, T) {
    debug_assert_eq!(a.len(), b.len());
    // Four independent accumulators per input: a max has a latency of several cycles, and
    // one chain per input would leave the loop waiting on it.
    const U: usize = 4;
    let n = a.len();
    let wide = n - n % (U * LANES);
    let full = n - n % LANES;
    let mut ma = [[T::NEG_INFINITY; LANES]; U];
    let mut mb = [[T::NEG_INFINITY; LANES]; U];
    let mut i = 0;
    while i < wide {
        for u in 0..U {
            max_into(&mut ma[u], chunk(a, i + u * LANES));
            max_into(&mut mb[u], chunk(b, i + u * LANES));
        }
        i += U * LANES;
    }
    while i < full {
        max_into(&mut ma[0], chunk(a, i));
        max_into(&mut mb[0], chunk(b, i));
        i += LANES;
    }
    if full < n {
        // Taking a lane's maximum twice changes nothing: the overlap needs no masking.
        let tail = Tail::of(n, full);
        max_into(&mut ma[0], &tail.chunk(a, full));
        max_into(&mut mb[0], &tail.chunk(b, full));
    }
    for u in 1..U {
        let (a_u, b_u) = (ma[u], mb[u]);
        max_into(&mut ma[0], &a_u);
        max_into(&mut mb[0], &b_u);
    }
    (max_of(&ma[0]), max_of(&mb[0]))
}

/// Writes `step(chunk of a, chunk of b, chunk of c)` over `out` (all of equal length); with
/// `stream`, by non-temporal stores for the whole chunks (the caller fences). As in
/// `fold2_keep`, `step` must work lane by lane, each lane from its own inputs alone.
#[inline(always)]
pub fn map3<T: Float, L: Level>(
    a: &[T],
    b: &[T],
    c: &[T],
    out: &mut [T],
    stream: bool,
    step: impl Fn(&Chunk<T>, &Chunk<T>, &Chunk<T>) -> Chunk<T>,
) {
    debug_assert!(a.len() == b.len() && a.len() == c.len() && a.len() == out.len());
    let n = a.len();
    let full = n - n % LANES;
    // Two loops rather than a branch in one: with one loop, the compiler fitted the vectors of
    // both to the narrowest streaming store.
    let mut i = 0;
    if stream {
        while i < full {
            let r = step(chunk(a, i), chunk(b, i), chunk(c, i));
            stream_copy::<L, T>(&mut out[i..i + LANES], &r);
            i += LANES;
        }
    } else {
        while i < full {
            let r = step(chunk(a, i), chunk(b, i), chunk(c, i));
            out[i..i + LANES].copy_from_slice(&r);
            i += LANES;
        }
    }
    if full < n {
        let tail = Tail::of(n, full);
        let r = step(
            &tail.chunk(a, full),
            &tail.chunk(b, full),
            &tail.chunk(c, full),
        );
        if stream {
            tail.store_new(out, full, &r);
        } else {
            tail.store(out, full, &r);
        }
    }
}

/// Rewrites `x` by `step`, chunk by chunk, in place. As in `fold2_keep`, `step` must work lane
/// by lane; the tail's overlapped lanes, already rewritten, are read but not stored again.
#[inline(always)]
pub fn map_in_place<T: Float>(x: &mut [T], step: impl Fn(&Chunk<T>) -> Chunk<T>) {
    let n = x.len();
    let full = n - n % LANES;
    let mut i = 0;
    while i < full {
        let r = step(chunk(x, i));
        x[i..i + LANES].copy_from_slice(&r);
        i += LANES;
    }
    if full < n {
        let tail = Tail::of(n, full);
        let r = step(&tail.chunk(x, full));
        tail.store_new(x, full, &r);
    }
}

/// Writes `step(chunk of a, chunk of b)` over `out` (all three of equal length).
#[inline(always)]
pub fn map2<T: Float, L: Level>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    step: impl Fn(&Chunk<T>, &Chunk<T>) -> Chunk<T>,
) {
    map3::<T, L>(
        a,
        b,
        b,
        out,
        false,
        #[inline(always)]
        |ca, cb, _| step(ca, cb),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold2_sums_every_element_once() {
        for n in [0usize, 1, 15, 16, 17, 127, 128, 129, 1000] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let [s, s2] = fold2(&a, &a, |ca, cb| {
                let mut x = [0.0f32; LANES];
                let mut y = [0.0f32; LANES];
                for k in 0..LANES {
                    // Padded lanes are -inf; map them to zero as the kernels' exps do.
                    x[k] = if ca[k] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        ca[k]
                    };
                    y[k] = if cb[k] == f32::NEG_INFINITY { 0.0 } else { 1.0 };
                }
                [x, y]
            });
            let expect = (n * n.saturating_sub(1) / 2) as f64;
            assert_eq!(s, expect, "n = {n}");
            assert_eq!(s2, n as f64, "n = {n}");
        }
    }

    #[test]
    fn max2_finds_both_maxima() {
        for n in [1usize, 5, 16, 33] {
            let a: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64).collect();
            let b: Vec<f64> = a.iter().map(|v| -v).collect();
            let (ma, mb) = max2(&a, &b);
            assert_eq!(ma, a.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            assert_eq!(mb, b.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        }
    }

    #[test]
    fn map2_writes_every_element() {
        for n in [0usize, 3, 16, 19, 64] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut out = vec![f32::NAN; n];
            map2::<f32, crate::kernels::simd::ScalarLevel>(&a, &a, &mut out, |ca, cb| {
                let mut r = [0.0f32; LANES];
                for k in 0..LANES {
                    r[k] = ca[k] + cb[k];
                }
                r
            });
            for (i, v) in out.iter().enumerate() {
                assert_eq!(*v, 2.0 * i as f32);
            }
        }
    }
}
