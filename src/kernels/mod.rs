//! Pure-Rust kernels on ndarray views. Nothing in here knows about Python.
//!
//! Inputs are 2-D: one row per sample, classes along the last axis. Every public function
//! validates what it is given and reports problems as `KdError`; none of them panics on user
//! input.

pub mod checks;
pub mod distill;
pub mod float;
pub mod loss;
pub mod probe;
pub mod row;
pub mod simd;
pub mod small;
pub mod softmax;

use crate::error::KdError;

pub use checks::{
    check_alpha, check_labels, check_labels_shape, check_logits, check_logits_shape,
    check_pair_shapes, check_same_shape, check_temperature, label_range_error, PyShape,
};
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
