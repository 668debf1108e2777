//! The public Rust API: views of any layout, both element types, the gradient, per-row losses,
//! the builder's settings and the error type.

mod common;

use common::{assert_close, Lcg};
use kdloss::{
    cross_entropy, kl_divergence, log_softmax, softmax, DistillationLoss, Divergence, Error,
    Reduction,
};
use ndarray::{array, s, Array2, ArrayView2};

fn logits(seed: u64, rows: usize, classes: usize) -> Array2<f64> {
    let mut rng = Lcg::new(seed);
    Array2::from_shape_fn((rows, classes), |_| rng.uniform(-4.0, 4.0))
}

fn labels(rows: usize, classes: usize) -> Vec<usize> {
    (0..rows).map(|r| (r * 7 + 3) % classes).collect()
}

#[test]
fn strided_views_give_the_results_of_their_contiguous_copies() -> Result<(), Error> {
    let kd = DistillationLoss::new(2.0, 0.3)?;
    for classes in [5, 40] {
        let rows = 19;
        let y = labels(rows, classes);
        // Transposed, every other column, and reversed columns.
        let wide_s = logits(1, classes, rows);
        let wide_t = logits(2, rows, 2 * classes);
        let t_src = logits(3, rows, classes);
        let views: [(ArrayView2<f64>, ArrayView2<f64>); 2] = [
            (wide_s.t(), wide_t.slice(s![.., ..;2])),
            (wide_s.t(), t_src.slice(s![.., ..;-1])),
        ];
        for (sv, tv) in views {
            assert!(!sv.is_standard_layout() && !tv.is_standard_layout());
            let (sc, tc) = (sv.to_owned(), tv.to_owned());
            assert_eq!(kd.forward(sv, tv, &y)?, kd.forward(&sc, &tc, &y)?);
            assert_eq!(
                kd.forward_backward(sv, tv, &y)?,
                kd.forward_backward(&sc, &tc, &y)?
            );
            assert_eq!(kd.forward_rows(sv, tv, &y)?, kd.forward_rows(&sc, &tc, &y)?);
            assert_eq!(softmax(sv, 2.0)?, softmax(&sc, 2.0)?);
            assert_eq!(log_softmax(sv, 1.0)?, log_softmax(&sc, 1.0)?);
            assert_eq!(cross_entropy(sv, &y)?, cross_entropy(&sc, &y)?);
            assert_eq!(kl_divergence(sv, tv, 3.0)?, kl_divergence(&sc, &tc, 3.0)?);
        }
    }
    Ok(())
}

#[test]
fn the_gradient_is_the_derivative_of_the_loss() -> Result<(), Error> {
    let (rows, classes) = (3, 6);
    let s = logits(4, rows, classes);
    let t = logits(5, rows, classes);
    let y = labels(rows, classes);
    let settings = [
        (Reduction::Mean, Divergence::ForwardKl),
        (Reduction::Sum, Divergence::ForwardKl),
        (Reduction::Mean, Divergence::ReverseKl),
    ];
    for (reduction, divergence) in settings {
        let kd = DistillationLoss::new(2.0, 0.5)?
            .with_reduction(reduction)
            .with_divergence(divergence);
        let (loss, grad) = kd.forward_backward(&s, &t, &y)?;
        assert_eq!(loss, kd.forward(&s, &t, &y)?);
        let h = 1e-6;
        for ((i, j), &g) in grad.indexed_iter() {
            let mut up = s.clone();
            let mut down = s.clone();
            up[[i, j]] += h;
            down[[i, j]] -= h;
            let numeric = (kd.forward(&up, &t, &y)? - kd.forward(&down, &t, &y)?) / (2.0 * h);
            assert_close(g, numeric, 1e-8);
        }
    }
    Ok(())
}

#[test]
fn f32_and_f64_agree_and_keep_their_type() -> Result<(), Error> {
    let kd = DistillationLoss::new(3.0, 0.7)?;
    let (s, t) = (logits(6, 8, 30), logits(7, 8, 30));
    let y = labels(8, 30);
    let (s32, t32) = (s.mapv(|v| v as f32), t.mapv(|v| v as f32));
    let (loss64, grad64) = kd.forward_backward(&s, &t, &y)?;
    let (loss32, grad32): (f32, Array2<f32>) = kd.forward_backward(&s32, &t32, &y)?;
    // The f32 inputs are the f64 ones rounded; the results agree to f32's precision.
    assert_close(loss32.into(), loss64, 1e-5 * loss64.abs());
    for (a, b) in grad32.iter().zip(grad64.iter()) {
        assert_close((*a).into(), *b, 1e-6);
    }
    let p32: Array2<f32> = softmax(&s32, 1.0)?;
    for (a, b) in p32.iter().zip(softmax(&s, 1.0)?.iter()) {
        assert_close((*a).into(), *b, 1e-6);
    }
    Ok(())
}

