//! The crate's Rust API: [`DistillationLoss`] and the free functions, on anything ndarray can
//! view as a 2-D array of `f32` or `f64`, with class indices as `&[usize]`.
//!
//! Everything here hands its arrays to the kernels (`kernels::loss`, `kernels::softmax`),
//! which check them and report bad input as an [`Error`]; nothing here checks or computes
//! anything itself. Views of any strides are read in place: a row whose elements are not
//! contiguous is copied, one row at a time, into a per-thread buffer, never the whole array.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, AsArray, Ix2};

use crate::error::KdError as Error;
use crate::kernels::{self, check, Distillation, Divergence, Loss, Out};

mod sealed {
    /// Keeps [`Element`](super::Element) implemented for `f32` and `f64` only.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The element types of the arrays the API takes: `f32` and `f64`.
///
/// Results come in the arrays' own type (an `f32` loss for `f32` logits); every sum over a row
/// is accumulated in `f64` whatever the type.
pub trait Element: kernels::Float + sealed::Sealed {}

impl Element for f32 {}
impl Element for f64 {}

/// How [`DistillationLoss::forward`] and [`DistillationLoss::forward_backward`] combine the
/// rows' losses. One loss per row is [`DistillationLoss::forward_rows`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The sum over the rows that count, divided by their number (0 when none counts).
    #[default]
    Mean,
    /// The sum over the rows that count.
    Sum,
}

impl From<Reduction> for kernels::Reduction {
    fn from(r: Reduction) -> Self {
        match r {
            Reduction::Mean => kernels::Reduction::Mean,
            Reduction::Sum => kernels::Reduction::Sum,
        }
    }
}

/// Hinton's distillation loss with fixed settings:
/// `alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha)·CE(student, labels)`,
/// the cross-entropy at temperature 1.
///
/// Built by [`new`](Self::new) with the temperature and alpha, then optionally
/// [`with_reduction`](Self::with_reduction) (mean by default),
/// [`with_ignore_index`](Self::with_ignore_index) (none by default: every row counts) and
/// [`with_divergence`](Self::with_divergence) (forward KL by default).
///
/// ```
/// use kdloss::{DistillationLoss, Reduction};
/// use ndarray::array;
///
/// let kd = DistillationLoss::new(2.0, 0.5)?.with_reduction(Reduction::Sum);
/// let student = array![[2.0_f32, 1.0, 0.5], [0.0, 0.0, 0.0]];
/// let teacher = array![[1.5_f32, 1.2, 0.8], [0.0, 0.0, 0.0]];
/// let loss: f32 = kd.forward(&student, &teacher, &[0, 2])?;
/// let (same, grad) = kd.forward_backward(student.view(), teacher.view(), &[0, 2])?;
/// assert_eq!(loss, same);
/// assert_eq!(grad.dim(), (2, 3));
/// # Ok::<(), kdloss::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistillationLoss {
    /// With `alpha`, as `Distillation::new` checked them.
    temperature: f64,
    alpha: f64,
    reduction: Reduction,
    ignore_index: Option<usize>,
    divergence: Divergence,
    t2_scale: bool,
}

impl DistillationLoss {
    /// The loss at temperature `temperature` (finite, `> 0`) with the distillation term
    /// weighted by `alpha` (in `[0, 1]`) and the cross-entropy by `1 − alpha`; mean reduction,
    /// no ignored label.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] for a temperature or alpha out of range (or NaN).
    ///
    /// ```
    /// use kdloss::DistillationLoss;
    ///
    /// assert!(DistillationLoss::new(2.0, 0.5).is_ok());
    /// let err = DistillationLoss::new(-1.0, 0.5).unwrap_err();
    /// assert_eq!(err.to_string(), "temperature must be a finite number > 0, got -1");
    /// assert!(DistillationLoss::new(2.0, 1.5).is_err());
    /// ```
    pub fn new(temperature: impl Into<f64>, alpha: impl Into<f64>) -> Result<Self, Error> {
        let cfg = Distillation::new(
            temperature.into(),
            alpha.into(),
            kernels::Reduction::Mean,
            None,
        )?;
        Ok(DistillationLoss {
            temperature: cfg.temperature,
            alpha: cfg.alpha,
            reduction: Reduction::Mean,
            ignore_index: None,
            divergence: cfg.divergence,
            t2_scale: cfg.t2_scale,
        })
    }

