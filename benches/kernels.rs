//! Criterion benches of the pure-Rust kernels: no Python, no copies, no allocation in the
//! timed loop (the gradient goes to a preallocated buffer, as with `out=` in Python).
//!
//! Float32, T = 2, alpha = 0.5, reduction "mean", on seeded synthetic logits:
//! - `forward_{N}t`, `forward_backward_{N}t`: the fused distillation loss without and with its
//!   gradient at (64, 1000), (256, 32000), (8, 128256) and (4096, 10), on N = 1 and 2 threads;
//! - `kernels_{N}t`: softmax, log-softmax (T = 1), KL divergence (T = 2) and cross-entropy at
//!   (256, 32000);
//! - `simd_levels_1t`: forward + backward at (256, 32000) at every SIMD level the CPU has, so
//!   that a level that stopped vectorizing shows up as a slow line.
//!
//! Throughput is in elements (B·C) per second. Run `cargo bench --bench kernels` (a few
//! minutes), or filter: `cargo bench --bench kernels -- forward_backward_2t/256x32000`.
//! `KDLOSS_BENCH_THREADS=1,2,4` changes the thread counts.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use ndarray::{Array1, Array2};

use kdloss::config::set_num_threads;
use kdloss::kernels::simd::{set_active, Simd};
use kdloss::kernels::{
    cross_entropy, distillation, kl_divergence, softmax_into, Distillation, Out, Reduction,
};

const SHAPES: [(usize, usize); 4] = [(64, 1000), (256, 32000), (8, 128256), (4096, 10)];
const KERNEL_SHAPE: (usize, usize) = (256, 32000);
const TEMPERATURE: f64 = 2.0;
const ALPHA: f64 = 0.5;

/// Seeded inputs shaped like the Python suite's: a teacher, a student correlated with it,
/// labels in range.
struct Inputs {
    student: Array2<f32>,
    teacher: Array2<f32>,
    labels: Array1<i64>,
}

impl Inputs {
    fn new(rows: usize, classes: usize) -> Inputs {
        let mut rng = SplitMix((rows * 1_000_003 + classes) as u64);
        let teacher = Array2::from_shape_simple_fn((rows, classes), || 2.0 * rng.normal());
        let student = Array2::from_shape_fn((rows, classes), |ij| rng.normal() + 0.5 * teacher[ij]);
        let labels = Array1::from_shape_simple_fn(rows, || (rng.next() % classes as u64) as i64);
        Inputs {
            student,
            teacher,
            labels,
        }
    }

    fn elements(&self) -> u64 {
        self.student.len() as u64
    }

    fn name(&self) -> String {
        let (rows, classes) = self.student.dim();
        format!("{rows}x{classes}")
    }
}

/// splitmix64: enough randomness for benchmark inputs without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly standard normal: the sum of four uniforms, centred and scaled.
    fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * 3.0f32.sqrt()
    }
}

fn thread_counts() -> Vec<usize> {
    let parsed: Option<Vec<usize>> = std::env::var("KDLOSS_BENCH_THREADS").ok().map(|v| {
        v.split(',')
            .filter_map(|p| p.trim().parse().ok())
            .filter(|&n| n >= 1)
            .collect()
    });
    match parsed {
        Some(v) if !v.is_empty() => v,
        _ => vec![1, 2],
    }
}

fn config() -> Distillation {
    Distillation::new(TEMPERATURE, ALPHA, Reduction::Mean, Some(-100)).expect("valid settings")
}

fn small_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    // Small samples keep the whole run to a few minutes; criterion still reports a spread.
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

fn bench_loss(g: &mut BenchmarkGroup<'_, WallTime>, x: &Inputs, with_grad: bool) {
    let cfg = config();
    let mut grad = vec![0.0f32; x.student.len()];
    g.throughput(Throughput::Elements(x.elements()));
    g.bench_function(x.name(), |b| {
        b.iter(|| {
            let g = if with_grad {
                Some(Out::new(grad.as_mut_slice()))
            } else {
                None
            };
            let loss = distillation(
                &cfg,
                black_box(x.student.view()),
                black_box(x.teacher.view()),
                Some(x.labels.view()),
                g,
            )
            .expect("valid inputs");
            black_box(loss)
        })
    });
}

fn distillation_benches(c: &mut Criterion) {
    let inputs: Vec<Inputs> = SHAPES.iter().map(|&(b, k)| Inputs::new(b, k)).collect();
    for threads in thread_counts() {
        set_num_threads(threads).expect("threads >= 1");
        for (mode, with_grad) in [("forward", false), ("forward_backward", true)] {
            let mut g = small_group(c, &format!("{mode}_{threads}t"));
            for x in &inputs {
                bench_loss(&mut g, x, with_grad);
            }
            g.finish();
        }
    }
}

fn kernel_benches(c: &mut Criterion) {
    let x = Inputs::new(KERNEL_SHAPE.0, KERNEL_SHAPE.1);
    let name = x.name();
    let mut out = vec![0.0f32; x.student.len()];
    for threads in thread_counts() {
        set_num_threads(threads).expect("threads >= 1");
        let mut g = small_group(c, &format!("kernels_{threads}t"));
        g.throughput(Throughput::Elements(x.elements()));
        for (kernel, log) in [("softmax", false), ("log_softmax", true)] {
            g.bench_function(format!("{kernel}/{name}"), |b| {
                b.iter(|| {
                    softmax_into(black_box(x.student.view()), 1.0, log, Out::new(&mut out))
                        .expect("valid inputs");
                    black_box(out[0])
                })
            });
        }
        g.bench_function(format!("kl_divergence/{name}"), |b| {
            b.iter(|| {
                let loss = kl_divergence(
                    black_box(x.student.view()),
                    black_box(x.teacher.view()),
                    TEMPERATURE,
                    Reduction::Mean,
                )
                .expect("valid inputs");
                black_box(loss)
            })
        });
        g.bench_function(format!("cross_entropy/{name}"), |b| {
            b.iter(|| {
                let loss = cross_entropy(
                    black_box(x.student.view()),
                    x.labels.view(),
                    Reduction::Mean,
                    Some(-100),
                    0.0,
                    Default::default(),
                )
                .expect("valid inputs");
                black_box(loss)
            })
        });
        g.finish();
    }
}

fn simd_level_benches(c: &mut Criterion) {
    let x = Inputs::new(KERNEL_SHAPE.0, KERNEL_SHAPE.1);
    set_num_threads(1).expect("threads >= 1");
    let mut g = small_group(c, "simd_levels_1t");
    let cfg = config();
    let mut grad = vec![0.0f32; x.student.len()];
    g.throughput(Throughput::Elements(x.elements()));
    for level in Simd::available() {
        set_active(level).expect("an available level");
        g.bench_function(
            format!("forward_backward/{}/{}", level.name(), x.name()),
            |b| {
                b.iter(|| {
                    let loss = distillation(
                        &cfg,
                        black_box(x.student.view()),
                        black_box(x.teacher.view()),
                        Some(x.labels.view()),
                        Some(Out::new(&mut grad)),
                    )
                    .expect("valid inputs");
                    black_box(loss)
                })
            },
        );
    }
    g.finish();
    set_active(Simd::best()).expect("the best level is available");
}

criterion_group!(
    benches,
    distillation_benches,
    kernel_benches,
    simd_level_benches
);
criterion_main!(benches);
