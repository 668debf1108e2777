//! The element types the kernels are generic over, and the per-level arithmetic they share.
//!
//! Everything here is `#[inline(always)]`: the kernels are written once, generically, and
//! instantiated inside `#[target_feature]` entry points (see `simd.rs`). A single non-inlined
//! generic function between such an entry point and the loop body silently de-vectorizes it.

use std::fmt::Debug;
use std::ops::{Add, Mul, Neg, Sub};

/// Keeps `Level` implemented only inside the crate.
pub(crate) mod sealed {
    /// The supertrait of `Level`: public, so that `Level` may name it, but in a crate-private
    /// module, so that no code outside the crate can implement it.
    pub trait Sealed {}
}

/// An instruction-set level. `FMA` decides whether `madd` fuses; without hardware FMA a fused
/// multiply-add would be a slow software call, so the portable level keeps them separate.
///
/// Sealed, and its implementations (in `simd.rs`) are crate-private: code outside the crate
/// gets a level only as the `L` of `Kernel::run` called by `simd::dispatch` or `dispatch_at`,
/// which pick one this CPU has. That is what lets `stream_copy` issue the instructions a
/// level's `STREAM_BYTES` stands for without checking for them.
pub trait Level: sealed::Sealed + Copy + Send + Sync + 'static {
    const FMA: bool;
    /// The widest non-temporal store, in bytes (0: none, plain stores).
    const STREAM_BYTES: usize;
}

/// A floating-point element type the kernels run on (f32 or f64).
///
/// Sums over a row are accumulated in f64 whatever `Self` is, so f32 results keep the
/// accuracy of a float64 reference; elementwise work stays in `Self` for SIMD throughput.
pub trait Float:
    super::scratch::HasScratch
    + Copy
    + Send
    + Sync
    + Debug
    + PartialOrd
    + Default
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    /// The NumPy name of the type.
    const NAME: &'static str;
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    const INFINITY: Self;

    /// The largest finite value.
    const MAX: Self;

    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;

    /// `v` rounded to `Self`, with +inf (overflow) replaced by `Self::MAX`.
    ///
    /// Used for `1/T`: below T ≈ 1/MAX the reciprocal overflows and `0 · inf` would turn the
    /// row maximum's `(x − max)/T = 0` into NaN. With `MAX` the maximum still maps to 0 and
    /// every other logit to a value whose exp is 0, as it is for `(x − max)/T` itself, unless
    /// the logits differ by less than `T·MAX` (subnormal differences at such temperatures).
    #[inline(always)]
    fn from_f64_saturating(v: f64) -> Self {
        let r = Self::from_f64(v);
        if r.to_f64() == f64::INFINITY {
            Self::MAX
        } else {
            r
        }
    }

    /// `a * b + c`, fused where the level has FMA.
    fn madd<L: Level>(a: Self, b: Self, c: Self) -> Self;

    /// `e^x` to about one ulp for `x <= 0`, written without branches or libm calls so that
    /// loops over it vectorize. `-inf` and arguments whose result is below the smallest normal
    /// number give exactly 0; NaN stays NaN. Positive arguments are outside its contract (the
    /// kernels only exponentiate `x − max ≤ 0`), which saves an overflow check per call.
    fn fast_exp<L: Level>(self) -> Self;
}

/// Orders this thread's non-temporal stores before anything it does next (such as signalling
/// that a row is done).
#[inline(always)]
pub fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no preconditions.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

