//! Runs an objective over a call's rows: long rows one at a time (`long.rs`), short ones in
//! blocks of `LANES` (`small.rs`), in parallel over rows, at one SIMD level for the whole call;
//! and, for the Hinton objective, checks the call's inputs and reduces the rows' losses.

use ndarray::{ArrayView1, ArrayView2};

use super::check::{
    check_class_weight_len, check_labels, check_logits, check_out_len, check_row_len,
    check_same_shape,
};
use super::chunk::LANES;
use super::float::Float;
use super::label::{ClassWeights, LabelTerms};
use super::long::LongRow;
use super::objective::hinton::{Hinton, Weights, NO_KL};
use super::objective::Objective;
use super::out::{self, Out};
use super::reduce::{reduce, Divisors, Normalizer, Parts, Reduce, Reduction, Terms};
use super::scratch::{row_of, Scratch};
use super::simd::{dispatch_at, Simd};
use super::small::{scratch_cols, transpose_row, SmallBlock, SMALL_CLASSES};
use crate::error::KdError;
use crate::parallel::{for_each_block, for_each_row};
use crate::with_hinton_terms;

/// Gradients at least this large are written with non-temporal stores: they cannot stay in a
/// core's cache anyway, and plain stores would first read every line they overwrite.
pub const STREAM_MIN_BYTES: usize = 8 << 20;
/// ... if their rows are at least this long. Short rows end in lines that the next row shares,
/// and streaming them was slower than plain stores: 1 thread, loss + gradient, 4.0 against 8.6
/// ns/element at (200000, 50), 1.5 against 2.7 at (40000, 250), 1.3 against 1.7 at
/// (10000, 1000); from (2500, 4001) on, streaming was as fast or faster.
const STREAM_MIN_ROW_BYTES: usize = 4096;

/// The rows of one call: logits (the teacher is the student's view when the objective does not
/// read it), labels, which rows count (`None`: all), and the level to run at.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a, T> {
    pub s: ArrayView2<'a, T>,
    pub t: ArrayView2<'a, T>,
    pub labels: Option<ArrayView1<'a, i64>>,
    pub counted: Option<&'a [bool]>,
    /// Class weights and label smoothing of the cross-entropy (`None`: the plain one).
    pub ce: Option<LabelTerms<'a>>,
    pub level: Simd,
}

impl<T: Float> Rows<'_, T> {
    /// Whether row `i` is left out.
    #[inline]
    fn skips(&self, i: usize) -> bool {
        self.counted.is_some_and(|c| !c[i])
    }

    /// Row `i`'s label, if it has one that counts. Checked by `check_labels`: 0 <= y < c.
    #[inline]
    fn label(&self, i: usize) -> Option<usize> {
        match &self.labels {
            Some(l) if !self.skips(i) => Some(l[i] as usize),
            _ => None,
        }
    }

    /// Row `i`'s terms from the objective's (its plain cross-entropy), through `LabelTerms`.
    #[inline]
    fn weighed(&self, i: usize, terms: Terms) -> Terms {
        match (self.ce, self.label(i)) {
            (Some(ce), Some(y)) => ce.row(i, terms, self.s.row(i), y),
            _ => terms,
        }
    }
}

