//! Every check of user input, each written once with its one message. The kernels call them
//! on 2-D views; the binding layer calls the shape checks on the arrays' own shapes first, so
//! that messages name the shapes the caller passed.

use std::fmt::{self, Display};

use ndarray::{ArrayView1, ArrayView2};

use crate::error::KdError;

/// A shape written as Python writes a tuple: `(2, 3)`, `(5,)`, `()`.
pub struct PyShape<'a>(pub &'a [usize]);

impl Display for PyShape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("()"),
            [n] => write!(f, "({n},)"),
            [first, rest @ ..] => {
                write!(f, "({first}")?;
                for n in rest {
                    write!(f, ", {n}")?;
                }
                f.write_str(")")
            }
        }
    }
}

pub fn check_temperature(t: f64) -> Result<(), KdError> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(KdError::value(format!(
            "temperature must be a finite number > 0, got {t}"
        )))
    }
}

pub fn check_alpha(a: f64) -> Result<(), KdError> {
    if (0.0..=1.0).contains(&a) {
        Ok(())
    } else {
        Err(KdError::value(format!("alpha must be in [0, 1], got {a}")))
    }
}

/// A weight in `[0, 1]` (`beta`, `skew`, `label_smoothing`), named `name`.
pub fn check_fraction(v: f64, name: &str) -> Result<(), KdError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(KdError::value(format!("{name} must be in [0, 1], got {v}")))
    }
}

/// Class weights must be finite and `>= 0`.
pub fn check_class_weight(w: &[f64]) -> Result<(), KdError> {
    match w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        Some(v) => Err(KdError::value(format!(
            "class_weight must hold finite numbers >= 0, got {v}"
        ))),
        None => Ok(()),
    }
}

/// Class weights must have one entry per class.
pub fn check_class_weight_len(len: usize, classes: usize) -> Result<(), KdError> {
    if len != classes {
        return Err(KdError::value(format!(
            "class_weight must have one entry per class ({classes}), got {len}"
        )));
    }
    Ok(())
}

/// A divisor of a loss's sums (`normalizer`, or one of its pair, named `name`).
pub fn check_normalizer(n: f64, name: &str) -> Result<(), KdError> {
    if n.is_finite() && n > 0.0 {
        Ok(())
    } else {
        Err(KdError::value(format!(
            "{name} must be a finite number > 0, got {n}"
        )))
    }
}

/// `name`, an array of one entry per row, must have `rows` entries.
pub fn check_row_len(name: &str, len: usize, rows: usize) -> Result<(), KdError> {
    if len != rows {
        return Err(KdError::value(format!(
            "{name} must have one entry per row ({rows}), got {len}"
        )));
    }
    Ok(())
}

/// `name`, an array of one entry per row, must have the shape of the logits' rows,
/// `logits[:-1]`.
pub fn check_row_shape(name: &str, shape: &[usize], logits: &[usize]) -> Result<(), KdError> {
    let rows = &logits[..logits.len().saturating_sub(1)];
    if shape != rows {
        return Err(KdError::value(format!(
            "{name} must have shape {} (logits.shape[:-1]), got shape {}",
            PyShape(rows),
            PyShape(shape)
        )));
    }
    Ok(())
}

/// `(rows, classes)` of logits of `shape` (classes along the last axis), refusing 0-d shapes
/// and zero classes.
pub fn check_logits_shape(shape: &[usize], name: &str) -> Result<(usize, usize), KdError> {
    let Some((&c, lead)) = shape.split_last() else {
        return Err(KdError::value(format!(
            "{name} must have at least one dimension (classes along the last axis), got a 0-d array"
        )));
    };
    if c == 0 {
        return Err(KdError::value(format!(
            "{name} must have at least one class, got shape {}",
            PyShape(shape)
        )));
    }
    let rows = lead
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| KdError::value(format!("{name} has too many rows: {}", PyShape(shape))))?;
    Ok((rows, c))
}

/// `(rows, classes)` of a 2-D logits view, refusing zero classes.
pub fn check_logits<T>(x: &ArrayView2<T>, name: &str) -> Result<(usize, usize), KdError> {
    check_logits_shape(x.shape(), name)
}

