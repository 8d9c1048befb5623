//! Compiler tests: programs run in the BPF interpreter and compared with a direct evaluation
//! of the profile's meaning (`model`), which is written from the rules in the crate notes,
//! not from the compiler's data structures.

use super::*;
use crate::action_name;
use crate::bpf::{run, validate, SeccompData};
use oci::{SeccompArg, Syscall};

// ------------------------------------------------------------------ the model

fn act(a: SeccompAction, errno: Option<u32>) -> u32 {
    match a {
        SeccompAction::Kill | SeccompAction::KillThread => RET_KILL_THREAD,
        SeccompAction::KillProcess => RET_KILL_PROCESS,
        SeccompAction::Trap => RET_TRAP,
        SeccompAction::Errno => RET_ERRNO | errno.unwrap_or(1),
        SeccompAction::Trace => RET_TRACE | errno.unwrap_or(1),
        SeccompAction::Allow => RET_ALLOW,
        SeccompAction::Log => RET_LOG,
        SeccompAction::Notify => RET_USER_NOTIF,
    }
}

fn holds(a: &SeccompArg, arg: u64, wide: bool) -> bool {
    let m = if wide { u64::MAX } else { 0xffff_ffff };
    let (x, v, v2) = (arg & m, a.value & m, a.value_two & m);
    match a.op {
        SeccompOp::NotEqual => x != v,
        SeccompOp::LessThan => x < v,
        SeccompOp::LessEqual => x <= v,
        SeccompOp::Equal => x == v,
        SeccompOp::GreaterEqual => x >= v,
        SeccompOp::GreaterThan => x > v,
        // "the masked argument value is equal to the masked datum value" (seccomp_rule_add(3))
        SeccompOp::MaskedEqual => x & v == v2 & v,
    }
}

/// Holds for every value: a masked compare with nothing in the mask.
fn always(a: &SeccompArg, wide: bool) -> bool {
    a.op == SeccompOp::MaskedEqual && a.value & if wide { u64::MAX } else { 0xffff_ffff } == 0
}

/// The rules an entry stands for: all its args together, or -- when an index repeats --
/// one rule per arg, as runc and crun add them.
fn entry_rules(s: &Syscall) -> Vec<Vec<&SeccompArg>> {
    let mut idx: Vec<u32> = s.args.iter().map(|a| a.index).collect();
    idx.sort();
    if idx.windows(2).any(|w| w[0] == w[1]) {
        s.args.iter().map(|a| vec![a]).collect()
    } else {
        vec![s.args.iter().collect()]
    }
}

/// What the profile means for `d`. Also says whether the answer is one libseccomp may
/// order differently (conditional rules with different actions all matching).
fn model(p: &Seccomp, opts: &Options, d: &SeccompData) -> (u32, bool) {
    let default = act(p.default_action, p.default_errno_ret);
    let i386 = p.architectures.contains(&Arch::X86);
    let x32 = p.architectures.contains(&Arch::X32);
    let abi = match d.arch {
        AUDIT_ARCH_X86_64 if d.nr < X32_SYSCALL_BIT => Abi::X86_64,
        AUDIT_ARCH_X86_64 if x32 => Abi::X32,
        AUDIT_ARCH_X86_64 if d.nr == u32::MAX => Abi::X86_64,
        AUDIT_ARCH_I386 if i386 => Abi::I386,
        _ => return (BAD_ARCH_ACTION, false),
    };
    let wide = abi == Abi::X86_64;
    let mut max: Option<u32> = None;
    let mut any_rule = false;
    let mut uncond: Option<u32> = None;
    let mut cond_hits: Vec<u32> = Vec::new();
    for s in &p.syscalls {
        let a = act(s.action, s.errno_ret);
        for name in &s.names {
            let direct = syscall_number(abi, name);
            if let Some(n) = direct {
                max = Some(max.map_or(n, |m| m.max(n)));
            }
            if a == default {
                continue;
            }
            if direct == Some(d.nr) {
                any_rule = true;
                for rule in entry_rules(s) {
                    if rule.iter().all(|a| always(a, wide)) {
                        uncond.get_or_insert(a);
                    } else if rule
                        .iter()
                        .all(|x| holds(x, d.args[x.index as usize], wide))
                    {
                        cond_hits.push(a);
                    }
                }
            }
            let uncond32 = entry_rules(s)
                .iter()
                .filter(|r| r.iter().all(|x| always(x, false)))
                .count();
            if abi == Abi::I386 && uncond32 > 0 {
                if let Some((mux, call)) = i386_mux(name) {
                    if mux == d.nr {
                        any_rule = true;
                        let a0 = d.args[0] as u32;
                        let hit = if mux == I386_IPC {
                            a0 & 0xffff == call
                        } else {
                            a0 == call
                        };
                        if hit {
                            cond_hits.push(a);
                        }
                    }
                }
            }
        }
    }
    if let Some(u) = uncond {
        return (u, false);
    }
    if let Some(&first) = cond_hits.first() {
        return (first, cond_hits.iter().any(|&h| h != first));
    }
    let stub = opts.enosys_above_profile
        && !matches!(p.default_action, SeccompAction::Allow | SeccompAction::Log)
        && p.default_errno_ret != Some(38);
    if !any_rule && stub && max.is_some_and(|m| d.nr > m) {
        return (RET_ERRNO | 38, false);
    }
    (default, false)
}

// ------------------------------------------------------------------ random profiles

