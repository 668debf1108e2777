//! The pool threads that help a call, and the gate through which they join it.
//!
//! The calling thread always works; `run_with_helpers` asks pool threads to join it and never
//! waits for one that has not started by the time the work is done, so a pool thread that is
//! slow to wake costs nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::config;
use crate::error::KdError;

/// The pool, and the generation of the process's thread count it was built for.
static POOL: RwLock<Option<(u64, Arc<ThreadPool>)>> = RwLock::new(None);

/// A pool with at least `helpers` threads. The calling thread is one of a call's `n` threads,
/// so the process's count `n` needs `n - 1`; a thread's own larger count
/// (`config::swap_local_threads`) grows the pool to fit, and a call asks only as many of its
/// threads to help as its count allows. A change of the process's count builds a new pool.
pub(super) fn pool(helpers: usize) -> Result<Arc<ThreadPool>, KdError> {
    let (global, generation) = config::global_threads()?;
    let helpers = helpers.max(global.saturating_sub(1)).max(1);
    let fits = |p: &Option<(u64, Arc<ThreadPool>)>| {
        p.as_ref()
            .filter(|(g, p)| *g == generation && p.current_num_threads() >= helpers)
            .map(|(_, p)| Arc::clone(p))
    };
    if let Some(p) = fits(&POOL.read().unwrap_or_else(|e| e.into_inner())) {
        return Ok(p);
    }
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = fits(&guard) {
        return Ok(p);
    }
    // Within one generation the pool only grows, so callers with different counts of their
    // own do not rebuild it in turn.
    let helpers = match &*guard {
        Some((g, p)) if *g == generation => helpers.max(p.current_num_threads()),
        _ => helpers,
    };
    let built = ThreadPoolBuilder::new()
        .num_threads(helpers)
        .thread_name(|i| format!("kdloss-{i}"))
        .build()
        .map_err(|e| KdError::value(format!("cannot start {} threads: {e}", helpers + 1)))?;
    let built = Arc::new(built);
    // Calls still running on the old pool keep it alive until they are done.
    *guard = Some((generation, Arc::clone(&built)));
    Ok(built)
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
pub(super) fn run_with_helpers(
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
        return Err(KdError::internal("a worker thread panicked"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
}
