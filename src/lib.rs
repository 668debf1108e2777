//! kdloss: exact, fused knowledge-distillation loss and gradient kernels.
//!
//! `kernels` and `parallel` are plain Rust on ndarray views; the Python module below (behind
//! the `python` feature, which maturin enables) is a thin layer over them.

pub mod error;
pub mod kernels;
pub mod parallel;
pub mod pool;

#[cfg(feature = "python")]
mod bindings;

#[cfg(feature = "python")]
#[pyo3::pymodule]
mod _core {
    #[pymodule_export]
    use crate::bindings::{
        build_info, cached_bytes, check_num_threads, cross_entropy, distillation, empty_cache,
        get_num_threads, kl_divergence, probe_bandwidth, probe_exp, set_num_threads, set_simd,
        softmax, swap_local_threads, validate, OutputBuffer,
    };

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // A bad KDLOSS_NUM_THREADS fails the import, naming the variable, not a later call.
        crate::parallel::num_threads()?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
