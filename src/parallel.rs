//! Row-parallel execution on kdloss's own Rayon pool.
//!
//! Every kernel is a function of one row, so rows are the unit of work: a row is never split
//! between threads and each row's result lands in its own slot, which is what makes results
//! bitwise identical for any thread count. The calling thread always works; pool threads help
//! when a call is large enough, and a call never waits for one that has not started by the
//! time the work is done (`run_with_helpers`). Small inputs run on the calling thread alone,
//! because waking a pool thread costs more than it would save there.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use ndarray::{ArrayView2, Axis};
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::KdError;

/// Below this much work (elements, plus `ROW_COST` a row) a call runs on the calling thread.
/// Above it, a pool thread is asked to help, and the call does not wait for one that is slow to
/// come (`run_with_helpers`), so asking costs only the wake-up call. Measured on 2 threads, loss
/// and gradient (ms): back to back, (64, 1000) 0.042–0.051 against 0.055–0.078 alone, (4096, 10)
/// 0.17–0.24 against 0.23–0.40; after 1 ms asleep, (64, 1000) 0.076–0.087 against
/// 0.085–0.097, but (32, 1024) 0.056 against 0.048, where waking the helper cost more than it
/// saved.
pub const PARALLEL_MIN_ELEMENTS: usize = 3 << 14;
/// The fixed cost of a row, in elements' worth of work: short rows cost more per element.
const ROW_COST: usize = 64;
/// Each parallel task gets at least this much work, so scheduling stays a small fraction.
const TASK_MIN_ELEMENTS: usize = 1 << 13;
/// The most threads a call may use.
pub const MAX_THREADS: usize = 1024;
/// Tasks per thread, for balance when rows cost different amounts (ignored rows are free)
/// and when a thread joins late.
const TASKS_PER_THREAD: usize = 8;

struct Pool {
    threads: usize,
    pool: Option<Arc<ThreadPool>>,
}

static POOL: RwLock<Pool> = RwLock::new(Pool {
    threads: 0,
    pool: None,
});

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reads `KDLOSS_NUM_THREADS` if it is set; the default is one thread per core.
pub fn threads_from_env() -> Result<usize, KdError> {
    match std::env::var("KDLOSS_NUM_THREADS") {
        Err(std::env::VarError::NotPresent) => Ok(default_threads()),
        Err(std::env::VarError::NotUnicode(v)) => Err(KdError::value(format!(
            "KDLOSS_NUM_THREADS must be a positive integer, got {v:?}"
        ))),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
            _ => Err(KdError::value(format!(
                "KDLOSS_NUM_THREADS must be an integer from 1 to {MAX_THREADS}, got {v:?}"
            ))),
        },
    }
}

/// The error for a thread count `n` out of range.
pub fn thread_count_error(n: impl std::fmt::Display) -> KdError {
    KdError::value(format!(
        "n must be an integer from 1 to {MAX_THREADS}, got {n}"
    ))
}

/// Refuses a thread count outside 1 to `MAX_THREADS`.
pub fn check_thread_count(n: usize) -> Result<(), KdError> {
    if (1..=MAX_THREADS).contains(&n) {
        Ok(())
    } else {
        Err(thread_count_error(n))
    }
}

/// Sets the number of threads later calls use; the pool itself is built on first need.
pub fn set_num_threads(n: usize) -> Result<(), KdError> {
    check_thread_count(n)?;
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    if guard.threads != n {
        guard.threads = n;
        guard.pool = None;
    }
    Ok(())
}