/// Runs `obj` over every row of `rows`, writing each row's terms into `partials` and its
/// gradient (or output) into `grad` when given. Rows that do not count get terms 0 and a zero
/// gradient. Inputs are checked already.
pub(crate) fn drive<T: Float, O: Objective<T>>(
    obj: O,
    rows: Rows<'_, T>,
    partials: &mut [Terms],
    grad: Option<Out<'_, T>>,
) -> Result<(), KdError> {
    let c = rows.s.ncols();
    // Whether to write the gradient with non-temporal stores (too large to stay in cache).
    // Not when label smoothing reads each row back (`LabelTerms::smooth_row`): it would come
    // back from memory.
    let stream = grad.as_ref().is_some_and(|g| {
        g.len() * std::mem::size_of::<T>() >= STREAM_MIN_BYTES
            && c * std::mem::size_of::<T>() >= STREAM_MIN_ROW_BYTES
    }) && !rows.ce.is_some_and(|ce| ce.smooths());
    if c <= SMALL_CLASSES {
        return drive_small(obj, rows, partials, grad);
    }
    let Rows { s, t, level, .. } = rows;
    let n_rows = s.nrows();
    let (grad, ready) = grad.map(Out::split).unzip();
    for_each_row(c, partials, grad, |scratch: &mut Scratch<T>, i, p, g| {
        if rows.skips(i) {
            if let Some(g) = g {
                out::zero(g);
            }
            *p = [0.0; 2];
            return;
        }
        // SAFETY: `g` is a row of the memory `ready` came with.
        let g = g.zip(ready).map(|(g, r)| unsafe { r.row(g) });
        let s_row = row_of(s, i, &mut scratch.a);
        let t_row = if O::TEACHER {
            row_of(t, i, &mut scratch.b)
        } else {
            s_row
        };
        let next = (i + 1 < n_rows)
            .then(|| {
                let ns = s.row(i + 1).to_slice()?;
                let nt = if O::TEACHER {
                    t.row(i + 1).to_slice()?
                } else {
                    ns
                };
                Some((ns, nt))
            })
            .flatten();
        // The cross-entropy's weight in the gradient, before the row's factors.
        let ce_grad = obj.label_weight();
        let weighed = match rows.ce {
            Some(ce) => {
                let (coef, label) = ce.factors(i);
                obj.weighed(coef, label)
            }
            None => obj,
        };
        let mut g = g;
        let terms = dispatch_at(
            level,
            LongRow {
                obj: weighed,
                s: s_row,
                t: t_row,
                label: rows.label(i),
                grad: g.as_deref_mut(),
                stream,
                keep: &mut scratch.keep,
                next,
            },
        );
        if let (Some(ce), Some(g), Some(w)) = (rows.ce, g, ce_grad) {
            ce.smooth_row(w, g);
        }
        *p = rows.weighed(i, terms);
    })
}

/// Rows of few classes, `LANES` at a time: transposed into columns, run by `SmallBlock`, and
/// transposed back.
fn drive_small<T: Float, O: Objective<T>>(
    obj: O,
    rows: Rows<'_, T>,
    partials: &mut [Terms],
    grad: Option<Out<'_, T>>,
) -> Result<(), KdError> {
    let Rows { s, t, level, .. } = rows;
    let c = s.ncols();
    // The cross-entropy's weight in the gradient, before each row's factors.
    let label_weight = obj.label_weight();
    // Rows are written whole from the columns below, fresh or not.
    let grad = grad.map(|g| g.split().0);
    for_each_block(
        LANES,
        c,
        partials,
        grad,
        |scratch: &mut Scratch<T>, r0, ps, mut g| {
            let n = ps.len();
            let cols = &mut scratch.cols;
            if cols.len() < scratch_cols(c) {
                cols.resize(scratch_cols(c), [T::ZERO; LANES]);
            }
            let (s_cols, rest) = cols.split_at_mut(c);
            let (t_cols, rest) = rest.split_at_mut(c);
            let (g_cols, keep) = rest.split_at_mut(c);
            let mut label = [None; LANES];
            let mut s_y = [T::ZERO; LANES];
            let mut ce_factors = [(1.0, 1.0); LANES];
            for k in 0..LANES {
                if k >= n {
                    for j in 0..c {
                        s_cols[j][k] = T::ZERO;
                        t_cols[j][k] = T::ZERO;
                    }
                    continue;
                }
                transpose_row(s, r0 + k, s_cols, k);
                if O::TEACHER {
                    transpose_row(t, r0 + k, t_cols, k);
                }
                label[k] = rows.label(r0 + k);
                if let Some(y) = label[k] {
                    s_y[k] = s_cols[y][k];
                }
                if let Some(ce) = rows.ce {
                    ce_factors[k] = ce.factors(r0 + k);
                }
            }
            let losses = dispatch_at(
                level,
                SmallBlock {
                    obj,
                    s: s_cols,
                    t: t_cols,
                    s_y,
                    ce_factors: rows.ce.map(|_| ce_factors),
                    keep,
                    grad: g.is_some().then_some(&mut *g_cols),
                },
            );
            for k in 0..n {
                let ignored = rows.skips(r0 + k);
                ps[k] = if ignored {
                    [0.0; 2]
                } else {
                    rows.weighed(r0 + k, losses[k])
                };
                if let Some(g) = g.as_deref_mut() {
                    let row = &mut g[k * c..(k + 1) * c];
                    if ignored {
                        out::zero(row);
                        continue;
                    }
                    match (rows.ce.filter(|ce| ce.smooths()), label_weight) {
                        (Some(ce), Some(w)) => {
                            for (j, (v, col)) in row.iter_mut().zip(g_cols.iter()).enumerate() {
                                v.write(col[k] + T::from_f64(ce.smooth_grad(w, j)));
                            }
                        }
                        _ => {
                            for (v, col) in row.iter_mut().zip(g_cols.iter()) {
                                v.write(col[k]);
                            }
                        }
                    }
                    if let (Some(w), Some(y)) = (label_weight, label[k]) {
                        let smooth = match rows.ce.filter(|ce| ce.smooths()) {
                            Some(ce) => ce.smooth_grad(w, y),
                            None => 0.0,
                        };
                        row[y].write(g_cols[y][k] + T::from_f64(smooth - w * ce_factors[k].1));
                    }
                }
            }
        },
    )
}

