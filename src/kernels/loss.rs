//! The row drivers: the distillation loss (with or without its gradient), KL divergence and
//! cross-entropy, all through the one fused row kernel in `distill.rs`.

use ndarray::{ArrayView1, ArrayView2};

use super::distill::{keep_len, row_grad, row_stats, GradWeights, RowParams};
use super::float::{Float, Level};
use super::row::{Chunk, LANES};
use super::simd::{dispatch, Kernel};
use super::small::{transpose_row, SmallBlock, SMALL_CLASSES};
use super::{
    check_alpha, check_labels, check_logits, check_same_shape, check_temperature, Reduction,
};
use crate::error::KdError;
use crate::parallel::{for_each_block, for_each_row, row_of};

/// Gradients at least this large are written with non-temporal stores: they cannot stay in a
/// core's cache anyway, and plain stores would first read every line they overwrite.
pub const STREAM_MIN_BYTES: usize = 8 << 20;
/// ... if their rows are at least this long. Short rows end in lines that the next row shares,
/// and streaming them was slower than plain stores: 1 thread, loss + gradient, 4.0 against 8.6
/// ns/element at (200000, 50), 1.5 against 2.7 at (40000, 250), 1.3 against 1.7 at
/// (10000, 1000); from (2500, 4001) on, streaming was as fast or faster.
const STREAM_MIN_ROW_BYTES: usize = 4096;

/// The distillation loss `alpha·T²·KL(softmax(t/T) || softmax(s/T)) + (1 − alpha)·CE(s, y)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Distillation {
    pub temperature: f64,
    pub alpha: f64,
    pub reduction: Reduction,
    pub ignore_index: i64,
}

impl Distillation {
    pub fn new(
        temperature: f64,
        alpha: f64,
        reduction: Reduction,
        ignore_index: i64,
    ) -> Result<Self, KdError> {
        check_temperature(temperature)?;
        check_alpha(alpha)?;
        Ok(Distillation {
            temperature,
            alpha,
            reduction,
            ignore_index,
        })
    }
}

/// A reduced loss: a scalar for "mean" and "sum", one value per row for "none".
#[derive(Clone, Debug, PartialEq)]
pub enum Loss<T> {
    Scalar(f64),
    Rows(Vec<T>),
}

/// What the rows compute: loss weights of the two terms (a zero weight switches a term off),
/// the temperature, and how rows are combined.
#[derive(Clone, Copy, Debug)]
struct Job {
    /// The name of the first logits argument, for error messages.
    subject: &'static str,
    kl_weight: f64,
    ce_weight: f64,
    temperature: f64,
    reduction: Reduction,
    ignore_index: i64,
}

