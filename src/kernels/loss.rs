//! The public loss functions: the distillation loss (with or without its gradient), KL
//! divergence and cross-entropy, each a choice of term weights for the row driver.

use ndarray::{ArrayView1, ArrayView2};

use super::check::{check_alpha, check_fraction, check_temperature};
use super::driver::{run, Job, Selection};
use super::float::Float;
use super::objective::hinton::{FORWARD, REVERSE};
use super::out::Out;
use super::reduce::{Loss, Parts, Reduction};
use super::simd::{self, Simd};
use crate::error::KdError;

/// The distillation loss `alpha·T²·KL + (1 − alpha)·CE(s, y)`, with `KL` forward,
/// `KL(softmax(t/T) || softmax(s/T))` (the default), or reverse; without `t2_scale`, the `T²`
/// is left out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Distillation {
    pub temperature: f64,
    pub alpha: f64,
    pub reduction: Reduction,
    /// The label of rows that count in neither term; `None`: every row counts.
    pub ignore_index: Option<i64>,
    pub divergence: Divergence,
    /// Whether the divergence term is multiplied by `T²` (Hinton's loss; the default).
    pub t2_scale: bool,
    /// The cross-entropy's label smoothing `ε`, in `[0, 1]` (0: none, the default).
    pub label_smoothing: f64,
}

/// The direction of a distillation loss's KL term, for `p = softmax(t/T)`, `q = softmax(s/T)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Divergence {
    /// `KL(p ‖ q)`.
    #[default]
    ForwardKl,
    /// `KL(q ‖ p)`.
    ReverseKl,
}

impl Divergence {
    /// The names `parse` takes.
    pub const NAMES: [&'static str; 2] = ["forward_kl", "reverse_kl"];

    /// The divergence called `name` (the argument `arg`), with the mixture weight `beta` of
    /// the JSD and `skew` of the skewed KLs (both checked, whichever the divergence uses).
    pub fn parse(arg: &str, name: &str, beta: f64, skew: f64) -> Result<Divergence, KdError> {
        check_fraction(beta, "beta")?;
        check_fraction(skew, "skew")?;
        match name {
            "forward_kl" => Ok(Divergence::ForwardKl),
            "reverse_kl" => Ok(Divergence::ReverseKl),
            _ => Err(KdError::value(format!(
                "{arg} must be one of {}, got {name:?}",
                Self::NAMES.map(|n| format!("'{n}'")).join(", ")
            ))),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Divergence::ForwardKl => "forward_kl",
            Divergence::ReverseKl => "reverse_kl",
        }
    }

    /// The `KL` parameter of the `Hinton` objective.
    pub(crate) fn kl(self) -> u8 {
        match self {
            Divergence::ForwardKl => FORWARD,
            Divergence::ReverseKl => REVERSE,
        }
    }
}

impl Distillation {
    pub fn new(
        temperature: f64,
        alpha: f64,
        reduction: Reduction,
        ignore_index: Option<i64>,
    ) -> Result<Self, KdError> {
        check_temperature(temperature)?;
        check_alpha(alpha)?;
        Ok(Distillation {
            temperature,
            alpha,
            reduction,
            ignore_index,
            divergence: Divergence::default(),
            t2_scale: true,
            label_smoothing: 0.0,
        })
    }

    /// The same loss with the KL term in the direction `divergence`.
    pub fn with_divergence(self, divergence: Divergence) -> Self {
        Distillation { divergence, ..self }
    }

    /// The same loss with the cross-entropy's labels smoothed by `label_smoothing` (in
    /// `[0, 1]`), as PyTorch's `F.cross_entropy(label_smoothing=...)`.
    pub fn with_label_smoothing(self, label_smoothing: f64) -> Result<Self, KdError> {
        check_fraction(label_smoothing, "label_smoothing")?;
        Ok(Distillation {
            label_smoothing,
            ..self
        })
    }

    /// The same loss with the divergence term multiplied by `T²` or not.
    pub fn with_t2_scale(self, t2_scale: bool) -> Self {
        Distillation { t2_scale, ..self }
    }

