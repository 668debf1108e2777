//! How per-row losses become the returned loss.

use super::check::check_normalizer;
use super::float::Float;
use crate::error::KdError;

/// How per-row losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Over the rows that count, the divergence's sum divided by their number and the
    /// cross-entropy's by the sum of their label weights (each 0 when that is 0).
    Mean,
    /// Sum over the rows that count.
    Sum,
    /// One value per row; rows that do not count are 0.
    None,
}

impl Reduction {
    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
            Reduction::None => "none",
        }
    }

    pub fn parse(name: &str) -> Result<Reduction, KdError> {
        match name {
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            "none" => Ok(Reduction::None),
            _ => Err(KdError::value(format!(
                "reduction must be 'mean', 'sum' or 'none', got {name:?}"
            ))),
        }
    }
}

/// A reduced loss: a scalar for "mean" and "sum", one value per row for "none".
#[derive(Clone, Debug, PartialEq)]
pub enum Loss<T> {
    Scalar(f64),
    Rows(Vec<T>),
}

/// A row's two terms, unweighted: its divergence and its cross-entropy (0 for a term that is
/// off, and for a row that does not count).
pub type Terms = [f64; 2];

/// What the sums of a `"mean"` or `"sum"` loss are divided by, instead of the reduction's own
/// divisors: the divergence sum by `div`, the cross-entropy sum by `ce` (for gradient
/// accumulation, the full batch's count and weight sum). Both finite and `> 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalizer {
    pub div: f64,
    pub ce: f64,
}

impl Normalizer {
    /// One divisor for both terms.
    pub fn new(n: f64) -> Result<Self, KdError> {
        check_normalizer(n, "normalizer")?;
        Ok(Normalizer { div: n, ce: n })
    }

    /// The divergence sum divided by `div`, the cross-entropy sum by `ce`.
    pub fn split(div: f64, ce: f64) -> Result<Self, KdError> {
        check_normalizer(div, "normalizer[0]")?;
        check_normalizer(ce, "normalizer[1]")?;
        Ok(Normalizer { div, ce })
    }
}

/// Which rows count and how many: per row for `"none"`, else the number.
#[derive(Clone, Debug, PartialEq)]
pub enum Count {
    Scalar(usize),
    Rows(Vec<bool>),
}

/// A reduced loss with its parts: the two terms reduced as the loss is but without their
/// weights (`alpha·[T²]`, `1 − alpha`), the counted rows and the sum of their label weights
/// (1 each without class weights; 0 without labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Parts<T> {
    pub loss: Loss<T>,
    pub divergence: Loss<T>,
    pub cross_entropy: Loss<T>,
    pub count: Count,
    pub weight_sum: Loss<T>,
}

/// How one call divides its terms' sums: `None` for a term that is 0 (nothing to divide).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Divisors {
    pub div: Option<f64>,
    pub ce: Option<f64>,
}

impl Divisors {
    /// The divisors of `reduction` for `count` counted rows of label weights summing to
    /// `weight_sum`, or the normaliser's.
    pub fn new(
        reduction: Reduction,
        normalizer: Option<Normalizer>,
        count: usize,
        weight_sum: f64,
    ) -> Self {
        let nonzero = |n: f64| (n > 0.0).then_some(n);
        match (reduction, normalizer) {
            (_, Some(n)) => Divisors {
                div: Some(n.div),
                ce: Some(n.ce),
            },
            (Reduction::Mean, None) => Divisors {
                div: nonzero(count as f64),
                ce: nonzero(weight_sum),
            },
            _ => Divisors {
                div: Some(1.0),
                ce: Some(1.0),
            },
        }
    }

    /// The factors of the two terms' gradients (`1/divisor`, 0 for a term that is 0).
    pub fn scales(self) -> [f64; 2] {
        [self.div, self.ce].map(|d| d.map_or(0.0, |d| 1.0 / d))
    }
}

/// What `reduce` needs besides the rows' terms.
pub(crate) struct Reduce<'a> {
    pub reduction: Reduction,
    pub divisors: Divisors,
    /// The loss's weights of the two terms.
    pub weights: [f64; 2],
    /// Which rows count (`None`: all), how many do, and the sum of their label weights.
    pub counted: Option<&'a [bool]>,
    pub count: usize,
    pub weight_sum: f64,
    /// Whether the rows have labels (without them no row has a label weight).
    pub labelled: bool,
    /// Each row's label weight, when there are class weights (else 1 for counted rows).
    pub label_weights: Option<&'a [f64]>,
}

/// The loss from its terms' weighted parts; a term of weight 0 is left out (it was not
/// computed), so that its 0 never meets an infinite other.
#[inline]
fn weigh(weights: [f64; 2], [div, ce]: Terms) -> f64 {
    let mut loss = 0.0;
    if weights[0] != 0.0 {
        loss += weights[0] * div;
    }
    if weights[1] != 0.0 {
        loss += weights[1] * ce;
    }
    loss
}

/// Combines the rows' terms (0 for rows that do not count): in row order, whatever the thread
/// count, so the result is bitwise reproducible.
pub(crate) fn reduce<T: Float>(r: Reduce<'_>, terms: &[Terms]) -> Parts<T> {
    if r.reduction == Reduction::None {
        let rows = |f: &dyn Fn(usize) -> f64| {
            Loss::Rows((0..terms.len()).map(|i| T::from_f64(f(i))).collect())
        };
        let counted = match r.counted {
            Some(c) => c.to_vec(),
            None => vec![true; terms.len()],
        };
        return Parts {
            loss: rows(&|i| weigh(r.weights, terms[i])),
            divergence: rows(&|i| terms[i][0]),
            cross_entropy: rows(&|i| terms[i][1]),
            weight_sum: match r.label_weights {
                Some(w) => rows(&|i| w[i]),
                None => rows(&|i| f64::from(u8::from(r.labelled && counted[i]))),
            },
            count: Count::Rows(counted),
        };
    }
    let sums = terms
        .iter()
        .fold([0.0f64; 2], |[d, c], t| [d + t[0], c + t[1]]);
    let divided = |sum: f64, by: Option<f64>| by.map_or(0.0, |n| sum / n);
    let parts = [
        divided(sums[0], r.divisors.div),
        divided(sums[1], r.divisors.ce),
    ];
    Parts {
        loss: Loss::Scalar(weigh(r.weights, parts)),
        divergence: Loss::Scalar(parts[0]),
        cross_entropy: Loss::Scalar(parts[1]),
        count: Count::Scalar(r.count),
        weight_sum: Loss::Scalar(r.weight_sum),
    }
}
