//! Row-parallel execution.
//!
//! Every kernel is a function of one row, so rows are the unit of work: a row is never split
//! between threads and each row's result lands in its own slot, which is what makes results
//! bitwise identical for any thread count. The calling thread always works; pool threads help
//! when a call is large enough (`helpers`). Small inputs run on the calling thread alone,
//! because waking a pool thread costs more than it would save there.

mod helpers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config;
use crate::error::KdError;

/// Below this much work (elements, plus `ROW_COST` a row) a call runs on the calling thread.
/// Above it, a pool thread is asked to help, and the call does not wait for one that is slow to
/// come (`helpers::run_with_helpers`), so asking costs only the wake-up call. Measured on 2
/// threads, loss and gradient (ms): back to back, (64, 1000) 0.042–0.051 against 0.055–0.078
/// alone, (4096, 10) 0.17–0.24 against 0.23–0.40; after 1 ms asleep, (64, 1000) 0.076–0.087
/// against 0.085–0.097, but (32, 1024) 0.056 against 0.048, where waking the helper cost more
/// than it saved.
pub const PARALLEL_MIN_ELEMENTS: usize = 3 << 14;
/// The fixed cost of a row, in elements' worth of work: short rows cost more per element.
const ROW_COST: usize = 64;
/// Each parallel task gets at least this much work, so scheduling stays a small fraction.
const TASK_MIN_ELEMENTS: usize = 1 << 13;
/// Tasks per thread, for balance when rows cost different amounts (ignored rows are free)
/// and when a thread joins late.
const TASKS_PER_THREAD: usize = 8;

/// State each thread keeps for the tasks it runs, between tasks and between calls (the
/// kernels' scratch buffers): `with` lends this thread's own.
pub trait Local: Sized + 'static {
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R;
}

/// Calls `f(scratch, i, &mut partials[i], out_row_i)` for every row `i < partials.len()`,
/// where `out` (if given) holds `partials.len()` rows of `width` elements each. Runs in
/// parallel when the work (`partials.len() * width` elements) is large enough.
pub fn for_each_row<S, P, T, F>(
    width: usize,
    partials: &mut [P],
    out: Option<&mut [T]>,
    f: F,
) -> Result<(), KdError>
where
    S: Local,
    P: Send,
    T: Send,
    F: Fn(&mut S, usize, &mut P, Option<&mut [T]>) + Sync,
{
    for_each_block(1, width, partials, out, |scratch, i, p, o| {
        if let Some(p) = p.first_mut() {
            f(scratch, i, p, o);
        }
    })
}

/// Like `for_each_row`, but hands `f` blocks of `block` consecutive rows (the last may be
/// shorter): `f(scratch, first_row, partials_of_block, out_rows_of_block)`. Blocks are never
/// split between threads.
pub fn for_each_block<S, P, T, F>(
    block: usize,
    width: usize,
    partials: &mut [P],
    out: Option<&mut [T]>,
    f: F,
) -> Result<(), KdError>
where
    S: Local,
    P: Send,
    T: Send,
    F: Fn(&mut S, usize, &mut [P], Option<&mut [T]>) + Sync,
{
    let block = block.max(1);
    let rows = partials.len();
    let row_work = width.saturating_add(ROW_COST);
    let work = rows.saturating_mul(row_work);
    let threads = config::num_threads()?;
    let per_task = if threads <= 1 || rows <= block || work < PARALLEL_MIN_ELEMENTS {
        rows.max(1)
    } else {
        let by_balance = rows.div_ceil(threads * TASKS_PER_THREAD);
        let by_size = TASK_MIN_ELEMENTS.div_ceil(row_work);
        by_balance.max(by_size).div_ceil(block) * block
    };
    // One task's rows, block by block.
    let task = |scratch: &mut S, first: usize, ps: &mut [P], os: Option<&mut [T]>| match os {
        Some(os) if width > 0 => {
            for (j, (p, o)) in ps
                .chunks_mut(block)
                .zip(os.chunks_mut(block * width))
                .enumerate()
            {
                f(scratch, first + j * block, p, Some(o));
            }
        }
        _ => {
            for (j, p) in ps.chunks_mut(block).enumerate() {
                f(scratch, first + j * block, p, None);
            }
        }
    };
    if per_task >= rows {
        S::with(|scratch| task(scratch, 0, partials, out));
        return Ok(());
    }
    // Tasks are claimed from a shared counter by the calling thread and the pool's threads
    // alike. The caller starts at once; an idle pool thread can take a long time to wake
    // (more than a millisecond was seen on these virtual machines), and it simply takes fewer
    // tasks when it does, or none. Each task's slices sit behind their own lock, taken exactly
    // once.
    type Slot<'a, P, T> = Mutex<Option<(usize, &'a mut [P], Option<&'a mut [T]>)>>;
    let slots: Vec<Slot<'_, P, T>> = match out {
        Some(out) if width > 0 => partials
            .chunks_mut(per_task)
            .zip(out.chunks_mut(per_task * width))
            .enumerate()
            .map(|(n, (ps, os))| Mutex::new(Some((n * per_task, ps, Some(os)))))
            .collect(),
        _ => partials
            .chunks_mut(per_task)
            .enumerate()
            .map(|(n, ps)| Mutex::new(Some((n * per_task, ps, None))))
            .collect(),
    };
    let next = AtomicUsize::new(0);
    let work = || {
        S::with(|scratch| loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(k) else { break };
            let claimed = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((first, ps, os)) = claimed {
                task(scratch, first, ps, os);
            }
        })
    };
    let pool = helpers::pool(threads - 1)?;
    helpers::run_with_helpers(&pool, threads - 1, &work)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No state.
    struct Nothing;
    impl Local for Nothing {
        fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R {
            f(&mut Nothing)
        }
    }

    #[test]
    fn every_row_is_visited_once_at_any_size() {
        for (rows, width) in [(0usize, 5usize), (3, 7), (1000, 300), (5, 100_000)] {
            let mut partials = vec![0.0; rows];
            let mut out = vec![0.0f32; rows * width];
            for_each_row::<Nothing, _, _, _>(width, &mut partials, Some(&mut out), |_, i, p, o| {
                *p += i as f64 + 1.0;
                if let Some(o) = o {
                    o.iter_mut().for_each(|v| *v += i as f32);
                }
            })
            .unwrap();
            for (i, p) in partials.iter().enumerate() {
                assert_eq!(*p, i as f64 + 1.0);
                assert!(out[i * width..(i + 1) * width]
                    .iter()
                    .all(|v| *v == i as f32));
            }
        }
    }
}
