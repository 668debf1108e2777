//! The checks every kernel entry point makes on what it is given, each with one message.

use ndarray::{ArrayView1, ArrayView2};

use crate::error::KdError;

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

/// Refuses an output buffer that does not hold `rows * classes` elements.
pub(crate) fn check_out_len(len: usize, rows: usize, classes: usize) -> Result<(), KdError> {
    if len != rows * classes {
        return Err(KdError::value(format!(
            "out must hold {} elements, got {len}",
            rows * classes
        )));
    }
    Ok(())
}
