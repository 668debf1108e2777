//! The fused row kernels with their terms chosen at compile time: each combination of KL on or
//! off, cross-entropy on or off and integer temperature is its own compiled kernel.

use super::chunk::{Chunk, LANES};
use super::distill::{keep_len, row_grad, row_stats, GradWeights, RowParams};
use super::float::{Float, Level};
use super::simd::{dispatch, Kernel};
use super::small::SmallBlock;

/// Per-row constants, shared read-only by every row of a call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowCtx {
    pub params: RowParams,
    pub kl_weight: f64,
    pub ce_weight: f64,
    pub grad: GradWeights,
    /// Write the gradient with non-temporal stores (it is too large to stay in cache).
    pub stream: bool,
}

struct FusedRow<'a, T, const KL: bool, const CE: bool, const POW: u32> {
    s: &'a [T],
    t: &'a [T],
    label: Option<usize>,
    ctx: RowCtx,
    grad: Option<&'a mut [T]>,
    /// Scratch of three row lengths, used with `grad`.
    keep: &'a mut Vec<T>,
    /// The rows processed next, to prefetch.
    next: Option<(&'a [T], &'a [T])>,
}

impl<T: Float, const KL: bool, const CE: bool, const POW: u32> Kernel
    for FusedRow<'_, T, KL, CE, POW>
{
    type Output = f64;

    #[inline(always)]
    fn run<L: Level>(self) -> f64 {
        let c = self.ctx;
        let n = self.s.len();
        let kept_len = keep_len::<T>(n);
        let keep = match self.grad {
            Some(_) => {
                if self.keep.len() < kept_len {
                    self.keep.resize(kept_len, T::ZERO);
                }
                Some(&mut self.keep[..kept_len])
            }
            None => None,
        };
        let st = row_stats::<T, L, KL, CE, POW>(self.s, self.t, c.params, keep, self.next);
        let mut loss = 0.0;
        if KL {
            loss += c.kl_weight * st.kl();
        }
        if CE {
            // Rows reach here only with a checked label; NaN would flag a broken invariant.
            let s_y = self.label.and_then(|y| self.s.get(y)).copied();
            loss += c.ce_weight * s_y.map_or(f64::NAN, |v| st.ce(v));
        }
        if let Some(g) = self.grad {
            let stream = c.stream;
            let kept = &self.keep[..kept_len];
            row_grad::<T, L, KL, CE, POW>(kept, &st, c.params, c.grad, self.label, g, stream);
        }
        loss
    }
}

/// Expands `$go!(KL, CE, POW)` for the runtime choice of terms, so that each combination is
/// its own compiled kernel; `$none` is the value when neither term is on.
macro_rules! with_terms {
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

/// Runs the fused kernel on one row with the terms switched on at compile time.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn fused_row<T: Float>(
    kl: bool,
    ce: bool,
    pow: u32,
    s: &[T],
    t: &[T],
    label: Option<usize>,
    ctx: RowCtx,
    grad: Option<&mut [T]>,
    keep: &mut Vec<T>,
    next: Option<(&[T], &[T])>,
) -> f64 {
    macro_rules! go {
        ($kl:literal, $ce:literal, $pow:literal) => {
            dispatch(FusedRow::<T, $kl, $ce, $pow> {
                s,
                t,
                label,
                ctx,
                grad,
                keep,
                next,
            })
        };
    }
    with_terms!(kl, ce, pow, go, {
        if let Some(g) = grad {
            g.fill(T::ZERO);
        }
        0.0
    })
}

/// Runs the blocked kernel for rows of at most `SMALL_CLASSES` classes, terms switched on at
/// compile time as in `fused_row`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn small_block<T: Float>(
    kl: bool,
    ce: bool,
    pow: u32,
    s: &[Chunk<T>],
    t: &[Chunk<T>],
    s_y: Chunk<T>,
    ctx: RowCtx,
    keep: &mut [Chunk<T>],
    grad: Option<&mut [Chunk<T>]>,
) -> [f64; LANES] {
    macro_rules! go {
        ($kl:literal, $ce:literal, $pow:literal) => {
            dispatch(SmallBlock::<T, $kl, $ce, $pow> {
                s,
                t,
                s_y,
                inv_t: ctx.params.inv_t,
                kl_weight: ctx.kl_weight,
                ce_weight: ctx.ce_weight,
                grad_weights: ctx.grad,
                keep,
                grad,
            })
        };
    }
    with_terms!(kl, ce, pow, go, [0.0; LANES])
}