/// xorshift64*: deterministic, so a failure reproduces from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, s: &'a [T]) -> &'a T {
        &s[self.below(s.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Names with different numbers per ABI, multiplexed ones, per-ABI-only ones, and unknown.
const NAMES: &[&str] = &[
    "read",
    "write",
    "close",
    "mkdir",
    "personality",
    "socket",
    "connect",
    "accept",
    "semop",
    "shmat",
    "socketcall",
    "ipc",
    "_llseek",
    "arch_prctl",
    "clone",
    "rt_sigaction",
    "ioctl",
    "execve",
    "openat",
    "getpid",
    "no_such_syscall",
    "futex_waitv",
];
const ACTIONS: &[SeccompAction] = &[
    SeccompAction::Kill,
    SeccompAction::KillProcess,
    SeccompAction::KillThread,
    SeccompAction::Trap,
    SeccompAction::Errno,
    SeccompAction::Trace,
    SeccompAction::Allow,
    SeccompAction::Log,
    SeccompAction::Notify,
];
const OPS: &[SeccompOp] = &[
    SeccompOp::NotEqual,
    SeccompOp::LessThan,
    SeccompOp::LessEqual,
    SeccompOp::Equal,
    SeccompOp::GreaterEqual,
    SeccompOp::GreaterThan,
    SeccompOp::MaskedEqual,
];
/// Values around the edges of the two 32-bit halves.
const VALUES: &[u64] = &[
    0,
    1,
    5,
    16,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0005,
    0xffff_ffff_0000_0000,
    0xffff_ffff_ffff_fffe,
    u64::MAX,
];

fn value(r: &mut Rng) -> u64 {
    if r.chance(70) {
        *r.pick(VALUES)
    } else {
        r.next() >> r.below(64)
    }
}

fn errno(r: &mut Rng) -> Option<u32> {
    if r.chance(50) {
        Some(*r.pick(&[0u32, 1, 22, 38, 4095]))
    } else {
        None
    }
}

struct GenOpts {
    /// Allow NOTIFY actions (libseccomp comparisons avoid nothing here; the kernel is not
    /// involved).
    notify: bool,
    /// Names a 2.5.4 libseccomp does not know are left out for the libseccomp comparison.
    names: &'static [&'static str],
}

fn random_profile(r: &mut Rng, g: &GenOpts) -> Seccomp {
    let actions: Vec<SeccompAction> = ACTIONS
        .iter()
        .copied()
        .filter(|a| g.notify || *a != SeccompAction::Notify)
        .collect();
    let default_action = *r.pick(
        &actions
            .iter()
            .copied()
            .filter(|a| *a != SeccompAction::Notify)
            .collect::<Vec<_>>(),
    );
    let with_errno = |a: SeccompAction, r: &mut Rng| {
        if matches!(a, SeccompAction::Errno | SeccompAction::Trace) {
            errno(r)
        } else {
            None
        }
    };
    let default_errno_ret = with_errno(default_action, r);
    let mut architectures = Vec::new();
    for a in [Arch::X86_64, Arch::X86, Arch::X32] {
        if r.chance(50) {
            architectures.push(a);
        }
    }
    let mut syscalls = Vec::new();
    for _ in 0..1 + r.below(12) {
        let names = (0..1 + r.below(3))
            .map(|_| r.pick(g.names).to_string())
            .collect();
        // Sometimes the default action itself, which must be dropped.
        let action = if r.chance(10) {
            default_action
        } else {
            *r.pick(&actions)
        };
        let errno_ret = if action == default_action && r.chance(50) {
            default_errno_ret
        } else {
            with_errno(action, r)
        };
        let nargs = *r.pick(&[0u64, 0, 1, 1, 2, 3]);
        let args = (0..nargs)
            .map(|_| SeccompArg {
                index: if r.chance(70) {
                    r.below(2) as u32
                } else {
                    r.below(6) as u32
                },
                value: value(r),
                value_two: value(r),
                op: *r.pick(OPS),
            })
            .collect();
        syscalls.push(Syscall {
            names,
            action,
            errno_ret,
            args,
        });
    }
    Seccomp {
        default_action,
        default_errno_ret,
        architectures,
        flags: vec![],
        listener_path: None,
        listener_metadata: None,
        syscalls,
    }
}

/// Inputs near what the profile talks about: its syscall numbers (and neighbours), the
/// multiplexers, -1, x32 numbers; argument values equal to, next to, or differing in one
/// half from the profile's values.
fn random_input(r: &mut Rng, p: &Seccomp) -> SeccompData {
    let arch = *r.pick(&[
        AUDIT_ARCH_X86_64,
        AUDIT_ARCH_X86_64,
        AUDIT_ARCH_X86_64,
        AUDIT_ARCH_I386,
        AUDIT_ARCH_I386,
        0xC000_00B7, // aarch64
    ]);
    let sc = r.pick(&p.syscalls);
    let name = r.pick(&sc.names).as_str();
    let abi = match arch {
        AUDIT_ARCH_I386 => Abi::I386,
        _ if r.chance(30) => Abi::X32,
        _ => Abi::X86_64,
    };
    let nr = match r.below(10) {
        0 => u32::MAX,
        1 => r.next() as u32,
        2 => *r.pick(&[I386_SOCKETCALL, I386_IPC, 0, 1, 511, 512, 600]),
        3 => syscall_number(abi, name).unwrap_or(0).wrapping_add(1),
        4 => syscall_number(abi, name).unwrap_or(0) | X32_SYSCALL_BIT,
        5 => 470 + r.below(40) as u32,
        _ => syscall_number(abi, name).unwrap_or(3),
    };
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        let near = sc.args.iter().find(|c| c.index as usize == i);
        *a = match (near, r.below(6)) {
            (Some(c), 0) => c.value,
            (Some(c), 1) => c.value.wrapping_add(1),
            (Some(c), 2) => c.value.wrapping_sub(1),
            (Some(c), 3) => c.value_two | (c.value & r.next()),
            (Some(c), 4) => c.value ^ (1 << r.below(64)),
            _ => value(r),
        };
    }
    if r.chance(20) {
        // The multiplexer call numbers.
        args[0] = r.below(26);
    }
    SeccompData {
        nr,
        arch,
        instruction_pointer: r.next(),
        args,
    }
}

