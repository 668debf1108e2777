//! Runtime choice of instruction-set level.
//!
//! Each kernel body is written once, generic over `L: Level`, and wrapped in a `Kernel`
//! value. `dispatch` runs it inside a `#[target_feature]` function of the active level, where
//! the compiler vectorizes the inlined body for that level. A wheel built for baseline x86-64
//! thus uses AVX-512 or AVX2+FMA where the CPU has them.

use std::sync::atomic::{AtomicU8, Ordering};

use super::float::{sealed::Sealed, Level};
use crate::error::KdError;

/// An instruction-set level the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Simd {
    pub fn name(self) -> &'static str {
        match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
            Simd::Neon => "neon",
        }
    }

    pub fn parse(name: &str) -> Result<Simd, KdError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Simd::Scalar),
            "avx2" => Ok(Simd::Avx2),
            "avx512" => Ok(Simd::Avx512),
            "neon" => Ok(Simd::Neon),
            _ => Err(KdError::value(format!(
                "KDLOSS_SIMD must be one of 'scalar', 'avx2', 'avx512', 'neon', got {name:?}"
            ))),
        }
    }

    fn code(self) -> u8 {
        match self {
            Simd::Scalar => 0,
            Simd::Avx2 => 1,
            Simd::Avx512 => 2,
            Simd::Neon => 3,
        }
    }

    fn from_code(c: u8) -> Simd {
        match c {
            1 => Simd::Avx2,
            2 => Simd::Avx512,
            3 => Simd::Neon,
            _ => Simd::Scalar,
        }
    }

    /// The levels this CPU can run, worst first. A level is listed only if the CPU has every
    /// feature its `#[target_feature]` entry below enables: `dispatch_at` relies on it.
    pub fn available() -> Vec<Simd> {
        let mut v = vec![Simd::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            if has!("avx2")
                && has!("fma")
                && has!("bmi1")
                && has!("bmi2")
                && has!("lzcnt")
                && has!("popcnt")
                && has!("f16c")
            {
                v.push(Simd::Avx2);
                if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                    v.push(Simd::Avx512);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(Simd::Neon);
        v
    }

    pub fn best() -> Simd {
        Simd::available().last().copied().unwrap_or(Simd::Scalar)
    }
}

/// The level in use; `u8::MAX` until first asked for, then the best available.
static ACTIVE: AtomicU8 = AtomicU8::new(u8::MAX);

pub fn active() -> Simd {
    let c = ACTIVE.load(Ordering::Relaxed);
    if c != u8::MAX {
        return Simd::from_code(c);
    }
    let best = Simd::best();
    ACTIVE.store(best.code(), Ordering::Relaxed);
    best
}

/// Uses the level named `name` (as `KDLOSS_SIMD` names it) from now on if this CPU has it.
/// An unknown name is an error; a level the CPU lacks is not, since a program may run on
/// several machines: it is left unused, and the returned message says so (a warning to
/// show).
pub fn request(name: &str) -> Result<Option<String>, KdError> {
    let wanted = Simd::parse(name)?;
    if set_active(wanted).is_ok() {
        return Ok(None);
    }
    let available: Vec<&str> = Simd::available().into_iter().map(Simd::name).collect();
    Ok(Some(format!(
        "KDLOSS_SIMD={:?} is not available on this CPU (available: {}); using {:?}",
        wanted.name(),
        available.join(", "),
        active().name()
    )))
}

/// Uses `level` from now on. Levels the CPU lacks are refused: running them would fault.
pub fn set_active(level: Simd) -> Result<(), KdError> {
    check_available(level)?;
    ACTIVE.store(level.code(), Ordering::Relaxed);
    Ok(())
}

/// An error unless this CPU has `level`.
pub fn check_available(level: Simd) -> Result<(), KdError> {
    if is_available(level) {
        Ok(())
    } else {
        Err(KdError::value(format!(
            "SIMD level {:?} is not available on this CPU",
            level.name()
        )))
    }
}

// The levels. Crate-private, like `Level`'s supertrait: outside the crate a level exists only
// as the `L` that `dispatch_at` passes to `Kernel::run`, and inside it only `dispatch_at` (and
// tests, at levels that need nothing beyond the baseline) instantiates a kernel at `Avx2Level`
// or `Avx512Level`, in the `#[target_feature]` entry it calls once this CPU is known to have
// the level. `float::stream_copy` relies on that.

/// The portable level: baseline instructions only (SSE2 on x86-64).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarLevel;
impl Sealed for ScalarLevel {}
impl Level for ScalarLevel {
    const FMA: bool = false;
    const STREAM_BYTES: usize = 16;
}

/// AVX2 and FMA; only ever the `L` of a kernel run by `run_avx2`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Avx2Level;
impl Sealed for Avx2Level {}
impl Level for Avx2Level {
    const FMA: bool = true;
    const STREAM_BYTES: usize = 32;
}

/// AVX-512 (F, VL, BW, DQ); only ever the `L` of a kernel run by `run_avx512`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Avx512Level;
impl Sealed for Avx512Level {}
impl Level for Avx512Level {
    const FMA: bool = true;
    const STREAM_BYTES: usize = 64;
}

/// NEON, part of the aarch64 baseline.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) struct NeonLevel;
impl Sealed for NeonLevel {}
impl Level for NeonLevel {
    const FMA: bool = true;
    const STREAM_BYTES: usize = 0;
}

/// A unit of kernel work (one row, typically) whose body is generic over the level.
/// Implementations mark `run` `#[inline(always)]` so it is compiled inside each entry below.
pub trait Kernel {
    type Output;
    fn run<L: Level>(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c")]
fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run::<Avx2Level>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c"
)]
fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run::<Avx512Level>()
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn run_neon<K: Kernel>(k: K) -> K::Output {
    k.run::<NeonLevel>()
}

/// Runs `k` at the active level.
#[inline]
pub fn dispatch<K: Kernel>(k: K) -> K::Output {
    dispatch_at(active(), k)
}

/// Runs `k` at `level`, which must be in `Simd::available()` (`set_active` ensures that for
/// the active level); otherwise the portable body runs.
#[inline]
pub fn dispatch_at<K: Kernel>(level: Simd, k: K) -> K::Output {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the guard has just found every feature `run_avx512` enables on this CPU
        // (`Simd::available()` detects them all before listing the level).
        Simd::Avx512 if is_available(Simd::Avx512) => unsafe { run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for the features `run_avx2` enables.
        Simd::Avx2 if is_available(Simd::Avx2) => unsafe { run_avx2(k) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline (and the guard has checked it).
        Simd::Neon if is_available(Simd::Neon) => unsafe { run_neon(k) },
        _ => k.run::<ScalarLevel>(),
    }
}

/// Cached detection, so the check in `dispatch_at` costs a load.
fn is_available(level: Simd) -> bool {
    static MASK: AtomicU8 = AtomicU8::new(0);
    let mut m = MASK.load(Ordering::Relaxed);
    if m == 0 {
        m = 0x80;
        for l in Simd::available() {
            m |= 1 << l.code();
        }
        MASK.store(m, Ordering::Relaxed);
    }
    m & (1 << level.code()) != 0
}
