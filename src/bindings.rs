//! The Python binding layer: takes NumPy arrays without copying, releases the GIL around the
//! kernels and hands back NumPy arrays. No arithmetic happens here.
//!
//! The Python package (`python/kdloss`) converts inputs to one float dtype (float32 or
//! float64) and checks their types; every check of shapes, values and `out` is made here or in
//! the kernels (`kernels::checks`), once. Logits come in any shape `(..., C)` and any strides:
//! the rows are read in place when NumPy's reshape to `(rows, C)` would be a view, and copied
//! otherwise, as that reshape would.

use std::mem::MaybeUninit;

use ndarray::{ArrayD, ArrayView1, ArrayView2, ArrayViewD, CowArray, Ix1, Ix2, IxDyn};
use numpy::{
    BorrowError, Element, IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyReadonlyArray1, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat};

use crate::config;
use crate::error::KdError;
use crate::kernels::{
    self, simd, ClassWeights, Count, Distillation, Divergence, Float, Loss, Normalizer, Out, Parts,
    PyShape, Reduction, Selection, Simd,
};
use crate::output_cache;

/// Below this many elements the GIL is kept: releasing and re-taking it costs more than the
/// kernel, and no other Python thread would get meaningful time in between.
const DETACH_MIN_ELEMENTS: usize = 1 << 14;

/// A loss (Python float or per-row array) and, if asked for, its gradient array.
type LossAndGrad<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

/// Logits of either supported dtype, of any shape `(..., C)`.
#[derive(FromPyObject)]
pub enum Logits<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

/// The loss settings, checked once when built: `DistillationLoss` keeps one, and the function
/// forms build one per call.
#[pyclass(frozen, module = "kdloss._core")]
pub struct Settings {
    cfg: Distillation,
    /// As given (the divergence keeps the one it uses).
    beta: f64,
    skew: f64,
    /// A copy of the caller's, checked (its length is checked per call).
    class_weight: Option<ClassWeights>,
}

#[pymethods]
impl Settings {
    #[new]
    #[pyo3(signature = (
        temperature, alpha, reduction, ignore_index, divergence="forward_kl", beta=0.5, skew=0.1,
        t2_scale=true, class_weight=None, label_smoothing=0.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        temperature: f64,
        alpha: f64,
        reduction: &str,
        ignore_index: i64,
        divergence: &str,
        beta: f64,
        skew: f64,
        t2_scale: bool,
        class_weight: Option<PyReadonlyArray1<'_, f64>>,
        label_smoothing: f64,
    ) -> PyResult<Self> {
        let reduction = Reduction::parse(reduction)?;
        let divergence = Divergence::parse("divergence", divergence, beta, skew)?;
        let cfg = Distillation::new(temperature, alpha, reduction, Some(ignore_index))?
            .with_divergence(divergence)
            .with_t2_scale(t2_scale)
            .with_label_smoothing(label_smoothing)?;
        let class_weight = class_weight
            .map(|w| ClassWeights::new(w.as_array().to_vec()))
            .transpose()?;
        Ok(Settings {
            cfg,
            beta,
            skew,
            class_weight,
        })
    }

    #[getter]
    fn label_smoothing(&self) -> f64 {
        self.cfg.label_smoothing
    }

    #[getter]
    fn class_weight(&self) -> Option<Vec<f64>> {
        self.class_weight.as_ref().map(|w| w.as_slice().to_vec())
    }

    #[getter]
    fn divergence(&self) -> &'static str {
        self.cfg.divergence.name()
    }

    #[getter]
    fn beta(&self) -> f64 {
        self.beta
    }

    #[getter]
    fn skew(&self) -> f64 {
        self.skew
    }

    #[getter]
    fn t2_scale(&self) -> bool {
        self.cfg.t2_scale
    }

    #[getter]
    fn temperature(&self) -> f64 {
        self.cfg.temperature
    }

    #[getter]
    fn alpha(&self) -> f64 {
        self.cfg.alpha
    }

    #[getter]
    fn reduction(&self) -> &'static str {
        self.cfg.reduction.name()
    }

    #[getter]
    fn ignore_index(&self) -> PyResult<i64> {
        // Python's settings always have one (`new` sets it).
        Ok(self
            .cfg
            .ignore_index
            .ok_or_else(|| KdError::internal("Settings without an ignore_index"))?)
    }
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

