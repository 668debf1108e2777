//! Exact, fused knowledge-distillation loss and gradient kernels on ndarray arrays.
//!
//! [`DistillationLoss`] computes Hinton's loss
//! `alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha)·CE(student, labels)`
//! and its gradient with respect to the student in one pass over each row, with log-sum-exp
//! throughout: nothing is clamped, NaN and infinities propagate as the mathematics says, and
//! bad input is an [`Error`], never a panic. [`softmax`], [`log_softmax`], [`cross_entropy`]
//! and [`kl_divergence`] are the pieces on their own. Arrays are `f32` or `f64` (see
//! [`Element`]), passed as anything ndarray can view as 2-D (`&Array2`, `ArrayView2`), one row
//! per sample; labels are class indices. Views of any strides are read in place: a row whose
//! elements are not contiguous is copied into a per-thread buffer as it is read, never the
//! whole array.
//!
//! ```
//! use kdloss::DistillationLoss;
//! use ndarray::array;
//!
//! let kd = DistillationLoss::new(2.0, 0.5)?;
//! let student = array![[2.0_f32, 1.0, 0.5], [0.3, 0.2, 0.1]];
//! let teacher = array![[1.5_f32, 1.2, 0.8], [0.1, 0.2, 0.3]];
//! let labels = [0, 2];
//! let loss: f32 = kd.forward(&student, &teacher, &labels)?;
//! let (same, grad) = kd.forward_backward(&student, &teacher, &labels)?;
//! assert_eq!(loss, same);
//! assert_eq!(grad.dim(), student.dim());
//! # Ok::<(), kdloss::Error>(())
//! ```
//!
//! Rows are spread over one thread per core (`KDLOSS_NUM_THREADS` or [`set_num_threads`]
//! change that); results do not depend on the thread count. The fastest SIMD level the CPU has
//! is picked at run time.
//!
//! The modules below the API (the kernels, and the Python module behind the `python` feature,
//! which maturin enables) are not part of it and may change.

mod api;

#[doc(hidden)]
pub mod config;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod kernels;
#[doc(hidden)]
pub mod output_cache;
#[doc(hidden)]
pub mod parallel;

pub use api::{
    cross_entropy, kl_divergence, log_softmax, softmax, DistillationLoss, Element, Reduction,
};
pub use config::{num_threads, set_num_threads};
pub use error::KdError as Error;
pub use kernels::Divergence;

/// The README's Rust example, run with the doc examples.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

#[cfg(feature = "python")]
mod bindings;

#[cfg(feature = "python")]
#[pyo3::pymodule]
mod _core {
    #[pymodule_export]
    use crate::bindings::{
        build_info, cached_bytes, check_num_threads, cross_entropy, distillation, divergence,
        empty_cache, get_num_threads, kl_divergence, label_error, probe_bandwidth, probe_exp,
        set_num_threads, set_simd, softmax, swap_local_threads, OutputBuffer, Settings,
    };

    use pyo3::exceptions::PyRuntimeWarning;
    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // A bad KDLOSS_NUM_THREADS or KDLOSS_SIMD fails the import, naming the variable, not
        // a later call.
        crate::config::num_threads()?;
        if let Some(name) = crate::config::simd_from_env()? {
            if let Some(warning) = crate::kernels::simd::request(&name)? {
                let py = m.py();
                PyErr::warn(
                    py,
                    &py.get_type::<PyRuntimeWarning>(),
                    &std::ffi::CString::new(warning)?,
                    1,
                )?;
            }
        }
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
