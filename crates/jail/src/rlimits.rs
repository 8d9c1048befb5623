//! Resource limits a confined process can be given from what it actually has open, measured
//! right before it confines itself (while /proc is still reachable):
//! - `RLIMIT_NOFILE`: the highest open descriptor plus the headroom the caller expects to need
//!   (every descriptor it opens later, sockets it accepts included);
//! - `RLIMIT_FSIZE`: 0 when it writes no regular file; when the only writable regular files are
//!   opened read-write (disk images, written in place and never grown) the largest of their
//!   sizes; unlimited when one is opened write-only (a console, a log, stdout redirected to a
//!   file: they grow with what is written). An FSIZE of 0 refuses *every* write to a regular
//!   file, not only growth, hence the size of the largest disk.
//! - `RLIMIT_CORE`: 0.

use std::os::fd::{BorrowedFd, RawFd};

use rustix::fs::{fcntl_getfl, fstat, FileType, OFlags};

use crate::{sys_err, Result};

/// Descriptors open in this process (read from /proc/self/fd).
pub fn open_fds() -> Result<Vec<RawFd>> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(sys_err("list /proc/self/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    // The directory's own descriptor was open while it was read: drop what is gone now.
    fds.retain(|&fd| {
        // SAFETY: fcntl(F_GETFD) only probes the descriptor number.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    });
    Ok(fds)
}

/// What a writable regular file needs from RLIMIT_FSIZE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Written in place up to this size.
    InPlace(u64),
    /// Appended to or truncated: grows.
    Grows,
}

fn writes(fd: RawFd) -> Option<Writes> {
    // SAFETY: `fd` is open (from open_fds) and only borrowed for two queries.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = fstat(fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let mode = fcntl_getfl(fd).ok()? & OFlags::RWMODE;
    if mode == OFlags::WRONLY {
        Some(Writes::Grows)
    } else if mode == OFlags::RDWR {
        Some(Writes::InPlace(st.st_size as u64))
    } else {
        None
    }
}

fn fsize_of(all: impl IntoIterator<Item = Writes>) -> u64 {
    let mut max = 0;
    for w in all {
        match w {
            Writes::Grows => return u64::MAX,
            Writes::InPlace(n) => max = max.max(n),
        }
    }
    max
}

/// `RLIMIT_FSIZE` for the open descriptors `fds` (u64::MAX = unlimited); see the module docs.
pub fn fsize_for(fds: &[RawFd]) -> u64 {
    fsize_of(fds.iter().filter_map(|&fd| writes(fd)))
}

/// `RLIMIT_NOFILE` for a process whose highest descriptor is `fds.last()` and that will open up
/// to `headroom` more.
pub fn nofile_for(fds: &[RawFd], headroom: u64) -> u64 {
    fds.last().map_or(0, |&f| f as u64 + 1) + headroom
}

/// The three limits as the OCI rlimit list [`crate::Inside::confine`] takes.
pub fn for_open_files(nofile_headroom: u64) -> Result<Vec<oci::Rlimit>> {
    let fds = open_fds()?;
    let lim = |typ: &str, v: u64| oci::Rlimit {
        typ: typ.into(),
        soft: v,
        hard: v,
    };
    Ok(vec![
        lim("RLIMIT_NOFILE", nofile_for(&fds, nofile_headroom)),
        lim("RLIMIT_FSIZE", fsize_for(&fds)),
        lim("RLIMIT_CORE", 0),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn fsize_rules() {
        assert_eq!(fsize_of([]), 0);
        assert_eq!(fsize_of([Writes::InPlace(10), Writes::InPlace(4096)]), 4096);
        assert_eq!(fsize_of([Writes::InPlace(10), Writes::Grows]), u64::MAX);
    }

    #[test]
    fn open_files_are_classified() {
        let dir = std::env::temp_dir().join(format!("jail-rlimits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk");
        std::fs::write(&disk, vec![0u8; 8192]).unwrap();
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .unwrap();
        let ro = std::fs::File::open(&disk).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        assert_eq!(writes(rw.as_raw_fd()), Some(Writes::InPlace(8192)));
        assert_eq!(writes(ro.as_raw_fd()), None);
        assert_eq!(writes(log.as_raw_fd()), Some(Writes::Grows));
        assert_eq!(fsize_for(&[ro.as_raw_fd(), rw.as_raw_fd()]), 8192);
        assert_eq!(fsize_for(&[rw.as_raw_fd(), log.as_raw_fd()]), u64::MAX);
        let fds = open_fds().unwrap();
        assert!(fds.contains(&rw.as_raw_fd()) && fds.contains(&log.as_raw_fd()));
        assert_eq!(nofile_for(&[0, 1, 2, 9], 16), 26);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
