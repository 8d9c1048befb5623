//! The jailed VMM's per-thread seccomp filters, installed for real in forked children with the
//! seccomp crate's behaviour harness: for each kind of thread, what an attacker in device
//! emulation would reach for first (running a program, opening a path, a socket, ptrace,
//! mount, executable memory) kills the process, and what the thread needs still works.

#[path = "../../seccomp/tests/harness/mod.rs"]
mod harness;

use harness::{in_child, End};
use vmm::syscalls::{
    ThreadFilters, ThreadKind, KVM_GET_CLOCK, KVM_GET_IRQCHIP, KVM_GET_LAPIC, KVM_GET_MSRS,
    KVM_GET_XSAVE, KVM_RUN,
};

/// End the child the way that kind of thread ends: vCPU and event-loop threads with exit(2)
/// (their lists have no exit_group), the main thread with exit_group(2).
fn end(kind: ThreadKind, code: i32) -> ! {
    let nr = match kind {
        ThreadKind::Main => libc::SYS_exit_group,
        _ => libc::SYS_exit,
    };
    // SAFETY: ends the (single-threaded) child; nothing runs afterwards.
    unsafe { libc::syscall(nr, code) };
    unreachable!("exit returned")
}

fn run(kind: ThreadKind, body: impl FnOnce() -> i32) -> End {
    let filters = ThreadFilters::compile().expect("the lists compile");
    in_child(filters.get(kind), || end(kind, body()))
}

