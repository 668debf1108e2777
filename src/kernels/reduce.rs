//! How per-row losses become the returned loss.

use super::float::Float;
use crate::error::KdError;

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
    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
            Reduction::None => "none",
        }
    }

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

/// A reduced loss: a scalar for "mean" and "sum", one value per row for "none".
#[derive(Clone, Debug, PartialEq)]
pub enum Loss<T> {
    Scalar(f64),
    Rows(Vec<T>),
}

/// Combines per-row losses: in row order, whatever the thread count, so the result is bitwise
/// reproducible.
pub(crate) fn reduce<T: Float>(
    reduction: Reduction,
    partials: Vec<f64>,
    counted: usize,
) -> Loss<T> {
    match reduction {
        Reduction::None => Loss::Rows(partials.iter().map(|&v| T::from_f64(v)).collect()),
        Reduction::Sum => Loss::Scalar(partials.iter().sum()),
        Reduction::Mean if counted == 0 => Loss::Scalar(0.0),
        Reduction::Mean => Loss::Scalar(partials.iter().sum::<f64>() / counted as f64),
    }
}
