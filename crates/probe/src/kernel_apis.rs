//! Syscalls that reach kernel code directly: loading code into the kernel (modules, kexec),
//! rebooting, raw and packet sockets, the keyrings, eBPF, perf events, userfaultfd, io_uring,
//! and opening files by handle (the "shocker" escape).
//!
//! Calls that would act if permitted get arguments the kernel refuses after its permission
//! checks: the errno then tells "permitted" (EINVAL, EBADF) from "refused" (EPERM).

use crate::sys::{self, cstr, in_child};
use crate::{Context, Verdict};

/// A syscall returning a descriptor: allowed if it did (the descriptor is closed).
fn fd_result(r: libc::c_long, what: &str, ok: &str) -> Verdict {
    if r < 0 {
        return Verdict::refused(sys::errno(), what);
    }
    // SAFETY: `r` is a descriptor just returned to us, closed once.
    unsafe { libc::close(r as i32) };
    Verdict::allowed(ok)
}

/// A call whose success is an errno the kernel returns after its permission checks.
fn permitted_if(r: libc::c_long, ok_errno: i32, what: &str, ok: &str) -> Verdict {
    let e = sys::errno();
    if r >= 0 {
        return Verdict::allowed(format!("{what} succeeded (unexpected): {ok}"));
    }
    if e == ok_errno {
        return Verdict::allowed(format!(
            "{what} passed the permission checks ({}): {ok}",
            seccomp::errno_name(e as u32).unwrap_or("?")
        ));
    }
    Verdict::refused(e, what)
}

pub fn load_module(_: &Context) -> Verdict {
    let args = cstr("");
    // SAFETY: finit_module with fd -1 fails before reading anything once permitted.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, -1, args.as_ptr(), 0) };
    permitted_if(
        r,
        libc::EBADF,
        "finit_module(2)",
        "a module file would have been loaded",
    )
}

pub fn kexec_load(_: &Context) -> Verdict {
    // An undefined flag (bit 15) and more segments than KEXEC_SEGMENT_MAX: either makes the
    // kernel return EINVAL, after CAP_SYS_BOOT and lockdown are checked and before anything
    // is loaded or unloaded (0 segments with valid flags would unload a loaded kernel).
    let flags: libc::c_ulong = 0x8000;
    // SAFETY: no pointer is read: the kernel refuses the arguments first.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as libc::c_ulong,
            17 as libc::c_ulong,
            std::ptr::null::<u8>(),
            flags,
        )
    };
    permitted_if(
        r,
        libc::EINVAL,
        "kexec_load(2)",
        "a new kernel could have been loaded",
    )
}

pub fn reboot(_: &Context) -> Verdict {
    // magic1 = 0 is not LINUX_REBOOT_MAGIC1: EINVAL, checked right after CAP_SYS_BOOT.
    // SAFETY: the kernel refuses the magic number before looking at cmd or arg.
    let r = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            0 as libc::c_int,
            0 as libc::c_int,
            0 as libc::c_uint,
            std::ptr::null::<u8>(),
        )
    };
    permitted_if(
        r,
        libc::EINVAL,
        "reboot(2)",
        "the right magic numbers would reboot",
    )
}

pub fn socket_raw(_: &Context) -> Verdict {
    // SAFETY: socket takes no pointers.
    let r = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    fd_result(r as libc::c_long, "raw sockets", "opened a raw IPv4 socket")
}

pub fn socket_packet(_: &Context) -> Verdict {
    let all = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: socket takes no pointers.
    let r = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, all) };
    if r < 0 && sys::errno() == libc::EAFNOSUPPORT {
        return Verdict::not_applicable("this kernel has no packet sockets (AF_PACKET)");
    }
    fd_result(
        r as libc::c_long,
        "packet sockets",
        "opened a packet socket (every frame of the network namespace)",
    )
}

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
const KEY_SPEC_PROCESS_KEYRING: libc::c_int = -2;

pub fn keyctl_session(_: &Context) -> Verdict {
    // A new anonymous session keyring for a child that exits at once.
    let end = in_child(|| {
        // SAFETY: a NULL name asks for an anonymous keyring.
        let r = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<u8>(),
            )
        };
        if r < 0 {
            sys::errno()
        } else {
            0
        }
    });
    Verdict::from_child(
        end,
        "keyctl(2)",
        "joined a new session keyring (keys are not namespaced)",
    )
}

