//! OCI profile -> BPF program. The layout and the rules it implements are described in the
//! crate documentation ("BPF layout", "Action precedence", "Architectures").

use oci::{Arch, Seccomp, SeccompAction, SeccompFlag, SeccompOp};

use crate::asm::{Asm, Item, Label};
use crate::bpf::{self, off_arg_hi, off_arg_lo, BPF_JEQ, BPF_JGE, BPF_JGT};
use crate::{tables, Error, Filter, Result};

pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// x32 syscalls enter with this bit set in the syscall number (and AUDIT_ARCH_X86_64).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Filter return values (linux/seccomp.h). The low 16 bits carry data (errno, trace message).
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_DATA: u32 = 0x0000_ffff;

// seccomp(2) filter flags.
pub const FLAG_TSYNC: u32 = 1 << 0;
pub const FLAG_LOG: u32 = 1 << 1;
pub const FLAG_SPEC_ALLOW: u32 = 1 << 2;
pub const FLAG_NEW_LISTENER: u32 = 1 << 3;
pub const FLAG_TSYNC_ESRCH: u32 = 1 << 4;
pub const FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// What a process whose `seccomp_data.arch` is not compiled into the filter gets:
/// libseccomp's default (SCMP_ACT_KILL, i.e. KILL_THREAD), which runc and crun keep.
pub const BAD_ARCH_ACTION: u32 = RET_KILL_THREAD;

const ENOSYS: u32 = 38;
const EPERM: u32 = 1;

/// The three x86 syscall ABIs a process on this host can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Abi {
    X86_64,
    I386,
    X32,
}

/// The syscall number of `name` in `abi` (x32 numbers include [`X32_SYSCALL_BIT`]).
pub fn syscall_number(abi: Abi, name: &str) -> Option<u32> {
    let e = lookup(name)?;
    let nr = match abi {
        Abi::X86_64 => e.1,
        Abi::I386 => e.2,
        Abi::X32 => e.3,
    };
    (nr != tables::NONE).then_some(nr)
}

/// The name of syscall `nr` in `abi`, if the tables know it.
pub fn syscall_name(abi: Abi, nr: u32) -> Option<&'static str> {
    tables::SYSCALLS
        .iter()
        .find(|e| {
            nr == match abi {
                Abi::X86_64 => e.1,
                Abi::I386 => e.2,
                Abi::X32 => e.3,
            }
        })
        .map(|e| e.0)
}

