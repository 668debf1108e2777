//! The buffer a kernel fills: a caller's initialised array, or fresh memory nobody has written.
//!
//! Fresh memory is never seen as `&mut [T]` until it is written: the drivers split an `Out`
//! into rows of `MaybeUninit<T>` and make each row ready (`Ready::row`) just before the kernel
//! writes it, zeroing a fresh row first. A row is a few kilobytes in the core's L1 cache, so
//! that costs a fraction of a separate pass over the whole output, which at (64, 1000) float32
//! took about a sixth of a softmax call. (Outputs large enough to be streamed come from the
//! output cache, whose buffers are initialised, and are never zeroed here.)

use std::mem::MaybeUninit;

use super::float::Float;

/// An output buffer of `len` elements; see the module doc.
pub struct Out<'a, T> {
    data: &'a mut [MaybeUninit<T>],
    fresh: bool,
}

/// How rows split off an `Out` are made ready to write: zeroed first when it was fresh.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ready {
    fresh: bool,
}

impl<'a, T: Float> Out<'a, T> {
    /// An initialised buffer, such as the caller's `out` array.
    pub fn new(data: &'a mut [T]) -> Self {
        // SAFETY: `MaybeUninit<T>` has `T`'s layout, and through this view only initialised
        // values are ever written (`Ready::row`, `zero`), so `data` stays initialised.
        let data = unsafe { &mut *(data as *mut [T] as *mut [MaybeUninit<T>]) };
        Out { data, fresh: false }
    }

    /// Memory that may hold anything, or nothing initialised.
    pub fn fresh(data: &'a mut [MaybeUninit<T>]) -> Self {
        Out { data, fresh: true }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The memory, to be split into rows, and how to make those rows ready.
    pub(crate) fn split(self) -> (&'a mut [MaybeUninit<T>], Ready) {
        (self.data, Ready { fresh: self.fresh })
    }

    /// Writes 0 to every element.
    pub(crate) fn zero(self) {
        zero(self.data);
    }
}

impl Ready {
    /// `row` as values to overwrite: zeroed first when the buffer was fresh.
    ///
    /// # Safety
    /// `row` must be part of the memory returned with this `Ready` by `Out::split`.
    #[inline]
    pub(crate) unsafe fn row<T: Float>(self, row: &mut [MaybeUninit<T>]) -> &mut [T] {
        if self.fresh {
            zero(row);
        }
        // SAFETY: every element of `row` is initialised: written just above when the buffer
        // was fresh, and otherwise the buffer was initialised (`Out::new`) and only ever
        // written with values since (the caller's contract ties `row` to this buffer).
        unsafe { &mut *(row as *mut [MaybeUninit<T>] as *mut [T]) }
    }
}

/// Writes 0 to every element of `row`.
pub(crate) fn zero<T: Float>(row: &mut [MaybeUninit<T>]) {
    row.fill(MaybeUninit::new(T::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_rows_are_zeroed_and_initialised_rows_kept() {
        let mut init = vec![3.0f32; 8];
        let (data, ready) = Out::new(&mut init).split();
        // SAFETY: the row is part of `data`.
        let row = unsafe { ready.row(&mut data[2..5]) };
        assert_eq!(row, &[3.0; 3]);
        row[0] = 5.0;
        assert_eq!(init[2], 5.0);

        let mut fresh = vec![MaybeUninit::<f64>::uninit(); 4];
        let (data, ready) = Out::fresh(&mut fresh).split();
        // SAFETY: the row is part of `data`.
        let row = unsafe { ready.row(&mut data[1..]) };
        assert_eq!(row, &[0.0; 3]);
    }
}
