//! Handing freed memory back to the system in the long-running commands
//! (`serve`, `proxy`, `up`).
//!
//! glibc's allocator gives each thread that allocates under contention an
//! arena of its own (up to eight per core) and keeps what is freed in them
//! for reuse. A control plane compiles a commit, cuts the IR into resources
//! and pushes a burst to a thousand proxies, then frees most of it: the
//! resident size stays at the burst's peak. Two arenas keep the worker
//! threads from spreading the heap, and a trim every few seconds
//! (`malloc_trim`, which also releases free pages inside the heap) brings
//! the resident size back to what is live. `benches/converge.rs` measures
//! both. Other allocators and platforms need neither, so elsewhere these
//! do nothing.

use std::time::Duration;

/// How often the heap is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(5);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    // SAFETY (both): plain C functions of glibc's allocator that take and
    // return integers; callable from any thread at any time.
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
        fn malloc_trim(pad: usize) -> i32;
    }
    /// `M_ARENA_MAX`, `M_TOP_PAD` and `M_TRIM_THRESHOLD` from `<malloc.h>`.
    const M_ARENA_MAX: i32 = -8;
    const M_TOP_PAD: i32 = -2;
    const M_TRIM_THRESHOLD: i32 = -1;

    pub fn limit_arenas(n: i32) {
        // SAFETY: see above.
        unsafe {
            mallopt(M_ARENA_MAX, n);
        }
    }

    pub fn grow_in_steps(bytes: i32) {
        // SAFETY: see above.
        unsafe {
            mallopt(M_TOP_PAD, bytes);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }

    pub fn trim() {
        // SAFETY: see above.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn limit_arenas(_: i32) {}
    pub fn grow_in_steps(_: i32) {}
    pub fn trim() {}
}

/// Cap the allocator's arenas and trim the heap periodically, for the rest
/// of the process's life. Call first thing, before threads start.
pub fn long_running() {
    glibc::limit_arenas(2);
    let _ = std::thread::Builder::new()
        .name("meshc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(TRIM_EVERY);
                glibc::trim();
            }
        });
}

/// For commands that load a repository and exit (`lint`, `compile`, ...):
/// the heap only grows, so it grows in 32 MiB steps instead of glibc's
/// 128 KiB (each step of a thread's arena is an `mprotect` call: 6% of a
/// 10,000-service lint's time was spent in them) and is never trimmed.
pub fn short_lived() {
    glibc::grow_in_steps(32 << 20);
}
