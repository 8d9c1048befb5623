// The static release build links musl, whose allocator returns freed memory to the kernel
// at once: a `create` made some 40 mmap/munmap pairs, each unmapped page faulted in again
// on reuse. dlmalloc keeps what it got (it trims only above 2 MiB free).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    // The allocator's lock taken around fork(2), so a child forked while another thread
    // allocates does not inherit it locked (glibc's and musl's allocators do the same).
    // SAFETY: called first, before any allocation.
    #[cfg(target_env = "musl")]
    unsafe {
        dlmalloc::enable_alloc_after_fork()
    };
    std::process::exit(cli::main());
}
