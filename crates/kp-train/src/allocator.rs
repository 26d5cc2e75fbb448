//! mimalloc settings for kp's binaries (`kp`, `xtask`), which use mimalloc as their global
//! allocator: measured choices, one place. A program whose allocator is not mimalloc (the
//! Python module) can call these harmlessly: they only set options of an allocator it does not
//! use.

use std::ffi::c_int;

/// mimalloc's `mi_option_arena_eager_commit` (index in mimalloc v3's `mi_option_e`).
const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;
/// mimalloc's `mi_option_purge_delay`.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Tells mimalloc to keep freed memory instead of handing it back to the OS after a delay:
/// a training step frees and reallocates the same large buffers, and every purge made the
/// kernel zero fresh pages again (about 9% of a FaceKeypointNet step). For every command.
pub fn keep_freed_memory() {
    // SAFETY: sets one documented option; -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Tells mimalloc to commit arena memory when it is touched instead of all at once: for
/// commands that predict (detect, predict, eval, submit, export and inference benchmarks).
/// Measured on 40 photos of 640x480 (`kp detect`, 2026-12-03, alternating): system time
/// 0.02-0.95 s with eager commit against 0.10-0.13 s without (the kernel zeroed pages a
/// photo's buffers never use), wall time 0.69-1.28 s against 0.61-0.90 s. Training steps are
/// about 8% slower without eager commit (FaceKeypointNet and compact at batch 16), so training
/// keeps mimalloc's default.
pub fn commit_lazily() {
    // SAFETY: sets one documented option; 0 = commit on demand.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_indices_are_mimallocs_purge_delay_and_arena_eager_commit() {
        // SAFETY: reads and sets two options.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        // mimalloc v3's defaults identify the options: purge delay 1000 ms, eager commit 2.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(MI_OPTION_PURGE_DELAY), 1000);
        }
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(get(MI_OPTION_ARENA_EAGER_COMMIT), 2);
        }
        keep_freed_memory();
        commit_lazily();
        assert_eq!(get(MI_OPTION_PURGE_DELAY), -1);
        assert_eq!(get(MI_OPTION_ARENA_EAGER_COMMIT), 0);
    }
}
