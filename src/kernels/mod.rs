//! Pure-Rust kernels on ndarray views. Nothing in here knows about Python.
//!
//! Inputs are 2-D: one row per sample, classes along the last axis. Every public function
//! validates what it is given and reports problems as `KdError`; none of them panics on user
//! input.

pub mod distill;
pub mod float;
pub mod loss;
pub mod probe;
pub mod row;
pub mod simd;
pub mod small;
pub mod softmax;

use ndarray::{ArrayView1, ArrayView2};

use crate::error::KdError;

pub use float::Float;
pub use loss::{cross_entropy, distillation, kl_divergence, Distillation, Loss};
pub use simd::Simd;
pub use softmax::softmax_into;

/// How per-row losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Sum over the rows that count, divided by their number (0 when none count).
    Mean,
    /// Sum over the rows that count.
    Sum,
    /// One value per row; rows that do not count are 0.
    None,
}

impl Reduction {
    pub fn parse(name: &str) -> Result<Reduction, KdError> {
        match name {
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            "none" => Ok(Reduction::None),
            _ => Err(KdError::value(format!(
                "reduction must be 'mean', 'sum' or 'none', got {name:?}"
            ))),
        }
    }
}

pub(crate) fn check_temperature(t: f64) -> Result<(), KdError> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(KdError::value(format!(
            "temperature must be a finite number > 0, got {t}"
        )))
    }
}

pub(crate) fn check_alpha(a: f64) -> Result<(), KdError> {
    if (0.0..=1.0).contains(&a) {
        Ok(())
    } else {
        Err(KdError::value(format!("alpha must be in [0, 1], got {a}")))
    }
}

/// `(rows, classes)` of a logits view, refusing zero classes.
pub(crate) fn check_logits<T>(x: &ArrayView2<T>, name: &str) -> Result<(usize, usize), KdError> {
    let (rows, c) = x.dim();
    if c == 0 {
        return Err(KdError::value(format!(
            "{name} must have at least one class (last axis of length >= 1), got 0"
        )));
    }
    Ok((rows, c))
}

pub(crate) fn check_same_shape<T>(s: &ArrayView2<T>, t: &ArrayView2<T>) -> Result<(), KdError> {
    if s.dim() != t.dim() {
        return Err(KdError::value(format!(
            "student_logits and teacher_logits must have the same shape, got {:?} and {:?}",
            s.dim(),
            t.dim()
        )));
    }
    Ok(())
}

/// Checks every label against `[0, classes)` or `ignore_index` and returns how many rows
/// count (those whose label is not `ignore_index`).
pub(crate) fn check_labels(
    labels: &ArrayView1<i64>,
    rows: usize,
    classes: usize,
    ignore_index: i64,
) -> Result<usize, KdError> {
    if labels.len() != rows {
        return Err(KdError::value(format!(
            "labels must have one entry per row ({rows}), got {}",
            labels.len()
        )));
    }
    let mut counted = 0;
    for (i, &y) in labels.iter().enumerate() {
        if y == ignore_index {
            continue;
        }
        if y < 0 || y as u64 >= classes as u64 {
            return Err(KdError::value(format!(
                "labels must be in [0, {classes}) or equal ignore_index ({ignore_index}), \
                 got {y} at flat index {i}"
            )));
        }
        counted += 1;
    }
    Ok(counted)
}