    /// The same loss, combining rows by `reduction`.
    #[must_use]
    pub fn with_reduction(self, reduction: Reduction) -> Self {
        DistillationLoss { reduction, ..self }
    }

    /// The same loss, leaving out the rows labelled `index` (both terms, and the count that
    /// [`Reduction::Mean`] divides by); their gradient rows are 0.
    ///
    /// ```
    /// use kdloss::DistillationLoss;
    /// use ndarray::array;
    ///
    /// let pad = 9;
    /// let kd = DistillationLoss::new(1.0, 0.0)?.with_ignore_index(pad);
    /// let logits = array![[0.0_f64, 0.0], [5.0, -5.0]];
    /// let (loss, grad) = kd.forward_backward(&logits, &logits, &[1, pad])?;
    /// assert_eq!(loss, 2.0_f64.ln());
    /// assert_eq!(grad.row(1).to_vec(), [0.0, 0.0]);
    /// # Ok::<(), kdloss::Error>(())
    /// ```
    #[must_use]
    pub fn with_ignore_index(self, index: usize) -> Self {
        DistillationLoss {
            ignore_index: Some(index),
            ..self
        }
    }

    /// The same loss with its KL term in the direction `divergence`: forward
    /// `KL(softmax(teacher/T) ‖ softmax(student/T))` (the default) or reverse
    /// `KL(softmax(student/T) ‖ softmax(teacher/T))`.
    ///
    /// ```
    /// use kdloss::{DistillationLoss, Divergence};
    /// use ndarray::array;
    ///
    /// let (s, t) = (array![[1.0_f64, 0.0, -1.0]], array![[0.0_f64, 0.5, 2.0]]);
    /// let reverse = DistillationLoss::new(1.0, 1.0)?.with_divergence(Divergence::ReverseKl);
    /// // Reverse KL of (s, t) is forward KL of (t, s).
    /// let forward_swapped = DistillationLoss::new(1.0, 1.0)?.forward(&t, &s, &[0])?;
    /// assert!((reverse.forward(&s, &t, &[0])? - forward_swapped).abs() < 1e-15);
    /// # Ok::<(), kdloss::Error>(())
    /// ```
    #[must_use]
    pub fn with_divergence(self, divergence: Divergence) -> Self {
        DistillationLoss { divergence, ..self }
    }

    /// The same loss with the distillation term multiplied by `T²` (`true`, the default:
    /// Hinton's loss) or not (TRL's, Liger Kernel's and DistiLLM's convention).
    ///
    /// ```
    /// use kdloss::DistillationLoss;
    /// use ndarray::array;
    ///
    /// let (s, t) = (array![[1.0_f64, 0.0, -1.0]], array![[0.0_f64, 0.5, 2.0]]);
    /// let hinton = DistillationLoss::new(2.0, 1.0)?.forward(&s, &t, &[0])?;
    /// let plain = DistillationLoss::new(2.0, 1.0)?.with_t2_scale(false).forward(&s, &t, &[0])?;
    /// assert!((hinton - 4.0 * plain).abs() < 1e-15);
    /// # Ok::<(), kdloss::Error>(())
    /// ```
    #[must_use]
    pub fn with_t2_scale(self, t2_scale: bool) -> Self {
        DistillationLoss { t2_scale, ..self }
    }

    /// Whether the distillation term is multiplied by `T²`.
    pub fn t2_scale(&self) -> bool {
        self.t2_scale
    }

    /// The temperature `T`.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// The weight of the distillation term; `1 − alpha` weights the cross-entropy.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// How [`forward`](Self::forward) and [`forward_backward`](Self::forward_backward)
    /// combine rows.
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// The label of the rows left out, if any.
    pub fn ignore_index(&self) -> Option<usize> {
        self.ignore_index
    }

