//! The tests of the Rust function kdloss started from (`distillation_loss.rs`), ported to the
//! public API. Each of its assertions that is right holds here, with its tolerance; where the
//! original was wrong (it panicked on bad input, clamped probabilities at 1e-10, turned NaN
//! into finite losses) the test pins kdloss's behaviour instead and says what the original
//! did. Its property tests run on seeded cases from `common::Lcg`, as many as it ran.

mod common;

use common::{argmax, assert_close, Lcg};
use kdloss::{cross_entropy, kl_divergence, softmax, DistillationLoss, Error};
use ndarray::{array, Array2, Axis};

/// Logits whose softmax is `p` (at temperature 1): the original's KL took probabilities,
/// kdloss's takes logits.
fn logits_of(p: &Array2<f32>) -> Array2<f32> {
    p.mapv(f32::ln)
}

fn entropy(probs: &Array2<f32>) -> f32 {
    probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.ln())
        .sum()
}

#[test]
fn test_distillation_loss_basic() -> Result<(), Error> {
    let loss_fn = DistillationLoss::new(2.0, 0.5)?;
    let student = array![[2.0, 1.0, 0.5]];
    let teacher = array![[1.5, 1.2, 0.8]];
    let labels = vec![0];

    let loss: f32 = loss_fn.forward(&student, &teacher, &labels)?;
    assert!(loss > 0.0);
    assert!(loss.is_finite());
    Ok(())
}

