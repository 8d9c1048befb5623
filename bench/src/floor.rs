//! The floor: the kernel work of a container start done by the least code —
//! one clone3 with runc's default namespaces, a bind of the rootfs,
//! pivot_root, and execve of /bin/true. No config, no cgroup, no checks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Run once; returns the exit code for the process.
pub fn run_once(rootfs: &Path) -> i32 {
    let flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP) as u64;
    let root = CString::new(rootfs.as_os_str().as_bytes()).unwrap();
    // SAFETY: clone_args is plain data; zero is the default for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: fork-like clone3 (no new stack) in a single-threaded process; the
    // child only makes raw syscalls and ends in execve or _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid < 0 {
        eprintln!("clone3: {}", std::io::Error::last_os_error());
        return 1;
    }
    if pid == 0 {
        // SAFETY: raw syscalls with NUL-terminated strings that outlive them.
        unsafe {
            let dot = c".".as_ptr();
            let ok = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) == 0
                && libc::mount(
                    root.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) == 0
                && libc::chdir(root.as_ptr()) == 0
                && libc::syscall(libc::SYS_pivot_root, dot, dot) == 0
                && libc::umount2(dot, libc::MNT_DETACH) == 0
                && libc::chdir(c"/".as_ptr()) == 0;
            if ok {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
            }
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our child.
    unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        0
    } else {
        eprintln!("floor child failed: status {status:#x}");
        1
    }
}
