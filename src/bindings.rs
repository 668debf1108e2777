//! The Python binding layer: takes NumPy arrays without copying, releases the GIL around the
//! kernels and hands back NumPy arrays. No arithmetic happens here.
//!
//! The Python package (`python/kdloss`) normalizes inputs before calling in: logits arrive as
//! 2-D float32 or float64 arrays of one dtype (any strides), labels as 1-D int64.

use ndarray::{ArrayView1, ArrayView2};
use numpy::{
    Element, IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat};

use crate::config;
use crate::error::KdError;
use crate::kernels::{self, simd, Distillation, Float, Loss, Reduction, Simd};
use crate::output_cache;

/// Below this many elements the GIL is kept: releasing and re-taking it costs more than the
/// kernel, and no other Python thread would get meaningful time in between.
const DETACH_MIN_ELEMENTS: usize = 1 << 14;

/// A loss (Python float or per-row array) and, if asked for, its gradient array.
type LossAndGrad<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

/// Logits of either supported dtype.
#[derive(FromPyObject)]
pub enum Logits<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

/// Runs `f` with the GIL released when the input is large enough to be worth it.
fn compute<R: Send>(py: Python<'_>, elements: usize, f: impl FnOnce() -> R + Send) -> R {
    if elements >= DETACH_MIN_ELEMENTS {
        py.detach(f)
    } else {
        f()
    }
}

fn mismatched_dtypes() -> PyErr {
    KdError::type_("student_logits and teacher_logits must have the same dtype").into()
}

fn loss_to_py<'py, T: Float + Element>(py: Python<'py>, loss: Loss<T>) -> Bound<'py, PyAny> {
    match loss {
        Loss::Scalar(v) => PyFloat::new(py, v).into_any(),
        Loss::Rows(v) => v.into_pyarray(py).into_any(),
    }
}

/// The owner of a pooled output array's memory (the array's `base`): when Python frees it,
/// the buffer goes back to `pool` for the next output of its size.
#[pyclass(frozen, module = "kdloss._core")]
pub struct OutputBuffer {
    buf: Option<output_cache::Buffer>,
}

impl Drop for OutputBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            output_cache::give_back(buf);
        }
    }
}

/// A pooled buffer for a fresh `(rows, classes)` output of at least `output_cache::MIN_BYTES`, or
/// `None` for a smaller one (then an ordinary NumPy array is made). `MemoryError` when the
/// system has no memory for it.
fn pooled<T>(rows: usize, classes: usize) -> PyResult<Option<output_cache::Buffer>> {
    let bytes = rows
        .checked_mul(classes)
        .and_then(|n| n.checked_mul(std::mem::size_of::<T>()));
    match bytes {
        Some(b) if b < output_cache::MIN_BYTES => Ok(None),
        Some(b) => output_cache::take(b).map(Some).ok_or_else(|| no_memory(b)),
        None => Err(no_memory(usize::MAX)),
    }
}

fn no_memory(bytes: usize) -> PyErr {
    PyMemoryError::new_err(format!(
        "cannot allocate {bytes} bytes for the output array"
    ))
}

/// Hands a filled pooled buffer to Python as a `(rows, classes)` array that owns it.
fn pooled_array<'py, T: Float + Element>(
    py: Python<'py>,
    buf: output_cache::Buffer,
    rows: usize,
    classes: usize,
) -> PyResult<Bound<'py, PyArray2<T>>> {
    debug_assert_eq!(buf.bytes(), rows * classes * std::mem::size_of::<T>());
    // SAFETY: the buffer holds rows·classes elements of T, aligned, all written by the kernel;
    // it stays where it is (a heap block) while the owner below keeps it.
    let view = unsafe { ArrayView2::from_shape_ptr((rows, classes), buf.as_ptr::<T>()) };
    let owner = Bound::new(py, OutputBuffer { buf: Some(buf) })?;
    // SAFETY: `owner` becomes the array's base, so the memory lives as long as the array.
    Ok(unsafe { PyArray2::borrow_from_array(&view, owner.into_any()) })
}