fn fnv1a(s: &str) -> u32 {
    s.bytes()
        .fold(0x811c_9dc5, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

fn lookup(name: &str) -> Option<&'static (&'static str, u32, u32, u32)> {
    // The generated hash index (see gen-tables.py): one hash, usually one compare.
    let mask = tables::INDEX.len() - 1;
    let mut slot = fnv1a(name) as usize & mask;
    loop {
        match tables::INDEX[slot] {
            0 => return None,
            i => {
                let e = &tables::SYSCALLS[i as usize - 1];
                if e.0 == name {
                    return Some(e);
                }
            }
        }
        slot = (slot + 1) & mask;
    }
}

/// Could `name` be one of i386's multiplexed calls? Those have no i386 number of their own
/// or a number in the direct socket (359-373) / SysV IPC (393-402) ranges. Checked first so
/// that most names skip the multiplexer table.
fn maybe_mux(n32: u32) -> bool {
    n32 == tables::NONE || (359..=373).contains(&n32) || (393..=402).contains(&n32)
}

pub(crate) const I386_SOCKETCALL: u32 = 102;
pub(crate) const I386_IPC: u32 = 117;

/// i386 reaches the socket and SysV IPC calls through the multiplexers socketcall(2) and
/// ipc(2) as well as (since Linux 4.3 / 5.1) directly. (name, multiplexer, call number from
/// linux/net.h and linux/ipc.h), sorted by name.
const I386_MUX: &[(&str, u32, u32)] = &[
    ("accept", I386_SOCKETCALL, 5),
    ("accept4", I386_SOCKETCALL, 18),
    ("bind", I386_SOCKETCALL, 2),
    ("connect", I386_SOCKETCALL, 3),
    ("getpeername", I386_SOCKETCALL, 7),
    ("getsockname", I386_SOCKETCALL, 6),
    ("getsockopt", I386_SOCKETCALL, 15),
    ("listen", I386_SOCKETCALL, 4),
    ("msgctl", I386_IPC, 14),
    ("msgget", I386_IPC, 13),
    ("msgrcv", I386_IPC, 12),
    ("msgsnd", I386_IPC, 11),
    ("recv", I386_SOCKETCALL, 10),
    ("recvfrom", I386_SOCKETCALL, 12),
    ("recvmmsg", I386_SOCKETCALL, 19),
    ("recvmsg", I386_SOCKETCALL, 17),
    ("semctl", I386_IPC, 3),
    ("semget", I386_IPC, 2),
    ("semop", I386_IPC, 1),
    ("semtimedop", I386_IPC, 4),
    ("send", I386_SOCKETCALL, 9),
    ("sendmmsg", I386_SOCKETCALL, 20),
    ("sendmsg", I386_SOCKETCALL, 16),
    ("sendto", I386_SOCKETCALL, 11),
    ("setsockopt", I386_SOCKETCALL, 14),
    ("shmat", I386_IPC, 21),
    ("shmctl", I386_IPC, 24),
    ("shmdt", I386_IPC, 22),
    ("shmget", I386_IPC, 23),
    ("shutdown", I386_SOCKETCALL, 13),
    ("socket", I386_SOCKETCALL, 1),
    ("socketpair", I386_SOCKETCALL, 8),
];

pub(crate) fn i386_mux(name: &str) -> Option<(u32, u32)> {
    I386_MUX
        .binary_search_by(|e| e.0.cmp(name))
        .ok()
        .map(|i| (I386_MUX[i].1, I386_MUX[i].2))
}

/// Compiler options. The default is what the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Options {
    /// runc's "-ENOSYS stub": syscall numbers above the highest one the profile names (per
    /// ABI) return ENOSYS instead of the default action, so that a program probing a syscall
    /// newer than the profile falls back (glibc does this with clone3, faccessat2...)
    /// instead of failing with EPERM. Applied, as runc does, only when the default action is
    /// not ALLOW/LOG and `defaultErrnoRet` is not already ENOSYS.
    pub enosys_above_profile: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            enosys_above_profile: true,
        }
    }
}

/// One argument comparison, as the profile states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Cond {
    pub index: u32,
    pub op: SeccompOp,
    pub value: u64,
    pub value_two: u64,
}

/// A rule: all `conds` hold (AND) -> `action`. No conds: unconditional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub conds: Vec<Cond>,
    pub action: u32,
}

/// Kernel return value for an action. `errno_field` names the errnoRet field for errors.
pub(crate) fn action_value(
    act: SeccompAction,
    errno_ret: Option<u32>,
    errno_field: &dyn Fn() -> String,
) -> Result<u32> {
    // ERRNO's data is an errno (the kernel caps it at MAX_ERRNO, 4095: refuse more rather
    // than silently return something else); TRACE's is a 16-bit message for the tracer.
    let data = |default: u32, max: u32, what: &str| -> Result<u32> {
        let v = errno_ret.unwrap_or(default);
        if v > max {
            return Err(Error::invalid(
                errno_field(),
                format!("{v} is out of range ({what}: 0-{max})"),
            ));
        }
        Ok(v)
    };
    if errno_ret.is_some() && !matches!(act, SeccompAction::Errno | SeccompAction::Trace) {
        return Err(Error::invalid(
            errno_field(),
            "is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
        ));
    }
    Ok(match act {
        // SCMP_ACT_KILL has meant KILL_THREAD since the kernel grew KILL_PROCESS (4.14).
        SeccompAction::Kill | SeccompAction::KillThread => RET_KILL_THREAD,
        SeccompAction::KillProcess => RET_KILL_PROCESS,
        SeccompAction::Trap => RET_TRAP,
        // EPERM when errnoRet is absent, as runc and crun do.
        SeccompAction::Errno => RET_ERRNO | data(EPERM, 4095, "errno values")?,
        SeccompAction::Trace => RET_TRACE | data(EPERM, RET_DATA, "the tracer message is 16 bits")?,
        SeccompAction::Allow => RET_ALLOW,
        SeccompAction::Log => RET_LOG,
        SeccompAction::Notify => RET_USER_NOTIF,
    })
}

