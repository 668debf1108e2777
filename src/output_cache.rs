//! Output buffers, and a small cache of the ones given back.
//!
//! An output of many megabytes is allocated straight from the kernel, one page fault per 4 KB
//! on first touch: about 2 ms for a 32 MB gradient, a third of the call. A training loop asks
//! for an output of the same size every step and drops the last one, so buffers dropped by
//! their owners are kept here (a few, up to `CACHE_BYTES` in all) and handed out again for the
//! same size. Only outputs of at least `MIN_BYTES` come from here: smaller ones are best left
//! to the system allocator, which usually hands back memory another library just used (still
//! in cache), where a buffer kept here has gone cold and every plain store to it would first
//! read its line from memory. (Gradients this large are written with non-temporal stores,
//! which do not read the lines; softmax outputs are not, but still save the page faults.)

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

/// Alignment of every buffer: a cache line, the widest non-temporal store.
const ALIGN: usize = 64;
/// The alignment asked of the allocator. No more than `malloc` gives anyway, so that
/// `alloc_zeroed` is `calloc`, which takes fresh pages from the system without writing them
/// (they are zero already); for a larger alignment the allocator would `memset` the whole
/// block. The block is over-allocated by `ALIGN - BASE_ALIGN` and used from its first multiple
/// of `ALIGN`.
const BASE_ALIGN: usize = 16;
/// The smallest output worth keeping: the size from which gradients are streamed.
pub const MIN_BYTES: usize = crate::kernels::driver::STREAM_MIN_BYTES;
/// Buffers kept at most, and their total size at most.
const CACHE_BUFFERS: usize = 4;
const CACHE_BYTES: usize = 64 << 20;

/// A 64-byte aligned heap block of `bytes` (> 0) bytes, every one of them initialised: zero
/// when new, then whatever numbers were last written to it.
pub struct Buffer {
    /// The start of the block as allocated, with `layout(bytes)`.
    base: NonNull<u8>,
    /// The first multiple of `ALIGN` in the block, `bytes` before its end or further.
    ptr: NonNull<u8>,
    bytes: usize,
}

// SAFETY: a `Buffer` owns its block outright; nothing else points into it while it is moved.
unsafe impl Send for Buffer {}
// SAFETY: `&Buffer` gives no access to the block (only its address and size).
unsafe impl Sync for Buffer {}

impl Buffer {
    /// The layout allocated for a buffer of `bytes`.
    fn layout(bytes: usize) -> Option<Layout> {
        Layout::from_size_align(bytes.checked_add(ALIGN - BASE_ALIGN)?, BASE_ALIGN).ok()
    }