/// What the rows compute: loss weights of the two terms (a zero weight switches a term off),
/// the temperature, and how rows are combined.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    /// The name of the first logits argument, for error messages.
    pub subject: &'static str,
    /// The KL term's direction (`hinton::FORWARD` or `REVERSE`), when its weight is not 0.
    pub kl: u8,
    pub kl_weight: f64,
    pub ce_weight: f64,
    pub temperature: f64,
    /// The cross-entropy's label smoothing `ε`, in `[0, 1]`.
    pub label_smoothing: f64,
    pub reduction: Reduction,
    pub ignore_index: Option<i64>,
    pub level: Simd,
}

/// Which rows of a call count, beyond their labels, how their cross-entropies weigh, and what
/// the sums are divided by.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection<'a> {
    /// Rows whose entry is false do not count (`None`: every row may count).
    pub mask: Option<ArrayView1<'a, bool>>,
    /// One weight per class: a row's cross-entropy (and its part of the gradient) weighs its
    /// label's, and `"mean"` divides by their sum over the counted rows (`None`: all 1).
    pub class_weight: Option<&'a ClassWeights>,
    /// Divides the sums instead of the reduction's own divisors (`"mean"` and `"sum"` only).
    pub normalizer: Option<Normalizer>,
}

/// Which rows count: those the mask keeps whose label is not `ignore_index`; `None` when all
/// of them do (no mask, and `ignored`, the number of labels at `ignore_index`, is 0).
fn counted_rows(
    n_rows: usize,
    labels: Option<&ArrayView1<i64>>,
    ignore_index: Option<i64>,
    ignored: usize,
    mask: Option<&ArrayView1<bool>>,
) -> Option<Vec<bool>> {
    if ignored == 0 && mask.is_none() {
        return None;
    }
    let ignored = |i: usize| labels.is_some_and(|l| Some(l[i]) == ignore_index);
    let masked = |i: usize| mask.is_some_and(|m| !m[i]);
    Some((0..n_rows).map(|i| !ignored(i) && !masked(i)).collect())
}