thread_local! {
    /// This thread's own thread count for the calls it makes (0: none, use the process's).
    static LOCAL_THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Sets the thread count of the calls this thread makes (`None`: the process's count again)
/// and returns the one it replaces, so that a caller can put it back. Other threads are not
/// affected. Results do not depend on the count.
pub fn swap_local_threads(n: Option<usize>) -> Result<Option<usize>, KdError> {
    if let Some(n) = n {
        check_thread_count(n)?;
    }
    let raw = n.unwrap_or(0);
    let before = LOCAL_THREADS.with(|c| c.replace(raw));
    Ok((before > 0).then_some(before))
}

/// The number of threads calls made from this thread use: its own count if it has one
/// (`swap_local_threads`), else the process's (reading `KDLOSS_NUM_THREADS` the first time).
pub fn num_threads() -> Result<usize, KdError> {
    let local = LOCAL_THREADS.with(|c| c.get());
    if local > 0 {
        return Ok(local);
    }
    global_threads()
}

/// The process's thread count (reading `KDLOSS_NUM_THREADS` the first time).
fn global_threads() -> Result<usize, KdError> {
    {
        let guard = POOL.read().unwrap_or_else(|e| e.into_inner());
        if guard.threads > 0 {
            return Ok(guard.threads);
        }
    }
    let n = threads_from_env()?;
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    if guard.threads == 0 {
        guard.threads = n;
    }
    Ok(guard.threads)
}

/// A pool with at least `helpers` threads. The calling thread is one of a call's `n`
/// threads, so the process's count `n` needs `n - 1`; a thread's own larger count
/// (`swap_local_threads`) grows the pool to fit, and a call asks only as many of its threads
/// to help as its count allows.
fn pool(helpers: usize) -> Result<Arc<ThreadPool>, KdError> {
    let helpers = helpers.max(global_threads()?.saturating_sub(1)).max(1);
    {
        let guard = POOL.read().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = guard
            .pool
            .as_ref()
            .filter(|p| p.current_num_threads() >= helpers)
        {
            return Ok(Arc::clone(p));
        }
    }
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    if guard
        .pool
        .as_ref()
        .is_none_or(|p| p.current_num_threads() < helpers)
    {
        let built = ThreadPoolBuilder::new()
            .num_threads(helpers)
            .thread_name(|i| format!("kdloss-{i}"))
            .build()
            .map_err(|e| KdError::value(format!("cannot start {} threads: {e}", helpers + 1)))?;
        // Calls still running on the old pool keep it alive until they are done.
        guard.pool = Some(Arc::new(built));
    }
    guard
        .pool
        .as_ref()
        .map(Arc::clone)
        .ok_or_else(|| KdError::value("thread pool unavailable".to_string()))
}

/// Buffers a task reuses across its rows: copies of rows that are not contiguous in memory,
/// and per-element values one pass of a kernel keeps for the next.
pub struct Scratch<T> {
    pub a: Vec<T>,
    pub b: Vec<T>,
    pub keep: Vec<T>,
    pub cols: Vec<[T; crate::kernels::row::LANES]>,
}

impl<T> Scratch<T> {
    fn new() -> Self {
        Scratch {
            a: Vec::new(),
            b: Vec::new(),
            keep: Vec::new(),
            cols: Vec::new(),
        }
    }

    /// Gives back buffers too large to be worth keeping between calls.
    fn trim(&mut self) {
        const KEEP_BYTES: usize = 32 << 20;
        let bytes = std::mem::size_of::<T>()
            * (self.a.capacity() + self.b.capacity() + self.keep.capacity())
            + std::mem::size_of::<[T; crate::kernels::row::LANES]>() * self.cols.capacity();
        if bytes > KEEP_BYTES {
            *self = Scratch::new();
        }
    }
}

/// Element types with a per-thread `Scratch` kept between calls: a fresh one per call would
/// pay the page faults of its first touch every time (a third of a millisecond for the 1.5 MB
/// that rows of 128256 floats need).
pub trait HasScratch: Copy + Send + Sync + 'static {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R;
}

macro_rules! thread_scratch {
    ($t:ty, $cell:ident) => {
        thread_local! {
            static $cell: std::cell::RefCell<Scratch<$t>> = std::cell::RefCell::new(Scratch::new());
        }

        impl HasScratch for $t {
            fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
                $cell.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut scratch) => {
                        let r = f(&mut scratch);
                        scratch.trim();
                        r
                    }
                    // Only if a kernel were re-entered on this thread; never the case today.
                    Err(_) => f(&mut Scratch::new()),
                })
            }
        }
    };
}

thread_scratch!(f32, SCRATCH_F32);
thread_scratch!(f64, SCRATCH_F64);

/// Row `i` of `x` as a slice: in place when the row is contiguous, else copied into `buf`.
#[inline]
pub fn row_of<'r, T: Copy>(x: ArrayView2<'r, T>, i: usize, buf: &'r mut Vec<T>) -> &'r [T] {
    let row = x.index_axis_move(Axis(0), i);
    if let Some(v) = row.to_slice() {
        return v;
    }
    buf.clear();
    buf.extend(row.iter().copied());
    buf
}