/// Copies `src` into `dst` (equal lengths) with non-temporal stores, as wide as `L` has and
/// the alignment of `dst` allows; with plain stores where it allows none. Non-temporal stores
/// write whole lines to memory without first reading them, which is a third of the traffic
/// of a large output; callers finish with `store_fence`.
///
/// Safe although it issues `L`'s instructions unchecked: a level with `STREAM_BYTES` of 32 or
/// 64 is `Avx2Level` or `Avx512Level` (`Level` is sealed), and those are crate-private types
/// that only `simd::dispatch_at` instantiates, inside the `#[target_feature]` entry it calls
/// after detecting the feature on this CPU. Code outside the crate cannot name them.
#[inline(always)]
pub(crate) fn stream_copy<L: Level, T: Copy>(dst: &mut [T], src: &[T]) {
    debug_assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, __m256i, __m512i, _mm256_loadu_si256, _mm256_stream_si256, _mm512_loadu_si512,
            _mm512_stream_si512, _mm_loadu_si128, _mm_stream_si128,
        };
        let bytes = std::mem::size_of_val(dst).min(std::mem::size_of_val(src));
        let d = dst.as_mut_ptr().cast::<u8>();
        let s = src.as_ptr().cast::<u8>();
        let fits = |w: usize| {
            L::STREAM_BYTES >= w && (d as usize).is_multiple_of(w) && bytes.is_multiple_of(w)
        };
        macro_rules! stream {
            ($w:literal, $v:ty, $load:ident, $store:ident) => {
                if fits($w) {
                    for o in (0..bytes).step_by($w) {
                        // SAFETY: `o + $w <= bytes` (`bytes` is a multiple of `$w`), so both
                        // accesses are within the `bytes` both slices hold; the load is
                        // unaligned, the store aligned to `$w` (`d` and `o` are multiples of it,
                        // checked by `fits`); and the CPU has the instructions: `fits` needs
                        // `L::STREAM_BYTES >= $w`, which only levels dispatched after detecting
                        // them have (AVX-512F for 64 bytes, AVX for 32; SSE2, baseline on
                        // x86-64, for 16); see the function's doc.
                        unsafe { $store(d.add(o).cast::<$v>(), $load(s.add(o).cast::<$v>())) };
                    }
                    return;
                }
            };
        }
        stream!(64, __m512i, _mm512_loadu_si512, _mm512_stream_si512);
        stream!(32, __m256i, _mm256_loadu_si256, _mm256_stream_si256);
        stream!(16, __m128i, _mm_loadu_si128, _mm_stream_si128);
    }
    dst.copy_from_slice(src);
}

/// Natural log of a positive normal `x` (or 0, giving -inf; +inf and NaN are returned as they
/// are) to about one ulp, without branches or libm calls so that loops over it vectorize:
/// Cephes' `log`.
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn ln_f64<L: Level>(x: f64) -> f64 {
    const SQRT_HALF: f64 = std::f64::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    // x = m·2^e with m in [0.5, 1); the exponent field becomes a float through the mantissa
    // of 2^52, which avoids an integer conversion (AVX2 has none for 64-bit integers).
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3fe0_0000_0000_0000);
    let field = f64::from_bits((bits >> 52) | 0x4330_0000_0000_0000) - 4_503_599_627_370_496.0;
    let small = m < SQRT_HALF;
    let e = if small {
        field - 1023.0
    } else {
        field - 1022.0
    };
    let f = if small { m + m - 1.0 } else { m - 1.0 };
    let z = f * f;
    let mut p = 1.018_756_638_045_809_317_96e-4;
    p = f64::madd::<L>(p, f, 4.974_949_949_767_470_014_25e-1);
    p = f64::madd::<L>(p, f, 4.705_791_198_788_817_258_54);
    p = f64::madd::<L>(p, f, 1.449_892_253_416_109_308_46e1);
    p = f64::madd::<L>(p, f, 1.793_686_785_078_198_163_13e1);
    p = f64::madd::<L>(p, f, 7.708_387_337_558_853_916_66);
    let mut q = f + 1.128_735_871_891_674_505_90e1;
    q = f64::madd::<L>(q, f, 4.522_791_458_375_322_211_05e1);
    q = f64::madd::<L>(q, f, 8.298_752_669_127_766_032_11e1);
    q = f64::madd::<L>(q, f, 7.115_447_506_185_638_944_66e1);
    q = f64::madd::<L>(q, f, 2.312_516_201_267_653_405_83e1);
    let y = f * (z * p / q);
    let y = f64::madd::<L>(-e, 2.121_944_400_546_905_827_679e-4, y);
    let y = f64::madd::<L>(-0.5, z, y);
    let r = f64::madd::<L>(e, 0.693_359_375, f + y);
    // NaN, +inf and 0: the bit tricks above mean nothing for them.
    if x.is_nan() || x == f64::INFINITY {
        x
    } else if x == 0.0 {
        f64::NEG_INFINITY
    } else {
        r
    }
}

