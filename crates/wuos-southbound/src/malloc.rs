//! The C allocator's tuning (glibc): `unsafe` (denied crate-wide) is allowed here, and every
//! block carries a SAFETY comment.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

/// Turns glibc's fastbins off (`M_MXFAST` 0); call it before the process allocates much.
///
/// With fastbins, every allocation of a kilobyte or more (a frame's buffer, a view's snapshot)
/// first merges all the small chunks freed since (`malloc_consolidate`), and a router daemon
/// frees many small ones per frame: that was 2-4 % of all CPU samples of a 1,000-router lab,
/// and the daemons together used about a sixth less CPU without fastbins at the same memory
/// (docs/benchmarks.md). Small blocks still come from glibc's per-thread cache. Returns whether
/// the allocator took the setting (always false on a libc without `mallopt`).
pub fn no_fastbins() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters (it takes the arena lock).
        unsafe { libc::mallopt(libc::M_MXFAST, 0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_setting() {
        assert!(super::no_fastbins(), "mallopt(M_MXFAST, 0) was refused");
        // The allocator still works with it.
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; i % 200 + 1]).collect();
        assert_eq!(
            v.iter().map(Vec::len).sum::<usize>(),
            (0..1000usize).map(|i| i % 200 + 1).sum::<usize>()
        );
    }
}