/// Logits of `shape` `(..., C)` as a `(rows, C)` matrix: a view when the strides allow one,
/// else a copy (as NumPy's reshape).
fn matrix<'a, T: Clone>(
    x: &'a ArrayViewD<'a, T>,
    name: &str,
) -> Result<CowArray<'a, T, Ix2>, KdError> {
    let (rows, c) = kernels::check_logits_shape(x.shape(), name)?;
    x.to_shape((rows, c))
        .map_err(|e| KdError::internal(format!("cannot view {name} as rows: {e}")))
}

/// Student and teacher logits of one shape as `(rows, C)` matrices (see `matrix`).
type Pair<'a, T> = (CowArray<'a, T, Ix2>, CowArray<'a, T, Ix2>);

fn pair<'a, T: Clone>(
    s: &'a ArrayViewD<'a, T>,
    t: &'a ArrayViewD<'a, T>,
) -> Result<Pair<'a, T>, KdError> {
    let sv = matrix(s, "student_logits")?;
    kernels::check_pair_shapes(s.shape(), t.shape())?;
    Ok((sv, matrix(t, "teacher_logits")?))
}

/// `x` (`labels`, `mask`: one entry per row of the logits, in their row shape) as one flat
/// vector (a view when the strides allow one).
fn flat_rows<'a, E: Clone>(
    x: &'a ArrayViewD<'a, E>,
    name: &str,
    logits_shape: &[usize],
) -> Result<CowArray<'a, E, Ix1>, KdError> {
    kernels::check_row_shape(name, x.shape(), logits_shape)?;
    x.to_shape(x.len())
        .map_err(|e| KdError::internal(format!("cannot flatten {name}: {e}")))
}

/// A kernel's loss for Python: a float, or an array of the logits' row shape.
fn loss_to_py<'py, T: Float + Element>(
    py: Python<'py>,
    loss: Loss<T>,
    logits_shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    match loss {
        Loss::Scalar(v) => Ok(PyFloat::new(py, v).into_any()),
        Loss::Rows(v) => rows_to_py(py, v, logits_shape),
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

fn no_memory(bytes: usize) -> KdError {
    KdError::memory(format!(
        "cannot allocate {bytes} bytes for the output array"
    ))
}

/// A pooled buffer for a fresh output of `elements` values of `T` of at least
/// `output_cache::MIN_BYTES`, or `None` for a smaller one (then an ordinary NumPy array is made).
fn pooled<T>(elements: usize) -> Result<Option<output_cache::Buffer>, KdError> {
    match elements.checked_mul(std::mem::size_of::<T>()) {
        Some(b) if b < output_cache::MIN_BYTES => Ok(None),
        Some(b) => output_cache::take(b).map(Some).ok_or_else(|| no_memory(b)),
        None => Err(no_memory(usize::MAX)),
    }
}

/// Hands a filled pooled buffer to Python as an array of `shape` that owns it.
fn pooled_array<'py, T: Float + Element>(
    py: Python<'py>,
    buf: output_cache::Buffer,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let elements: usize = shape.iter().product();
    debug_assert_eq!(buf.bytes(), elements * std::mem::size_of::<T>());
    // SAFETY: the buffer holds `elements` values of T, aligned, all written by the kernel; it
    // stays where it is (a heap block) while the owner below keeps it.
    let view = unsafe { ArrayViewD::from_shape_ptr(IxDyn(shape), buf.as_ptr::<T>()) };
    let owner = Bound::new(py, OutputBuffer { buf: Some(buf) })?;
    // SAFETY: `owner` becomes the array's base, so the memory lives as long as the array.
    Ok(unsafe { PyArrayDyn::borrow_from_array(&view, owner.into_any()) })
}

/// Runs `fill` on a fresh C-contiguous output of `shape` (every element gets written) and
/// returns it as an array, its memory from the pool when it is large.
fn fresh_output<'py, T: Float + Element, R>(
    py: Python<'py>,
    shape: &[usize],
    fill: impl FnOnce(Out<'_, T>) -> PyResult<R>,
) -> PyResult<(R, Bound<'py, PyArrayDyn<T>>)> {
    let elements = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| no_memory(usize::MAX))?;
    match pooled::<T>(elements)? {
        Some(mut buf) => {
            // SAFETY: sized for `elements` values of `T`, a `Float` (f32 or f64: a plain
            // number type). `fill` writes them all before the array exists; on an error the
            // buffer goes back unseen.
            let r = fill(Out::new(unsafe { buf.as_mut_slice::<T>(elements) }));
            match r {
                Ok(r) => Ok((r, pooled_array(py, buf, shape)?)),
                Err(e) => {
                    output_cache::give_back(buf);
                    Err(e)
                }
            }
        }
        None => {
            // SAFETY: the array is new, C-contiguous (`is_fortran` false) and seen by nothing
            // else: `fill` writes every element (through `Out::fresh`, which never reads one
            // first) before the array is handed to Python; on an error it is dropped unseen.
            let arr = unsafe { PyArrayDyn::<T>::new(py, shape, false) };
            // SAFETY: `arr` owns `elements` contiguous, aligned values of `T`, and the slice is
            // the only access to them until `fill` returns.
            let o = unsafe {
                std::slice::from_raw_parts_mut(arr.data().cast::<MaybeUninit<T>>(), elements)
            };
            let r = fill(Out::fresh(o))?;
            Ok((r, arr))
        }
    }
}