pub(crate) fn flag_bit(f: SeccompFlag) -> u32 {
    match f {
        SeccompFlag::Tsync => FLAG_TSYNC,
        SeccompFlag::Log => FLAG_LOG,
        SeccompFlag::SpecAllow => FLAG_SPEC_ALLOW,
        SeccompFlag::WaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
    }
}

/// What the filter does for one syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A constant result.
    Ret(u32),
    /// Conditional rules: index into the block list.
    Block(usize),
}

/// Per-section input: which rules apply to which syscall number, in profile order.
#[derive(Default)]
struct Section {
    /// (nr << 32 | position in `rules_of`): sorting these (unstably, they are distinct)
    /// groups by number and keeps profile order inside a group.
    keys: Vec<u64>,
    rules_of: Vec<u32>,
}

impl Section {
    fn push(&mut self, nr: u32, rule: u32) {
        self.keys
            .push((nr as u64) << 32 | self.rules_of.len() as u64);
        self.rules_of.push(rule);
    }
}

/// Highest syscall number the profile names, per ABI (for the ENOSYS stub).
#[derive(Default, Clone, Copy)]
struct Max {
    x86_64: Option<u32>,
    i386: Option<u32>,
    x32: Option<u32>,
}

fn bump(m: &mut Option<u32>, nr: u32) {
    *m = Some(m.map_or(nr, |old| old.max(nr)));
}

/// Compile with the default [`Options`].
pub fn compile(profile: &Seccomp) -> Result<Filter> {
    compile_with(profile, &Options::default())
}

