//! Mounting filesystems: a fresh proc (unmasked /proc files), the cgroup2 hierarchy (release
//! agents, other cgroups' limits), a tmpfs (a writable place to stage an escape), and the new
//! mount API's fsopen.
//!
//! Each mount happens in a forked child. The child first tries to enter a mount namespace of
//! its own and make it private, so that where the mount succeeds nobody else ever sees it;
//! where it cannot (a container refusing unshare), it mounts in place. The mount point is a
//! fresh temporary directory (or, without any writable place, an existing directory such as
//! /mnt) and the mount is detached at once.

use crate::sys::{self, cstr, in_child, TempDir};
use crate::{Context, Verdict};

pub fn proc(_: &Context) -> Verdict {
    mount_probe("proc", "proc")
}

pub fn cgroup(_: &Context) -> Verdict {
    mount_probe("cgroup2", "cgroup2")
}

pub fn tmpfs(_: &Context) -> Verdict {
    mount_probe("tmpfs", "tmpfs")
}

fn mount_probe(source: &str, fstype: &str) -> Verdict {
    let tmp = TempDir::new();
    let target = match &tmp {
        Some(t) => t.0.clone(),
        None => match ["/mnt", "/tmp", "/dev"]
            .iter()
            .find(|d| std::path::Path::new(d).is_dir())
        {
            Some(d) => d.into(),
            None => return Verdict::not_applicable("no directory to mount on"),
        },
    };
    let (src, typ, dst, root) = (cstr(source), cstr(fstype), cstr(&target), cstr("/"));
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let end = in_child(|| {
        // SAFETY: plain syscalls on NUL-terminated strings prepared before the fork.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) == 0 {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                );
            }
            if libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                typ.as_ptr(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return sys::errno();
            }
            libc::umount2(dst.as_ptr(), libc::MNT_DETACH);
        }
        0
    });
    Verdict::from_child(
        end,
        "mount(2)",
        &format!(
            "mounted {fstype} on {} (and unmounted it)",
            target.display()
        ),
    )
}

pub fn fsopen(_: &Context) -> Verdict {
    let name = cstr("tmpfs");
    // FSOPEN_CLOEXEC
    let cloexec: libc::c_uint = 1;
    // SAFETY: fsopen takes a NUL-terminated filesystem name; a descriptor it returns is
    // closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), cloexec) };
    if fd < 0 {
        return Verdict::refused(sys::errno(), "fsopen(2)");
    }
    // SAFETY: `fd` was just returned to us and is closed once.
    unsafe { libc::close(fd as i32) };
    Verdict::allowed("opened a tmpfs filesystem context (a mount would follow)")
}
