//! The child's descriptor table: everything the supervisor had open is closed, except stdio
//! and what the jail keeps, before the child opens its own files.

use std::os::fd::RawFd;

use crate::{sys_err, Result};

/// The ranges of descriptors *not* in `keep` (sorted, deduplicated), as close_range(2) takes
/// them: inclusive bounds, the last one open-ended.
fn gaps(keep: &[RawFd]) -> Vec<(u32, u32)> {
    let mut k: Vec<u32> = keep
        .iter()
        .filter(|&&f| f >= 0)
        .map(|&f| f as u32)
        .collect();
    k.sort_unstable();
    k.dedup();
    let mut out = Vec::new();
    let mut next = 0u32;
    for f in k {
        if f > next {
            out.push((next, f - 1));
        }
        next = f + 1;
    }
    out.push((next, u32::MAX));
    out
}

/// Close every descriptor not in `keep`.
pub(crate) fn close_all_but(keep: &[RawFd]) -> Result<()> {
    for (first, last) in gaps(keep) {
        // SAFETY: close_range only closes descriptors; none of those in the ranges is used by
        // this process afterwards (the child's kept descriptors are outside them).
        // (The raw syscall: musl has no close_range wrapper.)
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        if r != 0 {
            return Err(sys_err(format!("close_range({first}, {last})"))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_between_kept_descriptors() {
        assert_eq!(gaps(&[0, 1, 2]), vec![(3, u32::MAX)]);
        assert_eq!(gaps(&[2, 0, 1, 7, 5]), vec![(3, 4), (6, 6), (8, u32::MAX)]);
        assert_eq!(gaps(&[]), vec![(0, u32::MAX)]);
        assert_eq!(gaps(&[1, 1, -1]), vec![(0, 0), (2, u32::MAX)]);
    }
}