    /// The loss's weight of the divergence term, `alpha·T²` (`alpha` without `t2_scale`).
    fn divergence_weight(&self) -> f64 {
        let t = self.temperature;
        self.alpha * if self.t2_scale { t * t } else { 1.0 }
    }
}

/// The distillation loss of `student` against `teacher` (and `labels`, needed unless
/// `alpha == 1`), writing d(loss)/d(student) into `grad` (C-contiguous, student's shape) when
/// given.
pub fn distillation<T: Float>(
    cfg: &Distillation,
    student: ArrayView2<T>,
    teacher: ArrayView2<T>,
    labels: Option<ArrayView1<i64>>,
    grad: Option<Out<'_, T>>,
) -> Result<Loss<T>, KdError> {
    distillation_at(simd::active(), cfg, student, teacher, labels, grad)
}

/// `distillation` at the SIMD level `level`, which this CPU must have.
pub fn distillation_at<T: Float>(
    level: Simd,
    cfg: &Distillation,
    student: ArrayView2<T>,
    teacher: ArrayView2<T>,
    labels: Option<ArrayView1<i64>>,
    grad: Option<Out<'_, T>>,
) -> Result<Loss<T>, KdError> {
    let selection = Selection::default();
    distillation_parts_at(level, cfg, student, teacher, labels, selection, grad).map(|p| p.loss)
}

/// `distillation_at` over the rows `selection` keeps, divided as it says, with the loss's
/// parts.
pub fn distillation_parts_at<T: Float>(
    level: Simd,
    cfg: &Distillation,
    student: ArrayView2<T>,
    teacher: ArrayView2<T>,
    labels: Option<ArrayView1<i64>>,
    selection: Selection<'_>,
    grad: Option<Out<'_, T>>,
) -> Result<Parts<T>, KdError> {
    simd::check_available(level)?;
    let job = Job {
        subject: "student_logits",
        kl: cfg.divergence.kl(),
        kl_weight: cfg.divergence_weight(),
        ce_weight: 1.0 - cfg.alpha,
        temperature: cfg.temperature,
        label_smoothing: cfg.label_smoothing,
        reduction: cfg.reduction,
        ignore_index: cfg.ignore_index,
        level,
    };
    run(job, student, teacher, labels, selection, grad)
}

/// `KL(softmax(teacher/T) || softmax(student/T))` per row, reduced (no T² factor).
pub fn kl_divergence<T: Float>(
    student: ArrayView2<T>,
    teacher: ArrayView2<T>,
    temperature: f64,
    reduction: Reduction,
) -> Result<Loss<T>, KdError> {
    check_temperature(temperature)?;
    let job = Job {
        subject: "student_logits",
        kl: FORWARD,
        kl_weight: 1.0,
        ce_weight: 0.0,
        temperature,
        label_smoothing: 0.0,
        reduction,
        ignore_index: None,
        level: simd::active(),
    };
    run(job, student, teacher, None, Selection::default(), None).map(|p| p.loss)
}

/// Cross-entropy `logsumexp(x) − x[y]` per row (with `label_smoothing` and the selection's
/// class weights as PyTorch's `F.cross_entropy`), reduced; rows labelled `ignore_index` (when
/// there is one), or left out by `selection`, do not count.
pub fn cross_entropy<T: Float>(
    logits: ArrayView2<T>,
    labels: ArrayView1<i64>,
    reduction: Reduction,
    ignore_index: Option<i64>,
    label_smoothing: f64,
    selection: Selection<'_>,
) -> Result<Loss<T>, KdError> {
    check_fraction(label_smoothing, "label_smoothing")?;
    let job = Job {
        subject: "logits",
        kl: FORWARD,
        kl_weight: 0.0,
        ce_weight: 1.0,
        temperature: 1.0,
        label_smoothing,
        reduction,
        ignore_index,
        level: simd::active(),
    };
    run(job, logits, logits, Some(labels), selection, None).map(|p| p.loss)
}

#[cfg(test)]
mod tests {
    //! The fused kernels against a plain float64 implementation of the formulas, at every SIMD
    //! level this CPU has (on aarch64 that includes NEON).
    use super::*;
    use crate::kernels::reduce::{Count, Normalizer};
    use ndarray::{Array1, Array2};

    /// Row loss and gradient by the textbook formulas, in f64 with std's exp and ln.
    fn reference_row(
        s: &[f64],
        t: &[f64],
        y: Option<usize>,
        temp: f64,
        alpha: f64,
        divergence: Divergence,
    ) -> (f64, Vec<f64>) {
        let log_softmax = |x: &[f64], temp: f64| -> Vec<f64> {
            let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: Vec<f64> = x.iter().map(|v| (v - m) / temp).collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            z.iter().map(|v| v - lse).collect()
        };
        let (ls, lt, l1) = (
            log_softmax(s, temp),
            log_softmax(t, temp),
            log_softmax(s, 1.0),
        );
        let mut loss = 0.0;
        let mut grad = vec![0.0; s.len()];
        if alpha > 0.0 && divergence == Divergence::ForwardKl {
            let kl: f64 = lt
                .iter()
                .zip(&ls)
                .filter(|(a, _)| a.exp() > 0.0)
                .map(|(a, b)| a.exp() * (a - b))
                .sum();
            loss += alpha * temp * temp * kl;
            for j in 0..s.len() {
                grad[j] += alpha * temp * (ls[j].exp() - lt[j].exp());
            }
        }
        if alpha > 0.0 && divergence == Divergence::ReverseKl {
            let kl: f64 = ls
                .iter()
                .zip(&lt)
                .filter(|(a, _)| a.exp() > 0.0)
                .map(|(a, b)| a.exp() * (a - b))
                .sum();
            loss += alpha * temp * temp * kl;
            for j in 0..s.len() {
                let q = ls[j].exp();
                if q > 0.0 {
                    grad[j] += alpha * temp * q * (ls[j] - lt[j] - kl);
                }
            }
        }
        if alpha < 1.0 {
            let y = y.expect("label");
            loss += (1.0 - alpha) * -l1[y];
            for j in 0..s.len() {
                grad[j] += (1.0 - alpha) * (l1[j].exp() - if j == y { 1.0 } else { 0.0 });
            }
        }
        (loss, grad)
    }