/// Runs `fill` on a fresh `(rows, classes)` output of `T` (every element gets written) and
/// returns it as an array, its memory from the pool when it is large.
fn fresh_output<'py, T: Float + Element, R>(
    py: Python<'py>,
    rows: usize,
    classes: usize,
    fill: impl FnOnce(&mut [T]) -> PyResult<R>,
) -> PyResult<(R, Bound<'py, PyArray2<T>>)> {
    match pooled::<T>(rows, classes)? {
        Some(mut buf) => {
            // SAFETY: sized for rows·classes elements; `fill` writes them all before the array
            // exists, and on an error the buffer goes back unseen.
            let r = fill(unsafe { buf.as_mut_slice::<T>(rows * classes) });
            match r {
                Ok(r) => Ok((r, pooled_array(py, buf, rows, classes)?)),
                Err(e) => {
                    output_cache::give_back(buf);
                    Err(e)
                }
            }
        }
        None => {
            // SAFETY: `fill` writes every element before the array is handed to Python; on an
            // error it is dropped unseen.
            let arr = unsafe { PyArray2::<T>::new(py, [rows, classes], false) };
            let r = {
                let mut rw = arr.readwrite();
                let o = rw
                    .as_slice_mut()
                    .map_err(|_| KdError::value("internal: fresh output is not contiguous"))?;
                fill(o)?
            };
            Ok((r, arr))
        }
    }
}

/// `out` as a C-contiguous, writeable `(rows, classes)` array of `T` for the kernel to fill,
/// after checking it.
fn output<'py, T: Float + Element>(
    rows: usize,
    classes: usize,
    out: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<T>>> {
    let arr = out.cast_into::<PyArray2<T>>().map_err(|e| {
        let got = e.into_inner();
        let got = got.repr().map(|r| r.to_string()).unwrap_or_default();
        KdError::value(format!(
            "out must be a 2-D numpy array of dtype {}, got {got}",
            T::NAME
        ))
    })?;
    if arr.shape() != [rows, classes] {
        return Err(KdError::value(format!(
            "out must have shape {:?}, got {:?}",
            (rows, classes),
            arr.shape()
        ))
        .into());
    }
    if !arr.is_c_contiguous() {
        return Err(KdError::value("out must be C-contiguous").into());
    }
    Ok(arr)
}

#[allow(clippy::too_many_arguments)]
fn distill_typed<'py, T: Float + Element>(
    py: Python<'py>,
    cfg: Distillation,
    s: PyReadonlyArray2<'py, T>,
    t: PyReadonlyArray2<'py, T>,
    labels: Option<PyReadonlyArray1<'py, i64>>,
    with_grad: bool,
    out: Option<Bound<'py, PyAny>>,
) -> PyResult<LossAndGrad<'py>> {
    let sv: ArrayView2<T> = s.as_array();
    let tv: ArrayView2<T> = t.as_array();
    let lv: Option<ArrayView1<i64>> = labels.as_ref().map(|l| l.as_array());
    let (rows, classes) = sv.dim();
    if !with_grad {
        let loss = compute(py, sv.len(), || {
            kernels::distillation(&cfg, sv, tv, lv, None)
        })?;
        return Ok((loss_to_py(py, loss), None));
    }
    let Some(out) = out else {
        let (loss, grad) = fresh_output::<T, _>(py, rows, classes, |g| {
            Ok(compute(py, sv.len(), || {
                kernels::distillation(&cfg, sv, tv, lv, Some(g))
            })?)
        })?;
        return Ok((loss_to_py(py, loss), Some(grad.into_any())));
    };
    let grad = output::<T>(rows, classes, out)?;
    let loss = {
        let mut rw = grad.try_readwrite().map_err(|_| {
            KdError::value("out must be writeable and must not be one of the inputs")
        })?;
        let g = rw
            .as_slice_mut()
            .map_err(|_| KdError::value("out must be C-contiguous"))?;
        compute(py, sv.len(), || {
            kernels::distillation(&cfg, sv, tv, lv, Some(g))
        })?
    };
    Ok((loss_to_py(py, loss), Some(grad.into_any())))
}

