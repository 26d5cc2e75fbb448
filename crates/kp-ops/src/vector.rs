//! Kernels compiled for the widest vector unit the CPU has.
//!
//! kp's crates are built for baseline x86-64, whose SSE2 vectors hold 4 floats; AVX2 holds 8
//! and AVX-512 16. A kernel written as plain loops the compiler vectorises ("the body") gets
//! copies compiled with `avx512f` and with `avx2` enabled, and the entry point picks one at run
//! time. Every copy does the same operations in the same order (Rust never contracts a
//! multiply and an add into an FMA), so the results do not depend on the CPU.

/// Defines `fn $name(args) -> R` that runs `$body(args)` compiled for AVX-512 where the CPU
/// has it, else for AVX2, else as built. `$body` should be `#[inline(always)]`, so each copy
/// is compiled with its features.
macro_rules! widest_vectors {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use widest_vectors;