/// Compile an OCI seccomp profile into a BPF program for x86_64 (plus i386 and x32 when
/// `architectures` lists them). Profile errors name the config.json field.
pub fn compile_with(profile: &Seccomp, opts: &Options) -> Result<Filter> {
    let default = action_value(profile.default_action, profile.default_errno_ret, &|| {
        "linux.seccomp.defaultErrnoRet".into()
    })?;
    if profile.default_action == SeccompAction::Notify {
        return Err(Error::invalid(
            "linux.seccomp.defaultAction",
            "SCMP_ACT_NOTIFY cannot be the default action (the runtime itself would block)",
        ));
    }
    // The native ABI is always filtered (libseccomp's seccomp_init adds it and runc/crun
    // never remove it); i386 and x32 only when listed; other arches cannot occur here.
    let has_i386 = profile.architectures.contains(&Arch::X86);
    let has_x32 = profile.architectures.contains(&Arch::X32);

    let mut rules: Vec<Rule> = Vec::with_capacity(profile.syscalls.len() + 8);
    let mut sec64 = Section::default();
    let mut sec32 = Section::default();
    sec64.keys.reserve(1024);
    sec64.rules_of.reserve(1024);
    if has_i386 {
        sec32.keys.reserve(1024);
        sec32.rules_of.reserve(1024);
    }
    let mut max = Max::default();
    let mut skipped: Vec<String> = Vec::new();
    let mut notified: Vec<String> = Vec::new();
    let mut uses_notify = false;

    for (i, sc) in profile.syscalls.iter().enumerate() {
        let action = action_value(sc.action, sc.errno_ret, &|| {
            format!("linux.seccomp.syscalls[{i}].errnoRet")
        })?;
        for (j, a) in sc.args.iter().enumerate() {
            if a.index > 5 {
                return Err(Error::invalid(
                    format!("linux.seccomp.syscalls[{i}].args[{j}].index"),
                    format!(
                        "{} is out of range (syscalls have 6 arguments, 0-5)",
                        a.index
                    ),
                ));
            }
        }
        if sc.names.is_empty() {
            return Err(Error::invalid(
                format!("linux.seccomp.syscalls[{i}].names"),
                "is empty",
            ));
        }
        let first_rule = rules.len() as u32;
        // A rule whose action is the default one changes nothing; runc and crun drop it
        // (libseccomp refuses it), and so do we -- which also matters for precedence: it
        // cannot shadow later rules for the same syscall.
        if action != default {
            uses_notify |= action == RET_USER_NOTIF;
            let conds: Vec<Cond> = sc
                .args
                .iter()
                .map(|a| Cond {
                    index: a.index,
                    op: a.op,
                    value: a.value,
                    value_two: a.value_two,
                })
                .collect();
            let mut seen = [false; 6];
            let repeated = conds
                .iter()
                .any(|c| std::mem::replace(&mut seen[c.index as usize], true));
            if repeated {
                // Two conditions on the same argument: runc and crun add one rule per
                // condition (OR), since libseccomp refuses such a rule. Profiles written for
                // them mean it that way, so we do the same.
                for c in conds {
                    rules.push(Rule {
                        conds: vec![c],
                        action,
                    });
                }
            } else {
                rules.push(Rule { conds, action });
            }
        }
        let rule_ids = first_rule..rules.len() as u32;
        for name in &sc.names {
            let (n64, n32, nx32) = lookup(name)
                .map_or((tables::NONE, tables::NONE, tables::NONE), |e| {
                    (e.1, e.2, e.3)
                });
            let mux = if has_i386 && maybe_mux(n32) {
                i386_mux(name)
            } else {
                None
            };
            let mut known = false;
            if n64 != tables::NONE {
                known = true;
                bump(&mut max.x86_64, n64);
                rule_ids.clone().for_each(|r| sec64.push(n64, r));
            }
            if has_x32 && nx32 != tables::NONE {
                known = true;
                bump(&mut max.x32, nx32);
                rule_ids.clone().for_each(|r| sec64.push(nx32, r));
            }
            if has_i386 && n32 != tables::NONE {
                known = true;
                bump(&mut max.i386, n32);
                rule_ids.clone().for_each(|r| sec32.push(n32, r));
            }
            if let Some((mux_nr, call)) = mux {
                known = true;
                // Only unconditional rules carry over to the multiplexer: its own arguments
                // are (call, pointer to the real arguments), and BPF cannot read memory.
                for r in rule_ids.clone() {
                    if unconditional(&rules[r as usize], false) {
                        let cond = if mux_nr == I386_IPC {
                            // ipc(2) takes the call from the low 16 bits (the high ones are a
                            // version), so compare only those.
                            Cond {
                                index: 0,
                                op: SeccompOp::MaskedEqual,
                                value: 0xffff,
                                value_two: call as u64,
                            }
                        } else {
                            Cond {
                                index: 0,
                                op: SeccompOp::Equal,
                                value: call as u64,
                                value_two: 0,
                            }
                        };
                        let action = rules[r as usize].action;
                        let id = rules.len() as u32;
                        rules.push(Rule {
                            conds: vec![cond],
                            action,
                        });
                        sec32.push(mux_nr, id);
                    }
                }
            }
            if !known && !skipped.iter().any(|s| s == name) {
                skipped.push(name.clone());
            }
            if sc.action == SeccompAction::Notify
                && action != default
                && n64 != tables::NONE
                && !notified.iter().any(|s| s == name)
            {
                notified.push(name.clone());
            }
        }
    }

    let stub = opts.enosys_above_profile
        && !matches!(
            profile.default_action,
            SeccompAction::Allow | SeccompAction::Log
        )
        && profile.default_errno_ret != Some(ENOSYS);
    let above = |m: Option<u32>, nr: u32| -> u32 {
        if stub && m.is_some_and(|m| nr > m) {
            RET_ERRNO | ENOSYS
        } else {
            default
        }
    };

    let mut asm = Asm::with_capacity(1024);
    let mut blocks: Vec<Vec<u32>> = Vec::new();

    // Arch dispatch.
    asm.push(Item::Ld(bpf::OFF_ARCH));
    let (s64, s32, bad) = (asm.label(), asm.label(), asm.label());
    if has_i386 {
        let next = asm.label();
        asm.jmp(BPF_JEQ, AUDIT_ARCH_X86_64, s64, next);
        asm.bind(next);
        asm.jmp(BPF_JEQ, AUDIT_ARCH_I386, s32, bad);
    } else {
        asm.jmp(BPF_JEQ, AUDIT_ARCH_X86_64, s64, bad);
    }
    asm.bind(bad);
    asm.push(Item::Ret(BAD_ARCH_ACTION));

    // The x86_64 audit arch carries both x86_64 and x32 calls; the syscall number tells
    // them apart (x32 ones have X32_SYSCALL_BIT).
    let base64 = |nr: u32| -> u32 {
        if nr < X32_SYSCALL_BIT {
            above(max.x86_64, nr)
        } else if has_x32 {
            above(max.x32, nr)
        } else if nr == u32::MAX {
            // -1 is not an x32 call: it is what a tracer uses to skip a syscall, and
            // syscall(-1) must fail with ENOSYS, not kill (libseccomp lets it through too).
            above(max.x86_64, nr)
        } else {
            BAD_ARCH_ACTION
        }
    };
    let mut bounds64 = vec![X32_SYSCALL_BIT, u32::MAX];
    if let Some(m) = max.x86_64 {
        bounds64.push(m.saturating_add(1));
    }
    if let Some(m) = max.x32 {
        bounds64.push(m.saturating_add(1));
    }
    let wide64 = |nr: u32| nr < X32_SYSCALL_BIT;
    let iv64 = intervals(&mut sec64, &rules, &mut blocks, &bounds64, &base64, &wide64);
    asm.bind(s64);
    emit_section(&mut asm, &iv64, &blocks, &rules, default, wide64);

    if has_i386 {
        let base32 = |nr: u32| above(max.i386, nr);
        let bounds32: Vec<u32> = max.i386.map(|m| m.saturating_add(1)).into_iter().collect();
        let iv32 = intervals(&mut sec32, &rules, &mut blocks, &bounds32, &base32, &|_| {
            false
        });
        asm.bind(s32);
        emit_section(&mut asm, &iv32, &blocks, &rules, default, |_| false);
    }

    let program = asm.assemble().map_err(Error::Internal)?;
    if program.len() > bpf::MAX_INSNS {
        return Err(Error::TooLarge { len: program.len() });
    }
    debug_assert_eq!(bpf::validate(&program), Ok(()));

    let mut flags = profile.flags.iter().fold(0, |f, &x| f | flag_bit(x));
    if uses_notify {
        flags |= FLAG_NEW_LISTENER;
        // The kernel refuses TSYNC with NEW_LISTENER unless TSYNC_ESRCH says how to report
        // a thread that cannot be synchronised (libseccomp adds it the same way).
        if flags & FLAG_TSYNC != 0 {
            flags |= FLAG_TSYNC_ESRCH;
        }
    } else {
        // Without a listener the flag means nothing and the kernel would refuse it.
        flags &= !FLAG_WAIT_KILLABLE_RECV;
    }
    Ok(Filter {
        program,
        flags,
        skipped,
        notified,
    })
}