/// Checks a Hinton call's inputs, runs it, and reduces the rows' terms.
pub(crate) fn run<T: Float>(
    job: Job,
    s: ArrayView2<T>,
    t: ArrayView2<T>,
    labels: Option<ArrayView1<i64>>,
    selection: Selection<'_>,
    grad: Option<Out<'_, T>>,
) -> Result<Parts<T>, KdError> {
    let (n_rows, c) = check_logits(&s, job.subject)?;
    check_same_shape(&s, &t)?;
    let kl = if job.kl_weight != 0.0 { job.kl } else { NO_KL };
    let ce = job.ce_weight != 0.0;
    if ce && labels.is_none() {
        return Err(KdError::value(
            "labels are required unless alpha == 1 (pure distillation)",
        ));
    }
    let ignored = match &labels {
        Some(l) => check_labels(l, n_rows, c, job.ignore_index)?,
        None => 0,
    };
    if let Some(m) = &selection.mask {
        check_row_len("mask", m.len(), n_rows)?;
    }
    let class_weight = selection.class_weight.map(ClassWeights::as_slice);
    if let Some(w) = class_weight {
        check_class_weight_len(w.len(), c)?;
    }
    // The sum of the class weights (the classes' number without them).
    let weight_total = selection.class_weight.map_or(c as f64, ClassWeights::total);
    if let Some(g) = &grad {
        check_out_len(g.len(), n_rows, c)?;
    }
    if selection.normalizer.is_some() && job.reduction == Reduction::None {
        return Err(KdError::value(
            "normalizer must be None with reduction='none'",
        ));
    }
    let counted = counted_rows(
        n_rows,
        labels.as_ref(),
        job.ignore_index,
        ignored,
        selection.mask.as_ref(),
    );
    let count = counted
        .as_ref()
        .map_or(n_rows, |c| c.iter().filter(|&&c| c).count());
    // Each counted row's label weight (the class weight of its label; 0 for the other rows).
    let ce_weights: Option<Vec<f64>> = match (class_weight, &labels) {
        (Some(w), Some(l)) => Some(
            (0..n_rows)
                .map(|i| match &counted {
                    Some(c) if !c[i] => 0.0,
                    // Counted rows' labels are checked: 0 <= y < c.
                    _ => w[l[i] as usize],
                })
                .collect(),
        ),
        _ => None,
    };
    // Without class weights each counted row's label weight is 1; without labels there is none.
    let weight_sum = match (&ce_weights, &labels) {
        (Some(w), _) => w.iter().sum(),
        (None, Some(_)) => count as f64,
        (None, None) => 0.0,
    };
    let divisors = Divisors::new(job.reduction, selection.normalizer, count, weight_sum);
    let temperature = job.temperature;
    // x = T·k exactly for small integers k: then e^z1 = (e^zs)^k, a multiply instead of an exp.
    let pow = if (1.0..=4.0).contains(&temperature) && temperature.fract() == 0.0 {
        temperature as u32
    } else {
        0
    };
    let weights = Weights {
        temperature,
        kl_weight: job.kl_weight,
        ce_weight: job.ce_weight,
        scales: divisors.scales(),
    };
    let rows = Rows {
        s,
        // Without KL the teacher is never read.
        t: if kl != NO_KL { t } else { s },
        labels,
        counted: counted.as_deref(),
        ce: if ce {
            LabelTerms::new(
                job.label_smoothing,
                class_weight,
                ce_weights.as_deref(),
                c,
                weight_total,
                job.level,
            )
        } else {
            None
        },
        level: job.level,
    };
    let mut partials = vec![[0.0f64; 2]; n_rows];
    macro_rules! go {
        ($kl:literal, $ce:literal, $pow:literal) => {
            drive(
                Hinton::<T, $kl, $ce, $pow>::new(weights),
                rows,
                &mut partials,
                grad,
            )?
        };
    }
    with_hinton_terms!(kl, ce, pow, go, {
        if let Some(g) = grad {
            g.zero();
        }
    });
    Ok(reduce(
        Reduce {
            reduction: job.reduction,
            divisors,
            weights: [job.kl_weight, job.ce_weight],
            counted: counted.as_deref(),
            count,
            weight_sum,
            labelled: labels.is_some(),
            label_weights: ce_weights.as_deref(),
        },
        &partials,
    ))
}
