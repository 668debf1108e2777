//! The row drivers: check a call's inputs, then run the fused kernel over its rows, long rows
//! one at a time and short ones in blocks of `LANES`, and reduce the rows' losses.

use ndarray::{ArrayView1, ArrayView2};

use super::check::{check_labels, check_logits, check_out_len, check_same_shape};
use super::chunk::LANES;
use super::distill::{GradWeights, RowParams};
use super::float::Float;
use super::fused::{fused_row, small_block, RowCtx};
use super::reduce::{reduce, Loss, Reduction};
use super::scratch::{row_of, Scratch};
use super::small::{transpose_row, SMALL_CLASSES};
use crate::error::KdError;
use crate::parallel::{for_each_block, for_each_row};

/// Gradients at least this large are written with non-temporal stores: they cannot stay in a
/// core's cache anyway, and plain stores would first read every line they overwrite.
pub const STREAM_MIN_BYTES: usize = 8 << 20;
/// ... if their rows are at least this long. Short rows end in lines that the next row shares,
/// and streaming them was slower than plain stores: 1 thread, loss + gradient, 4.0 against 8.6
/// ns/element at (200000, 50), 1.5 against 2.7 at (40000, 250), 1.3 against 1.7 at
/// (10000, 1000); from (2500, 4001) on, streaming was as fast or faster.
const STREAM_MIN_ROW_BYTES: usize = 4096;

/// What the rows compute: loss weights of the two terms (a zero weight switches a term off),
/// the temperature, and how rows are combined.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    /// The name of the first logits argument, for error messages.
    pub subject: &'static str,
    pub kl_weight: f64,
    pub ce_weight: f64,
    pub temperature: f64,
    pub reduction: Reduction,
    pub ignore_index: i64,
}

/// Rows of few classes, `LANES` at a time: transposed into columns, run by `small_block`,
/// and transposed back.
#[allow(clippy::too_many_arguments)]
fn run_small<T: Float>(
    kl: bool,
    ce: bool,
    pow: u32,
    ctx: RowCtx,
    ignore_index: i64,
    s: ArrayView2<T>,
    t: ArrayView2<T>,
    labels: Option<ArrayView1<i64>>,
    partials: &mut [f64],
    grad: Option<&mut [T]>,
) -> Result<(), KdError> {
    let c = s.ncols();
    for_each_block(
        LANES,
        c,
        partials,
        grad,
        |scratch: &mut Scratch<T>, r0, ps, mut g| {
            let n = ps.len();
            let cols = &mut scratch.cols;
            if cols.len() < 6 * c {
                cols.resize(6 * c, [T::ZERO; LANES]);
            }
            let (s_cols, rest) = cols.split_at_mut(c);
            let (t_cols, rest) = rest.split_at_mut(c);
            let (keep, rest) = rest.split_at_mut(3 * c);
            let g_cols = &mut rest[..c];
            let mut label = [None; LANES];
            let mut s_y = [T::ZERO; LANES];
            for k in 0..LANES {
                if k >= n {
                    for j in 0..c {
                        s_cols[j][k] = T::ZERO;
                        t_cols[j][k] = T::ZERO;
                    }
                    continue;
                }
                transpose_row(s, r0 + k, s_cols, k);
                if kl {
                    transpose_row(t, r0 + k, t_cols, k);
                }
                // Checked by `check_labels`: 0 <= y < c unless ignored.
                label[k] = labels.as_ref().map(|l| l[r0 + k]);
                if let Some(y) = label[k].filter(|&y| y != ignore_index) {
                    s_y[k] = s_cols[y as usize][k];
                }
            }
            let losses = small_block(
                kl,
                ce,
                pow,
                s_cols,
                t_cols,
                s_y,
                ctx,
                keep,
                g.is_some().then_some(&mut *g_cols),
            );
            for k in 0..n {
                let ignored = label[k] == Some(ignore_index);
                ps[k] = if ignored { 0.0 } else { losses[k] };
                if let Some(g) = g.as_deref_mut() {
                    let row = &mut g[k * c..(k + 1) * c];
                    if ignored {
                        row.fill(T::ZERO);
                        continue;
                    }
                    for (v, col) in row.iter_mut().zip(g_cols.iter()) {
                        *v = col[k];
                    }
                    if let (true, Some(y)) = (ce, label[k]) {
                        let y = y as usize;
                        row[y] = row[y] - T::from_f64(ctx.grad.ce_weight);
                    }
                }
            }
        },
    )
}

