//! The one error type of kdloss. Kernels report bad input through it; the Rust API returns it
//! as `kdloss::Error`, and the binding layer turns it into a Python exception in one place
//! (`From<KdError> for PyErr`).

use std::fmt;

/// A rejected input, with a message that names the argument and the offending value.
///
/// ```
/// let err = kdloss::DistillationLoss::new(2.0, 1.5).unwrap_err();
/// assert!(matches!(err, kdloss::Error::Value(_)));
/// assert_eq!(err.to_string(), "alpha must be in [0, 1], got 1.5");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KdError {
    /// A value of the right type that is out of range or of the wrong shape (a
    /// `ValueError` in Python).
    Value(String),
    /// A value of the wrong type or dtype (a `TypeError` in Python).
    Type(String),
    /// Memory the system could not give (a `MemoryError` in Python).
    Memory(String),
    /// A broken internal invariant, never the caller's input (a `RuntimeError` in Python).
    Internal(String),
}

impl KdError {
    pub(crate) fn value(msg: impl Into<String>) -> Self {
        KdError::Value(msg.into())
    }

    #[cfg(feature = "python")]
    pub(crate) fn type_(msg: impl Into<String>) -> Self {
        KdError::Type(msg.into())
    }

    #[cfg(feature = "python")]
    pub(crate) fn memory(msg: impl Into<String>) -> Self {
        KdError::Memory(msg.into())
    }

    /// A failure that is kdloss's fault; the message says what broke.
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        KdError::Internal(format!("kdloss internal error: {}", msg.into()))
    }
}

impl fmt::Display for KdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KdError::Value(m) | KdError::Type(m) | KdError::Memory(m) | KdError::Internal(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for KdError {}

#[cfg(feature = "python")]
impl From<KdError> for pyo3::PyErr {
    fn from(e: KdError) -> Self {
        match e {
            KdError::Value(m) => pyo3::exceptions::PyValueError::new_err(m),
            KdError::Type(m) => pyo3::exceptions::PyTypeError::new_err(m),
            KdError::Memory(m) => pyo3::exceptions::PyMemoryError::new_err(m),
            KdError::Internal(m) => pyo3::exceptions::PyRuntimeError::new_err(m),
        }
    }
}