    /// The direction of the KL term.
    pub fn divergence(&self) -> Divergence {
        self.divergence
    }

    /// The loss of `student` against `teacher` (both `(rows, classes)`) and `labels` (one
    /// class index per row), reduced as [`reduction`](Self::reduction) says.
    ///
    /// With `alpha == 1` the labels enter only through the ignored label; they are still
    /// checked.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the shapes differ, there are no classes, the labels are not one
    /// per row, a label is out of range, or the ignored label is beyond `i64::MAX`.
    /// NaN and infinite logits are not errors: they propagate into the loss.
    ///
    /// ```
    /// use kdloss::DistillationLoss;
    /// use ndarray::array;
    ///
    /// // Equal logits: the KL term is 0 and the loss is (1 − alpha)·ln(classes).
    /// let kd = DistillationLoss::new(2.0, 0.5)?;
    /// let x = array![[1.0_f64, 1.0, 1.0, 1.0]];
    /// let loss = kd.forward(&x, &x, &[3])?;
    /// assert!((loss - 0.5 * 4.0_f64.ln()).abs() < 1e-15);
    /// # Ok::<(), kdloss::Error>(())
    /// ```
    pub fn forward<'a, T: Element>(
        &self,
        student: impl AsArray<'a, T, Ix2>,
        teacher: impl AsArray<'a, T, Ix2>,
        labels: &[usize],
    ) -> Result<T, Error> {
        let (s, t) = (student.into(), teacher.into());
        scalar(self.run(self.reduction.into(), s, t, labels, None)?)
    }

    /// The loss, as [`forward`](Self::forward), and its gradient with respect to `student`,
    /// an array of `student`'s shape, computed in the same pass over the rows.
    ///
    /// # Errors
    ///
    /// As [`forward`](Self::forward).
    ///
    /// ```
    /// use kdloss::DistillationLoss;
    /// use ndarray::array;
    ///
    /// // Pure cross-entropy (alpha = 0): the gradient is softmax(student) − onehot(label).
    /// let kd = DistillationLoss::new(1.0, 0.0)?;
    /// let s = array![[0.0_f64, 0.0]];
    /// let (loss, grad) = kd.forward_backward(&s, &s, &[0])?;
    /// assert_eq!(loss, 2.0_f64.ln());
    /// assert_eq!(grad, array![[-0.5, 0.5]]);
    /// # Ok::<(), kdloss::Error>(())
    /// ```
    pub fn forward_backward<'a, T: Element>(
        &self,
        student: impl AsArray<'a, T, Ix2>,
        teacher: impl AsArray<'a, T, Ix2>,
        labels: &[usize],
    ) -> Result<(T, Array2<T>), Error> {
        let (loss, grad) = self.with_grad(self.reduction.into(), student, teacher, labels)?;
        Ok((scalar(loss)?, grad))
    }

    /// Each row's loss, unreduced (the reduction setting does not apply); rows left out by
    /// the ignored label are 0.
    ///
    /// # Errors
    ///
    /// As [`forward`](Self::forward).
    ///
    /// ```
    /// use kdloss::DistillationLoss;
    /// use ndarray::array;
    ///
    /// let kd = DistillationLoss::new(2.0, 0.5)?;
    /// let s = array![[2.0_f32, 1.0, 0.5], [0.1, 0.2, 0.3]];
    /// let t = array![[1.5_f32, 1.2, 0.8], [0.3, 0.2, 0.1]];
    /// let rows = kd.forward_rows(&s, &t, &[0, 1])?;
    /// let mean: f32 = kd.forward(&s, &t, &[0, 1])?;
    /// assert!((rows.sum() / 2.0 - mean).abs() < 1e-6);
    /// # Ok::<(), kdloss::Error>(())
    /// ```
    pub fn forward_rows<'a, T: Element>(
        &self,
        student: impl AsArray<'a, T, Ix2>,
        teacher: impl AsArray<'a, T, Ix2>,
        labels: &[usize],
    ) -> Result<Array1<T>, Error> {
        let (s, t) = (student.into(), teacher.into());
        rows(self.run(kernels::Reduction::None, s, t, labels, None)?)
    }

    /// Each row's loss, as [`forward_rows`](Self::forward_rows), and the gradient of their
    /// sum with respect to `student`.
    ///
    /// # Errors
    ///
    /// As [`forward`](Self::forward).
    pub fn forward_backward_rows<'a, T: Element>(
        &self,
        student: impl AsArray<'a, T, Ix2>,
        teacher: impl AsArray<'a, T, Ix2>,
        labels: &[usize],
    ) -> Result<(Array1<T>, Array2<T>), Error> {
        let (loss, grad) = self.with_grad(kernels::Reduction::None, student, teacher, labels)?;
        Ok((rows(loss)?, grad))
    }

    /// The loss under `reduction` and its gradient in a fresh array of the student's shape.
    fn with_grad<'a, T: Element>(
        &self,
        reduction: kernels::Reduction,
        student: impl AsArray<'a, T, Ix2>,
        teacher: impl AsArray<'a, T, Ix2>,
        labels: &[usize],
    ) -> Result<(Loss<T>, Array2<T>), Error> {
        let (s, t) = (student.into(), teacher.into());
        let mut grad = Array2::from_elem(s.raw_dim(), T::ZERO);
        let g = grad
            .as_slice_mut()
            .ok_or_else(|| Error::internal("a fresh gradient array is not contiguous"))?;
        let loss = self.run(reduction, s, t, labels, Some(Out::new(g)))?;
        Ok((loss, grad))
    }

    /// The kernel call, with this loss's settings and `reduction`.
    fn run<T: Element>(
        &self,
        reduction: kernels::Reduction,
        s: ArrayView2<'_, T>,
        t: ArrayView2<'_, T>,
        labels: &[usize],
        grad: Option<Out<'_, T>>,
    ) -> Result<Loss<T>, Error> {
        let ignore_index = self
            .ignore_index
            .map(check::check_ignore_index)
            .transpose()?;
        let labels = check::label_indices(labels, s.ncols(), ignore_index)?;
        let cfg = Distillation {
            temperature: self.temperature,
            alpha: self.alpha,
            reduction,
            ignore_index,
            divergence: self.divergence,
            t2_scale: self.t2_scale,
            label_smoothing: 0.0,
        };
        kernels::distillation(&cfg, s, t, Some(ArrayView1::from(&labels)), grad)
    }
}