/// `out` as a C-contiguous, writeable array of `shape` and dtype `T` for the kernel to fill:
/// the one place where `out` is checked.
fn output<'py, T: Float + Element>(
    shape: &[usize],
    out: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let py = out.py();
    let untyped = out.cast::<PyUntypedArray>().map_err(|_| {
        let got = out
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        KdError::type_(format!(
            "out must be a numpy.ndarray or a CPU tensor with __dlpack__, got {got}"
        ))
    })?;
    if untyped.shape() != shape {
        return Err(KdError::value(format!(
            "out must have shape {}, got {}",
            PyShape(shape),
            PyShape(untyped.shape())
        ))
        .into());
    }
    let dtype = untyped.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<T>(py)) {
        return Err(KdError::value(format!("out must have dtype {}, got {dtype}", T::NAME)).into());
    }
    if !untyped.is_c_contiguous() {
        return Err(KdError::value("out must be C-contiguous").into());
    }
    out.cast_into::<PyArrayDyn<T>>()
        .map_err(|_| KdError::internal("out passed its dtype check but not its cast").into())
}

/// Runs `fill` on `out`'s memory, refusing an `out` that is read-only or that an input holds.
fn fill_out<T: Float + Element, R>(
    out: &Bound<'_, PyArrayDyn<T>>,
    fill: impl FnOnce(Out<'_, T>) -> PyResult<R>,
) -> PyResult<R> {
    let mut rw = out.try_readwrite().map_err(|e| match e {
        BorrowError::NotWriteable => KdError::value("out must be writeable"),
        _ => KdError::value("out must not overlap an input"),
    })?;
    let g = rw
        .as_slice_mut()
        .map_err(|_| KdError::value("out must be C-contiguous"))?;
    fill(Out::new(g))
}

/// What a loss call takes besides the logits and its settings.
pub struct CallArgs<'py, 'w> {
    labels: Option<PyReadonlyArrayDyn<'py, i64>>,
    mask: Option<PyReadonlyArrayDyn<'py, bool>>,
    class_weight: Option<&'w ClassWeights>,
    normalizer: Option<Normalizer>,
    with_grad: bool,
    out: Option<Bound<'py, PyAny>>,
    components: bool,
}

/// `normalizer` as Python passes it: a float, or a pair `(n_div, n_ce)`.
fn normalizer(n: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Normalizer>> {
    let Some(n) = n else { return Ok(None) };
    Ok(Some(match n.extract::<(f64, f64)>() {
        Ok((div, ce)) => Normalizer::split(div, ce)?,
        Err(_) => Normalizer::new(n.extract::<f64>()?)?,
    }))
}

/// Per-row values for Python: an array of the logits' row shape.
fn rows_to_py<'py, E: Element>(
    py: Python<'py>,
    v: Vec<E>,
    logits_shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let rows = &logits_shape[..logits_shape.len() - 1];
    let a = ArrayD::from_shape_vec(IxDyn(rows), v)
        .map_err(|e| KdError::internal(format!("per-row values: {e}")))?;
    Ok(a.into_pyarray(py).into_any())
}

/// A loss's parts for Python: `(loss, divergence, cross_entropy, count, weight_sum)`.
fn parts_to_py<'py, T: Float + Element>(
    py: Python<'py>,
    parts: Parts<T>,
    logits_shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let count = match parts.count {
        Count::Scalar(n) => n.into_pyobject(py)?.into_any(),
        Count::Rows(v) => rows_to_py(py, v, logits_shape)?,
    };
    let items = [
        loss_to_py(py, parts.loss, logits_shape)?,
        loss_to_py(py, parts.divergence, logits_shape)?,
        loss_to_py(py, parts.cross_entropy, logits_shape)?,
        count,
        loss_to_py(py, parts.weight_sum, logits_shape)?,
    ];
    Ok(pyo3::types::PyTuple::new(py, items)?.into_any())
}