#[test]
fn random_profiles_match_the_model() {
    let seed = 0x5eed_0fb0_1d00_u64;
    let mut r = Rng(seed);
    let g = GenOpts {
        notify: true,
        names: NAMES,
    };
    let mut checked = 0u64;
    let mut largest = 0;
    for case in 0..3000 {
        let p = random_profile(&mut r, &g);
        let opts = Options {
            enosys_above_profile: r.chance(50),
        };
        let f = match compile_with(&p, &opts) {
            Ok(f) => f,
            Err(e) => panic!("case {case}: {e}\n{p:#?}"),
        };
        validate(f.program()).unwrap_or_else(|e| panic!("case {case}: {e}"));
        largest = largest.max(f.len());
        for _ in 0..300 {
            let d = random_input(&mut r, &p);
            let want = model(&p, &opts, &d).0;
            let got = run(f.program(), &d).unwrap();
            assert_eq!(
                action_name(got),
                action_name(want),
                "case {case} (seed {seed:#x}), input {d:x?}\nprofile {p:#?}\n{}",
                f.disassemble()
            );
            checked += 1;
        }
    }
    println!("{checked} inputs agreed; largest program {largest} instructions");
}

// ------------------------------------------------------------------ specific rules

fn profile(json: &str) -> Seccomp {
    serde_json::from_str(json).unwrap()
}

fn data(arch: u32, nr: u32, args: [u64; 6]) -> SeccompData {
    SeccompData {
        nr,
        arch,
        instruction_pointer: 0,
        args,
    }
}

fn eval64(f: &Filter, name: &str, args: [u64; 6]) -> String {
    let nr = syscall_number(Abi::X86_64, name).unwrap();
    action_name(f.evaluate(&data(AUDIT_ARCH_X86_64, nr, args)))
}

#[test]
fn arg_compares_use_both_halves_on_x86_64_and_the_low_half_on_i386() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86"],"syscalls":[
        {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]},
        {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":2,"value":4294967296,"op":"SCMP_CMP_GT"}]}]}"#,
    );
    let f = compile(&p).unwrap();
    assert_eq!(
        eval64(&f, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        "ALLOW"
    );
    assert_eq!(
        eval64(&f, "personality", [u64::MAX, 0, 0, 0, 0, 0]),
        "ERRNO(1)"
    );
    assert_eq!(eval64(&f, "read", [0, 0, 0x1_0000_0001, 0, 0, 0]), "ALLOW");
    assert_eq!(
        eval64(&f, "read", [0, 0, 0x1_0000_0000, 0, 0, 0]),
        "ERRNO(1)"
    );
    assert_eq!(eval64(&f, "read", [0, 0, 0xffff_ffff, 0, 0, 0]), "ERRNO(1)");
    // i386: personality is 136, read 3; only the low 32 bits count, and the value
    // 0x1_0000_0000 truncates to 0 (libseccomp does the same).
    let i = |nr, a: u64| action_name(f.evaluate(&data(AUDIT_ARCH_I386, nr, [0, 0, a, 0, 0, 0])));
    let p386 = |a: u64| action_name(f.evaluate(&data(AUDIT_ARCH_I386, 136, [a, 0, 0, 0, 0, 0])));
    assert_eq!(p386(u64::MAX), "ALLOW");
    assert_eq!(i(3, 1), "ALLOW");
    assert_eq!(i(3, 0), "ERRNO(1)");
}

