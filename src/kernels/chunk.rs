//! The width of every lane-parallel loop, and the fixed-size arrays the loops work on.

/// Elements per step; 16 f32 fill one AVX-512 register, two AVX2 ones.
pub const LANES: usize = 16;

/// One step's elements: the compiler keeps such an array in SIMD registers.
pub type Chunk<T> = [T; LANES];
