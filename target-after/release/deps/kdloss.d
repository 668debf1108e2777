/work/main/target-after/release/deps/kdloss.d: src/lib.rs src/api.rs src/config.rs src/error.rs src/kernels/mod.rs src/kernels/check.rs src/kernels/chunk.rs src/kernels/driver.rs src/kernels/float.rs src/kernels/long.rs src/kernels/loss.rs src/kernels/objective/mod.rs src/kernels/objective/hinton.rs src/kernels/objective/softmax.rs src/kernels/out.rs src/kernels/probe.rs src/kernels/reduce.rs src/kernels/row.rs src/kernels/scratch.rs src/kernels/simd.rs src/kernels/small.rs src/kernels/softmax.rs src/output_cache.rs src/parallel/mod.rs src/parallel/helpers.rs src/bindings.rs

/work/main/target-after/release/deps/libkdloss.so: src/lib.rs src/api.rs src/config.rs src/error.rs src/kernels/mod.rs src/kernels/check.rs src/kernels/chunk.rs src/kernels/driver.rs src/kernels/float.rs src/kernels/long.rs src/kernels/loss.rs src/kernels/objective/mod.rs src/kernels/objective/hinton.rs src/kernels/objective/softmax.rs src/kernels/out.rs src/kernels/probe.rs src/kernels/reduce.rs src/kernels/row.rs src/kernels/scratch.rs src/kernels/simd.rs src/kernels/small.rs src/kernels/softmax.rs src/output_cache.rs src/parallel/mod.rs src/parallel/helpers.rs src/bindings.rs

src/lib.rs:
src/api.rs:
src/config.rs:
src/error.rs:
src/kernels/mod.rs:
src/kernels/check.rs:
src/kernels/chunk.rs:
src/kernels/driver.rs:
src/kernels/float.rs:
src/kernels/long.rs:
src/kernels/loss.rs:
src/kernels/objective/mod.rs:
src/kernels/objective/hinton.rs:
src/kernels/objective/softmax.rs:
src/kernels/out.rs:
src/kernels/probe.rs:
src/kernels/reduce.rs:
src/kernels/row.rs:
src/kernels/scratch.rs:
src/kernels/simd.rs:
src/kernels/small.rs:
src/kernels/softmax.rs:
src/output_cache.rs:
src/parallel/mod.rs:
src/parallel/helpers.rs:
src/bindings.rs:

# env-dep:CARGO_PKG_VERSION=0.1.0
