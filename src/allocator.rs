//! The binary's memory allocator: mimalloc, on small pages.
//!
//! With glibc's malloc, allocating and freeing were 15–20 % of the worker's
//! CPU samples in `bench` (buffers allocated on one thread and freed on
//! another, free chunks consolidated); mimalloc spends less CPU per command.
//! Its memory is mapped in large aligned regions, which a kernel with
//! transparent huge pages set to `always` backs with 2 MiB pages as soon as
//! one byte of them is touched: peak RSS 98–104 MiB, idle 36.5 MiB in
//! `bench` on such a machine. The worker opts its process out of huge pages
//! first thing, so its resident memory is what it uses.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Opts this process out of transparent huge pages (Linux); pages faulted in
/// from now on are small. Call first thing in `main`. Elsewhere, or where
/// the kernel refuses, nothing changes but the memory figures.
pub fn keep_huge_pages_out() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no
        // memory of ours.
        let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
        if refused {
            eprintln!("note: transparent huge pages stay enabled for this process (prctl refused)");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_out_of_transparent_huge_pages() {
        keep_huge_pages_out();
        // SAFETY: PR_GET_THP_DISABLE takes plain integers.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}
