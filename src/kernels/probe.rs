//! Machine probes for the benchmarks' lower bound: streaming read bandwidth, and the cost of
//! the kernels' exp at the active SIMD level.

use std::time::Instant;

use rayon::prelude::*;

use super::chunk::LANES;
use super::float::{Float, Level};
use super::row::fold2;
use super::simd::{dispatch, Kernel};
use crate::error::KdError;

/// Sums a row, or with `EXP` the exps of its negated elements.
struct SumRow<'a, const EXP: bool>(&'a [f32]);

impl<const EXP: bool> Kernel for SumRow<'_, EXP> {
    type Output = f64;

    #[inline(always)]
    fn run<L: Level>(self) -> f64 {
        let [s] = fold2(
            self.0,
            self.0,
            #[inline(always)]
            |c, _| {
                let mut e = *c;
                if EXP {
                    for k in 0..LANES {
                        e[k] = (-c[k]).fast_exp::<L>();
                    }
                }
                [e]
            },
        );
        s
    }
}

/// Median of `f`'s wall time over `reps` runs, in seconds.
fn median_time(reps: usize, mut f: impl FnMut() -> f64) -> (f64, f64) {
    let mut times = Vec::with_capacity(reps);
    let mut sink = 0.0;
    for _ in 0..reps {
        let t0 = Instant::now();
        sink += f();
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], sink)
}

/// Streaming read bandwidth in GB/s over a buffer of `megabytes`, read by `threads` threads
/// (each reads its own contiguous part), median of `reps` sweeps.
pub fn read_bandwidth(megabytes: usize, threads: usize, reps: usize) -> Result<f64, KdError> {
    if megabytes == 0 || threads == 0 || reps == 0 {
        return Err(KdError::value(
            "megabytes, threads and reps must all be >= 1",
        ));
    }
    if threads > crate::config::MAX_THREADS {
        return Err(KdError::value(format!(
            "threads must be at most {}, got {threads}",
            crate::config::MAX_THREADS
        )));
    }
    let cannot = || KdError::value(format!("cannot allocate {megabytes} MB to probe"));
    let n = megabytes.checked_mul(1 << 18).ok_or_else(cannot)?;
    // Filled with ones, which also takes the page faults before timing.
    let mut buf = Vec::new();
    buf.try_reserve_exact(n).map_err(|_| cannot())?;
    buf.resize(n, 1.0f32);
    let part = n.div_ceil(threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| KdError::value(format!("cannot start {threads} threads: {e}")))?;
    let (t, sink) = median_time(reps, || {
        pool.install(|| {
            buf.par_chunks(part)
                .map(|c| dispatch(SumRow::<false>(c)))
                .sum::<f64>()
        })
    });
    if sink != (n * reps) as f64 {
        return Err(KdError::value("bandwidth probe summed wrongly"));
    }
    Ok((n * 4) as f64 / t / 1e9)
}

/// Nanoseconds per element of a row-resident `exp` and sum on one thread, at the active level.
pub fn exp_cost(reps: usize) -> Result<f64, KdError> {
    if reps == 0 {
        return Err(KdError::value("reps must be >= 1"));
    }
    let n = 16_384;
    let row: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.25).collect();
    let inner = 64;
    let (t, sink) = median_time(reps, || {
        (0..inner)
            .map(|_| dispatch(SumRow::<true>(std::hint::black_box(&row))))
            .sum()
    });
    if !sink.is_finite() {
        return Err(KdError::value("exp probe produced a non-finite sum"));
    }
    Ok(t * 1e9 / (n * inner) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_return_positive_figures() {
        assert!(read_bandwidth(8, 2, 3).unwrap() > 0.0);
        assert!(exp_cost(3).unwrap() > 0.0);
        assert!(read_bandwidth(0, 1, 1).is_err());
        assert!(read_bandwidth(usize::MAX / 4, 1, 1).is_err());
        assert!(read_bandwidth(1 << 40, 1, 1).is_err());
        assert!(read_bandwidth(1, 1 << 20, 1).is_err());
    }
}