/// Student and teacher logits must have one shape.
pub fn check_pair_shapes(student: &[usize], teacher: &[usize]) -> Result<(), KdError> {
    if student != teacher {
        return Err(KdError::value(format!(
            "student_logits and teacher_logits must have the same shape, got {} and {}",
            PyShape(student),
            PyShape(teacher)
        )));
    }
    Ok(())
}

pub fn check_same_shape<T>(s: &ArrayView2<T>, t: &ArrayView2<T>) -> Result<(), KdError> {
    check_pair_shapes(s.shape(), t.shape())
}

/// Labels must have the shape of the logits' rows, `logits[:-1]`.
pub fn check_labels_shape(labels: &[usize], logits: &[usize]) -> Result<(), KdError> {
    check_row_shape("labels", labels, logits)
}

/// Refuses an output buffer that does not hold `rows * classes` elements.
pub fn check_out_len(len: usize, rows: usize, classes: usize) -> Result<(), KdError> {
    if len != rows * classes {
        return Err(KdError::value(format!(
            "out must hold {} elements, got {len}",
            rows * classes
        )));
    }
    Ok(())
}

/// The message for a label outside `[0, classes)` that is not `ignore_index` (when there is
/// one).
pub fn label_range_error(classes: usize, ignore_index: Option<i64>, got: impl Display) -> KdError {
    match ignore_index {
        Some(ignore_index) => KdError::value(format!(
            "labels must be in [0, {classes}) or equal ignore_index ({ignore_index}), got {got}"
        )),
        None => KdError::value(format!("labels must be in [0, {classes}), got {got}")),
    }
}

/// Where a bad label is, for `label_range_error`.
fn at_flat_index(y: impl Display, i: usize) -> String {
    format!("{y} at flat index {i}")
}

/// An `ignore_index` given as a class index, as the kernels' int64 label value.
pub fn check_ignore_index(index: usize) -> Result<i64, KdError> {
    i64::try_from(index).map_err(|_| {
        KdError::value(format!(
            "ignore_index must be at most {}, got {index}",
            i64::MAX
        ))
    })
}

/// Class indices as the kernels' int64 labels. An index beyond int64 is beyond any array's
/// classes, so it is refused here as out of range; every other label is checked by
/// `check_labels`.
pub fn label_indices(
    labels: &[usize],
    classes: usize,
    ignore_index: Option<i64>,
) -> Result<Vec<i64>, KdError> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            i64::try_from(y)
                .map_err(|_| label_range_error(classes, ignore_index, at_flat_index(y, i)))
        })
        .collect()
}

/// Checks every label against `[0, classes)` or `ignore_index`, and returns how many are
/// `ignore_index`.
pub fn check_labels(
    labels: &ArrayView1<i64>,
    rows: usize,
    classes: usize,
    ignore_index: Option<i64>,
) -> Result<usize, KdError> {
    check_row_len("labels", labels.len(), rows)?;
    let mut ignored = 0;
    for (i, &y) in labels.iter().enumerate() {
        if Some(y) == ignore_index {
            ignored += 1;
            continue;
        }
        if y < 0 || y as u64 >= classes as u64 {
            return Err(label_range_error(
                classes,
                ignore_index,
                at_flat_index(y, i),
            ));
        }
    }
    Ok(ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_read_as_python_tuples() {
        assert_eq!(PyShape(&[]).to_string(), "()");
        assert_eq!(PyShape(&[5]).to_string(), "(5,)");
        assert_eq!(PyShape(&[2, 3, 4]).to_string(), "(2, 3, 4)");
    }

    #[test]
    fn logits_shapes() {
        assert_eq!(check_logits_shape(&[2, 3, 4], "x"), Ok((6, 4)));
        assert_eq!(check_logits_shape(&[4], "x"), Ok((1, 4)));
        assert!(check_logits_shape(&[], "x").is_err());
        assert!(check_logits_shape(&[3, 0], "x").is_err());
        assert!(check_logits_shape(&[usize::MAX, 2, 1], "x").is_err());
    }
}
