//! Pure-Rust kernels on ndarray views. Nothing in here knows about Python.
//!
//! Inputs are 2-D: one row per sample, classes along the last axis. Every public function
//! validates what it is given and reports problems as `KdError`; none of them panics on user
//! input.

pub mod check;
pub mod chunk;
pub mod driver;
pub mod float;
pub mod label;
pub mod long;
pub mod loss;
pub mod objective;
pub mod out;
pub mod probe;
pub mod reduce;
pub mod row;
pub mod scratch;
pub mod simd;
pub mod small;
pub mod softmax;

pub use check::{
    check_alpha, check_class_weight, check_labels, check_labels_shape, check_logits,
    check_logits_shape, check_pair_shapes, check_row_shape, check_same_shape, check_temperature,
    label_range_error, PyShape,
};
pub use driver::Selection;
pub use float::Float;
pub use label::ClassWeights;
pub use loss::{
    cross_entropy, distillation, distillation_at, distillation_parts_at, kl_divergence,
    Distillation, Divergence,
};
pub use out::Out;
pub use reduce::{Count, Loss, Normalizer, Parts, Reduction};
pub use simd::Simd;
pub use softmax::{softmax_into, softmax_into_at};