/// Partition the u32 syscall-number space of one section into intervals with a constant
/// outcome, as sorted (start, outcome) pairs (each interval ends where the next starts).
/// `base` gives the outcome of numbers no rule names; it is constant between the sorted
/// `base_bounds`.
fn intervals(
    sec: &mut Section,
    rules: &[Rule],
    blocks: &mut Vec<Vec<u32>>,
    base_bounds: &[u32],
    base: &dyn Fn(u32) -> u32,
    wide: &dyn Fn(u32) -> bool,
) -> Vec<(u32, Outcome)> {
    sec.keys.sort_unstable();
    let mut bounds = base_bounds.to_vec();
    bounds.sort_unstable();
    let mut out: Vec<(u32, Outcome)> = Vec::with_capacity(sec.keys.len() + bounds.len() + 1);
    let push = |out: &mut Vec<(u32, Outcome)>, start: u32, o: Outcome| {
        if out.last().map(|l| l.1) != Some(o) {
            out.push((start, o));
        }
    };
    // Numbers in [from, to) that no rule names.
    let fill = |out: &mut Vec<(u32, Outcome)>, from: u64, to: u64| {
        if from < to {
            push(out, from as u32, Outcome::Ret(base(from as u32)));
            for &b in &bounds {
                if (b as u64) > from && (b as u64) < to {
                    push(out, b, Outcome::Ret(base(b)));
                }
            }
        }
    };
    let mut next: u64 = 0; // the first number not yet covered
    let mut i = 0;
    while i < sec.keys.len() {
        let nr = (sec.keys[i] >> 32) as u32;
        let mut j = i;
        while j < sec.keys.len() && (sec.keys[j] >> 32) as u32 == nr {
            j += 1;
        }
        let group = sec.keys[i..j]
            .iter()
            .map(|k| sec.rules_of[*k as u32 as usize]);
        // Precedence (libseccomp's): an unconditional rule decides alone -- the first one
        // in profile order; otherwise the conditional rules are tried in profile order.
        let w = wide(nr);
        let outcome = match group
            .clone()
            .find(|&r| unconditional(&rules[r as usize], w))
        {
            Some(r) => Outcome::Ret(rules[r as usize].action),
            None => {
                let ids: Vec<u32> = group.collect();
                let id = match blocks.iter().position(|b| same_rules(b, &ids, rules)) {
                    Some(id) => id,
                    None => {
                        blocks.push(ids);
                        blocks.len() - 1
                    }
                };
                Outcome::Block(id)
            }
        };
        fill(&mut out, next, nr as u64);
        push(&mut out, nr, outcome);
        next = nr as u64 + 1;
        i = j;
    }
    fill(&mut out, next, 1 << 32);
    out
}