impl Float for f32 {
    const NAME: &'static str = "float32";
    const MAX: Self = f32::MAX;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const INFINITY: Self = f32::INFINITY;

    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn madd<L: Level>(a: Self, b: Self, c: Self) -> Self {
        if L::FMA {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    #[inline(always)]
    fn fast_exp<L: Level>(self) -> Self {
        // n = round(x / ln 2), r = x - n ln 2 in two steps (Cephes' split of ln 2), then
        // e^r = 1 + r + r^2 P(r) on |r| <= ln 2 / 2, with P of degree 4 fitted by Remez
        // exchange to the relative error of e^r (0.03 ulp; the roundings make up the rest).
        // P is taken in Estrin's order: three FMAs deep rather than Horner's five, so more
        // exps are in flight at once.
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const P: [f32; 5] = [
            f32::from_bits(0x3eff_fffe),
            f32::from_bits(0x3e2a_aa49),
            f32::from_bits(0x3d2a_ac79),
            f32::from_bits(0x3c09_1cea),
            f32::from_bits(0x3ab5_1226),
        ];
        // 1.5 * 2^23 + 127: adding it rounds to the nearest integer, which lands in the low
        // mantissa bits already biased as an exponent; this avoids a float-to-int conversion
        // and a rounding instruction (not in SSE2).
        const ROUND: f32 = 12_583_039.0;
        // Below LO, n < -126 and 2^n is not a normal number: the result is flushed to 0 by the
        // final select, which also discards whatever the steps below made of such an x (-inf
        // gives NaN there), so x needs no clamping first.
        const LO: f32 = -87.3;
        let x = self;
        let t = Self::madd::<L>(x, LOG2E, ROUND);
        let n = t - ROUND;
        let r = Self::madd::<L>(n, -LN2_HI, x);
        let r = Self::madd::<L>(n, -LN2_LO, r);
        let r2 = r * r;
        let p01 = Self::madd::<L>(P[1], r, P[0]);
        let p23 = Self::madd::<L>(P[3], r, P[2]);
        let p = Self::madd::<L>(Self::madd::<L>(P[4], r2, p23), r2, p01);
        let y = Self::madd::<L>(p, r2, r) + 1.0;
        // t's low bits hold n + 127; shifted into the exponent field they make 2^n, and the
        // high bits of t shift out.
        let scale = f32::from_bits(t.to_bits().wrapping_shl(23));
        let e = y * scale;
        if x < LO {
            0.0
        } else {
            e
        }
    }
}

impl Float for f64 {
    const NAME: &'static str = "float64";
    const MAX: Self = f64::MAX;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const INFINITY: Self = f64::INFINITY;

    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn madd<L: Level>(a: Self, b: Self, c: Self) -> Self {
        if L::FMA {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    #[allow(clippy::excessive_precision)]
    #[inline(always)]
    fn fast_exp<L: Level>(self) -> Self {
        // The reduction of f32 (with Cephes' split of ln 2 for f64), then e^r = 1 + r + r^2 P(r)
        // with P of degree 9 fitted by Remez exchange to the relative error of e^r (0.03 ulp),
        // in Estrin's order. A polynomial rather than Cephes' Pade form, whose division costs
        // more than the whole polynomial.
        const LOG2E: f64 = std::f64::consts::LOG2_E;
        const LN2_HI: f64 = 6.931_457_519_531_25e-1;
        const LN2_LO: f64 = 1.428_606_820_309_417_232e-6;
        const P: [f64; 10] = [
            f64::from_bits(0x3fe0_0000_0000_000a),
            f64::from_bits(0x3fc5_5555_5555_54fa),
            f64::from_bits(0x3fa5_5555_5555_088c),
            f64::from_bits(0x3f81_1111_1112_7b9b),
            f64::from_bits(0x3f56_c16c_1842_66be),
            f64::from_bits(0x3f2a_01a0_12a6_9d02),
            f64::from_bits(0x3efa_0199_a16e_5228),
            f64::from_bits(0x3ec7_1df2_53a0_4c44),
            f64::from_bits(0x3e92_8ad6_89fa_d7fa),
            f64::from_bits(0x3e5a_d7f7_b175_464d),
        ];
        // 1.5 * 2^52 + 1023, as for f32; below LO the final select gives 0.
        const ROUND: f64 = 6_755_399_441_056_767.0;
        const LO: f64 = -708.3;
        let x = self;
        let t = Self::madd::<L>(x, LOG2E, ROUND);
        let n = t - ROUND;
        let r = Self::madd::<L>(n, -LN2_HI, x);
        let r = Self::madd::<L>(n, -LN2_LO, r);
        let r2 = r * r;
        let r4 = r2 * r2;
        let pair = |i: usize| Self::madd::<L>(P[i + 1], r, P[i]);
        let p03 = Self::madd::<L>(pair(2), r2, pair(0));
        let p47 = Self::madd::<L>(pair(6), r2, pair(4));
        let p07 = Self::madd::<L>(p47, r4, p03);
        let p = Self::madd::<L>(pair(8), r4 * r4, p07);
        let y = Self::madd::<L>(p, r2, r) + 1.0;
        let scale = f64::from_bits(t.to_bits().wrapping_shl(52));
        let e = y * scale;
        if x < LO {
            0.0
        } else {
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    struct Plain;
    impl sealed::Sealed for Plain {}
    impl Level for Plain {
        const FMA: bool = false;
        const STREAM_BYTES: usize = 16;
    }
    #[derive(Clone, Copy)]
    struct Fused;
    impl sealed::Sealed for Fused {}
    impl Level for Fused {
        const FMA: bool = true;
        const STREAM_BYTES: usize = 16;
    }

    fn ulp_f32(a: f32, exact: f64) -> f64 {
        let e = exact as f32;
        if e == 0.0 {
            return if a == 0.0 { 0.0 } else { f64::INFINITY };
        }
        let ulp = (f32::from_bits(e.to_bits() + 1) - e) as f64;
        (a as f64 - exact).abs() / ulp
    }

    fn check_f32<L: Level>() {
        // Every 16th float of [-87.3, 0], by bit pattern: 7e7 arguments spread evenly over
        // every binade (the whole range measured 1.02 ulp at worst with FMA, 0.99 without).
        let mut worst = 0.0f64;
        let mut bits = (-0.0f32).to_bits();
        loop {
            let x = f32::from_bits(bits);
            if x < -87.3 {
                break;
            }
            worst = worst.max(ulp_f32(x.fast_exp::<L>(), (x as f64).exp()));
            bits += 16;
        }
        assert!(worst <= 1.05, "f32 exp error {worst} ulp");
    }

    #[test]
    fn f32_exp_is_within_about_one_ulp() {
        check_f32::<Plain>();
        check_f32::<Fused>();
    }

    fn check_f64<L: Level>() {
        let mut worst = 0.0f64;
        let mut x = -708.0f64;
        while x <= 0.0 {
            let exact = x.exp();
            let got = x.fast_exp::<L>();
            let ulp = f64::from_bits(exact.to_bits() + 1) - exact;
            worst = worst.max((got - exact).abs() / ulp);
            x += 0.013_7;
        }
        // std's exp is itself within an ulp, so allow two against it.
        assert!(worst <= 2.0, "f64 exp error {worst} ulp");
    }

    #[test]
    fn f64_exp_is_within_about_one_ulp() {
        check_f64::<Plain>();
        check_f64::<Fused>();
    }

    fn check_ln<L: Level>() {
        let mut worst = 0.0f64;
        let mut x = 1e-300f64;
        while x < 1e300 {
            for m in [1.0, 1.000_1, 1.3, 1.41, 1.42, 1.9, 2.5, 7.7] {
                let v = x * m;
                let exact = v.ln();
                let got = ln_f64::<L>(v);
                let ulp = (f64::from_bits(exact.abs().to_bits() + 1) - exact.abs())
                    .max(f64::MIN_POSITIVE);
                worst = worst.max((got - exact).abs() / ulp);
            }
            x *= 3.7;
        }
        assert!(worst <= 2.0, "ln error {worst} ulp");
        assert_eq!(ln_f64::<L>(1.0), 0.0);
        assert_eq!(ln_f64::<L>(f64::INFINITY), f64::INFINITY);
        assert_eq!(ln_f64::<L>(0.0), f64::NEG_INFINITY);
        assert!(ln_f64::<L>(f64::NAN).is_nan());
    }

    #[test]
    fn ln_is_within_about_one_ulp() {
        check_ln::<Plain>();
        check_ln::<Fused>();
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(Float::fast_exp::<Fused>(f32::NEG_INFINITY), 0.0);
        assert_eq!(Float::fast_exp::<Fused>(f64::NEG_INFINITY), 0.0);
        assert_eq!(Float::fast_exp::<Plain>(-1000.0f32), 0.0);
        assert_eq!(Float::fast_exp::<Plain>(0.0f32), 1.0);
        assert_eq!(Float::fast_exp::<Plain>(0.0f64), 1.0);
        assert!(Float::fast_exp::<Plain>(f32::NAN).is_nan());
        assert!(Float::fast_exp::<Fused>(f64::NAN).is_nan());
    }
}