pub(crate) fn run<T: Float>(
    job: Job,
    s: ArrayView2<T>,
    t: ArrayView2<T>,
    labels: Option<ArrayView1<i64>>,
    grad: Option<&mut [T]>,
) -> Result<Loss<T>, KdError> {
    let (rows, c) = check_logits(&s, job.subject)?;
    check_same_shape(&s, &t)?;
    let kl = job.kl_weight != 0.0;
    let ce = job.ce_weight != 0.0;
    if ce && labels.is_none() {
        return Err(KdError::value(
            "labels are required unless alpha == 1 (pure distillation)",
        ));
    }
    let counted = match &labels {
        Some(l) => check_labels(l, rows, c, job.ignore_index)?,
        None => rows,
    };
    if let Some(g) = &grad {
        check_out_len(g.len(), rows, c)?;
    }
    let scale = match job.reduction {
        Reduction::Mean if counted > 0 => 1.0 / counted as f64,
        _ => 1.0,
    };
    let temperature = job.temperature;
    // x = T·k exactly for small integers k: then e^z1 = (e^zs)^k, a multiply instead of an exp.
    let pow = if (1.0..=4.0).contains(&temperature) && temperature.fract() == 0.0 {
        temperature as u32
    } else {
        0
    };
    let ctx = RowCtx {
        params: RowParams {
            inv_t: 1.0 / temperature,
        },
        kl_weight: job.kl_weight,
        ce_weight: job.ce_weight,
        grad: GradWeights {
            // d/ds of w·KL(p_t || softmax(s/T)) is (w/T)·(softmax(s/T) − p_t).
            kl_weight: job.kl_weight / temperature * scale,
            ce_weight: job.ce_weight * scale,
        },
        stream: grad.as_ref().is_some_and(|g| {
            std::mem::size_of_val(*g) >= STREAM_MIN_BYTES
                && c * std::mem::size_of::<T>() >= STREAM_MIN_ROW_BYTES
        }),
    };
    let ignore_index = job.ignore_index;
    let mut partials = vec![0.0f64; rows];
    if c <= SMALL_CLASSES {
        run_small(
            kl,
            ce,
            pow,
            ctx,
            ignore_index,
            s,
            t,
            labels,
            &mut partials,
            grad,
        )?;
        return Ok(reduce(job.reduction, partials, counted));
    }
    for_each_row(
        c,
        &mut partials,
        grad,
        |scratch: &mut Scratch<T>, i, p, g| {
            let label = labels.as_ref().map(|l| l[i]);
            if label == Some(ignore_index) {
                if let Some(g) = g {
                    g.fill(T::ZERO);
                }
                *p = 0.0;
                return;
            }
            let s_row = row_of(s, i, &mut scratch.a);
            let t_row = if kl {
                row_of(t, i, &mut scratch.b)
            } else {
                s_row
            };
            // Checked by `check_labels`: 0 <= y < c.
            let label = label.map(|y| y as usize);
            let next = (i + 1 < rows)
                .then(|| {
                    let ns = s.row(i + 1).to_slice()?;
                    let nt = if kl { t.row(i + 1).to_slice()? } else { ns };
                    Some((ns, nt))
                })
                .flatten();
            *p = fused_row(
                kl,
                ce,
                pow,
                s_row,
                t_row,
                label,
                ctx,
                g,
                &mut scratch.keep,
                next,
            );
        },
    )?;
    Ok(reduce(job.reduction, partials, counted))
}