/// The distillation loss, and with `with_grad` also d(loss)/d(student) (into `out` if given).
#[pyfunction]
#[pyo3(signature = (student, teacher, labels, temperature, alpha, reduction, ignore_index, with_grad, out=None))]
#[allow(clippy::too_many_arguments)]
pub fn distillation<'py>(
    py: Python<'py>,
    student: Logits<'py>,
    teacher: Logits<'py>,
    labels: Option<PyReadonlyArray1<'py, i64>>,
    temperature: f64,
    alpha: f64,
    reduction: &str,
    ignore_index: i64,
    with_grad: bool,
    out: Option<Bound<'py, PyAny>>,
) -> PyResult<LossAndGrad<'py>> {
    let cfg = Distillation::new(
        temperature,
        alpha,
        Reduction::parse(reduction)?,
        ignore_index,
    )?;
    match (student, teacher) {
        (Logits::F32(s), Logits::F32(t)) => distill_typed(py, cfg, s, t, labels, with_grad, out),
        (Logits::F64(s), Logits::F64(t)) => distill_typed(py, cfg, s, t, labels, with_grad, out),
        _ => Err(mismatched_dtypes()),
    }
}

/// `KL(softmax(teacher/T) || softmax(student/T))`, reduced over rows.
#[pyfunction]
pub fn kl_divergence<'py>(
    py: Python<'py>,
    student: Logits<'py>,
    teacher: Logits<'py>,
    temperature: f64,
    reduction: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let reduction = Reduction::parse(reduction)?;
    match (student, teacher) {
        (Logits::F32(s), Logits::F32(t)) => {
            let (sv, tv) = (s.as_array(), t.as_array());
            let loss = compute(py, sv.len(), || {
                kernels::kl_divergence(sv, tv, temperature, reduction)
            })?;
            Ok(loss_to_py(py, loss))
        }
        (Logits::F64(s), Logits::F64(t)) => {
            let (sv, tv) = (s.as_array(), t.as_array());
            let loss = compute(py, sv.len(), || {
                kernels::kl_divergence(sv, tv, temperature, reduction)
            })?;
            Ok(loss_to_py(py, loss))
        }
        _ => Err(mismatched_dtypes()),
    }
}

fn cross_entropy_typed<'py, T: Float + Element>(
    py: Python<'py>,
    logits: PyReadonlyArray2<'py, T>,
    labels: PyReadonlyArray1<'py, i64>,
    reduction: Reduction,
    ignore_index: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let (xv, lv) = (logits.as_array(), labels.as_array());
    let loss = compute(py, xv.len(), || {
        kernels::cross_entropy(xv, lv, reduction, ignore_index)
    })?;
    Ok(loss_to_py(py, loss))
}

/// Cross-entropy of `logits` against `labels`, reduced over the rows that count.
#[pyfunction]
pub fn cross_entropy<'py>(
    py: Python<'py>,
    logits: Logits<'py>,
    labels: PyReadonlyArray1<'py, i64>,
    reduction: &str,
    ignore_index: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let reduction = Reduction::parse(reduction)?;
    match logits {
        Logits::F32(x) => cross_entropy_typed(py, x, labels, reduction, ignore_index),
        Logits::F64(x) => cross_entropy_typed(py, x, labels, reduction, ignore_index),
    }
}

fn softmax_typed<'py, T: Float + Element>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, T>,
    temperature: f64,
    log: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let xv = x.as_array();
    let (rows, classes) = xv.dim();
    let ((), out) = fresh_output::<T, _>(py, rows, classes, |o| {
        Ok(compute(py, xv.len(), || {
            kernels::softmax_into(xv, temperature, log, o)
        })?)
    })?;
    Ok(out.into_any())
}