/// Calls `f(scratch, i, &mut partials[i], out_row_i)` for every row `i < partials.len()`,
/// where `out` (if given) holds `partials.len()` rows of `width` elements each. Runs in
/// parallel when the work (`partials.len() * width` elements) is large enough.
pub fn for_each_row<T, F>(
    width: usize,
    partials: &mut [f64],
    out: Option<&mut [T]>,
    f: F,
) -> Result<(), KdError>
where
    T: HasScratch,
    F: Fn(&mut Scratch<T>, usize, &mut f64, Option<&mut [T]>) + Sync,
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
pub fn for_each_block<T, F>(
    block: usize,
    width: usize,
    partials: &mut [f64],
    out: Option<&mut [T]>,
    f: F,
) -> Result<(), KdError>
where
    T: HasScratch,
    F: Fn(&mut Scratch<T>, usize, &mut [f64], Option<&mut [T]>) + Sync,
{
    let block = block.max(1);
    let rows = partials.len();
    let row_work = width.saturating_add(ROW_COST);
    let work = rows.saturating_mul(row_work);
    let threads = num_threads()?;
    let per_task = if threads <= 1 || rows <= block || work < PARALLEL_MIN_ELEMENTS {
        rows.max(1)
    } else {
        let by_balance = rows.div_ceil(threads * TASKS_PER_THREAD);
        let by_size = TASK_MIN_ELEMENTS.div_ceil(row_work);
        by_balance.max(by_size).div_ceil(block) * block
    };
    // One task's rows, block by block.
    let task =
        |scratch: &mut Scratch<T>, first: usize, ps: &mut [f64], os: Option<&mut [T]>| match os {
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
        T::with_scratch(|scratch| task(scratch, 0, partials, out));
        return Ok(());
    }
    // Tasks are claimed from a shared counter by the calling thread and the pool's threads
    // alike. The caller starts at once; an idle pool thread can take a long time to wake
    // (more than a millisecond was seen on these virtual machines), and it simply takes fewer
    // tasks when it does, or none. Each task's slices sit behind their own lock, taken exactly
    // once.
    type Slot<'a, T> = Mutex<Option<(usize, &'a mut [f64], Option<&'a mut [T]>)>>;
    let slots: Vec<Slot<'_, T>> = match out {
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
        T::with_scratch(|scratch| loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(k) else { break };
            let claimed = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((first, ps, os)) = claimed {
                task(scratch, first, ps, os);
            }
        })
    };
    let pool = pool(threads - 1)?;
    run_with_helpers(&pool, threads - 1, &work)
}

/// Whether helpers may still join a call, and how many are inside it.
struct GateState {
    open: bool,
    inside: usize,
    panicked: bool,
}