fn same_rules(a: &[u32], b: &[u32], rules: &[Rule]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || rules[*x as usize] == rules[*y as usize])
}

/// Emit one arch section: `ld nr`, a binary search over the intervals, the shared returns,
/// then the conditional blocks. `wide(nr)`: are this number's arguments 64-bit?
fn emit_section(
    asm: &mut Asm,
    iv: &[(u32, Outcome)],
    blocks: &[Vec<u32>],
    rules: &[Rule],
    default: u32,
    wide: impl Fn(u32) -> bool,
) {
    let mut rets: Vec<(u32, Label)> = Vec::new();
    let mut used_blocks: Vec<(usize, Label, u32)> = Vec::new();
    let mut target = |asm: &mut Asm, o: Outcome, nr: u32| -> Label {
        match o {
            Outcome::Ret(v) => match rets.iter().find(|r| r.0 == v) {
                Some(r) => r.1,
                None => {
                    let l = asm.label();
                    rets.push((v, l));
                    l
                }
            },
            Outcome::Block(b) => match used_blocks.iter().find(|u| u.0 == b) {
                // A block shared by several numbers is only shared within one ABI width.
                Some(u) if wide(u.2) == wide(nr) => u.1,
                _ => {
                    let l = asm.label();
                    used_blocks.push((b, l, nr));
                    l
                }
            },
        }
    };
    if let [(start, o)] = iv {
        // One outcome for every number: no need to look at it.
        let l = target(asm, *o, *start);
        asm.push(Item::Ja(l));
    } else {
        asm.push(Item::Ld(bpf::OFF_NR));
        emit_tree(asm, iv, &mut target);
    }
    for (v, l) in rets {
        asm.bind(l);
        asm.push(Item::Ret(v));
    }
    for (b, l, nr) in used_blocks {
        asm.bind(l);
        emit_block(asm, &blocks[b], rules, default, wide(nr));
    }
}

