//! Output buffers written by the workers that compute them.
//!
//! `vec![0f32; n]` zeroes a kernel's whole output on the calling thread before the parallel
//! work starts: a serial memset of memory the kernel overwrites anyway, plus the first-touch
//! page faults of a fresh allocation, all on one core. In YuNet on a 640x480 photo that was
//! 14% of the detector's time (perf, 2 threads). Here each worker zeroes its own chunk just
//! before computing it: the same values, the zeroing spread over the threads and done while
//! the chunk's cache lines are about to be used; a GEMM that overwrites its destination
//! writes straight into the uninitialised chunk.

use std::mem::MaybeUninit;

/// Zeroes `chunk` and returns it as initialised values.
pub(crate) fn zeroed(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    set(chunk, 0.0)
}

/// Sets every element of `chunk` to `value` and returns it as initialised values.
pub(crate) fn set<T: Copy>(chunk: &mut [MaybeUninit<T>], value: T) -> &mut [T] {
    for v in chunk.iter_mut() {
        v.write(value);
    }
    // SAFETY: every element was just initialised, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// `chunk` as initialised values, once something (a GEMM that overwrites its destination)
/// has written every element.
///
/// # Safety
/// Every element of `chunk` must have been written.
pub(crate) unsafe fn written<T>(chunk: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: the caller's guarantee, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A vector of `len` values filled by `fill`, which receives the uninitialised storage and
/// must pass every element through [`zeroed`] (or write it, [`written`]) before returning.
pub(crate) fn filled<T>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: `fill` initialised all `len` elements (the callers zero every chunk they hand
    // out, and their chunks cover the slice); a panic in `fill` leaves the length at 0.
    unsafe { out.set_len(len) };
    out
}

/// A raw pointer shared by tasks that write disjoint parts of one buffer (the kernels'
/// outputs and scratch), so a rayon closure can carry it.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);

// SAFETY: every use writes a region no other task touches at the same time (see the callers).
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so closures capture the `Send` wrapper, not its field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn chunks_zeroed_by_workers_make_a_vector_of_their_values() {
        let v = filled(1000, |s| {
            s.par_chunks_mut(64).enumerate().for_each(|(i, c)| {
                let c = zeroed(c);
                if i % 2 == 0 {
                    c[0] = i as f32;
                }
            })
        });
        assert_eq!(v.len(), 1000);
        for (k, x) in v.iter().enumerate() {
            let want = if k % 64 == 0 && (k / 64) % 2 == 0 {
                (k / 64) as f32
            } else {
                0.0
            };
            assert_eq!(*x, want, "{k}");
        }
    }
}