/// `softmax(x / temperature)` (or its log) along the last axis.
#[pyfunction]
pub fn softmax<'py>(
    py: Python<'py>,
    x: Logits<'py>,
    temperature: f64,
    log: bool,
) -> PyResult<Bound<'py, PyAny>> {
    match x {
        Logits::F32(x) => softmax_typed(py, x, temperature, log),
        Logits::F64(x) => softmax_typed(py, x, temperature, log),
    }
}

/// A thread count given as any Python int: a negative one, or one beyond 64 bits, is out of
/// range like any other.
fn thread_count(n: &Bound<'_, PyAny>) -> PyResult<usize> {
    match n
        .extract::<i64>()
        .ok()
        .and_then(|v| usize::try_from(v).ok())
    {
        Some(count) => Ok(count),
        None => Err(config::thread_count_error(n.repr()?).into()),
    }
}

/// Sets the number of threads used by later calls.
#[pyfunction]
pub fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
    Ok(config::set_num_threads(thread_count(n)?)?)
}

/// `n` as a thread count, after checking it as `set_num_threads` does.
#[pyfunction]
pub fn check_num_threads(n: &Bound<'_, PyAny>) -> PyResult<usize> {
    let count = thread_count(n)?;
    config::check_thread_count(count)?;
    Ok(count)
}

/// Sets the thread count of the calls made from this OS thread (`None`: the process's count
/// again) and returns the one it replaces (`None` if there was none).
#[pyfunction]
pub fn swap_local_threads(n: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    let n = n.map(thread_count).transpose()?;
    Ok(config::swap_local_threads(n)?)
}

/// The number of threads calls made from this thread use.
#[pyfunction]
pub fn get_num_threads() -> PyResult<usize> {
    Ok(config::num_threads()?)
}

/// Uses SIMD level `name` from now on (it must be available on this CPU).
#[pyfunction]
pub fn set_simd(name: &str) -> PyResult<()> {
    Ok(simd::set_active(Simd::parse(name)?)?)
}

/// Versions, SIMD levels and threads of this build.
#[pyfunction]
pub fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item("simd", simd::active().name())?;
    let available: Vec<&str> = Simd::available().into_iter().map(Simd::name).collect();
    d.set_item("simd_available", available)?;
    d.set_item("threads", config::num_threads()?)?;
    d.set_item("target_arch", std::env::consts::ARCH)?;
    d.set_item("lanes", kernels::chunk::LANES)?;
    Ok(d)
}

/// Checks loss settings the way every kernel call does, so that constructors fail early.
#[pyfunction]
pub fn validate(temperature: f64, alpha: f64, reduction: &str) -> PyResult<()> {
    Distillation::new(temperature, alpha, Reduction::parse(reduction)?, 0)?;
    Ok(())
}

/// Streaming read bandwidth of this machine in GB/s (a `megabytes` buffer read by `threads`
/// threads, median of `reps` sweeps): the memory side of the benchmarks' lower bound.
#[pyfunction]
#[pyo3(signature = (megabytes=256, threads=1, reps=7))]
pub fn probe_bandwidth(
    py: Python<'_>,
    megabytes: usize,
    threads: usize,
    reps: usize,
) -> PyResult<f64> {
    Ok(py.detach(|| kernels::probe::read_bandwidth(megabytes, threads, reps))?)
}

/// Nanoseconds per element of the kernels' exp (plus a sum) on one thread at the active SIMD
/// level: the arithmetic side of the benchmarks' lower bound.
#[pyfunction]
#[pyo3(signature = (reps=21))]
pub fn probe_exp(py: Python<'_>, reps: usize) -> PyResult<f64> {
    Ok(py.detach(|| kernels::probe::exp_cost(reps))?)
}

/// Frees the output buffers kept for reuse.
#[pyfunction]
pub fn empty_cache() {
    output_cache::clear();
}

/// Bytes of output buffers kept for reuse.
#[pyfunction]
pub fn cached_bytes() -> usize {
    output_cache::cached_bytes()
}
