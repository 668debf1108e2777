//! kdloss: exact, fused knowledge-distillation loss and gradient kernels.
//!
//! `kernels` and `parallel` are plain Rust on ndarray views; the Python module below (behind
//! the `python` feature, which maturin enables) is a thin layer over them.

pub mod config;
pub mod error;
pub mod kernels;
pub mod output_cache;
pub mod parallel;

#[cfg(feature = "python")]
mod bindings;

#[cfg(feature = "python")]
#[pyo3::pymodule]
mod _core {
    #[pymodule_export]
    use crate::bindings::{
        build_info, cached_bytes, check_num_threads, cross_entropy, distillation, empty_cache,
        get_num_threads, kl_divergence, label_error, probe_bandwidth, probe_exp, set_num_threads,
        set_simd, softmax, swap_local_threads, OutputBuffer, Settings,
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