/// Balanced binary search over interval starts with `jge`: depth log2(intervals). Leaves
/// cost nothing -- the jumps go straight to the outcome's code. Emitted node, left
/// subtree, right subtree, so every jump is forward.
fn emit_tree(
    asm: &mut Asm,
    iv: &[(u32, Outcome)],
    target: &mut dyn FnMut(&mut Asm, Outcome, u32) -> Label,
) -> Label {
    if let [(start, o)] = iv {
        return target(asm, *o, *start);
    }
    let here = asm.label();
    asm.bind(here);
    let mid = iv.len() / 2;
    // The children's labels exist only once they are emitted: jump to placeholders and
    // make those aliases of the real labels afterwards.
    let (jt, jf) = (asm.label(), asm.label());
    asm.jmp(BPF_JGE, iv[mid].0, jt, jf);
    let left = emit_tree(asm, &iv[..mid], target);
    let right = emit_tree(asm, &iv[mid..], target);
    asm.retarget(jt, right);
    asm.retarget(jf, left);
    here
}

fn emit_block(asm: &mut Asm, ids: &[u32], rules: &[Rule], default: u32, wide: bool) {
    // One `ret` per distinct action, shared by the rules that end in it.
    let mut rets: Vec<(u32, Label)> = Vec::new();
    for &id in ids {
        let rule = &rules[id as usize];
        let ret = match rets.iter().find(|r| r.0 == rule.action) {
            Some(r) => r.1,
            None => {
                let l = asm.label();
                rets.push((rule.action, l));
                l
            }
        };
        let next = asm.label();
        let conds: Vec<&Cond> = rule.conds.iter().filter(|c| !tautology(c, wide)).collect();
        let n = conds.len();
        for (k, c) in conds.into_iter().enumerate() {
            let ok = if k + 1 == n { Some(ret) } else { None };
            emit_cond(asm, c, wide, ok, next);
        }
        asm.bind(next);
    }
    asm.push(Item::Ret(default));
    for (v, l) in rets {
        asm.bind(l);
        asm.push(Item::Ret(v));
    }
}

