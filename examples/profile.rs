//! Times the fused kernel on one shape: `cargo run --release --example profile -- B C [threads]`,
//! in float32, or float64 with `DTYPE=f64`. `MODE=fwd|grad` times one mode, `KDLOSS_SIMD` picks
//! a level, `COLD=MB` writes that much other data and `IDLE_US=N` sleeps before each call, and `BURST=K`
//! times the last of K calls in a row.
use kdloss::kernels::{distillation, Distillation, Float, Out, Reduction};
use ndarray::{Array1, Array2};

fn main() {
    if std::env::var("DTYPE").as_deref() == Ok("f64") {
        time::<f64>();
    } else {
        time::<f32>();
    }
}

fn time<T: Float>() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (b, c) = (
        args.first().copied().unwrap_or(256),
        args.get(1).copied().unwrap_or(32000),
    );
    let th = args.get(2).copied().unwrap_or(1);
    let s = Array2::from_shape_fn((b, c), |(i, j)| {
        T::from_f64(((i * 31 + j * 17) % 1000) as f64 / 300.0)
    });
    let t = Array2::from_shape_fn((b, c), |(i, j)| {
        T::from_f64(((i * 7 + j * 13) % 1000) as f64 / 250.0)
    });
    let y = Array1::from_shape_fn(b, |i| (i * 97 % c) as i64);
    let cfg = Distillation::new(2.0, 0.5, Reduction::Mean, Some(-100)).unwrap();
    // Aligned to a cache line, as NumPy's arrays of this size are.
    let mut buf = vec![T::ZERO; b * c + 16];
    let skew = buf.as_ptr().align_offset(64);
    let g = &mut buf[skew..skew + b * c];
    kdloss::config::set_num_threads(th).unwrap();
    if let Ok(level) = std::env::var("KDLOSS_SIMD") {
        let level = kdloss::kernels::Simd::parse(&level).unwrap();
        kdloss::kernels::simd::set_active(level).unwrap();
    }
    print!("[{} {}] ", kdloss::kernels::simd::active().name(), T::NAME);
    let modes: &[bool] = match std::env::var("MODE").as_deref() {
        Ok("fwd") => &[false],
        Ok("grad") => &[true],
        _ => &[false, true],
    };
    let cold_mb: usize = std::env::var("COLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut evict = vec![0f32; cold_mb << 18];
    // IDLE_US=N: sleep that long before each call, as a program that does other work between
    // calls lets the pool's threads fall asleep.
    let idle = std::env::var("IDLE_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_micros);
    // BURST=K: after the eviction and the sleep, K - 1 untimed calls, then the timed one.
    let burst: usize = std::env::var("BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for &grad in modes {
        let mut times = Vec::new();
        let reps = (300_000_000 / (b * c)).clamp(15, 3000);
        for _ in 0..reps {
            // COLD=MB: write that many MB of other data before each call, as the work between
            // calls of a real program does (evicting the inputs from L2, or further).
            for v in evict.iter_mut() {
                *v += 1.0;
            }
            if let Some(d) = idle {
                std::thread::sleep(d);
            }
            for _ in 1..burst {
                let gr = if grad { Some(Out::new(&mut *g)) } else { None };
                let _ = distillation(&cfg, s.view(), t.view(), Some(y.view()), gr).unwrap();
            }
            let t0 = std::time::Instant::now();
            let gr = if grad { Some(Out::new(&mut *g)) } else { None };
            let _ = distillation(&cfg, s.view(), t.view(), Some(y.view()), gr).unwrap();
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let med = times[times.len() / 2];
        println!(
            "({b}, {c}) grad={grad} threads={th}: median {:.3} ms, {:.3} ns/element",
            med * 1e3,
            med * 1e9 / (b * c) as f64
        );
    }
}