#[test]
fn unconditional_rule_wins_then_first_conditional_in_profile_order() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":1,"value":5,"op":"SCMP_CMP_EQ"}]},
        {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":2},
        {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":3},
        {"names":["rmdir"],"action":"SCMP_ACT_ERRNO","errnoRet":4,"args":[{"index":0,"value":1,"op":"SCMP_CMP_GE"}]},
        {"names":["rmdir"],"action":"SCMP_ACT_ERRNO","errnoRet":5,"args":[{"index":0,"value":3,"op":"SCMP_CMP_GE"}]},
        {"names":["rmdir"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let f = compile(&p).unwrap();
    assert_eq!(eval64(&f, "mkdir", [0, 5, 0, 0, 0, 0]), "ERRNO(2)");
    assert_eq!(eval64(&f, "mkdir", [0, 6, 0, 0, 0, 0]), "ERRNO(2)");
    // The unconditional ALLOW equals the default and is dropped (runc, crun), so the
    // conditional rules stay in force, first match first.
    assert_eq!(eval64(&f, "rmdir", [5, 0, 0, 0, 0, 0]), "ERRNO(4)");
    assert_eq!(eval64(&f, "rmdir", [0, 0, 0, 0, 0, 0]), "ALLOW");
}

#[test]
fn repeated_argument_index_means_or_as_in_runc() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[
            {"index":1,"value":9,"op":"SCMP_CMP_EQ"},{"index":1,"value":15,"op":"SCMP_CMP_EQ"}]},
        {"names":["tkill"],"action":"SCMP_ACT_ERRNO","args":[
            {"index":0,"value":100,"op":"SCMP_CMP_GT"},{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let f = compile(&p).unwrap();
    assert_eq!(eval64(&f, "kill", [1, 9, 0, 0, 0, 0]), "ERRNO(1)");
    assert_eq!(eval64(&f, "kill", [1, 15, 0, 0, 0, 0]), "ERRNO(1)");
    assert_eq!(eval64(&f, "kill", [1, 2, 0, 0, 0, 0]), "ALLOW");
    // Different indices: AND.
    assert_eq!(eval64(&f, "tkill", [101, 9, 0, 0, 0, 0]), "ERRNO(1)");
    assert_eq!(eval64(&f, "tkill", [100, 9, 0, 0, 0, 0]), "ALLOW");
    assert_eq!(eval64(&f, "tkill", [101, 8, 0, 0, 0, 0]), "ALLOW");
}

#[test]
fn architectures_and_the_x32_bit() {
    let only64 = compile(&profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)).unwrap();
    let ev = |f: &Filter, arch, nr| action_name(f.evaluate(&data(arch, nr, [0; 6])));
    assert_eq!(ev(&only64, AUDIT_ARCH_X86_64, 0), "ALLOW");
    // An x32 call while x32 is not listed: the bad-arch action, not the x86_64 rule for
    // the same low number.
    assert_eq!(
        ev(&only64, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT),
        "KILL_THREAD"
    );
    assert_eq!(ev(&only64, AUDIT_ARCH_X86_64, u32::MAX), "ALLOW");
    assert_eq!(ev(&only64, AUDIT_ARCH_I386, 3), "KILL_THREAD");
    assert_eq!(ev(&only64, 0xC000_00B7, 3), "KILL_THREAD");

    // Non-x86 arches are accepted and add nothing.
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
        "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X32","SCMP_ARCH_AARCH64"],
        "syscalls":[{"names":["read","rt_sigaction"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let f = compile(&p).unwrap();
    assert_eq!(ev(&f, AUDIT_ARCH_X86_64, 0), "ALLOW");
    assert_eq!(ev(&f, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT), "ALLOW"); // x32 read
    assert_eq!(ev(&f, AUDIT_ARCH_X86_64, 13), "ALLOW"); // x86_64 rt_sigaction
    assert_eq!(ev(&f, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT + 512), "ALLOW"); // x32's
    assert_eq!(ev(&f, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT + 13), "ERRNO(38)");
    assert_eq!(ev(&f, 0xC000_00B7, 63), "KILL_THREAD");
}

#[test]
fn i386_socketcall_and_ipc_carry_unconditional_rules() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"syscalls":[
        {"names":["connect","shmat"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":16,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let f = compile(&p).unwrap();
    let ev = |nr, a0| action_name(f.evaluate(&data(AUDIT_ARCH_I386, nr, [a0, 0, 0, 0, 0, 0])));
    assert_eq!(ev(362, 0), "ERRNO(13)"); // direct connect
    assert_eq!(ev(I386_SOCKETCALL, 3), "ERRNO(13)"); // socketcall(SYS_CONNECT)
    assert_eq!(ev(I386_SOCKETCALL, 2), "ALLOW"); // socketcall(SYS_BIND)
    assert_eq!(ev(I386_IPC, 21), "ERRNO(13)"); // ipc(SHMAT)
    assert_eq!(ev(I386_IPC, 21 | (1 << 16)), "ERRNO(13)"); // ipc(SHMAT, version 1)
    assert_eq!(ev(397, 0), "ERRNO(13)"); // direct shmat
                                         // The socket rule has an argument test, which the multiplexer cannot check.
    assert_eq!(ev(359, 16), "ERRNO(1)");
    assert_eq!(ev(I386_SOCKETCALL, 1), "ALLOW");
}

#[test]
fn enosys_for_syscalls_newer_than_the_profile() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
        {"names":["read","openat2"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let f = compile(&p).unwrap();
    let ev = |f: &Filter, nr| action_name(f.evaluate(&data(AUDIT_ARCH_X86_64, nr, [0; 6])));
    assert_eq!(ev(&f, 437), "ALLOW"); // openat2, the highest named
    assert_eq!(ev(&f, 436), "ERRNO(1)");
    assert_eq!(ev(&f, 438), "ERRNO(38)");
    assert_eq!(ev(&f, u32::MAX), "ERRNO(38)");
    let off = compile_with(
        &p,
        &Options {
            enosys_above_profile: false,
        },
    )
    .unwrap();
    assert_eq!(ev(&off, 438), "ERRNO(1)");
}

#[test]
fn unknown_names_are_skipped_and_reported() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["read","frobnicate","_llseek","frobnicate"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    let f = compile(&p).unwrap();
    // _llseek exists on i386 only, which this profile does not compile.
    assert_eq!(f.skipped_names(), ["frobnicate", "_llseek"]);
    assert_eq!(eval64(&f, "read", [0; 6]), "ERRNO(1)");
}

#[test]
fn actions_and_flags() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "listenerPath":"/run/agent.sock","syscalls":[
        {"names":["read"],"action":"SCMP_ACT_KILL"},
        {"names":["write"],"action":"SCMP_ACT_TRAP"},
        {"names":["close"],"action":"SCMP_ACT_TRACE","errnoRet":7},
        {"names":["fstat"],"action":"SCMP_ACT_TRACE"},
        {"names":["poll"],"action":"SCMP_ACT_LOG"},
        {"names":["lseek"],"action":"SCMP_ACT_NOTIFY"},
        {"names":["mmap"],"action":"SCMP_ACT_ERRNO","errnoRet":0},
        {"names":["brk"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let f = compile(&p).unwrap();
    let got: Vec<String> = [
        "read", "write", "close", "fstat", "poll", "lseek", "mmap", "brk", "mprotect",
    ]
    .iter()
    .map(|n| eval64(&f, n, [0; 6]))
    .collect();
    assert_eq!(
        got,
        [
            "KILL_THREAD",
            "TRAP(0)",
            "TRACE(7)",
            "TRACE(1)",
            "LOG",
            "USER_NOTIF",
            "ERRNO(0)",
            "ALLOW",
            "KILL_PROCESS"
        ]
    );
    assert!(f.uses_notify());
    assert_eq!(f.notified_names(), ["lseek"]);
    assert_eq!(
        f.flags(),
        FLAG_TSYNC | FLAG_WAIT_KILLABLE_RECV | FLAG_NEW_LISTENER | FLAG_TSYNC_ESRCH
    );
    // Without a NOTIFY rule there is no listener, and WAIT_KILLABLE_RECV is dropped.
    let q = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV","SECCOMP_FILTER_FLAG_LOG"]}"#,
    );
    assert_eq!(compile(&q).unwrap().flags(), FLAG_LOG);
}

#[test]
fn bad_inputs_name_the_field() {
    let e = |j: &str| compile(&profile(j)).unwrap_err().to_string();
    assert_eq!(
        e(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#
        ),
        "linux.seccomp.syscalls[0].errnoRet: 70000 is out of range (errno values: 0-4095)"
    );
    assert_eq!(
        e(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#
        ),
        "linux.seccomp.syscalls[0].errnoRet: is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
    );
    assert_eq!(
        e(r#"{"defaultAction":"SCMP_ACT_KILL","defaultErrnoRet":1}"#),
        "linux.seccomp.defaultErrnoRet: is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
    );
    assert_eq!(
        e(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#),
        "linux.seccomp.syscalls[0].args[0].index: 6 is out of range (syscalls have 6 arguments, 0-5)"
    );
    assert!(e(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).starts_with("linux.seccomp.defaultAction:"));
}

#[test]
fn many_conditional_rules_need_long_jumps_and_still_work() {
    // 300 syscalls each with a conditional rule: the blocks push the shared returns far
    // beyond the 255-instruction reach of conditional jumps.
    let names: Vec<&str> = tables::SYSCALLS
        .iter()
        .filter(|e| e.1 != tables::NONE)
        .map(|e| e.0)
        .take(300)
        .collect();
    let mut calls = Vec::new();
    for (i, n) in names.iter().enumerate() {
        calls.push(Syscall {
            names: vec![n.to_string()],
            action: SeccompAction::Errno,
            errno_ret: Some(i as u32 % 100),
            args: vec![SeccompArg {
                index: 0,
                value: i as u64,
                value_two: 0,
                op: SeccompOp::LessThan,
            }],
        });
    }
    let p = Seccomp {
        default_action: SeccompAction::Allow,
        default_errno_ret: None,
        architectures: vec![],
        flags: vec![],
        listener_path: None,
        listener_metadata: None,
        syscalls: calls,
    };
    let f = compile(&p).unwrap();
    validate(f.program()).unwrap();
    let mut r = Rng(42);
    for _ in 0..20_000 {
        let d = random_input(&mut r, &p);
        assert_eq!(
            f.evaluate(&d),
            model(&p, &Options::default(), &d).0,
            "{d:x?}"
        );
    }
    println!("300 conditional syscalls: {} instructions", f.len());
}

// ------------------------------------------------------------------ podman's profile

use crate::profile::PODMAN_PROFILE_PATH as PODMAN_PROFILE;

pub(crate) fn podman_caps() -> Vec<String> {
    crate::profile::PODMAN_DEFAULT_CAPS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn podman() -> Option<Seccomp> {
    if !std::path::Path::new(PODMAN_PROFILE).exists() {
        println!("SKIPPED: {PODMAN_PROFILE} is missing (install podman or containers-common)");
        return None;
    }
    Some(crate::profile::load_containers_profile(PODMAN_PROFILE.as_ref(), &podman_caps()).unwrap())
}

#[test]
fn podman_profile_compiles_small_and_allows_a_shell_workload() {
    let Some(p) = podman() else { return };
    let f = compile(&p).unwrap();
    println!(
        "podman profile: {} instructions, skipped names: {:?}",
        f.len(),
        f.skipped_names()
    );
    assert!(f.len() < 1024, "{} instructions", f.len());
    // What busybox sh, ls, cat, mkdir... do.
    let allowed = [
        "execve",
        "brk",
        "arch_prctl",
        "mmap",
        "mprotect",
        "munmap",
        "openat",
        "read",
        "write",
        "close",
        "fstat",
        "newfstatat",
        "statx",
        "getdents64",
        "ioctl",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "wait4",
        "exit_group",
        "getpid",
        "getppid",
        "getuid",
        "geteuid",
        "uname",
        "chdir",
        "getcwd",
        "mkdir",
        "mkdirat",
        "rmdir",
        "unlinkat",
        "renameat2",
        "dup2",
        "dup3",
        "pipe2",
        "fcntl",
        "lseek",
        "prlimit64",
        "set_tid_address",
        "set_robust_list",
        "rseq",
        "getrandom",
        "futex",
        "clock_gettime",
        "nanosleep",
        "kill",
        "setpgid",
        "faccessat2",
        "readlinkat",
        "fchownat",
        "utimensat",
        "sendfile",
        "copy_file_range",
        "poll",
        "clone3",
        "vfork",
        "umask",
        "sysinfo",
    ];
    for n in allowed {
        assert_eq!(eval64(&f, n, [0; 6]), "ALLOW", "{n}");
    }
    // fork as glibc does it: clone(SIGCHLD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID).
    assert_eq!(eval64(&f, "clone", [0x0120_0011, 0, 0, 0, 0, 0]), "ALLOW");
    // personality: the query and the values podman lists; anything else is refused.
    assert_eq!(
        eval64(&f, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        "ALLOW"
    );
    assert_eq!(eval64(&f, "personality", [8, 0, 0, 0, 0, 0]), "ALLOW");
    assert_eq!(
        eval64(&f, "personality", [0x0040_0000, 0, 0, 0, 0, 0]),
        "ERRNO(38)"
    );
    // Audit netlink sockets are refused without CAP_AUDIT_WRITE, others allowed.
    assert_eq!(eval64(&f, "socket", [16, 3, 9, 0, 0, 0]), "ERRNO(22)");
    assert_eq!(eval64(&f, "socket", [16, 3, 0, 0, 0, 0]), "ALLOW");
    assert_eq!(eval64(&f, "socket", [1, 1, 0, 0, 0, 0]), "ALLOW");
    // Refused outright, or unknown to the profile.
    assert_eq!(eval64(&f, "kexec_load", [0; 6]), "ERRNO(1)");
    assert_eq!(eval64(&f, "bpf", [0; 6]), "ERRNO(1)"); // no CAP_SYS_ADMIN
    assert_eq!(eval64(&f, "chroot", [0; 6]), "ALLOW"); // CAP_SYS_CHROOT is in the set
    assert_eq!(eval64(&f, "io_uring_setup", [0; 6]), "ERRNO(38)");
    // i386 and x32 are in podman's archMap.
    let i386 = |nr| action_name(f.evaluate(&data(AUDIT_ARCH_I386, nr, [0; 6])));
    assert_eq!(i386(3), "ALLOW"); // read
    assert_eq!(i386(140), "ALLOW"); // _llseek
    assert_eq!(i386(I386_SOCKETCALL), "ALLOW");
    assert_eq!(
        action_name(f.evaluate(&data(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, [0; 6]))),
        "ALLOW"
    );

    // And every input agrees with the model.
    let mut r = Rng(7);
    for _ in 0..20_000 {
        let d = random_input(&mut r, &p);
        assert_eq!(
            f.evaluate(&d),
            model(&p, &Options::default(), &d).0,
            "{d:x?}"
        );
    }
}

// ------------------------------------------------------------------ libseccomp side by side

/// A helper that builds a filter with libseccomp from a line-based description, the way
/// crun does (rules whose action is the default skipped, unknown names skipped, a repeated
/// argument index split into one rule per condition), and writes the BPF to stdout.
const LIBSECCOMP_HELPER: &str = r#"
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
  char kw[32]; unsigned long long a, b, c; scmp_filter_ctx ctx = NULL; unsigned def = 0;
  while (scanf("%31s", kw) == 1) {
    if (!strcmp(kw, "default")) { scanf("%llu", &a); def = a; ctx = seccomp_init(def); if (!ctx) { fprintf(stderr, "default action refused\n"); return 3; } }
    else if (!strcmp(kw, "arch")) { scanf("%llu", &a); int r = seccomp_arch_add(ctx, a); if (r < 0 && r != -17) return 2; }
    else if (!strcmp(kw, "rule")) {
      char name[64]; unsigned long long act, n; struct scmp_arg_cmp cmp[6]; unsigned cnt[6] = {0}; int multi = 0;
      scanf("%63s %llu %llu", name, &act, &n);
      for (unsigned i = 0; i < n; i++) { unsigned long long op; scanf("%llu %llu %llu %llu", &a, &op, &b, &c);
        cmp[i].arg = a; cmp[i].op = op; cmp[i].datum_a = b; cmp[i].datum_b = c; if (++cnt[a] > 1) multi = 1; }
      if (act == def) continue;
      int nr = seccomp_syscall_resolve_name(name);
      if (nr == __NR_SCMP_ERROR) continue;
      int r = 0;
      if (!multi) r = seccomp_rule_add_array(ctx, act, nr, n, cmp);
      else for (unsigned i = 0; i < n && r == 0; i++) r = seccomp_rule_add_array(ctx, act, nr, 1, &cmp[i]);
      if (r < 0) { fprintf(stderr, "rule %s refused: %d\n", name, r); return 3; }
    }
  }
  return seccomp_export_bpf(ctx, 1) < 0 ? 4 : 0;
}
"#;

fn libseccomp_op(op: SeccompOp) -> u32 {
    // enum scmp_compare
    match op {
        SeccompOp::NotEqual => 1,
        SeccompOp::LessThan => 2,
        SeccompOp::LessEqual => 3,
        SeccompOp::Equal => 4,
        SeccompOp::GreaterEqual => 5,
        SeccompOp::GreaterThan => 6,
        SeccompOp::MaskedEqual => 7,
    }
}

pub(crate) fn build_libseccomp_helper(
    dir: &std::path::Path,
) -> std::result::Result<std::path::PathBuf, String> {
    let src = dir.join("helper.c");
    let bin = dir.join("helper");
    std::fs::write(&src, LIBSECCOMP_HELPER).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg("-lseccomp")
        .output()
        .map_err(|e| format!("gcc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gcc -lseccomp failed (is libseccomp-dev installed?): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bin)
}

fn libseccomp_filter(
    helper: &std::path::Path,
    p: &Seccomp,
) -> std::result::Result<Vec<bpf::SockFilter>, String> {
    use std::io::Write as _;
    let mut text = format!("default {}\n", act(p.default_action, p.default_errno_ret));
    for a in &p.architectures {
        let token = match a {
            Arch::X86 => AUDIT_ARCH_I386,
            Arch::X32 => 0x4000_003E, // SCMP_ARCH_X32: EM_X86_64 | __AUDIT_ARCH_LE
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            _ => continue,
        };
        text += &format!("arch {token}\n");
    }
    for s in &p.syscalls {
        for n in &s.names {
            text += &format!("rule {n} {} {}", act(s.action, s.errno_ret), s.args.len());
            for a in &s.args {
                text += &format!(
                    " {} {} {} {}",
                    a.index,
                    libseccomp_op(a.op),
                    a.value,
                    a.value_two
                );
            }
            text += "\n";
        }
    }
    let mut child = std::process::Command::new(helper)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out
        .stdout
        .chunks_exact(8)
        .map(|c| bpf::SockFilter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// libseccomp 2.5.4 (Debian 12) sometimes emits an arch section that never loads the syscall
/// number: with x86_64 and x32 in one filter, a rule on a syscall neither has (socketcall)
/// followed by a conditional rule (`default 0; arch x32; rule socketcall LOG; rule semop LOG
/// a0 <= X` reproduces it). The section then compares the arch value with syscall numbers
/// and every syscall gets the default action. Such programs are not compared with ours.
fn libseccomp_lost_nr_load(prog: &[bpf::SockFilter]) -> bool {
    let is_jeq = |i: &bpf::SockFilter| i.code == bpf::BPF_JMP | bpf::BPF_JEQ | bpf::BPF_K;
    let is_ld = |i: &bpf::SockFilter| i.code == bpf::BPF_LD | bpf::BPF_W | bpf::BPF_ABS;
    // Walk the arch dispatch chain: `ld arch`, then `jeq ARCH ? section : next check`.
    let mut pc = 1;
    while let Some(i) = prog.get(pc) {
        if !is_jeq(i) || ![AUDIT_ARCH_X86_64, AUDIT_ARCH_I386].contains(&i.k) {
            return false;
        }
        let section = &prog[pc + 1 + i.jt as usize];
        if !is_ld(section) && section.code != bpf::BPF_RET | bpf::BPF_K {
            return true;
        }
        pc += 1 + i.jf as usize;
    }
    false
}

/// The other libseccomp 2.5.4 bug the comparison found: a compare that expects A to hold an
/// argument's high word is reached on a path whose last load was the low word (it leaves
/// out the reload). E.g. `write` with `a0 <= 0x7fffffff` and `a0 >= 0x100000000` (one rule
/// each) gives ERRNO for a0 = 0x80000000. Detected as: some conditional jump can see A
/// loaded from different places depending on the path (a correct program never does that).
fn libseccomp_stale_accumulator(prog: &[bpf::SockFilter]) -> bool {
    use bpf::*;
    // Per instruction: the possible contents of A, as (load offset, mask applied).
    let mut a: Vec<Vec<(u32, u32)>> = vec![Vec::new(); prog.len()];
    a[0].push((u32::MAX, u32::MAX)); // undefined at entry
    for pc in 0..prog.len() {
        let i = prog[pc];
        let here = a[pc].clone();
        let out: Vec<(u32, u32)> = match i.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => vec![(i.k, u32::MAX)],
            c if c == BPF_ALU | BPF_AND | BPF_K => here.iter().map(|s| (s.0, s.1 & i.k)).collect(),
            _ => here.clone(),
        };
        let mut succ = Vec::new();
        match i.code & 0x07 {
            BPF_RET => {}
            BPF_JMP if i.code & 0xf0 == BPF_JA => succ.push(pc + 1 + i.k as usize),
            BPF_JMP => {
                if here.len() > 1 {
                    return true;
                }
                succ.push(pc + 1 + i.jt as usize);
                succ.push(pc + 1 + i.jf as usize);
            }
            _ => succ.push(pc + 1),
        }
        for s in succ {
            for v in &out {
                if !a[s].contains(v) {
                    a[s].push(*v);
                }
            }
        }
    }
    false
}

/// Where our semantics differ from libseccomp's by design (see the crate notes), an input
/// is not compared: overlapping conditional rules with different actions (we take profile
/// order, libseccomp its tree order); the i386 multiplexers when a rule on a multiplexed
/// name has argument tests (libseccomp moves them onto the multiplexer's unrelated
/// arguments) or ipc's version bits are set (we mask them, libseccomp does not).
fn comparable(p: &Seccomp, d: &SeccompData, ambiguous: bool) -> bool {
    if ambiguous {
        return false;
    }
    if d.arch == AUDIT_ARCH_I386 && (d.nr == I386_SOCKETCALL || d.nr == I386_IPC) {
        let conditional_mux = p
            .syscalls
            .iter()
            .any(|s| !s.args.is_empty() && s.names.iter().any(|n| i386_mux(n).is_some()));
        if conditional_mux || (d.nr == I386_IPC && d.args[0] as u32 > 0xffff) {
            return false;
        }
    }
    true
}

#[test]
fn our_programs_never_depend_on_a_stale_accumulator() {
    let mut r = Rng(99);
    let g = GenOpts {
        notify: true,
        names: NAMES,
    };
    for _ in 0..500 {
        let p = random_profile(&mut r, &g);
        let f = compile(&p).unwrap();
        assert!(
            !libseccomp_stale_accumulator(f.program()),
            "{}",
            f.disassemble()
        );
    }
}

#[test]
fn random_profiles_match_libseccomp() {
    let dir = TempDir::new("libseccomp");
    let helper = match build_libseccomp_helper(&dir.0) {
        Ok(h) => h,
        Err(e) => {
            println!("SKIPPED: cannot build the libseccomp helper: {e}");
            return;
        }
    };
    // Names libseccomp 2.5.4 knows (futex_waitv is newer) and that resolve natively.
    const KNOWN: &[&str] = &[
        "read",
        "write",
        "close",
        "mkdir",
        "personality",
        "socket",
        "connect",
        "accept",
        "semop",
        "shmat",
        "socketcall",
        "ipc",
        "_llseek",
        "arch_prctl",
        "clone",
        "rt_sigaction",
        "ioctl",
        "execve",
        "openat",
        "getpid",
        "no_such_syscall",
    ];
    let g = GenOpts {
        notify: true,
        names: KNOWN,
    };
    let opts = Options {
        enosys_above_profile: false,
    };
    let mut r = Rng(0xd1ff);
    let (mut compared, mut skipped_inputs, mut refused, mut libseccomp_bugs) = (0u64, 0, 0, 0);
    for case in 0..400 {
        let p = random_profile(&mut r, &g);
        let ours = compile_with(&p, &opts).unwrap();
        let theirs = match libseccomp_filter(&helper, &p) {
            Ok(t) => t,
            Err(e) => {
                // libseccomp refuses some profiles (two rules with the same tests and
                // different actions: EEXIST; errno 4095: EINVAL); crun would not start them.
                assert!(e.contains("refused"), "case {case}: {e}\n{p:#?}");
                refused += 1;
                continue;
            }
        };
        validate(&theirs).unwrap();
        if libseccomp_lost_nr_load(&theirs) || libseccomp_stale_accumulator(&theirs) {
            libseccomp_bugs += 1;
            continue;
        }
        for _ in 0..300 {
            let mut d = random_input(&mut r, &p);
            if d.arch != AUDIT_ARCH_X86_64 && d.arch != AUDIT_ARCH_I386 {
                d.arch = AUDIT_ARCH_X86_64;
            }
            let (_, ambiguous) = model(&p, &opts, &d);
            if !comparable(&p, &d, ambiguous) {
                skipped_inputs += 1;
                continue;
            }
            let want = run(&theirs, &d).unwrap();
            let got = ours.evaluate(&d);
            assert_eq!(
                action_name(got),
                action_name(want),
                "case {case}: input {d:x?}\nprofile {p:#?}\nours:\n{}\nlibseccomp:\n{}",
                ours.disassemble(),
                bpf::Disassembly(&theirs)
            );
            compared += 1;
        }
    }
    println!(
        "{compared} inputs agreed with libseccomp; {skipped_inputs} not comparable by design; \
         {refused} profiles refused by libseccomp; {libseccomp_bugs} miscompiled by it"
    );
    assert!(compared > 50_000);
}

/// A directory removed when the test ends, passed or failed.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("seccomp-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn podman_profile_matches_libseccomp() {
    let Some(p) = podman() else { return };
    let dir = TempDir::new("libseccomp-podman");
    let helper = match build_libseccomp_helper(&dir.0) {
        Ok(h) => h,
        Err(e) => {
            println!("SKIPPED: cannot build the libseccomp helper: {e}");
            return;
        }
    };
    let theirs = libseccomp_filter(&helper, &p).unwrap();
    assert!(!libseccomp_lost_nr_load(&theirs) && !libseccomp_stale_accumulator(&theirs));
    let ours = compile(&p).unwrap();
    let mut r = Rng(0x90d);
    let mut compared = 0;
    for _ in 0..20_000 {
        let mut d = random_input(&mut r, &p);
        if d.arch != AUDIT_ARCH_I386 {
            d.arch = AUDIT_ARCH_X86_64;
        }
        if !comparable(&p, &d, model(&p, &Options::default(), &d).1) {
            continue;
        }
        assert_eq!(
            action_name(ours.evaluate(&d)),
            action_name(run(&theirs, &d).unwrap()),
            "{d:x?}"
        );
        compared += 1;
    }
    // Every syscall number of every ABI, with zero arguments.
    for (arch, nrs) in [
        (AUDIT_ARCH_X86_64, 0..600u32),
        (AUDIT_ARCH_X86_64, X32_SYSCALL_BIT..X32_SYSCALL_BIT + 600),
        (AUDIT_ARCH_I386, 0..600),
    ] {
        for nr in nrs {
            let d = data(arch, nr, [0; 6]);
            assert_eq!(ours.evaluate(&d), run(&theirs, &d).unwrap(), "{d:x?}");
            compared += 1;
        }
    }
    println!(
        "podman profile: {compared} inputs agree; ours {} instructions, libseccomp's {}",
        ours.len(),
        theirs.len()
    );

    // Instructions executed per syscall (zero arguments), worst and mean over the numbers
    // 0..512 of x86_64.
    let steps = |prog: &[bpf::SockFilter]| {
        let v: Vec<usize> = (0..512)
            .map(|nr| {
                bpf::run_counted(prog, &data(AUDIT_ARCH_X86_64, nr, [0; 6]))
                    .unwrap()
                    .1
            })
            .collect();
        (
            *v.iter().max().unwrap(),
            v.iter().sum::<usize>() as f64 / v.len() as f64,
        )
    };
    let (ours_steps, theirs_steps) = (steps(ours.program()), steps(&theirs));
    println!("x86_64 instructions executed per syscall (max, mean): ours {ours_steps:?}, libseccomp {theirs_steps:?}");
    assert!(ours_steps.0 < theirs_steps.0);

    // The kernel skips the filter for syscalls it proves always-ALLOW (the action cache);
    // our layout must not hide any from it.
    for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386] {
        let set = |prog: &[bpf::SockFilter]| -> Vec<u32> {
            (0..512)
                .filter(|&nr| kernel_const_allow(prog, arch, nr))
                .collect()
        };
        let (o, t) = (set(ours.program()), set(&theirs));
        assert_eq!(o, t, "arch {arch:#x}");
        println!(
            "arch {arch:#x}: {} syscalls cached as always-ALLOW",
            o.len()
        );
        assert!(o.len() > 300);
    }
}

/// The kernel's seccomp_is_const_allow() (kernel/seccomp.c): run the program with only the
/// arch and syscall number known; any other load means "depends on arguments".
fn kernel_const_allow(prog: &[bpf::SockFilter], arch: u32, nr: u32) -> bool {
    use bpf::*;
    let mut a = 0u32;
    let mut pc = 0usize;
    while pc < prog.len() {
        let i = prog[pc];
        match i.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => match i.k {
                OFF_NR => a = nr,
                OFF_ARCH => a = arch,
                _ => return false,
            },
            c if c == BPF_RET | BPF_K => return i.k == RET_ALLOW,
            c if c == BPF_JMP | BPF_JA => pc += i.k as usize,
            c if c == BPF_JMP | BPF_JEQ | BPF_K
                || c == BPF_JMP | BPF_JGE | BPF_K
                || c == BPF_JMP | BPF_JGT | BPF_K
                || c == BPF_JMP | BPF_JSET | BPF_K =>
            {
                let taken = match c & 0xf0 {
                    BPF_JEQ => a == i.k,
                    BPF_JGE => a >= i.k,
                    BPF_JGT => a > i.k,
                    _ => a & i.k != 0,
                };
                pc += if taken { i.jt } else { i.jf } as usize;
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => a &= i.k,
            _ => return false,
        }
        pc += 1;
    }
    false
}

/// bulkhead's default profile: every syscall it allows unconditionally stays in the
/// kernel's action cache (the filter never runs for it), so the allow list costs the common
/// syscalls nothing per call.
#[test]
fn default_profile_keeps_the_kernel_action_cache() {
    use crate::default_profile::{profile, Needs, Verdict, ALLOWED};
    let caps: Vec<String> = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        .map(String::from)
        .to_vec();
    let f = compile(&profile(&caps)).unwrap();
    let mut cached = 0;
    for g in ALLOWED {
        if g.needs != Needs::Nothing || g.verdict != Verdict::Allow {
            continue;
        }
        for name in g.names {
            for (abi, arch) in [
                (Abi::X86_64, AUDIT_ARCH_X86_64),
                (Abi::I386, AUDIT_ARCH_I386),
            ] {
                if let Some(nr) = syscall_number(abi, name) {
                    assert!(
                        kernel_const_allow(f.program(), arch, nr),
                        "{name} ({abi:?}) is not cached as always-ALLOW"
                    );
                    cached += 1;
                }
            }
        }
    }
    assert!(cached > 500, "{cached}");
}
