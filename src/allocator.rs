//! The binary's memory allocator: mimalloc, on small pages.
//!
//! glibc's malloc spends a large share of the worker's CPU allocating and
//! freeing (buffers allocated on one thread and freed on another, free
//! chunks consolidated); mimalloc spends less CPU per command. Its memory
//! is mapped in large aligned regions, which a kernel with transparent huge
//! pages set to `always` backs with 2 MiB pages as soon as one byte of them
//! is touched, taking the worker past its memory targets. The worker opts
//! its process out of huge pages first thing, so its resident memory is
//! what it uses. The figures behind this are in
//! docs/decisions/0008-mimalloc-without-huge-pages.md.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Opts this process out of transparent huge pages (Linux; pages faulted in
/// from now on are small) and has freed memory returned at once. Call first
/// thing in `main`. Elsewhere, or where the kernel refuses, nothing changes
/// but the memory figures.
pub fn configure() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no
        // memory of ours.
        let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
        if refused {
            eprintln!("note: transparent huge pages stay enabled for this process (prctl refused)");
        }
    }
    // Freed memory goes back to the OS at once rather than after a delay,
    // which keeps a burst's peak RSS down (decision 0008).
    // SAFETY: mi_version and mi_option_set take and return plain integers.
    unsafe {
        if libmimalloc_sys::mi_version() == MIMALLOC_VERSION {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}

/// `mi_option_purge_delay` in [`MIMALLOC_VERSION`]'s `mimalloc.h`: the crate
/// names no constant for it in mimalloc 3, and the numbers of options change
/// between versions, so it is set only in the version it was read from.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// The mimalloc [`PURGE_DELAY`] is read from (`MI_MALLOC_VERSION`).
const MIMALLOC_VERSION: i32 = 30302;

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_is_out_of_transparent_huge_pages() {
        configure();
        // SAFETY: PR_GET_THP_DISABLE takes plain integers.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

    #[test]
    fn the_purge_delay_is_set_in_the_mimalloc_linked_in() {
        // SAFETY: returns a constant.
        let linked = unsafe { libmimalloc_sys::mi_version() };
        assert_eq!(
            linked, MIMALLOC_VERSION,
            "mimalloc changed: look up mi_option_purge_delay in its mimalloc.h \
             and update PURGE_DELAY and MIMALLOC_VERSION in src/allocator.rs"
        );
        configure();
        // SAFETY: reads mimalloc's option table.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 0);
    }
}