fn distill_typed<'py, T: Float + Element>(
    py: Python<'py>,
    cfg: Distillation,
    s: PyReadonlyArrayDyn<'py, T>,
    t: PyReadonlyArrayDyn<'py, T>,
    args: CallArgs<'py, '_>,
) -> PyResult<LossAndGrad<'py>> {
    let (sd, td) = (s.as_array(), t.as_array());
    let shape = sd.shape().to_vec();
    let (sv, tv) = pair(&sd, &td)?;
    let ld = args.labels.as_ref().map(|l| l.as_array());
    let lv = ld
        .as_ref()
        .map(|l| flat_rows(l, "labels", &shape))
        .transpose()?;
    let md = args.mask.as_ref().map(|m| m.as_array());
    let mv = md
        .as_ref()
        .map(|m| flat_rows(m, "mask", &shape))
        .transpose()?;
    let (sv, tv): (ArrayView2<T>, ArrayView2<T>) = (sv.view(), tv.view());
    let lv: Option<ArrayView1<i64>> = lv.as_ref().map(|l| l.view());
    let selection = Selection {
        mask: mv.as_ref().map(|m| m.view()),
        class_weight: args.class_weight,
        normalizer: args.normalizer,
    };
    let level = simd::active();
    let run = |g: Option<Out<'_, T>>| {
        compute(py, sv.len(), || {
            kernels::distillation_parts_at(level, &cfg, sv, tv, lv, selection, g)
        })
    };
    let result = |parts: Parts<T>| {
        if args.components {
            parts_to_py(py, parts, &shape)
        } else {
            loss_to_py(py, parts.loss, &shape)
        }
    };
    if !args.with_grad {
        return Ok((result(run(None)?)?, None));
    }
    let (parts, grad) = match args.out {
        None => fresh_output::<T, _>(py, &shape, |g| Ok(run(Some(g))?))?,
        Some(out) => {
            let grad = output::<T>(&shape, out)?;
            (fill_out(&grad, |g| Ok(run(Some(g))?))?, grad)
        }
    };
    Ok((result(parts)?, Some(grad.into_any())))
}

/// Runs a loss of `cfg` on a pair of logits of either dtype.
fn distill_any<'py>(
    py: Python<'py>,
    cfg: Distillation,
    student: Logits<'py>,
    teacher: Logits<'py>,
    args: CallArgs<'py, '_>,
) -> PyResult<LossAndGrad<'py>> {
    match (student, teacher) {
        (Logits::F32(s), Logits::F32(t)) => distill_typed(py, cfg, s, t, args),
        (Logits::F64(s), Logits::F64(t)) => distill_typed(py, cfg, s, t, args),
        _ => Err(mismatched_dtypes()),
    }
}

/// The distillation loss, and with `with_grad` also d(loss)/d(student) (into `out` if given);
/// with `components`, the loss's parts in place of the loss.
#[pyfunction]
#[pyo3(signature = (
    settings, student, teacher, labels=None, with_grad=false, out=None, mask=None,
    normalizer=None, components=false
))]
#[allow(clippy::too_many_arguments)]
pub fn distillation<'py>(
    py: Python<'py>,
    settings: &Bound<'py, Settings>,
    student: Logits<'py>,
    teacher: Logits<'py>,
    labels: Option<PyReadonlyArrayDyn<'py, i64>>,
    with_grad: bool,
    out: Option<Bound<'py, PyAny>>,
    mask: Option<PyReadonlyArrayDyn<'py, bool>>,
    normalizer: Option<Bound<'py, PyAny>>,
    components: bool,
) -> PyResult<LossAndGrad<'py>> {
    let settings = settings.get();
    let args = CallArgs {
        labels,
        mask,
        class_weight: settings.class_weight.as_ref(),
        normalizer: self::normalizer(normalizer.as_ref())?,
        with_grad,
        out,
        components,
    };
    distill_any(py, settings.cfg, student, teacher, args)
}

/// One divergence of `student` against `teacher` at `temperature` (no `T²`, no cross-entropy),
/// reduced over the rows `mask` keeps.
#[pyfunction]
#[pyo3(signature = (
    student, teacher, kind, temperature, beta, skew, reduction, mask=None, normalizer=None
))]
#[allow(clippy::too_many_arguments)]
pub fn divergence<'py>(
    py: Python<'py>,
    student: Logits<'py>,
    teacher: Logits<'py>,
    kind: &str,
    temperature: f64,
    beta: f64,
    skew: f64,
    reduction: &str,
    mask: Option<PyReadonlyArrayDyn<'py, bool>>,
    normalizer: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = Distillation::new(temperature, 1.0, Reduction::parse(reduction)?, None)?
        .with_divergence(Divergence::parse("kind", kind, beta, skew)?)
        .with_t2_scale(false);
    let args = CallArgs {
        labels: None,
        mask,
        class_weight: None,
        normalizer: normalizer.map(Normalizer::new).transpose()?,
        with_grad: false,
        out: None,
        components: false,
    };
    Ok(distill_any(py, cfg, student, teacher, args)?.0)
}