#[test]
fn per_row_losses_are_what_the_reductions_combine() -> Result<(), Error> {
    let (rows, classes) = (7, 12);
    let (s, t) = (logits(8, rows, classes), logits(9, rows, classes));
    let y = labels(rows, classes);
    let kd = DistillationLoss::new(2.0, 0.5)?;
    let per_row = kd.forward_rows(&s, &t, &y)?;
    assert_eq!(per_row.len(), rows);
    let sum = kd.with_reduction(Reduction::Sum);
    assert_close(per_row.sum(), sum.forward(&s, &t, &y)?, 1e-12);
    assert_close(per_row.sum() / rows as f64, kd.forward(&s, &t, &y)?, 1e-12);
    let (rows_again, grad) = kd.forward_backward_rows(&s, &t, &y)?;
    assert_eq!(rows_again, per_row);
    // The gradient of the rows' sum: the "sum" reduction's.
    assert_eq!(grad, sum.forward_backward(&s, &t, &y)?.1);
    Ok(())
}

#[test]
fn ignored_rows_count_in_neither_term_nor_the_mean() -> Result<(), Error> {
    let (rows, classes) = (5, 9);
    let (s, t) = (logits(10, rows, classes), logits(11, rows, classes));
    let pad = 100;
    let mut y = labels(rows, classes);
    y[1] = pad;
    y[3] = pad;
    let kd = DistillationLoss::new(2.0, 0.4)?.with_ignore_index(pad);
    assert_eq!(kd.ignore_index(), Some(pad));
    let (loss, grad) = kd.forward_backward(&s, &t, &y)?;
    let kept = [0, 2, 4];
    let pick = |x: &Array2<f64>| x.select(ndarray::Axis(0), &kept);
    let kept_y: Vec<usize> = kept.iter().map(|&r| y[r]).collect();
    let plain = DistillationLoss::new(2.0, 0.4)?;
    let (want, want_grad) = plain.forward_backward(&pick(&s), &pick(&t), &kept_y)?;
    assert_close(loss, want, 1e-12);
    for (r, &row) in kept.iter().enumerate() {
        assert_eq!(grad.row(row), want_grad.row(r));
    }
    for row in [1, 3] {
        assert!(grad.row(row).iter().all(|&g| g == 0.0));
        assert_eq!(kd.forward_rows(&s, &t, &y)?[row], 0.0);
    }
    // Without an ignore index the same label is out of range.
    assert!(plain.forward(&s, &t, &y).is_err());
    Ok(())
}

#[test]
fn the_builder_keeps_its_settings() -> Result<(), Error> {
    let kd = DistillationLoss::new(2.5_f32, 0.25_f32)?;
    assert_eq!((kd.temperature(), kd.alpha()), (2.5, 0.25));
    assert_eq!((kd.reduction(), kd.ignore_index()), (Reduction::Mean, None));
    assert_eq!(kd.divergence(), Divergence::ForwardKl);
    let built = kd
        .with_reduction(Reduction::Sum)
        .with_ignore_index(4)
        .with_divergence(Divergence::ReverseKl);
    assert_eq!(built.reduction(), Reduction::Sum);
    assert_eq!(built.ignore_index(), Some(4));
    assert_eq!(built.divergence(), Divergence::ReverseKl);
    assert_eq!(built.temperature(), 2.5);
    Ok(())
}

#[test]
fn softmax_and_log_softmax_at_a_temperature() -> Result<(), Error> {
    let x = array![[0.0_f64, 2.0, -1.0], [3.0, 3.0, 3.0]];
    let t = 2.0;
    let p = softmax(&x, t)?;
    let lp = log_softmax(&x, t)?;
    for (row, (p_row, lp_row)) in x
        .rows()
        .into_iter()
        .zip(p.rows().into_iter().zip(lp.rows()))
    {
        let z: f64 = row.iter().map(|v| (v / t).exp()).sum();
        for ((v, p), lp) in row.iter().zip(p_row).zip(lp_row) {
            assert_close(*p, (v / t).exp() / z, 1e-15);
            assert_close(*lp, v / t - z.ln(), 1e-15);
        }
    }
    // Where the probability underflows, its log does not.
    let far = log_softmax(&array![[0.0_f64, -1000.0]], 1.0)?;
    assert_eq!(far, array![[0.0, -1000.0]]);
    assert_eq!(
        softmax(&array![[0.0_f64, -1000.0]], 1.0)?,
        array![[1.0, 0.0]]
    );
    Ok(())
}

#[test]
fn results_do_not_depend_on_the_thread_count() -> Result<(), Error> {
    let (s, t) = (logits(12, 64, 300), logits(13, 64, 300));
    let y = labels(64, 300);
    let kd = DistillationLoss::new(2.0, 0.5)?;
    kdloss::set_num_threads(1)?;
    let one = kd.forward_backward(&s, &t, &y)?;
    kdloss::set_num_threads(2)?;
    assert_eq!(kdloss::num_threads()?, 2);
    assert_eq!(kd.forward_backward(&s, &t, &y)?, one);
    Ok(())
}

#[test]
fn errors_are_std_errors() {
    fn run() -> Result<f64, Box<dyn std::error::Error>> {
        let x = array![[1.0_f64, 2.0]];
        Ok(cross_entropy(&x, &[2])?)
    }
    let err = run().unwrap_err();
    assert_eq!(
        err.to_string(),
        "labels must be in [0, 2), got 2 at flat index 0"
    );
    assert!(err.downcast_ref::<Error>().is_some());
}
