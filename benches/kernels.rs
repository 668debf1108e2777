//! Criterion benches of the Rust kernels (placeholder body replaced below).
fn main() {}