fn kl_typed<'py, T: Float + Element>(
    py: Python<'py>,
    s: PyReadonlyArrayDyn<'py, T>,
    t: PyReadonlyArrayDyn<'py, T>,
    temperature: f64,
    reduction: Reduction,
) -> PyResult<Bound<'py, PyAny>> {
    let (sd, td) = (s.as_array(), t.as_array());
    let (sv, tv) = pair(&sd, &td)?;
    let (sv, tv) = (sv.view(), tv.view());
    let loss = compute(py, sv.len(), || {
        kernels::kl_divergence(sv, tv, temperature, reduction)
    })?;
    loss_to_py(py, loss, sd.shape())
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
        (Logits::F32(s), Logits::F32(t)) => kl_typed(py, s, t, temperature, reduction),
        (Logits::F64(s), Logits::F64(t)) => kl_typed(py, s, t, temperature, reduction),
        _ => Err(mismatched_dtypes()),
    }
}

fn cross_entropy_typed<'py, T: Float + Element>(
    py: Python<'py>,
    logits: PyReadonlyArrayDyn<'py, T>,
    labels: PyReadonlyArrayDyn<'py, i64>,
    reduction: Reduction,
    ignore_index: i64,
    label_smoothing: f64,
    args: CallArgs<'py, '_>,
) -> PyResult<Bound<'py, PyAny>> {
    let (xd, ld) = (logits.as_array(), labels.as_array());
    let xv = matrix(&xd, "logits")?;
    let lv = flat_rows(&ld, "labels", xd.shape())?;
    let md = args.mask.as_ref().map(|m| m.as_array());
    let mv = md
        .as_ref()
        .map(|m| flat_rows(m, "mask", xd.shape()))
        .transpose()?;
    let (xv, lv) = (xv.view(), lv.view());
    let selection = Selection {
        mask: mv.as_ref().map(|m| m.view()),
        class_weight: args.class_weight,
        normalizer: args.normalizer,
    };
    let loss = compute(py, xv.len(), || {
        kernels::cross_entropy(
            xv,
            lv,
            reduction,
            Some(ignore_index),
            label_smoothing,
            selection,
        )
    })?;
    loss_to_py(py, loss, xd.shape())
}

/// Cross-entropy of `logits` against `labels`, reduced over the rows that count.
#[pyfunction]
#[pyo3(signature = (
    logits, labels, reduction, ignore_index, mask=None, normalizer=None, class_weight=None,
    label_smoothing=0.0
))]
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy<'py>(
    py: Python<'py>,
    logits: Logits<'py>,
    labels: PyReadonlyArrayDyn<'py, i64>,
    reduction: &str,
    ignore_index: i64,
    mask: Option<PyReadonlyArrayDyn<'py, bool>>,
    normalizer: Option<f64>,
    class_weight: Option<PyReadonlyArray1<'py, f64>>,
    label_smoothing: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let reduction = Reduction::parse(reduction)?;
    let weights = class_weight
        .map(|w| ClassWeights::new(w.as_array().to_vec()))
        .transpose()?;
    let args = CallArgs {
        labels: None,
        mask,
        class_weight: weights.as_ref(),
        normalizer: normalizer.map(Normalizer::new).transpose()?,
        with_grad: false,
        out: None,
        components: false,
    };
    match logits {
        Logits::F32(x) => cross_entropy_typed(
            py,
            x,
            labels,
            reduction,
            ignore_index,
            label_smoothing,
            args,
        ),
        Logits::F64(x) => cross_entropy_typed(
            py,
            x,
            labels,
            reduction,
            ignore_index,
            label_smoothing,
            args,
        ),
    }
}

/// The message for a label that is out of range, for labels that cannot even be made int64
/// (Python ints beyond 64 bits, uint64 beyond int64): the same words as every other label.
#[pyfunction]
pub fn label_error(classes: usize, ignore_index: i64, got: &str) -> String {
    kernels::label_range_error(classes, Some(ignore_index), got).to_string()
}

fn softmax_typed<'py, T: Float + Element>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, T>,
    temperature: f64,
    log: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let xd = x.as_array();
    let xv = matrix(&xd, "x")?;
    let xv = xv.view();
    let ((), out) = fresh_output::<T, _>(py, xd.shape(), |o| {
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