    /// A small deterministic generator (no dev-dependency needed).
    fn lcg(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[allow(clippy::too_many_arguments)]
    fn check<T: Float>(
        level: Simd,
        rows: usize,
        c: usize,
        temp: f64,
        alpha: f64,
        divergence: Divergence,
        tol: f64,
        seed: u64,
    ) {
        let mut st = seed;
        let mut s = Array2::from_shape_fn((rows, c), |_| T::from_f64(4.0 * lcg(&mut st)));
        let mut t = Array2::from_shape_fn((rows, c), |_| T::from_f64(4.0 * lcg(&mut st)));
        // With two classes or more, the last is masked in both rows and never a label.
        let labelled = if c > 1 {
            s.column_mut(c - 1).fill(T::NEG_INFINITY);
            t.column_mut(c - 1).fill(T::NEG_INFINITY);
            c - 1
        } else {
            1
        };
        let labels = Array1::from_shape_fn(rows, |r| {
            if r % 5 == 3 {
                -100
            } else {
                ((r * 7) % labelled) as i64
            }
        });
        let cfg = Distillation::new(temp, alpha, Reduction::Sum, Some(-100))
            .unwrap()
            .with_divergence(divergence);
        let mut grad = vec![T::ZERO; rows * c];
        let loss = distillation_at(
            level,
            &cfg,
            s.view(),
            t.view(),
            Some(labels.view()),
            Some(Out::new(&mut grad)),
        )
        .unwrap();
        let Loss::Scalar(loss) = loss else {
            panic!("scalar expected")
        };
        let mut want = 0.0;
        for r in 0..rows {
            let row = |x: &Array2<T>| x.row(r).iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
            let g = &grad[r * c..(r + 1) * c];
            if labels[r] == -100 {
                assert!(
                    g.iter().all(|v| v.to_f64() == 0.0),
                    "ignored row {r} has a gradient"
                );
                continue;
            }
            let y = Some(labels[r] as usize);
            let (l, rg) = reference_row(&row(&s), &row(&t), y, temp, alpha, divergence);
            want += l;
            let scale = rg.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            for (j, (a, b)) in g.iter().zip(&rg).enumerate() {
                assert!(
                    (a.to_f64() - b).abs() <= tol * scale,
                    "grad[{r}, {j}] = {a:?}, want {b} (c={c}, T={temp}, alpha={alpha}, \
                     {divergence:?}, {})",
                    level.name()
                );
            }
        }
        assert!(
            (loss - want).abs() <= tol * want.abs().max(1.0),
            "loss {loss}, want {want} (rows={rows}, c={c}, T={temp}, alpha={alpha}, \
             {divergence:?}, {})",
            level.name()
        );
    }

    #[test]
    fn fused_kernel_matches_the_formulas_at_every_level() {
        for level in Simd::available() {
            let mut seed = 1;
            for c in [1usize, 2, 7, 10, 24, 25, 100, 1000, 4099] {
                for &(temp, alpha) in &[
                    (1.0, 0.5),
                    (2.0, 0.5),
                    (0.7, 0.3),
                    (3.5, 0.8),
                    (2.0, 0.0),
                    (4.0, 1.0),
                ] {
                    for divergence in [Divergence::ForwardKl, Divergence::ReverseKl] {
                        seed += 1;
                        check::<f64>(level, 37, c, temp, alpha, divergence, 1e-12, seed);
                        check::<f32>(level, 37, c, temp, alpha, divergence, 2e-5, seed);
                    }
                }
            }
        }
    }

    /// The per-row terms of `cfg` (reduction "none") at every row.
    fn row_terms(
        cfg: &Distillation,
        s: &Array2<f64>,
        t: &Array2<f64>,
        y: &Array1<i64>,
    ) -> Parts<f64> {
        let cfg = Distillation {
            reduction: Reduction::None,
            ..*cfg
        };
        let level = simd::active();
        let all = Selection::default();
        distillation_parts_at(level, &cfg, s.view(), t.view(), Some(y.view()), all, None).unwrap()
    }

    #[test]
    fn masks_and_normalizers_divide_the_counted_rows_terms() {
        let mut st = 7;
        let (rows, c) = (29, 40);
        let s = Array2::from_shape_fn((rows, c), |_| 3.0 * lcg(&mut st));
        let t = Array2::from_shape_fn((rows, c), |_| 3.0 * lcg(&mut st));
        let y = Array1::from_shape_fn(rows, |r| if r % 4 == 1 { -100 } else { (r % c) as i64 });
        let mask = Array1::from_shape_fn(rows, |r| r % 3 != 0);
        let counted: Vec<bool> = (0..rows).map(|r| mask[r] && y[r] != -100).collect();
        let n = counted.iter().filter(|&&c| c).count();
        let cfg = Distillation::new(2.0, 0.3, Reduction::Mean, Some(-100))
            .unwrap()
            .with_divergence(Divergence::ReverseKl)
            .with_t2_scale(false);
        let Parts {
            divergence: Loss::Rows(div),
            cross_entropy: Loss::Rows(ce),
            ..
        } = row_terms(&cfg, &s, &t, &y)
        else {
            panic!("per-row parts expected")
        };
        let sum = |v: &[f64]| -> f64 { (0..rows).filter(|&r| counted[r]).map(|r| v[r]).sum() };
        let (div_sum, ce_sum) = (sum(&div), sum(&ce));
        let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-13 * b.abs(), "{a} {b}");
        for (reduction, normalizer, want_div, want_ce) in [
            (Reduction::Mean, None, div_sum / n as f64, ce_sum / n as f64),
            (Reduction::Sum, None, div_sum, ce_sum),
            (
                Reduction::Mean,
                Some(Normalizer::new(4.0).unwrap()),
                div_sum / 4.0,
                ce_sum / 4.0,
            ),
            (
                Reduction::Sum,
                Some(Normalizer::split(3.0, 8.0).unwrap()),
                div_sum / 3.0,
                ce_sum / 8.0,
            ),
        ] {
            let cfg = Distillation { reduction, ..cfg };
            let selection = Selection {
                mask: Some(mask.view()),
                normalizer,
                ..Default::default()
            };
            let mut grad = vec![1.0; rows * c];
            let parts = distillation_parts_at(
                simd::active(),
                &cfg,
                s.view(),
                t.view(),
                Some(y.view()),
                selection,
                Some(Out::new(&mut grad)),
            )
            .unwrap();
            let (Loss::Scalar(div), Loss::Scalar(ce), Loss::Scalar(loss)) =
                (parts.divergence, parts.cross_entropy, parts.loss)
            else {
                panic!("scalar parts expected")
            };
            close(div, want_div);
            close(ce, want_ce);
            // No T²: alpha·div + (1 − alpha)·ce.
            close(loss, 0.3 * want_div + 0.7 * want_ce);
            assert_eq!(parts.count, Count::Scalar(n));
            assert_eq!(parts.weight_sum, Loss::Scalar(n as f64));
            for r in (0..rows).filter(|&r| !counted[r]) {
                assert!(
                    grad[r * c..(r + 1) * c].iter().all(|&g| g == 0.0),
                    "row {r}"
                );
            }
        }
        // A normaliser is only for reduced losses; a mask must have one entry per row.
        let none = Distillation {
            reduction: Reduction::None,
            ..cfg
        };
        let selection = Selection {
            normalizer: Some(Normalizer::new(2.0).unwrap()),
            ..Default::default()
        };
        let level = simd::active();
        let (sv, tv, yv) = (s.view(), t.view(), Some(y.view()));
        assert!(distillation_parts_at(level, &none, sv, tv, yv, selection, None).is_err());
        let short = Array1::from_elem(rows - 1, true);
        let selection = Selection {
            mask: Some(short.view()),
            ..Default::default()
        };
        let err = distillation_parts_at(level, &cfg, sv, tv, yv, selection, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "mask must have one entry per row ({rows}), got {}",
                rows - 1
            )
        );
        assert!(Normalizer::new(0.0).is_err() && Normalizer::split(1.0, f64::NAN).is_err());
    }

    #[test]
    fn tiled_rows_match_the_formulas_at_every_level() {
        // Long enough to be summed a tile at a time (`long::tile_len`) in both types.
        for level in Simd::available() {
            for divergence in [Divergence::ForwardKl, Divergence::ReverseKl] {
                for (seed, &(temp, alpha)) in
                    [(2.0, 0.5), (0.7, 1.0), (1.0, 0.0)].iter().enumerate()
                {
                    let seed = seed as u64 + 100;
                    check::<f64>(level, 3, 70_001, temp, alpha, divergence, 1e-11, seed);
                    check::<f32>(level, 3, 70_001, temp, alpha, divergence, 1e-4, seed);
                }
            }
        }
    }
}