    /// A new zeroed block, or `None` if the system has no memory for it.
    fn new(bytes: usize) -> Option<Buffer> {
        debug_assert!(bytes > 0);
        let layout = Self::layout(bytes)?;
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        // `BASE_ALIGN` divides `ALIGN`, so the first multiple of `ALIGN` is at most
        // `ALIGN - BASE_ALIGN` bytes in: `bytes` from there are inside the block.
        let offset = base.as_ptr().align_offset(ALIGN);
        debug_assert!(offset <= ALIGN - BASE_ALIGN);
        // SAFETY: `offset` is within the block (above), so the pointer stays in it.
        let ptr = unsafe { base.add(offset) };
        Some(Buffer { base, ptr, bytes })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn as_ptr<T>(&self) -> *const T {
        self.ptr.as_ptr().cast()
    }

    /// The block as `len` elements of `T`: zeros when new, else the values last written.
    ///
    /// # Safety
    /// `len * size_of::<T>()` must equal `bytes()`, and `T` must be a plain number type such
    /// as `f32` or `f64`: alignment at most 64, no padding, and every bit pattern a valid
    /// value (so whatever bytes the block holds are a valid `[T]`, and writing `T`s leaves
    /// every byte initialised for the next user).
    pub unsafe fn as_mut_slice<T>(&mut self, len: usize) -> &mut [T] {
        debug_assert_eq!(len * std::mem::size_of::<T>(), self.bytes);
        debug_assert!(std::mem::align_of::<T>() <= ALIGN);
        // SAFETY: `ptr` starts `bytes` initialised bytes (zeroed by `alloc_zeroed`, then only
        // ever written through slices of number types, which have no padding), aligned to
        // `ALIGN`, inside a block owned by `self` and borrowed mutably for the slice's
        // lifetime; the caller guarantees that they are `len` valid values of `T`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // A block exists only if its layout did.
        if let Some(layout) = Self::layout(self.bytes) {
            // SAFETY: `base` was allocated by `alloc_zeroed` with this very layout.
            unsafe { dealloc(self.base.as_ptr(), layout) };
        }
    }
}

/// Buffers given back, oldest first.
static CACHE: Mutex<Vec<Buffer>> = Mutex::new(Vec::new());

fn cache() -> MutexGuard<'static, Vec<Buffer>> {
    // A panic while holding the lock cannot leave the list inconsistent: recover it.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A buffer of `bytes` (> 0) bytes: one given back earlier if there is one of that size, else
/// a new one; `None` if the system has no memory for it (even after the kept ones are freed).
pub fn take(bytes: usize) -> Option<Buffer> {
    let reused = {
        let mut kept = cache();
        let found = kept.iter().rposition(|b| b.bytes == bytes);
        found.map(|i| kept.remove(i))
    };
    reused.or_else(|| Buffer::new(bytes)).or_else(|| {
        clear();
        Buffer::new(bytes)
    })
}

/// Keeps `buf` for a later `take` of its size, dropping the oldest kept buffers as needed to
/// stay within the limits (a buffer larger than all of them is freed at once).
pub fn give_back(buf: Buffer) {
    if buf.bytes > CACHE_BYTES {
        return;
    }
    let evicted: Vec<Buffer> = {
        let mut kept = cache();
        kept.push(buf);
        let mut total: usize = kept.iter().map(|b| b.bytes).sum();
        let mut n = 0;
        while kept.len() - n > CACHE_BUFFERS || total > CACHE_BYTES {
            total -= kept[n].bytes;
            n += 1;
        }
        kept.drain(..n).collect()
    };
    // Freed outside the lock.
    drop(evicted);
}

/// Bytes currently kept for reuse.
pub fn cached_bytes() -> usize {
    cache().iter().map(|b| b.bytes).sum()
}

/// Frees every kept buffer.
pub fn clear() {
    let kept = std::mem::take(&mut *cache());
    drop(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the cache is process-wide, and tests run in parallel.
    #[test]
    fn buffers_are_reused_by_size_within_the_limits() {
        clear();
        let mut a = take(4096).unwrap();
        assert!((a.as_ptr::<u8>() as usize).is_multiple_of(ALIGN));
        // SAFETY: 1024 f32 are 4096 bytes, and f32 is a plain number type.
        let s = unsafe { a.as_mut_slice::<f32>(1024) };
        assert!(s.iter().all(|&v| v == 0.0), "a new buffer is zeroed");
        s.fill(1.5);
        let addr = a.as_ptr::<u8>();
        give_back(a);
        assert_eq!(cached_bytes(), 4096);
        let b = take(8192).unwrap();
        assert_ne!(b.as_ptr::<u8>(), addr);
        let mut c = take(4096).unwrap();
        assert_eq!(c.as_ptr::<u8>(), addr);
        // SAFETY: as above, in the same buffer, handed out again with what was written.
        assert!(unsafe { c.as_mut_slice::<f64>(512) }
            .iter()
            .all(|&v| v == f64::from_bits(0x3fc0_0000_3fc0_0000)));
        assert_eq!(cached_bytes(), 0);
        give_back(b);
        give_back(c);
        for _ in 0..10 {
            give_back(take(100).unwrap());
            give_back(Buffer::new(100).unwrap());
        }
        assert!(cache().len() <= CACHE_BUFFERS);
        give_back(Buffer::new(CACHE_BYTES / 2 + 64).unwrap());
        give_back(Buffer::new(CACHE_BYTES / 2 + 64).unwrap());
        assert!(cached_bytes() <= CACHE_BYTES);
        give_back(Buffer::new(CACHE_BYTES + 64).unwrap());
        assert!(cached_bytes() <= CACHE_BYTES);
        clear();
        assert_eq!(cached_bytes(), 0);
        // More than any system has: refused, not aborted.
        assert!(take(isize::MAX as usize - 4096).is_none());
        assert!(take(usize::MAX - 16).is_none());
    }
}
