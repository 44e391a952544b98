//! The allocators, chosen per kind of command.
//!
//! - **Long-running commands** (`serve`, `proxy`, `up`, and the sidecar
//!   binary `meshc-proxy`) use glibc's allocator, tuned ([`crate::heap`]).
//!   glibc gives each thread that allocates under contention an arena of
//!   its own (up to eight per core) and keeps what is freed in them for
//!   reuse. A control plane compiles a commit, cuts the IR
//!   into resources and pushes a burst to a thousand proxies, then frees most
//!   of it: the resident size stays at the burst's peak. Two arenas keep the
//!   worker threads from spreading the heap, and a trim every few seconds
//!   (`malloc_trim`, which also releases free pages inside the heap) brings
//!   the resident size back to what is live. `benches/converge.rs` and
//!   `benches/proxy_load.rs` measure both; mimalloc, measured the same way,
//!   left the control plane 25% larger and a proxy at 21 MB instead of 14.
//! - **Commands that load a repository and exit** (`lint`, `compile`,
//!   `diff`, `test`...) switch to mimalloc (v3, built from source by
//!   `libmimalloc-sys`, no system library) before they do anything, with
//!   purging off: the heap only grows until the process exits. The
//!   10,000-service lint takes about a quarter less time than on glibc.
//!
//! [`Allocator`] is the process's global allocator: it allocates from glibc
//! until [`short_lived`] switches it, once, early in `main`; from then on it
//! allocates from mimalloc and frees each block to the allocator that owns
//! it (mimalloc's page map says which: `mi_is_in_heap_region`), since the
//! runtime and the argument parser allocated a little from glibc before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// For commands that load a repository and exit: mimalloc from now on,
/// never purging (the heap only grows until the process exits). Call first
/// thing, before threads start.
///
/// Arenas are committed as they are reserved where the system overcommits
/// (mimalloc's own default, `arena_eager_commit = 2`): on Linux's default
/// overcommit that saves most page faults; under strict accounting
/// (`vm.overcommit_memory = 2`) committing a 1 GiB arena up front could fail,
/// so it is left to mimalloc to commit on demand there.
///
/// Transparent huge pages are off for mimalloc (`allow_thp = 0`: it no longer
/// advises them on its arenas). A huge page is zeroed whole on its first
/// touch, and on this virtual machine a first touch is slow: with them the
/// 10,000-service lint spent 0.8-1.9 s of system time clearing pages and
/// took 1.65-1.87 s; without, 0.3 s and 1.27-1.37 s, at a 35 MB smaller
/// peak (`/usr/bin/time meshc lint` on the repository `meshc synth` makes).
pub fn short_lived() {
    /// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (the sys crate
    /// does not name it).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    /// `mi_option_allow_thp`, likewise.
    const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    // SAFETY: setting options is allowed at any time; these only change
    // when memory is handed back to the system and how it is asked for.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(ALLOW_THP, 0);
    }
    MIMALLOC.store(true, Ordering::Release);
}

/// Whether new blocks come from mimalloc (set once, never cleared).
static MIMALLOC: AtomicBool = AtomicBool::new(false);

/// glibc's allocator, or mimalloc once [`short_lived`] switched to it.
pub struct Allocator;

impl Allocator {
    /// Whether `ptr` is a mimalloc block: only possible after the switch.
    fn owned_by_mimalloc(ptr: *mut u8) -> bool {
        // SAFETY: a lookup in mimalloc's page map; any address may be asked.
        MIMALLOC.load(Ordering::Acquire)
            && unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
    }
}

// SAFETY: every block is allocated by exactly one of two sound allocators
// and returned to the one that owns it; a block moves between them only
// through `realloc`, by a fresh allocation, a copy and a free.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MIMALLOC.load(Ordering::Acquire) {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        } else {
            // SAFETY: as above.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if MIMALLOC.load(Ordering::Acquire) {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        } else {
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::owned_by_mimalloc(ptr) {
            // SAFETY: a mimalloc block, freed once (the caller's contract).
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        } else {
            // SAFETY: a glibc block, freed once.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::owned_by_mimalloc(ptr) {
            // SAFETY: a mimalloc block (the caller's contract otherwise).
            return unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        }
        if !MIMALLOC.load(Ordering::Acquire) {
            // SAFETY: a glibc block, and glibc still allocates.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // A glibc block growing after the switch: it moves to mimalloc.
        // SAFETY: `new_size` with the old alignment is a valid layout (the
        // caller's contract); the old block is read up to the smaller size
        // and freed to glibc, which owns it.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = mimalloc::MiMalloc.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                System.dealloc(ptr, layout);
            }
            new
        }
    }
}