#[test]
fn test_softmax_sums_to_one() -> Result<(), Error> {
    let x = array![[1.0_f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let probs = softmax(&x, 1.0)?;
    for row in probs.axis_iter(Axis(0)) {
        let sum: f32 = row.sum();
        assert_close(sum.into(), 1.0, 1e-6);
    }
    Ok(())
}

#[test]
fn test_kl_divergence_zero_for_identical() -> Result<(), Error> {
    let p = array![[0.7_f32, 0.2, 0.1], [0.5, 0.3, 0.2]];
    let x = logits_of(&p);
    let kl: f32 = kl_divergence(&x, &x, 1.0)?;
    // The original allowed 1e-6; identical rows give exactly 0.
    assert_eq!(kl, 0.0);
    Ok(())
}

#[test]
fn test_kl_divergence_positive() -> Result<(), Error> {
    let p = array![[0.7_f32, 0.2, 0.1]];
    let q = array![[0.4_f32, 0.4, 0.2]];
    // KL(p || q): p is the teacher's distribution, q the student's.
    let kl: f32 = kl_divergence(&logits_of(&q), &logits_of(&p), 1.0)?;
    assert!(kl > 0.0);
    let want: f64 = [(0.7, 0.4), (0.2, 0.4), (0.1, 0.2)]
        .iter()
        .map(|&(p, q): &(f64, f64)| p * (p / q).ln())
        .sum();
    assert_close(kl.into(), want, 1e-6);
    Ok(())
}

/// The original panicked ("Temperature must be positive"); kdloss returns an error naming the
/// argument.
#[test]
fn test_negative_temperature_is_an_error() {
    let err = DistillationLoss::new(-1.0, 0.5).unwrap_err();
    assert!(matches!(err, Error::Value(_)));
    assert_eq!(
        err.to_string(),
        "temperature must be a finite number > 0, got -1"
    );
    for t in [0.0, f64::NAN, f64::INFINITY] {
        assert!(DistillationLoss::new(t, 0.5).is_err(), "temperature {t}");
    }
}

/// The original panicked ("Alpha must be in [0, 1]"); kdloss returns an error naming the
/// argument.
#[test]
fn test_invalid_alpha_is_an_error() {
    let err = DistillationLoss::new(2.0, 1.5).unwrap_err();
    assert!(matches!(err, Error::Value(_)));
    assert_eq!(err.to_string(), "alpha must be in [0, 1], got 1.5");
    for a in [-0.1, f64::NAN] {
        assert!(DistillationLoss::new(2.0, a).is_err(), "alpha {a}");
    }
}

#[test]
fn test_temperature_effect() -> Result<(), Error> {
    let student = array![[10.0_f32, 1.0, 0.1]];
    let teacher = array![[5.0_f32, 4.0, 3.0]];
    let labels = vec![0];

    let low_temp_loss = DistillationLoss::new(1.0, 1.0)?;
    let high_temp_loss = DistillationLoss::new(5.0, 1.0)?;

    let loss_low: f32 = low_temp_loss.forward(&student, &teacher, &labels)?;
    let loss_high: f32 = high_temp_loss.forward(&student, &teacher, &labels)?;
    assert!(loss_low != loss_high);
    Ok(())
}

#[test]
fn test_alpha_balances_losses() -> Result<(), Error> {
    let student = array![[2.0_f32, 1.0, 0.5]];
    let teacher = array![[1.5_f32, 1.2, 0.8]];
    let labels = vec![0];

    let loss_distill = DistillationLoss::new(2.0, 1.0)?.forward(&student, &teacher, &labels)?;
    let loss_hard = DistillationLoss::new(2.0, 0.0)?.forward(&student, &teacher, &labels)?;
    let loss_balanced = DistillationLoss::new(2.0, 0.5)?.forward(&student, &teacher, &labels)?;

    assert!(loss_balanced > 0.0);
    assert!(loss_distill > 0.0);
    assert!(loss_hard > 0.0);
    // The loss is linear in alpha.
    assert_close(
        loss_balanced.into(),
        0.5 * f64::from(loss_distill) + 0.5 * f64::from(loss_hard),
        1e-6,
    );
    Ok(())
}

#[test]
fn falsify_emb_006_temperature_identity() -> Result<(), Error> {
    let logits = array![[3.0_f32, 1.0, 0.5, -1.0]];
    let softmax_raw = softmax(&logits, 1.0)?;
    let softmax_t1 = softmax(&(&logits / 1.0), 1.0)?;
    for (a, b) in softmax_raw.iter().zip(softmax_t1.iter()) {
        assert_close((*a).into(), (*b).into(), 1e-6);
    }
    // kdloss's temperature argument is the same as dividing first.
    let t3 = softmax(&logits, 3.0)?;
    for (a, b) in t3.iter().zip(softmax(&(&logits / 3.0), 1.0)?.iter()) {
        assert_close((*a).into(), (*b).into(), 1e-6);
    }
    Ok(())
}

#[test]
fn falsify_emb_007_temperature_monotonicity() -> Result<(), Error> {
    let logits = array![[5.0_f32, 2.0, 0.1, -3.0]];
    let h_low = entropy(&softmax(&logits, 1.0)?);
    let h_high = entropy(&softmax(&logits, 10.0)?);
    assert!(
        h_high > h_low,
        "higher temperature should increase entropy, got h_low={h_low}, h_high={h_high}"
    );
    Ok(())
}

#[test]
fn falsify_sm_001_sums_to_one() -> Result<(), Error> {
    let x = array![[3.0_f32, 1.0, 0.5, -1.0], [-2.0, 0.0, 4.0, 1.0]];
    let probs = softmax(&x, 1.0)?;
    for row in probs.axis_iter(Axis(0)) {
        assert_close(row.sum().into(), 1.0, 1e-5);
    }
    Ok(())
}

#[test]
fn falsify_sm_002_strictly_positive() -> Result<(), Error> {
    let x = array![[-10.0_f32, -5.0, 0.0, 5.0, 10.0]];
    for &p in &softmax(&x, 1.0)? {
        assert!(p > 0.0, "softmax output {p} not strictly positive");
    }
    Ok(())
}

#[test]
fn falsify_sm_003_order_preservation() -> Result<(), Error> {
    let x = array![[1.0_f32, 5.0, 3.0, 2.0]];
    let probs = softmax(&x, 1.0)?;
    assert_eq!(argmax(x.row(0)), argmax(probs.row(0)));
    assert_eq!(argmax(probs.row(0)), 1);
    Ok(())
}

#[test]
fn falsify_sm_004_bounded_zero_one() -> Result<(), Error> {
    let x = array![[-100.0_f32, -10.0, 0.0, 10.0, 100.0]];
    for &p in &softmax(&x, 1.0)? {
        assert!((0.0..=1.0).contains(&p), "softmax output {p} not in [0, 1]");
    }
    let moderate = array![[1.0_f32, 2.0, 3.0]];
    for &p in &softmax(&moderate, 1.0)? {
        assert!(
            p > 0.0 && p < 1.0,
            "moderate softmax output {p} not in (0, 1)"
        );
    }
    Ok(())
}

#[test]
fn falsify_sm_005_numerical_stability() -> Result<(), Error> {
    let x = array![[1000.0_f32, 999.0, 998.0]];
    let probs = softmax(&x, 1.0)?;
    for &p in &probs {
        assert!(p.is_finite(), "softmax output {p} not finite");
        assert!(p > 0.0, "softmax output {p} not positive");
    }
    assert_close(probs.sum().into(), 1.0, 1e-5);
    Ok(())
}

#[test]
fn falsify_sm_006_identical_elements_uniform() -> Result<(), Error> {
    for n in [2, 4, 8, 16] {
        let x = Array2::from_elem((1, n), 7.0_f32);
        for &p in &softmax(&x, 1.0)? {
            assert_close(p.into(), 1.0 / n as f64, 1e-6);
        }
    }
    Ok(())
}

#[test]
fn falsify_sm_009_single_element() -> Result<(), Error> {
    for x in [0.0_f32, 1.0, -1.0, 100.0, -100.0, f32::MIN_POSITIVE] {
        let probs = softmax(&array![[x]], 1.0)?;
        // The original allowed 1e-6; one class has probability exactly 1.
        assert_eq!(probs[[0, 0]], 1.0, "softmax([{x}])");
    }
    Ok(())
}

#[test]
fn falsify_sm_007_translation_invariance() -> Result<(), Error> {
    let base = array![[1.0_f32, 3.0, -2.0, 0.5]];
    let base_probs = softmax(&base, 1.0)?;
    for c in [100.0_f32, -100.0, 0.0, 42.0, -999.0] {
        let shifted_probs = softmax(&(&base + c), 1.0)?;
        for (i, (&orig, &shift)) in base_probs.iter().zip(shifted_probs.iter()).enumerate() {
            assert!(
                (orig - shift).abs() < 1e-5,
                "σ(x+{c})[{i}] = {shift} != σ(x)[{i}] = {orig}"
            );
        }
    }
    Ok(())
}

#[test]
fn falsify_sm_001_prop_sums_to_one() -> Result<(), Error> {
    let mut rng = Lcg::new(1);
    for _ in 0..500 {
        let n = rng.below(2, 64);
        let x = Array2::from_shape_vec((1, n), rng.vec_f32(n, -100.0, 100.0)).unwrap();
        let sum: f32 = softmax(&x, 1.0)?.sum();
        assert!((sum - 1.0).abs() < 1e-4, "sum={sum} for {n} elements");
    }
    Ok(())
}

#[test]
fn falsify_sm_002_prop_positive() -> Result<(), Error> {
    let mut rng = Lcg::new(2);
    for _ in 0..500 {
        let n = rng.below(2, 32);
        let x = Array2::from_shape_vec((1, n), rng.vec_f32(n, -500.0, 500.0)).unwrap();
        for (i, &p) in softmax(&x, 1.0)?.iter().enumerate() {
            assert!(p >= 0.0, "probs[{i}]={p} negative");
            assert!(p.is_finite(), "probs[{i}]={p} non-finite");
        }
    }
    Ok(())
}

/// Seeded rows of `2..32` distinct logits in `[-50, 50)`: the original skipped rows with two
/// logits within `min_gap` of each other, since equal logits have no single argmax.
fn distinct_rows(seed: u64, cases: usize, min_gap: f32) -> Vec<Vec<f32>> {
    let mut rng = Lcg::new(seed);
    (0..cases)
        .map(|_| {
            let n = rng.below(2, 32);
            rng.vec_f32(n, -50.0, 50.0)
        })
        .filter(|v| {
            let mut sorted = v.clone();
            sorted.sort_by(f32::total_cmp);
            sorted.windows(2).all(|w| w[1] - w[0] >= min_gap)
        })
        .collect()
}

#[test]
fn falsify_sm_003_prop_order_preservation() -> Result<(), Error> {
    let rows = distinct_rows(3, 500, 1e-10);
    assert!(rows.len() > 450);
    for logits in rows {
        let x = Array2::from_shape_vec((1, logits.len()), logits.clone()).unwrap();
        let probs = softmax(&x, 1.0)?;
        assert_eq!(
            argmax(x.row(0)),
            argmax(probs.row(0)),
            "argmax changed for {logits:?}"
        );
    }
    Ok(())
}

#[test]
fn falsify_apr_distill_train_003_t_scaling_preserves_argmax() -> Result<(), Error> {
    let logits = array![[3.0_f32, 1.0, 0.5, -1.0, 7.0, -3.0, 2.5, 0.0]];
    let baseline_argmax = argmax(logits.row(0));
    for t in [1.0_f32, 2.0, 3.0, 5.0, 10.0] {
        for probs in [softmax(&(&logits / t), 1.0)?, softmax(&logits, t)?] {
            assert_eq!(
                baseline_argmax,
                argmax(probs.row(0)),
                "argmax shifted at T={t}"
            );
        }
    }
    Ok(())
}

#[test]
fn falsify_apr_distill_train_004_alpha_one_equals_pure_kd() -> Result<(), Error> {
    let student = array![[2.5_f32, 0.7, -1.3, 4.0]];
    let teacher = array![[1.8_f32, 1.1, -0.2, 3.5]];
    let labels = vec![3_usize];
    let temperature = 3.0_f32;

    let total_at_alpha_one: f32 =
        DistillationLoss::new(temperature, 1.0)?.forward(&student, &teacher, &labels)?;
    let kl: f32 = kl_divergence(&student, &teacher, temperature)?;
    let pure_kd = kl * temperature * temperature;
    assert_close(total_at_alpha_one.into(), pure_kd.into(), 1e-5);
    Ok(())
}

#[test]
fn falsify_apr_distill_train_003_prop_t_scaling_preserves_argmax() -> Result<(), Error> {
    let rows = distinct_rows(4, 200, 1e-6);
    assert!(rows.len() > 150);
    for logits in rows {
        let x = Array2::from_shape_vec((1, logits.len()), logits.clone()).unwrap();
        let baseline = argmax(x.row(0));
        for t in [1.0_f32, 2.0, 3.0, 5.0, 10.0] {
            assert_eq!(
                baseline,
                argmax(softmax(&(&x / t), 1.0)?.row(0)),
                "argmax shifted at T={t} for {logits:?}"
            );
        }
    }
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Where the original was wrong
// -------------------------------------------------------------------------------------------

/// The original clamped probabilities at 1e-10, so its cross-entropy stopped at
/// `-ln(1e-10) ≈ 23.03`; the true value is the gap between the logits.
#[test]
fn cross_entropy_is_not_capped() -> Result<(), Error> {
    let x32 = array![[0.0_f32, -1000.0]];
    let x64 = array![[0.0_f64, -1000.0]];
    assert_eq!(cross_entropy(&x32, &[1])?, 1000.0);
    assert_eq!(cross_entropy(&x64, &[1])?, 1000.0);
    let hard = DistillationLoss::new(2.0, 0.0)?;
    assert_eq!(hard.forward(&x32, &x32, &[1])?, 1000.0);
    let (loss, grad) = hard.forward_backward(&x64, &x64, &[1])?;
    assert_eq!(loss, 1000.0);
    assert_eq!(grad, array![[1.0, -1.0]]);
    Ok(())
}

/// The original's KL clamped the student's probabilities at 1e-10 (ln 1e-10 ≈ −23), which
/// turned a KL near 500 into one near 10.8.
#[test]
fn kl_divergence_is_not_capped() -> Result<(), Error> {
    let teacher = array![[0.0_f64, 0.0]];
    let student = array![[0.0_f64, -1000.0]];
    // 0.5·ln(0.5 / 1) + 0.5·ln(0.5 / e^−1000)
    let want = 500.0 - 2.0_f64.ln();
    let kl = kl_divergence(&student, &teacher, 1.0)?;
    assert!((kl - want).abs() <= 1e-12 * want, "{kl} != {want}");
    let kl32: f32 = kl_divergence(
        &student.mapv(|v| v as f32),
        &teacher.mapv(|v| v as f32),
        1.0,
    )?;
    assert!(
        (f64::from(kl32) - want).abs() <= 1e-5 * want,
        "{kl32} != {want}"
    );
    // A class the teacher has and the student rules out is infinitely far.
    let masked = array![[0.0_f64, f64::NEG_INFINITY]];
    assert_eq!(kl_divergence(&masked, &teacher, 1.0)?, f64::INFINITY);
    Ok(())
}

/// The original's `f32::max` against 1e-10 returned 1e-10 for a NaN probability and its KL
/// skipped NaN terms, so a NaN logit gave a finite loss (a cross-entropy of about 23, a KL of
/// 0); NaN, and +inf (whose softmax is undefined), propagate.
#[test]
fn nan_and_inf_logits_give_nan() -> Result<(), Error> {
    let kd = DistillationLoss::new(2.0, 0.5)?;
    let fine = array![[1.0_f32, 2.0, 3.0]];
    for bad in [f32::NAN, f32::INFINITY] {
        let broken = array![[1.0_f32, bad, 3.0]];
        for alpha in [0.0, 0.5, 1.0] {
            let kd = DistillationLoss::new(2.0, alpha)?;
            assert!(
                kd.forward(&broken, &fine, &[0])?.is_nan(),
                "student {bad}, alpha {alpha}"
            );
        }
        assert!(kd.forward(&fine, &broken, &[0])?.is_nan(), "teacher {bad}");
        let (loss, grad) = kd.forward_backward(&broken, &fine, &[0])?;
        assert!(
            loss.is_nan() && grad.iter().any(|g| g.is_nan()),
            "student {bad}"
        );
        assert!(cross_entropy(&broken, &[0])?.is_nan(), "{bad}");
        assert!(kl_divergence(&fine, &broken, 1.0)?.is_nan(), "{bad}");
        assert!(softmax(&broken, 1.0)?.iter().any(|p| p.is_nan()), "{bad}");
    }
    Ok(())
}

/// The original panicked on mismatched shapes (`assert_eq!`) and on a label out of range
/// (an index out of bounds); kdloss returns errors that name the argument.
#[test]
fn bad_shapes_and_labels_are_errors() -> Result<(), Error> {
    let kd = DistillationLoss::new(2.0, 0.5)?;
    let s = array![[1.0_f32, 2.0, 3.0]];
    let wide = array![[1.0_f32, 2.0, 3.0, 4.0]];
    let message = |e: Error| e.to_string();
    assert_eq!(
        message(kd.forward(&s, &wide, &[0]).unwrap_err()),
        "student_logits and teacher_logits must have the same shape, got (1, 3) and (1, 4)"
    );
    assert_eq!(
        message(kd.forward(&s, &s, &[0, 1]).unwrap_err()),
        "labels must have one entry per row (1), got 2"
    );
    assert_eq!(
        message(kd.forward(&s, &s, &[3]).unwrap_err()),
        "labels must be in [0, 3), got 3 at flat index 0"
    );
    assert_eq!(
        message(cross_entropy(&s, &[usize::MAX]).unwrap_err()),
        format!(
            "labels must be in [0, 3), got {} at flat index 0",
            usize::MAX
        )
    );
    let with_pad = kd.with_ignore_index(7);
    assert_eq!(
        message(with_pad.forward(&s, &s, &[5]).unwrap_err()),
        "labels must be in [0, 3) or equal ignore_index (7), got 5 at flat index 0"
    );
    assert!(matches!(
        kd.with_ignore_index(usize::MAX).forward(&s, &s, &[0]),
        Err(Error::Value(m)) if m.starts_with("ignore_index must be at most")
    ));
    let no_classes = Array2::<f32>::zeros((2, 0));
    assert_eq!(
        message(kd.forward(&no_classes, &no_classes, &[0, 0]).unwrap_err()),
        "student_logits must have at least one class, got shape (2, 0)"
    );
    assert!(softmax(&no_classes, 1.0).is_err());
    assert!(kl_divergence(&s, &s, 0.0).is_err());
    Ok(())
}

/// An empty batch: the original returned 0 (its sums divided by `max(1, rows)`); kdloss's
/// mean over no rows is 0 as well, with an empty gradient.
#[test]
fn an_empty_batch_has_loss_zero() -> Result<(), Error> {
    let kd = DistillationLoss::new(2.0, 0.5)?;
    let empty = Array2::<f32>::zeros((0, 3));
    assert_eq!(kd.forward(&empty, &empty, &[])?, 0.0);
    let (loss, grad) = kd.forward_backward(&empty, &empty, &[])?;
    assert_eq!((loss, grad.dim()), (0.0, (0, 3)));
    assert_eq!(cross_entropy(&empty, &[])?, 0.0);
    assert_eq!(kl_divergence(&empty, &empty, 2.0)?, 0.0);
    Ok(())
}