/// Emit one comparison: continue at `ok` (or fall through when None) if it holds, jump to
/// `fail` if not. All comparisons are unsigned, as libseccomp's. On 64-bit calls they are
/// made on both 32-bit halves (high half first); on 32-bit ABIs (i386, x32) on the low half
/// only, with the profile's value truncated to 32 bits -- libseccomp's behaviour.
fn emit_cond(asm: &mut Asm, c: &Cond, wide: bool, ok: Option<Label>, fail: Label) {
    let fallthrough = ok.is_none();
    let ok = ok.unwrap_or_else(|| asm.label());
    let (lo, hi) = (off_arg_lo(c.index), off_arg_hi(c.index));
    let (vh, vl) = ((c.value >> 32) as u32, c.value as u32);
    if !wide {
        match c.op {
            SeccompOp::MaskedEqual if vl == 0 => asm.push(Item::Ja(ok)),
            SeccompOp::MaskedEqual => masked_half(asm, lo, vl, c.value_two as u32, ok, fail),
            op => {
                asm.push(Item::Ld(lo));
                let (jop, t, f) = cmp_jump(op, ok, fail);
                asm.jmp(jop, vl, t, f);
            }
        }
    } else {
        match c.op {
            SeccompOp::Equal | SeccompOp::NotEqual => {
                let (yes, no) = if c.op == SeccompOp::Equal {
                    (ok, fail)
                } else {
                    (fail, ok)
                };
                let n1 = asm.label();
                asm.push(Item::Ld(hi));
                asm.jmp(BPF_JEQ, vh, n1, no);
                asm.bind(n1);
                asm.push(Item::Ld(lo));
                asm.jmp(BPF_JEQ, vl, yes, no);
            }
            SeccompOp::GreaterThan | SeccompOp::GreaterEqual => {
                // a > v  <=>  hi > vh  ||  (hi == vh && lo > vl)   (>= alike on the low half)
                let (n1, n2) = (asm.label(), asm.label());
                asm.push(Item::Ld(hi));
                asm.jmp(BPF_JGT, vh, ok, n1);
                asm.bind(n1);
                asm.jmp(BPF_JEQ, vh, n2, fail);
                asm.bind(n2);
                asm.push(Item::Ld(lo));
                let op = if c.op == SeccompOp::GreaterThan {
                    BPF_JGT
                } else {
                    BPF_JGE
                };
                asm.jmp(op, vl, ok, fail);
            }
            SeccompOp::LessThan | SeccompOp::LessEqual => {
                // a < v  <=>  !(a >= v): the same test with the outcomes swapped.
                let (n1, n2) = (asm.label(), asm.label());
                asm.push(Item::Ld(hi));
                asm.jmp(BPF_JGT, vh, fail, n1);
                asm.bind(n1);
                asm.jmp(BPF_JEQ, vh, n2, ok);
                asm.bind(n2);
                asm.push(Item::Ld(lo));
                let op = if c.op == SeccompOp::LessThan {
                    BPF_JGE
                } else {
                    BPF_JGT
                };
                asm.jmp(op, vl, fail, ok);
            }
            SeccompOp::MaskedEqual => {
                // (a & value) == (valueTwo & value), on each half; a half whose mask is
                // zero always matches and is not tested (tautology(), as libseccomp).
                let (dh, dl) = ((c.value_two >> 32) as u32, c.value_two as u32);
                match (vh != 0, vl != 0) {
                    (true, true) => {
                        let n1 = asm.label();
                        masked_half(asm, hi, vh, dh, n1, fail);
                        asm.bind(n1);
                        masked_half(asm, lo, vl, dl, ok, fail);
                    }
                    (true, false) => masked_half(asm, hi, vh, dh, ok, fail),
                    (false, true) => masked_half(asm, lo, vl, dl, ok, fail),
                    // emit_block leaves tautologies out; stay correct if one gets here.
                    (false, false) => asm.push(Item::Ja(ok)),
                }
            }
        }
    }
    if fallthrough {
        asm.bind(ok);
    }
}

/// (word & mask) == (datum & mask) on one 32-bit half; `mask` is not zero.
fn masked_half(asm: &mut Asm, off: u32, mask: u32, datum: u32, ok: Label, fail: Label) {
    asm.push(Item::Ld(off));
    if mask != u32::MAX {
        asm.push(Item::And(mask));
    }
    asm.jmp(BPF_JEQ, datum & mask, ok, fail);
}

/// A condition that holds for every argument value: SCMP_CMP_MASKED_EQ with a mask that is
/// zero (on 32-bit ABIs: zero in its low half). libseccomp leaves such a test out, so a rule
/// made only of them is unconditional -- with the precedence of one. We do the same.
pub(crate) fn tautology(c: &Cond, wide: bool) -> bool {
    c.op == SeccompOp::MaskedEqual
        && if wide {
            c.value == 0
        } else {
            c.value as u32 == 0
        }
}

fn unconditional(r: &Rule, wide: bool) -> bool {
    r.conds.iter().all(|c| tautology(c, wide))
}

/// The jump for a 32-bit comparison: (opcode, target if the jump's test holds, if not).
fn cmp_jump(op: SeccompOp, ok: Label, fail: Label) -> (u16, Label, Label) {
    match op {
        SeccompOp::Equal => (BPF_JEQ, ok, fail),
        SeccompOp::NotEqual => (BPF_JEQ, fail, ok),
        SeccompOp::GreaterThan => (BPF_JGT, ok, fail),
        SeccompOp::GreaterEqual => (BPF_JGE, ok, fail),
        SeccompOp::LessThan => (BPF_JGE, fail, ok),
        SeccompOp::LessEqual => (BPF_JGT, fail, ok),
        SeccompOp::MaskedEqual => unreachable!("handled by masked_half"),
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