/// A named raw call (no libc wrapper, so exactly that syscall number reaches the filter).
type Call = (&'static str, Box<dyn Fn()>);

fn forbidden() -> Vec<Call> {
    // SAFETY (all): the calls only pass constant, valid pointers; the filter kills the
    // process before the kernel acts on any of them.
    vec![
        (
            "execve",
            Box::new(|| unsafe {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                libc::syscall(
                    libc::SYS_execve,
                    c"/bin/true".as_ptr(),
                    argv.as_ptr(),
                    std::ptr::null::<*const libc::c_char>(),
                );
            }),
        ),
        (
            "openat of a path",
            Box::new(|| unsafe {
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    c"/etc/passwd".as_ptr(),
                    libc::O_RDONLY,
                );
            }),
        ),
        (
            "socket",
            Box::new(|| unsafe {
                libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
            }),
        ),
        (
            "ptrace",
            Box::new(|| unsafe {
                libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
            }),
        ),
        (
            "mount",
            Box::new(|| unsafe {
                libc::syscall(
                    libc::SYS_mount,
                    c"none".as_ptr(),
                    c"/mnt".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    0,
                );
            }),
        ),
        (
            "mmap with PROT_EXEC",
            Box::new(|| unsafe {
                libc::syscall(
                    libc::SYS_mmap,
                    0,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
            }),
        ),
        (
            "clone3 (a new process or thread)",
            Box::new(|| unsafe {
                libc::syscall(libc::SYS_clone3, 0, 0);
            }),
        ),
    ]
}

#[test]
fn forbidden_calls_kill_every_kind_of_thread() {
    for kind in ThreadKind::ALL {
        for (what, call) in forbidden() {
            let ended = run(kind, || {
                call();
                0
            });
            assert_eq!(
                ended,
                End::Signal(libc::SIGSYS),
                "{} thread: {what} was not refused",
                kind.name()
            );
        }
    }
}

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[test]
fn what_each_thread_needs_still_works() {
    // Every kind writes (eventfds, the serial port, the report) and allocates.
    for kind in ThreadKind::ALL {
        let (r, w) = pipe();
        let ended = run(kind, || {
            // SAFETY: writing a constant buffer to our pipe; mapping anonymous memory.
            unsafe {
                if libc::syscall(libc::SYS_write, w, b"ok".as_ptr(), 2) != 2 {
                    return 1;
                }
                let p = libc::syscall(
                    libc::SYS_mmap,
                    0,
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p < 0 || libc::syscall(libc::SYS_munmap, p, 4096) != 0 {
                    return 2;
                }
            }
            0
        });
        assert_eq!(ended, End::Exit(0), "{} thread", kind.name());
        let mut buf = [0u8; 2];
        // SAFETY: reading into a local buffer from our pipe.
        assert_eq!(unsafe { libc::read(r, buf.as_mut_ptr().cast(), 2) }, 2);
        assert_eq!(&buf, b"ok");
        // SAFETY: closing our own descriptors.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }

    // vCPU: KVM_RUN reaches the kernel (on a pipe: ENOTTY, not a kill); another request kills.
    let (r, w) = pipe();
    let ended = run(ThreadKind::Vcpu, || {
        // SAFETY: an ioctl on our pipe; the kernel rejects the request.
        let rc = unsafe { libc::syscall(libc::SYS_ioctl, r, KVM_RUN, 0) };
        if rc == -1 && errno() == libc::ENOTTY {
            0
        } else {
            1
        }
    });
    assert_eq!(ended, End::Exit(0));
    let ended = run(ThreadKind::Vcpu, || {
        // SAFETY: as above; the filter kills first.
        unsafe { libc::syscall(libc::SYS_ioctl, r, libc::FIONBIO, 0) };
        0
    });
    assert_eq!(ended, End::Signal(libc::SIGSYS), "vCPU FIONBIO");

    // Event loop: non-blocking sockets, random bytes, reads; KVM_RUN kills.
    let ended = run(ThreadKind::EventLoop, || {
        let one: libc::c_int = 1;
        let mut bytes = [0u8; 16];
        // SAFETY: FIONBIO on our pipe with a valid int; getrandom into a local buffer.
        unsafe {
            if libc::syscall(libc::SYS_ioctl, r, libc::FIONBIO, &one) != 0 {
                return 1;
            }
            if libc::syscall(libc::SYS_getrandom, bytes.as_mut_ptr(), 16, 0) != 16 {
                return 2;
            }
            // Non-blocking and empty: EAGAIN, from the kernel.
            if libc::syscall(libc::SYS_read, r, bytes.as_mut_ptr(), 1) != -1
                || errno() != libc::EAGAIN
            {
                return 3;
            }
        }
        0
    });
    assert_eq!(ended, End::Exit(0));
    let ended = run(ThreadKind::EventLoop, || {
        // SAFETY: as above; the filter kills first.
        unsafe { libc::syscall(libc::SYS_ioctl, r, KVM_RUN, 0) };
        0
    });
    assert_eq!(ended, End::Signal(libc::SIGSYS), "event loop KVM_RUN");

    // Main: kicking a thread (tgkill with signal 0 to itself), sleeping; read kills.
    let ended = run(ThreadKind::Main, || {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1000,
        };
        // SAFETY: getpid/tgkill with signal 0 (a probe); a short clock_nanosleep.
        unsafe {
            let pid = libc::syscall(libc::SYS_getpid);
            if libc::syscall(libc::SYS_tgkill, pid, pid, 0) != 0 {
                return 1;
            }
            if libc::syscall(libc::SYS_clock_nanosleep, libc::CLOCK_MONOTONIC, 0, &ts, 0) != 0 {
                return 2;
            }
        }
        0
    });
    assert_eq!(ended, End::Exit(0));
    let ended = run(ThreadKind::Main, || {
        let mut b = [0u8; 1];
        // SAFETY: as above; the filter kills first.
        unsafe { libc::syscall(libc::SYS_read, r, b.as_mut_ptr(), 1) };
        0
    });
    assert_eq!(ended, End::Signal(libc::SIGSYS), "main read");
    // SAFETY: closing our own descriptors.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
}

/// A snapshot's requests: each thread reaches the kernel with the state ioctls it owns (on a
/// pipe: ENOTTY, not a kill), and is killed for the other thread's.
#[test]
fn snapshot_state_requests_belong_to_their_thread() {
    let (r, w) = pipe();
    let reaches_kernel = |kind: ThreadKind, request: u64| {
        run(kind, || {
            // SAFETY: an ioctl on our pipe; the kernel rejects the request.
            let rc = unsafe { libc::syscall(libc::SYS_ioctl, r, request, 0) };
            i32::from(!(rc == -1 && errno() == libc::ENOTTY))
        })
    };
    for request in [KVM_GET_LAPIC, KVM_GET_MSRS, KVM_GET_XSAVE] {
        assert_eq!(reaches_kernel(ThreadKind::Vcpu, request), End::Exit(0));
        assert_eq!(
            reaches_kernel(ThreadKind::EventLoop, request),
            End::Signal(libc::SIGSYS),
            "the event loop may not read a vCPU's state ({request:#x})"
        );
    }
    for request in [KVM_GET_IRQCHIP, KVM_GET_CLOCK] {
        assert_eq!(reaches_kernel(ThreadKind::EventLoop, request), End::Exit(0));
        assert_eq!(
            reaches_kernel(ThreadKind::Vcpu, request),
            End::Signal(libc::SIGSYS),
            "a vCPU may not read the VM's state ({request:#x})"
        );
        assert_eq!(
            reaches_kernel(ThreadKind::Main, request),
            End::Signal(libc::SIGSYS)
        );
    }
    // SAFETY: closing our own descriptors.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
}
