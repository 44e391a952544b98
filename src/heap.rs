//! glibc's allocator tuned for long-running processes (`meshc serve`,
//! `meshc proxy`, `meshc up`, `meshc-proxy`): two arenas at most, and the
//! heap trimmed every few seconds. Why, and what was measured: `memory.rs`.
//! The sidecar binary includes this file as its own module; it has no use
//! for the rest of `memory.rs` (mimalloc, for the short-lived commands).

use std::sync::OnceLock;
use std::thread::Thread;
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
    /// `M_ARENA_MAX` from `<malloc.h>`.
    const M_ARENA_MAX: i32 = -8;

    pub fn limit_arenas(n: i32) {
        // SAFETY: see above.
        unsafe {
            mallopt(M_ARENA_MAX, n);
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
    pub fn trim() {}
}

/// The trimming thread, once started, for [`trim_soon`] to wake.
static TRIMMER: OnceLock<Thread> = OnceLock::new();

/// Cap the allocator's arenas and trim the heap periodically, for the rest
/// of the process's life. Call first thing, before threads start.
pub fn long_running() {
    glibc::limit_arenas(2);
    if let Ok(handle) = std::thread::Builder::new()
        .name("meshc-trim".into())
        .spawn(|| {
            loop {
                // Woken early by `trim_soon`; a spurious wake-up only trims
                // once more.
                std::thread::park_timeout(TRIM_EVERY);
                glibc::trim();
            }
        })
    {
        let _ = TRIMMER.set(handle.thread().clone());
    }
}

/// Trim now rather than at the next tick, on the trimming thread (never the
/// caller's): after a config swap, which frees the decoded update and the
/// config it replaced all at once. A no-op before [`long_running`].
pub fn trim_soon() {
    if let Some(t) = TRIMMER.get() {
        t.unpark();
    }
}
