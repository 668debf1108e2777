//! Softmax and log-softmax along rows, at a temperature.

use ndarray::ArrayView2;

use super::check::{check_logits, check_out_len, check_temperature};
use super::driver::{drive, Rows};
use super::float::Float;
use super::objective::softmax::Softmax;
use super::out::Out;
use super::simd::{self, Simd};
use crate::error::KdError;

/// Writes `softmax(x / temperature)` (or its log, with `log`) of every row of `x` into `out`,
/// a C-contiguous buffer of `x`'s shape.
pub fn softmax_into<T: Float>(
    x: ArrayView2<T>,
    temperature: f64,
    log: bool,
    out: Out<'_, T>,
) -> Result<(), KdError> {
    softmax_into_at(simd::active(), x, temperature, log, out)
}

/// `softmax_into` at the SIMD level `level`, which this CPU must have.
pub fn softmax_into_at<T: Float>(
    level: Simd,
    x: ArrayView2<T>,
    temperature: f64,
    log: bool,
    out: Out<'_, T>,
) -> Result<(), KdError> {
    check_temperature(temperature)?;
    simd::check_available(level)?;
    let (rows, c) = check_logits(&x, "x")?;
    check_out_len(out.len(), rows, c)?;
    let rows = Rows {
        s: x,
        t: x,
        labels: None,
        counted: None,
        ce: None,
        level,
    };
    let mut unused = vec![[0.0; 2]; x.nrows()];
    if log {
        drive(
            Softmax::<T, true>::new(temperature),
            rows,
            &mut unused,
            Some(out),
        )
    } else {
        drive(
            Softmax::<T, false>::new(temperature),
            rows,
            &mut unused,
            Some(out),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn softmax_and_log_softmax_match_the_formulas_at_every_level() {
        for level in Simd::available() {
            for c in [1usize, 2, 10, 24, 25, 100, 1000] {
                let x = Array2::from_shape_fn((21, c), |(i, j)| {
                    if j == 0 && c > 1 {
                        f64::NEG_INFINITY
                    } else {
                        ((i * 31 + j * 17) % 23) as f64 * 0.7 - 8.0
                    }
                });
                for temperature in [1.0, 2.0, 0.3] {
                    let mut p = vec![0.0; x.len()];
                    let mut lp = vec![0.0; x.len()];
                    softmax_into_at(level, x.view(), temperature, false, Out::new(&mut p)).unwrap();
                    softmax_into_at(level, x.view(), temperature, true, Out::new(&mut lp)).unwrap();
                    for (i, row) in x.rows().into_iter().enumerate() {
                        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let lse = row
                            .iter()
                            .map(|v| ((v - m) / temperature).exp())
                            .sum::<f64>()
                            .ln();
                        for (j, v) in row.iter().enumerate() {
                            let want = (v - m) / temperature - lse;
                            let (got_p, got_lp) = (p[i * c + j], lp[i * c + j]);
                            let where_ =
                                format!("c={c} T={temperature} [{i},{j}] {}", level.name());
                            assert!((got_p - want.exp()).abs() <= 1e-14, "softmax {where_}");
                            if want.is_finite() {
                                assert!(
                                    (got_lp - want).abs() <= 1e-12 * want.abs().max(1.0),
                                    "log {where_}"
                                );
                            } else {
                                assert_eq!(got_lp, want, "log {where_}");
                            }
                        }
                    }
                }
            }
        }
    }
}
