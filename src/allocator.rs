//! Allocator tuning for the `riskgate` binary and the benchmarks, which use mimalloc as the
//! global allocator.
//!
//! Deciding allocates and frees many small blocks. By default mimalloc hands pages it no
//! longer uses back to the operating system after a second, and takes them back (zeroed by
//! the kernel, one page fault each) moments later: measured, that costs about a fifth of the
//! time per decision. riskgate's memory is bounded by its velocity state, so it keeps freed
//! pages for reuse instead. `MIMALLOC_PURGE_DELAY` in the environment, if set, still wins.

/// `mi_option_purge_delay` in `mimalloc.h` (v2 and v3 alike), which `libmimalloc-sys` does
/// not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory for reuse instead of returning it to the operating system, unless
/// `MIMALLOC_PURGE_DELAY` is set. Call first thing in `main`.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is always allowed; mimalloc reads it on its next purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// mimalloc's current purge delay (milliseconds; -1: never).
pub fn purge_delay() -> std::os::raw::c_long {
    // SAFETY: reading an option is always allowed.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_mimallocs_purge_delay() {
        // The default of mimalloc v3 (`options.c`: 1000 ms) tells that the index names the
        // purge delay, unless the environment set it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), 1000);
            keep_freed_memory();
            assert_eq!(purge_delay(), -1);
        }
    }
}