/// The loss of a reduced call.
fn scalar<T: Element>(loss: Loss<T>) -> Result<T, Error> {
    match loss {
        Loss::Scalar(v) => Ok(T::from_f64(v)),
        Loss::Rows(_) => Err(Error::internal("a reduced loss came back per row")),
    }
}

/// The losses of an unreduced call.
fn rows<T: Element>(loss: Loss<T>) -> Result<Array1<T>, Error> {
    match loss {
        Loss::Rows(v) => Ok(Array1::from(v)),
        Loss::Scalar(_) => Err(Error::internal("an unreduced loss came back as a scalar")),
    }
}

/// `softmax(x / temperature)` along each row of `x`, in a new array of `x`'s shape.
///
/// # Errors
///
/// [`Error::Value`] for a temperature that is not finite and `> 0`, or `x` without classes.
///
/// ```
/// use ndarray::array;
///
/// let p = kdloss::softmax(&array![[0.0_f64, 2.0_f64.ln()]], 1.0)?;
/// assert!((p[[0, 0]] - 1.0 / 3.0).abs() < 1e-15 && (p[[0, 1]] - 2.0 / 3.0).abs() < 1e-15);
/// # Ok::<(), kdloss::Error>(())
/// ```
pub fn softmax<'a, T: Element>(
    x: impl AsArray<'a, T, Ix2>,
    temperature: impl Into<f64>,
) -> Result<Array2<T>, Error> {
    softmax_rows(x.into(), temperature.into(), false)
}