pub fn add_key(_: &Context) -> Verdict {
    let (typ, desc) = (cstr("user"), cstr("bulkhead-probe"));
    // The process keyring of a child that exits at once: the key goes with it.
    let end = in_child(|| {
        // SAFETY: NUL-terminated type and description, a one-byte payload.
        let r = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                typ.as_ptr(),
                desc.as_ptr(),
                b"x".as_ptr(),
                1usize,
                KEY_SPEC_PROCESS_KEYRING,
            )
        };
        if r < 0 {
            sys::errno()
        } else {
            0
        }
    });
    Verdict::from_child(end, "add_key(2)", "added a key to a keyring")
}

pub fn bpf_map(_: &Context) -> Verdict {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries; the
    // rest zero (the kernel checks that bytes it does not know are zero).
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1]);
    // SAFETY: `attr` is a valid, fully initialised buffer of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, /* BPF_MAP_CREATE */
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    fd_result(r, "bpf(2)", "created an eBPF map")
}

pub fn perf_event(_: &Context) -> Verdict {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): a software task-clock counter
    // of this process, user space only, created disabled.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&64u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&1u64.to_ne_bytes()); // PERF_COUNT_SW_TASK_CLOCK
    let flags: u64 = 1 | (1 << 5) | (1 << 6); // disabled, exclude_kernel, exclude_hv
    attr[40..48].copy_from_slice(&flags.to_ne_bytes());
    let cloexec: libc::c_ulong = 8; // PERF_FLAG_FD_CLOEXEC
                                    // SAFETY: `attr` is a valid perf_event_attr of the size it declares.
    let r = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, cloexec) };
    fd_result(
        r,
        "perf_event_open(2)",
        "opened a perf event (the perf subsystem is reachable)",
    )
}

pub fn userfaultfd(_: &Context) -> Verdict {
    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    // SAFETY: userfaultfd takes flags only.
    let mut r =
        unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
    if r < 0 && sys::errno() == libc::EINVAL {
        // Kernels before 5.11 know no UFFD_USER_MODE_ONLY.
        // SAFETY: as above.
        r = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    }
    fd_result(r, "userfaultfd(2)", "created a userfaultfd")
}

pub fn io_uring(_: &Context) -> Verdict {
    // struct io_uring_params: 120 bytes, zero = defaults.
    let mut params = [0u8; 120];
    // SAFETY: `params` is a writable io_uring_params the kernel fills in.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    fd_result(r, "io_uring_setup(2)", "created an io_uring instance")
}

pub fn open_by_handle(_: &Context) -> Verdict {
    // struct file_handle { handle_bytes = 8, handle_type = 1 (FILEID_INO32_GEN), inode 2,
    // generation 0 }: the root directory of an ext2/3/4 filesystem, the handle the
    // 'shocker' exploit opened. A refused handle (ESTALE on another filesystem) still
    // means the permission check passed: another handle would open.
    #[repr(C)]
    struct FileHandle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u32; 2],
    }
    let fh = FileHandle {
        handle_bytes: 8,
        handle_type: 1,
        f_handle: [2, 0],
    };
    let root = match std::fs::File::open("/") {
        Ok(f) => f,
        Err(e) => return Verdict::not_applicable(format!("open /: {e}")),
    };
    let mount_fd = std::os::fd::AsRawFd::as_raw_fd(&root);
    // SAFETY: `fh` is a valid file_handle of the declared size; a returned fd is closed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd,
            &fh as *const FileHandle,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if r >= 0 {
        // SAFETY: a descriptor just returned to us, closed once.
        unsafe { libc::close(r as i32) };
        return Verdict::allowed("opened inode 2 of /'s filesystem by handle");
    }
    match sys::errno() {
        e @ (libc::EPERM | libc::EACCES | libc::ENOSYS) => {
            Verdict::refused(e, "open_by_handle_at(2)")
        }
        e => Verdict::allowed(format!(
            "passed the permission check (CAP_DAC_READ_SEARCH); this handle was refused with {}, \
             another would open",
            seccomp::errno_name(e as u32).unwrap_or("?")
        )),
    }
}
