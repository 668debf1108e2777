//! Each thread's scratch buffers, kept between the tasks it runs and between calls, and the
//! rows of a view as slices (in place, or copied into scratch).

use ndarray::{ArrayView2, Axis};

use super::chunk::LANES;
use crate::parallel::Local;

/// Buffers a task reuses across its rows: copies of rows that are not contiguous in memory,
/// and per-element values one pass of a kernel keeps for the next.
pub struct Scratch<T> {
    pub a: Vec<T>,
    pub b: Vec<T>,
    pub keep: Vec<T>,
    pub cols: Vec<[T; LANES]>,
}

impl<T> Scratch<T> {
    fn new() -> Self {
        Scratch {
            a: Vec::new(),
            b: Vec::new(),
            keep: Vec::new(),
            cols: Vec::new(),
        }
    }

    /// Gives back buffers too large to be worth keeping between calls.
    fn trim(&mut self) {
        const KEEP_BYTES: usize = 32 << 20;
        let bytes = std::mem::size_of::<T>()
            * (self.a.capacity() + self.b.capacity() + self.keep.capacity())
            + std::mem::size_of::<[T; LANES]>() * self.cols.capacity();
        if bytes > KEEP_BYTES {
            *self = Scratch::new();
        }
    }
}

/// Element types with a per-thread `Scratch` kept between calls: a fresh one per call would
/// pay the page faults of its first touch every time (a third of a millisecond for the 1.5 MB
/// that rows of 128256 floats need).
pub trait HasScratch: Copy + Send + Sync + 'static {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R;
}

macro_rules! thread_scratch {
    ($t:ty, $cell:ident) => {
        thread_local! {
            static $cell: std::cell::RefCell<Scratch<$t>> = std::cell::RefCell::new(Scratch::new());
        }

        impl HasScratch for $t {
            fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
                $cell.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut scratch) => {
                        let r = f(&mut scratch);
                        scratch.trim();
                        r
                    }
                    // Only if a kernel were re-entered on this thread; never the case today.
                    Err(_) => f(&mut Scratch::new()),
                })
            }
        }
    };
}

thread_scratch!(f32, SCRATCH_F32);
thread_scratch!(f64, SCRATCH_F64);

/// Row `i` of `x` as a slice: in place when the row is contiguous, else copied into `buf`.
#[inline]
pub fn row_of<'r, T: Copy>(x: ArrayView2<'r, T>, i: usize, buf: &'r mut Vec<T>) -> &'r [T] {
    let row = x.index_axis_move(Axis(0), i);
    if let Some(v) = row.to_slice() {
        return v;
    }
    buf.clear();
    buf.extend(row.iter().copied());
    buf
}

impl<T: HasScratch> Local for Scratch<T> {
    #[inline]
    fn with<R>(f: impl FnOnce(&mut Self) -> R) -> R {
        T::with_scratch(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    #[test]
    fn row_of_borrows_contiguous_rows_and_copies_strided_ones() {
        let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
        let mut buf = Vec::new();
        let r = row_of(a.view(), 1, &mut buf);
        assert_eq!(r, &[4.0, 5.0, 6.0, 7.0]);
        assert!(buf.is_empty());
        let t = a.t();
        let r = row_of(t, 1, &mut buf);
        assert_eq!(r, &[1.0, 5.0, 9.0]);
        let rev = a.slice(s![.., ..;-1]);
        let mut buf2 = Vec::new();
        assert_eq!(row_of(rev, 0, &mut buf2), &[3.0, 2.0, 1.0, 0.0]);
    }
}