/// `log(softmax(x / temperature))` along each row of `x`, computed as `x/T − logsumexp(x/T)`
/// (exact where the probabilities underflow), in a new array of `x`'s shape.
///
/// # Errors
///
/// As [`softmax`].
///
/// ```
/// use ndarray::array;
///
/// let lp = kdloss::log_softmax(&array![[0.0_f32, -200.0]], 1.0)?;
/// assert_eq!(lp[[0, 0]], 0.0);
/// assert_eq!(lp[[0, 1]], -200.0); // its softmax is 0 in f32, its log is not -inf
/// # Ok::<(), kdloss::Error>(())
/// ```
pub fn log_softmax<'a, T: Element>(
    x: impl AsArray<'a, T, Ix2>,
    temperature: impl Into<f64>,
) -> Result<Array2<T>, Error> {
    softmax_rows(x.into(), temperature.into(), true)
}

fn softmax_rows<T: Element>(
    x: ArrayView2<'_, T>,
    temperature: f64,
    log: bool,
) -> Result<Array2<T>, Error> {
    let mut out = Array2::from_elem(x.raw_dim(), T::ZERO);
    let o = out
        .as_slice_mut()
        .ok_or_else(|| Error::internal("a fresh softmax array is not contiguous"))?;
    kernels::softmax_into(x, temperature, log, Out::new(o))?;
    Ok(out)
}

/// The cross-entropy `logsumexp(x) − x[label]` of each row of `logits` against its class
/// index in `labels`, averaged over the rows (0 for no rows). Other reductions and ignored
/// labels: [`DistillationLoss`] with `alpha = 0`.
///
/// # Errors
///
/// [`Error::Value`] when `logits` has no classes, the labels are not one per row, or a label
/// is out of range.
///
/// ```
/// use ndarray::array;
///
/// // Not clamped: a confident wrong answer costs what it costs.
/// let ce: f64 = kdloss::cross_entropy(&array![[0.0, -1000.0]], &[1])?;
/// assert_eq!(ce, 1000.0);
/// # Ok::<(), kdloss::Error>(())
/// ```
pub fn cross_entropy<'a, T: Element>(
    logits: impl AsArray<'a, T, Ix2>,
    labels: &[usize],
) -> Result<T, Error> {
    let x = logits.into();
    let labels = check::label_indices(labels, x.ncols(), None)?;
    let loss = kernels::cross_entropy(
        x,
        ArrayView1::from(&labels),
        kernels::Reduction::Mean,
        None,
        0.0,
        Default::default(),
    )?;
    scalar(loss)
}

/// `KL(softmax(teacher/T) ‖ softmax(student/T))` of each row, averaged over the rows (0 for
/// no rows), without the `T²` of the distillation loss. Other reductions: [`DistillationLoss`]
/// with `alpha = 1`, which includes the `T²`.
///
/// # Errors
///
/// [`Error::Value`] for a temperature that is not finite and `> 0`, shapes that differ, or
/// no classes.
///
/// ```
/// use ndarray::array;
///
/// let s = array![[1.0_f64, 2.0, 3.0]];
/// assert_eq!(kdloss::kl_divergence(&s, &s, 2.0)?, 0.0);
/// // The teacher puts mass where the student puts none: infinitely far.
/// let t = array![[0.0_f64, 0.0, 0.0]];
/// let s = array![[0.0_f64, 0.0, f64::NEG_INFINITY]];
/// assert_eq!(kdloss::kl_divergence(&s, &t, 1.0)?, f64::INFINITY);
/// # Ok::<(), kdloss::Error>(())
/// ```
pub fn kl_divergence<'a, T: Element>(
    student: impl AsArray<'a, T, Ix2>,
    teacher: impl AsArray<'a, T, Ix2>,
    temperature: impl Into<f64>,
) -> Result<T, Error> {
    let loss = kernels::kl_divergence(
        student.into(),
        teacher.into(),
        temperature.into(),
        kernels::Reduction::Mean,
    )?;
    scalar(loss)
}
