/work/main/target-after/release/deps/pyo3_macros-4f6fea53c36ea8be.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-macros-0.29.3/src/lib.rs

/work/main/target-after/release/deps/libpyo3_macros-4f6fea53c36ea8be.so: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-macros-0.29.3/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-macros-0.29.3/src/lib.rs:

# env-dep:CARGO_PKG_VERSION=0.29.3
