//! What the process runs with, and the environment variables that set it at start: the thread
//! count (`KDLOSS_NUM_THREADS`, `set_num_threads`, and each OS thread's own count for the calls
//! it makes) and the requested SIMD level (`KDLOSS_SIMD`). Both variables are read here and
//! nowhere else.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::KdError;

/// The most threads a call may use.
pub const MAX_THREADS: usize = 1024;

/// The process's thread count; 0 until first set or read from the environment.
static THREADS: AtomicUsize = AtomicUsize::new(0);
/// Bumped whenever the process's count changes, so that a pool built for the old one is
/// replaced (`parallel`).
static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's own thread count for the calls it makes (0: none, use the process's).
    static LOCAL_THREADS: Cell<usize> = const { Cell::new(0) };
}

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

/// The SIMD level `KDLOSS_SIMD` asks for, trimmed and lower-cased; `None` when it is unset or
/// blank. Whether the name is a level, and whether this CPU has it, is `kernels::simd`'s to say.
pub fn simd_from_env() -> Result<Option<String>, KdError> {
    match std::env::var("KDLOSS_SIMD") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(KdError::value(format!(
            "KDLOSS_SIMD must be a SIMD level name, got {v:?}"
        ))),
        Ok(v) => {
            let name = v.trim().to_ascii_lowercase();
            Ok((!name.is_empty()).then_some(name))
        }
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

/// Sets the number of threads later calls use (from 1 to 1024), in every thread of the
/// process. Results do not depend on it.
///
/// ```
/// kdloss::set_num_threads(2)?;
/// assert_eq!(kdloss::num_threads()?, 2);
/// assert!(kdloss::set_num_threads(0).is_err());
/// # Ok::<(), kdloss::Error>(())
/// ```
pub fn set_num_threads(n: usize) -> Result<(), KdError> {
    check_thread_count(n)?;
    if THREADS.swap(n, Ordering::AcqRel) != n {
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }
    Ok(())
}

/// The process's thread count (reading `KDLOSS_NUM_THREADS` the first time), and the
/// generation it belongs to.
pub fn global_threads() -> Result<(usize, u64), KdError> {
    let generation = GENERATION.load(Ordering::Acquire);
    let n = THREADS.load(Ordering::Acquire);
    if n > 0 {
        return Ok((n, generation));
    }
    let from_env = threads_from_env()?;
    // Another thread may have set a count meanwhile: that one stands.
    let n = match THREADS.compare_exchange(0, from_env, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => from_env,
        Err(set) => set,
    };
    Ok((n, GENERATION.load(Ordering::Acquire)))
}

/// Sets the thread count of the calls this thread makes (`None`: the process's count again)
/// and returns the one it replaces, so that a caller can put it back. Other threads are not
/// affected. Results do not depend on the count.
pub fn swap_local_threads(n: Option<usize>) -> Result<Option<usize>, KdError> {
    if let Some(n) = n {
        check_thread_count(n)?;
    }
    let before = LOCAL_THREADS.with(|c| c.replace(n.unwrap_or(0)));
    Ok((before > 0).then_some(before))
}

/// The number of threads calls made from this thread use: its own count if it has one
/// (`swap_local_threads`), else the process's, which is `KDLOSS_NUM_THREADS` or one per core
/// until `set_num_threads` changes it.
///
/// # Errors
///
/// `Error::Value` when `KDLOSS_NUM_THREADS` is set to something other than a count from 1 to
/// 1024.
pub fn num_threads() -> Result<usize, KdError> {
    let local = LOCAL_THREADS.with(Cell::get);
    if local > 0 {
        return Ok(local);
    }
    Ok(global_threads()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