/// The meeting point of a call and its helpers.
struct Gate {
    state: Mutex<GateState>,
    left: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the gate and waits for the helpers inside to leave: on the way out of
/// `run_with_helpers`, unwinding included, so no helper outlives the call's borrows.
struct CloseOnDrop<'g>(&'g Gate);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.open = false;
        while state.inside > 0 {
            state = self.0.left.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// `work` with its lifetime erased, to hand to pool threads.
#[derive(Clone, Copy)]
struct ErasedWork(*const (dyn Fn() + Sync + 'static));

// SAFETY: the pointee is `Sync`, and `run_with_helpers` keeps it alive while any helper can
// call it.
unsafe impl Send for ErasedWork {}

/// Runs `work` on the calling thread and on up to `helpers` pool threads at once; `work` must
/// share its work out itself (each caller takes tasks until none is left) and tolerate being
/// run by fewer threads. The caller does not wait for helpers that have not started when its
/// own `work` returns: they find the gate closed and do nothing. A pool thread that is slow to
/// wake (more than a millisecond was seen on these virtual machines, with a busy neighbour)
/// then costs nothing, where a fork-join would wait for it.
fn run_with_helpers(
    pool: &ThreadPool,
    helpers: usize,
    work: &(dyn Fn() + Sync),
) -> Result<(), KdError> {
    let gate = Arc::new(Gate {
        state: Mutex::new(GateState {
            open: true,
            inside: 0,
            panicked: false,
        }),
        left: Condvar::new(),
    });
    // SAFETY: only the lifetime changes. Helpers call `work` only between entering an open
    // gate and leaving it, and `CloseOnDrop` below keeps this frame (so `work`'s borrows) alive
    // until the gate is closed and every helper that entered has left.
    let erased = ErasedWork(unsafe {
        std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(
            work,
        )
    });
    let closer = CloseOnDrop(&gate);
    for _ in 0..helpers {
        let gate = Arc::clone(&gate);
        pool.spawn(move || {
            {
                let mut state = gate.lock();
                if !state.open {
                    return;
                }
                state.inside += 1;
            }
            // The whole struct, which is `Send`, not just its raw-pointer field.
            let erased = erased;
            // SAFETY: the gate was open when this helper entered, so the call is still running
            // and waits for this helper to leave before its frame goes away (see above).
            let ran = catch_unwind(AssertUnwindSafe(|| unsafe { (*erased.0)() }));
            let mut state = gate.lock();
            state.panicked |= ran.is_err();
            state.inside -= 1;
            if state.inside == 0 {
                gate.left.notify_all();
            }
        });
    }
    work();
    drop(closer);
    if gate.lock().panicked {
        return Err(KdError::value("internal error: a worker thread failed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    #[test]
    fn row_of_borrows_contiguous_rows_and_copies_strided_ones() {
        let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
        let mut buf = Vec::new();
        let r = row_of(a.view(), 1, &mut buf);
        assert_eq!(r, &[4.0, 5.0, 6.0, 7.0]);
        assert!(buf.is_empty());
        let t = a.t();
        let r = row_of(t, 1, &mut buf);
        assert_eq!(r, &[1.0, 5.0, 9.0]);
        let rev = a.slice(s![.., ..;-1]);
        let mut buf2 = Vec::new();
        assert_eq!(row_of(rev, 0, &mut buf2), &[3.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn a_call_does_not_wait_for_a_helper_that_has_not_started() {
        let pool = ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        // The pool's one thread is held up until `release` is sent.
        let (release, held) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = held.recv();
        });
        let runs = AtomicUsize::new(0);
        let work = || {
            runs.fetch_add(1, Ordering::SeqCst);
        };
        run_with_helpers(&pool, 1, &work).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once free, the pool thread takes the helper's job, finds the call over and leaves
        // `work` alone; the job queued after it tells when it has done so.
        release.send(()).unwrap();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_helper_that_fails_fails_the_call() {
        let pool = ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let entered = AtomicUsize::new(0);
        let work = || {
            if rayon::current_thread_index().is_some() {
                entered.store(1, Ordering::SeqCst);
                panic!("a helper fails");
            }
            // The caller waits (up to 10 s) for the helper to come in.
            let start = std::time::Instant::now();
            while entered.load(Ordering::SeqCst) == 0 && start.elapsed().as_secs() < 10 {
                std::thread::yield_now();
            }
        };
        assert!(run_with_helpers(&pool, 1, &work).is_err());
        assert_eq!(entered.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_local_thread_count_applies_to_its_own_thread_only() {
        let global = num_threads().unwrap();
        let wanted = if global == 3 { 5 } else { 3 };
        assert_eq!(swap_local_threads(Some(wanted)).unwrap(), None);
        assert_eq!(num_threads().unwrap(), wanted);
        let elsewhere = std::thread::spawn(|| num_threads().unwrap())
            .join()
            .unwrap();
        assert_ne!(elsewhere, wanted);
        assert_eq!(swap_local_threads(Some(2)).unwrap(), Some(wanted));
        assert!(swap_local_threads(Some(0)).is_err());
        assert!(swap_local_threads(Some(MAX_THREADS + 1)).is_err());
        assert_eq!(swap_local_threads(None).unwrap(), Some(2));
        assert_eq!(swap_local_threads(None).unwrap(), None);
    }

    #[test]
    fn every_row_is_visited_once_at_any_size() {
        for (rows, width) in [(0usize, 5usize), (3, 7), (1000, 300), (5, 100_000)] {
            let mut partials = vec![0.0; rows];
            let mut out = vec![0.0f32; rows * width];
            for_each_row(width, &mut partials, Some(&mut out), |_, i, p, o| {
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
