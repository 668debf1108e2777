//! Times single passes over one row at the active SIMD level (development aid).
use kdloss::kernels::float::{Float, Level};
use kdloss::kernels::row::{fold2, max2, LANES};
use kdloss::kernels::simd::{dispatch, Kernel};

struct Max<'a>(&'a [f32], &'a [f32]);
impl Kernel for Max<'_> {
    type Output = f32;
    #[inline(always)]
    fn run<L: Level>(self) -> f32 {
        let (a, b) = max2(self.0, self.1);
        a + b
    }
}
struct Exp1<'a>(&'a [f32]);
impl Kernel for Exp1<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<L: Level>(self) -> f64 {
        let [s] = fold2(
            self.0,
            self.0,
            #[inline(always)]
            |c, _| {
                let mut e = [0f32; LANES];
                for k in 0..LANES {
                    e[k] = (c[k] - 3.0).fast_exp::<L>();
                }
                [e]
            },
        );
        s
    }
}
struct Sum1<'a>(&'a [f32]);
impl Kernel for Sum1<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<L: Level>(self) -> f64 {
        let [s] = fold2(
            self.0,
            self.0,
            #[inline(always)]
            |c, _| [*c],
        );
        s
    }
}

fn time(name: &str, n: usize, mut f: impl FnMut() -> f64) {
    let mut best = f64::MAX;
    let mut sink = 0.0;
    for _ in 0..200 {
        let t0 = std::time::Instant::now();
        sink += f();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{name}: {:.3} ns/element ({sink:.1e})",
        best * 1e9 / n as f64
    );
}

fn main() {
    let n = 32000;
    let a: Vec<f32> = (0..n).map(|i| ((i * 17) % 1000) as f32 / 300.0).collect();
    let b: Vec<f32> = (0..n).map(|i| ((i * 13) % 1000) as f32 / 250.0).collect();
    time("max2 (2 inputs)", n, || dispatch(Max(&a, &b)) as f64);
    time("sum", n, || dispatch(Sum1(&a)));
    time("sum of exp", n, || dispatch(Exp1(&a)));
    time("row_stats KL+CE T=2 (in cache)", n, || {
        dispatch(fused::Stats(&a, &b))
    });
}

mod fused {
    use kdloss::kernels::distill::{row_stats, RowParams};
    use kdloss::kernels::float::Level;
    use kdloss::kernels::simd::Kernel;
    pub struct Stats<'a>(pub &'a [f32], pub &'a [f32]);
    impl Kernel for Stats<'_> {
        type Output = f64;
        #[inline(always)]
        fn run<L: Level>(self) -> f64 {
            let st = row_stats::<f32, L, true, true, 2>(
                self.0,
                self.1,
                RowParams { inv_t: 0.5 },
                None,
                None,
            );
            st.kl() + st.sum_1
        }
    }
}