/// Per-row constants, shared read-only by every row of a call.
#[derive(Clone, Copy, Debug)]
struct RowCtx {
    params: RowParams,
    kl_weight: f64,
    ce_weight: f64,
    grad: GradWeights,
    /// Write the gradient with non-temporal stores (it is too large to stay in cache).
    stream: bool,
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
fn fused_row<T: Float>(
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
fn small_block<T: Float>(
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
    for_each_block(LANES, c, partials, grad, |scratch, r0, ps, mut g| {
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
    })
}

fn run<T: Float>(
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
        if g.len() != rows * c {
            return Err(KdError::value(format!(
                "out must hold {} elements, got {}",
                rows * c,
                g.len()
            )));
        }
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
    for_each_row(c, &mut partials, grad, |scratch, i, p, g| {
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
    })?;
    Ok(reduce(job.reduction, partials, counted))
}

/// Combines per-row losses: in row order, whatever the thread count, so the result is bitwise
/// reproducible.
fn reduce<T: Float>(reduction: Reduction, partials: Vec<f64>, counted: usize) -> Loss<T> {
    match reduction {
        Reduction::None => Loss::Rows(partials.iter().map(|&v| T::from_f64(v)).collect()),
        Reduction::Sum => Loss::Scalar(partials.iter().sum()),
        Reduction::Mean if counted == 0 => Loss::Scalar(0.0),
        Reduction::Mean => Loss::Scalar(partials.iter().sum::<f64>() / counted as f64),
    }
}

/// The distillation loss of `student` against `teacher` (and `labels`, needed unless
/// `alpha == 1`), writing d(loss)/d(student) into `grad` (C-contiguous, student's shape) when
/// given.
pub fn distillation<T: Float>(
    cfg: &Distillation,
    student: ArrayView2<T>,
    teacher: ArrayView2<T>,
    labels: Option<ArrayView1<i64>>,
    grad: Option<&mut [T]>,
) -> Result<Loss<T>, KdError> {
    let t2 = cfg.temperature * cfg.temperature;
    let job = Job {
        subject: "student_logits",
        kl_weight: cfg.alpha * t2,
        ce_weight: 1.0 - cfg.alpha,
        temperature: cfg.temperature,
        reduction: cfg.reduction,
        ignore_index: cfg.ignore_index,
    };
    run(job, student, teacher, labels, grad)
}

/// `KL(softmax(teacher/T) || softmax(student/T))` per row, reduced (no T² factor).
pub fn kl_divergence<T: Float>(
    student: ArrayView2<T>,
    teacher: ArrayView2<T>,
    temperature: f64,
    reduction: Reduction,
) -> Result<Loss<T>, KdError> {
    check_temperature(temperature)?;
    let job = Job {
        subject: "student_logits",
        kl_weight: 1.0,
        ce_weight: 0.0,
        temperature,
        reduction,
        ignore_index: 0,
    };
    run(job, student, teacher, None, None)
}

/// Cross-entropy `logsumexp(x) − x[y]` per row, reduced; rows labelled `ignore_index` do not
/// count.
pub fn cross_entropy<T: Float>(
    logits: ArrayView2<T>,
    labels: ArrayView1<i64>,
    reduction: Reduction,
    ignore_index: i64,
) -> Result<Loss<T>, KdError> {
    let job = Job {
        subject: "logits",
        kl_weight: 0.0,
        ce_weight: 1.0,
        temperature: 1.0,
        reduction,
        ignore_index,
    };
    run(job, logits, logits, Some(labels), None)
}

#[cfg(test)]
mod tests {
    //! The fused kernels against a plain float64 implementation of the formulas, at every SIMD
    //! level this CPU has (on aarch64 that includes NEON).
    use super::*;
    use crate::kernels::simd::{self, Simd};
    use ndarray::{Array1, Array2};

    /// Row loss and gradient by the textbook formulas, in f64 with std's exp and ln.
    fn reference_row(
        s: &[f64],
        t: &[f64],
        y: Option<usize>,
        temp: f64,
        alpha: f64,
    ) -> (f64, Vec<f64>) {
        let log_softmax = |x: &[f64], temp: f64| -> Vec<f64> {
            let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: Vec<f64> = x.iter().map(|v| (v - m) / temp).collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            z.iter().map(|v| v - lse).collect()
        };
        let (ls, lt, l1) = (
            log_softmax(s, temp),
            log_softmax(t, temp),
            log_softmax(s, 1.0),
        );
        let mut loss = 0.0;
        let mut grad = vec![0.0; s.len()];
        if alpha > 0.0 {
            let kl: f64 = lt
                .iter()
                .zip(&ls)
                .filter(|(a, _)| a.exp() > 0.0)
                .map(|(a, b)| a.exp() * (a - b))
                .sum();
            loss += alpha * temp * temp * kl;
            for j in 0..s.len() {
                grad[j] += alpha * temp * (ls[j].exp() - lt[j].exp());
            }
        }
        if alpha < 1.0 {
            let y = y.expect("label");
            loss += (1.0 - alpha) * -l1[y];
            for j in 0..s.len() {
                grad[j] += (1.0 - alpha) * (l1[j].exp() - if j == y { 1.0 } else { 0.0 });
            }
        }
        (loss, grad)
    }

    /// A small deterministic generator (no dev-dependency needed).
    fn lcg(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn check<T: Float>(rows: usize, c: usize, temp: f64, alpha: f64, tol: f64, seed: u64) {
        let mut st = seed;
        let mut s = Array2::from_shape_fn((rows, c), |_| T::from_f64(4.0 * lcg(&mut st)));
        let mut t = Array2::from_shape_fn((rows, c), |_| T::from_f64(4.0 * lcg(&mut st)));
        // With two classes or more, the last is masked in both rows and never a label.
        let labelled = if c > 1 {
            s.column_mut(c - 1).fill(T::NEG_INFINITY);
            t.column_mut(c - 1).fill(T::NEG_INFINITY);
            c - 1
        } else {
            1
        };
        let labels = Array1::from_shape_fn(rows, |r| {
            if r % 5 == 3 {
                -100
            } else {
                ((r * 7) % labelled) as i64
            }
        });
        let cfg = Distillation::new(temp, alpha, Reduction::Sum, -100).unwrap();
        let mut grad = vec![T::ZERO; rows * c];
        let loss = distillation(
            &cfg,
            s.view(),
            t.view(),
            Some(labels.view()),
            Some(&mut grad),
        )
        .unwrap();
        let Loss::Scalar(loss) = loss else {
            panic!("scalar expected")
        };
        let mut want = 0.0;
        for r in 0..rows {
            let row = |x: &Array2<T>| x.row(r).iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
            let g = &grad[r * c..(r + 1) * c];
            if labels[r] == -100 {
                assert!(
                    g.iter().all(|v| v.to_f64() == 0.0),
                    "ignored row {r} has a gradient"
                );
                continue;
            }
            let (l, rg) = reference_row(&row(&s), &row(&t), Some(labels[r] as usize), temp, alpha);
            want += l;
            let scale = rg.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            for (j, (a, b)) in g.iter().zip(&rg).enumerate() {
                assert!(
                    (a.to_f64() - b).abs() <= tol * scale,
                    "grad[{r}, {j}] = {a:?}, want {b} (c={c}, T={temp}, alpha={alpha}, {})",
                    simd::active().name()
                );
            }
        }
        assert!(
            (loss - want).abs() <= tol * want.abs().max(1.0),
            "loss {loss}, want {want} (rows={rows}, c={c}, T={temp}, alpha={alpha}, {})",
            simd::active().name()
        );
    }

    #[test]
    fn fused_kernel_matches_the_formulas_at_every_level() {
        let best = simd::active();
        for level in Simd::available() {
            simd::set_active(level).unwrap();
            let mut seed = 1;
            for c in [1usize, 2, 7, 10, 24, 25, 100, 1000, 4099] {
                for &(temp, alpha) in &[
                    (1.0, 0.5),
                    (2.0, 0.5),
                    (0.7, 0.3),
                    (3.5, 0.8),
                    (2.0, 0.0),
                    (4.0, 1.0),
                ] {
                    seed += 1;
                    check::<f64>(37, c, temp, alpha, 1e-12, seed);
                    check::<f32>(37, c, temp, alpha, 2e-5, seed);
                }
            }
        }
        simd::set_active(best).unwrap();
    }
}
