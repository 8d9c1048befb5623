//! The cgroup v2 device filter: an eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`)
//! built from the OCI device rules, loaded with `bpf(BPF_PROG_LOAD)` and
//! attached to the container's cgroup (`BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`).
//! Raw `bpf(2)` calls, no libbpf.
//!
//! ## Semantics: exactly those of the v1 device controller
//! Rules are not matched at access time, first or last. As in the v1 kernel
//! (security/device_cgroup.c), they are applied one after the other to a
//! state — a default verdict and a list of exceptions — and the final state
//! decides ([`Policy`]):
//! - a wildcard rule (`type` "a" or absent) sets the default and clears the
//!   exceptions; the kernel ignores its major, minor and access, and so do we;
//! - a rule whose verdict equals the default removes its access bits from the
//!   exception with exactly the same type/major/minor: no hole is punched in a
//!   wider exception ("allow c 1:3" after "deny c *:*" changes nothing);
//! - any other rule adds an exception (merging access into an identical key).
//!
//! Access check: with default deny, a request is allowed when one exception
//! covers every requested access bit; with default allow, it is denied when
//! any exception shares an access bit with it. That is what writing the same
//! rules to devices.allow/devices.deny produces, so a config behaves the same
//! on v1, hybrid and v2 hosts.
//!
//! The program tests the exceptions one block each and falls through to the
//! default. Comparisons are 32-bit (`BPF_JMP32`), so majors and minors above
//! 2^31 compare correctly.
//!
//! A new program replaces the previous one atomically (`BPF_F_REPLACE`) when
//! exactly one is attached; otherwise the new one is attached first and the old
//! ones detached after, so there is never a moment without a filter.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::{Error, Result};

/// `bpf_cgroup_dev_ctx.access_type` bits (upper 16 bits of the field).
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// Device type (lower 16 bits of `access_type`).
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

/// One exception of the v1 model: `major`/`minor` `None` is the `*` wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// [`DEV_BLOCK`] or [`DEV_CHAR`].
    pub typ: u32,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// [`ACC_READ`] | [`ACC_WRITE`] | [`ACC_MKNOD`].
    pub access: u32,
}

impl Exception {
    fn same_key(&self, o: &Exception) -> bool {
        self.typ == o.typ && self.major == o.major && self.minor == o.minor
    }

    fn covers(&self, typ: u32, major: u32, minor: u32) -> bool {
        self.typ == typ
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

/// A parsed OCI device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Type "a": reset to allow-all or deny-all.
    All {
        allow: bool,
    },
    One {
        allow: bool,
        ex: Exception,
    },
}

fn access_bits(a: &str, field: &str) -> Result<u32> {
    let mut bits = 0;
    for c in a.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(Error::Invalid(format!(
                    "{field}.access: {a:?} is not a combination of r, w, m"
                )))
            }
        };
    }
    if bits == 0 {
        return Err(Error::Invalid(format!("{field}.access: empty")));
    }
    Ok(bits)
}

fn dev_number(v: Option<i64>, field: &str) -> Result<Option<u32>> {
    match v {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            Error::Invalid(format!(
                "{field}: {n} is not a device number (0..{}; omit it for any)",
                u32::MAX
            ))
        }),
    }
}

/// Check and parse one OCI rule (`field` names it in errors).
pub fn parse_rule(r: &oci::DeviceRule, field: &str) -> Result<Rule> {
    let access = access_bits(r.access.as_deref().unwrap_or("rwm"), field)?;
    let major = dev_number(r.major, &format!("{field}.major"))?;
    let minor = dev_number(r.minor, &format!("{field}.minor"))?;
    let typ = match r.typ.as_deref().unwrap_or("a") {
        "a" => return Ok(Rule::All { allow: r.allow }),
        "b" => DEV_BLOCK,
        "c" => DEV_CHAR,
        t => {
            return Err(Error::Invalid(format!(
                "{field}.type: {t:?} is not one of a, b, c"
            )))
        }
    };
    Ok(Rule::One {
        allow: r.allow,
        ex: Exception {
            typ,
            major,
            minor,
            access,
        },
    })
}

/// The v1 device controller's state: a default verdict and its exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default_allow: bool,
    pub exceptions: Vec<Exception>,
}

impl Default for Policy {
    /// A new cgroup under the root: everything allowed.
    fn default() -> Policy {
        Policy {
            default_allow: true,
            exceptions: Vec::new(),
        }
    }
}

impl Policy {
    /// Apply the rules in order to an allow-all start, as the kernel applies
    /// writes to devices.allow / devices.deny.
    pub fn from_rules(rules: &[oci::DeviceRule]) -> Result<Policy> {
        let mut p = Policy::default();
        for (i, r) in rules.iter().enumerate() {
            p.apply(parse_rule(r, &format!("linux.resources.devices[{i}]"))?);
        }
        Ok(p)
    }

    pub fn apply(&mut self, rule: Rule) {
        match rule {
            Rule::All { allow } => {
                self.default_allow = allow;
                self.exceptions.clear();
            }
            Rule::One { allow, ex } if allow == self.default_allow => {
                // Remove these access bits from the identical exception only.
                for e in self.exceptions.iter_mut().filter(|e| e.same_key(&ex)) {
                    e.access &= !ex.access;
                }
                self.exceptions.retain(|e| e.access != 0);
            }
            Rule::One { ex, .. } => match self.exceptions.iter_mut().find(|e| e.same_key(&ex)) {
                Some(e) => e.access |= ex.access,
                None => self.exceptions.push(ex),
            },
        }
    }

    /// The kernel's verdict for an access to a device.
    pub fn allows(&self, typ: u32, major: u32, minor: u32, access: u32) -> bool {
        let mut hits = self
            .exceptions
            .iter()
            .filter(|e| e.covers(typ, major, minor));
        if self.default_allow {
            !hits.any(|e| e.access & access != 0)
        } else {
            hits.any(|e| access & !e.access == 0)
        }
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

pub mod op {
    /// BPF_LDX | BPF_MEM | BPF_W
    pub const LDX_W: u8 = 0x61;
    /// BPF_ALU | BPF_AND | BPF_K
    pub const AND32_K: u8 = 0x54;
    /// BPF_ALU | BPF_RSH | BPF_K
    pub const RSH32_K: u8 = 0x74;
    /// BPF_ALU | BPF_MOV | BPF_K
    pub const MOV32_K: u8 = 0xb4;
    /// BPF_ALU | BPF_MOV | BPF_X
    pub const MOV32_X: u8 = 0xbc;
    /// BPF_JMP32 | BPF_JNE | BPF_K
    pub const JNE32_K: u8 = 0x56;
    /// BPF_JMP32 | BPF_JEQ | BPF_K
    pub const JEQ32_K: u8 = 0x16;
    /// BPF_JMP | BPF_EXIT
    pub const EXIT: u8 = 0x95;
}

// Registers: R1 = ctx on entry; R2 type, R3 access, R4 major, R5 minor; R6 scratch.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Build the program deciding exactly as `policy` does.
pub fn program(policy: &Policy) -> Vec<Insn> {
    let mut p = vec![
        insn(op::LDX_W, R2, R1, 0, 0),
        insn(op::AND32_K, R2, 0, 0, 0xffff),
        insn(op::LDX_W, R3, R1, 0, 0),
        insn(op::RSH32_K, R3, 0, 0, 16),
        insn(op::LDX_W, R4, R1, 4, 0),
        insn(op::LDX_W, R5, R1, 8, 0),
    ];
    // Each block ends in "return verdict"; every failed test jumps past it.
    let verdict = i32::from(!policy.default_allow);
    for e in &policy.exceptions {
        // (code, dst, imm): conditional jumps to the end of the block.
        let mut block: Vec<(u8, u8, u8, i32)> = vec![(op::JNE32_K, R2, 0, e.typ as i32)];
        if let Some(m) = e.major {
            block.push((op::JNE32_K, R4, 0, m as i32));
        }
        if let Some(m) = e.minor {
            block.push((op::JNE32_K, R5, 0, m as i32));
        }
        if policy.default_allow {
            // Denied when the request shares an access bit with the exception.
            block.push((op::MOV32_X, R6, R3, 0));
            block.push((op::AND32_K, R6, 0, e.access as i32));
            block.push((op::JEQ32_K, R6, 0, 0));
        } else if e.access != ACC_ALL {
            // Allowed when the exception covers every requested bit.
            block.push((op::MOV32_X, R6, R3, 0));
            block.push((op::AND32_K, R6, 0, (!e.access & ACC_ALL) as i32));
            block.push((op::JNE32_K, R6, 0, 0));
        }
        let len = block.len() + 2;
        for (i, &(code, dst, src, imm)) in block.iter().enumerate() {
            let off = if code == op::JNE32_K || code == op::JEQ32_K {
                (len - i - 1) as i16
            } else {
                0
            };
            p.push(insn(code, dst, src, off, imm));
        }
        p.push(insn(op::MOV32_K, R0, 0, 0, verdict));
        p.push(insn(op::EXIT, 0, 0, 0, 0));
    }
    p.push(insn(op::MOV32_K, R0, 0, 0, i32::from(policy.default_allow)));
    p.push(insn(op::EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands, program and attach types, flags (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_F_REPLACE: u32 = 4;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(2) with one attribute struct; returns the (non-negative) result.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] struct of the layout
    // the kernel expects for `cmd`; its size is passed along, and pointers
    // inside it refer to buffers that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Load a cgroup device program; the verifier's log is in the error.
pub fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"bulkhead_dev");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            // Again with the verifier log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]);
            let why = if text.trim().is_empty() {
                String::new()
            } else {
                format!(" (verifier: {})", text.trim().replace('\n', "; "))
            };
            Err(Error::io(
                format!("bpf(BPF_PROG_LOAD) of the cgroup device filter{why}"),
                e,
            ))
        }
    }
}

fn open_cgroup(dir: &Path) -> Result<File> {
    File::open(dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))
}

/// Ids of the device programs attached directly to the cgroup at `dir`.
pub fn attached(dir: &Path) -> Result<Vec<u32>> {
    let cg = open_cgroup(dir)?;
    query(&cg, dir)
}

fn query(cg: &File, dir: &Path) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)
        .map_err(|e| Error::io(format!("bpf(BPF_PROG_QUERY) on {}", dir.display()), e))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

fn prog_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdAttr {
        prog_id: id,
        ..Default::default()
    };
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(owned)
}

/// Attach `prog` to the cgroup at `dir` in place of the device programs
/// already attached there (which this runtime put there: the cgroup is the
/// container's own).
pub fn attach(dir: &Path, prog: &OwnedFd) -> Result<()> {
    let cg = open_cgroup(dir)?;
    let old = query(&cg, dir)?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    if let [one] = old[..] {
        if let Ok(old_fd) = prog_fd(one) {
            attr.attach_flags = BPF_F_ALLOW_MULTI | BPF_F_REPLACE;
            attr.replace_bpf_fd = old_fd.as_raw_fd() as u32;
            if bpf(BPF_PROG_ATTACH, &mut attr).is_ok() {
                return Ok(());
            }
            // Kernels before 5.6 lack BPF_F_REPLACE: attach, then detach.
            attr.attach_flags = BPF_F_ALLOW_MULTI;
            attr.replace_bpf_fd = 0;
        }
    }
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        Error::io(
            format!(
                "bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE) to {}",
                dir.display()
            ),
            e,
        )
    })?;
    for id in old {
        let Ok(fd) = prog_fd(id) else { continue };
        let mut d = AttachAttr {
            target_fd: cg.as_raw_fd() as u32,
            attach_bpf_fd: fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut d).map_err(|e| {
            Error::io(
                format!(
                    "bpf(BPF_PROG_DETACH) of the previous device filter from {}",
                    dir.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Build, load and attach the filter for `rules` to the cgroup at `dir`.
pub fn apply(dir: &Path, rules: &[oci::DeviceRule]) -> Result<()> {
    let policy = Policy::from_rules(rules)?;
    let prog = load(&program(&policy))?;
    attach(dir, &prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        t: Option<&str>,
        maj: Option<i64>,
        min: Option<i64>,
        a: &str,
    ) -> oci::DeviceRule {
        oci::DeviceRule {
            allow,
            typ: t.map(String::from),
            major: maj,
            minor: min,
            access: Some(a.into()),
        }
    }

    /// An interpreter for the instructions [`program`] emits: the program is
    /// checked against the model without the kernel.
    fn run(p: &[Insn], typ: u32, major: u32, minor: u32, access: u32) -> u32 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                op::LDX_W => {
                    assert_eq!(src, 1, "loads only from ctx");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                op::AND32_K => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
                op::RSH32_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                op::MOV32_K => r[dst] = u64::from(i.imm as u32),
                op::MOV32_X => r[dst] = u64::from(r[src] as u32),
                op::JNE32_K => {
                    if r[dst] as u32 != i.imm as u32 {
                        pc += i.off as usize;
                    }
                }
                op::JEQ32_K => {
                    if r[dst] as u32 == i.imm as u32 {
                        pc += i.off as usize;
                    }
                }
                op::EXIT => return r[0] as u32,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    /// xorshift: deterministic rule lists without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn random_rule(g: &mut Rng) -> oci::DeviceRule {
        let t = ["a", "b", "c", "c"][g.next(4) as usize];
        let num = |g: &mut Rng| [None, Some(1), Some(3), Some(0x8000_0001)][g.next(4) as usize];
        let access = ["r", "w", "m", "rw", "rm", "wm", "rwm"][g.next(7) as usize];
        let (maj, min) = (num(g), num(g));
        rule(g.next(2) == 0, Some(t), maj, min, access)
    }

    #[test]
    fn program_agrees_with_the_model() {
        let mut g = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let n = 1 + g.next(8) as usize;
            let rules: Vec<_> = (0..n).map(|_| random_rule(&mut g)).collect();
            let pol = Policy::from_rules(&rules).unwrap();
            let prog = program(&pol);
            for typ in [DEV_BLOCK, DEV_CHAR] {
                for major in [1, 2, 0x8000_0001] {
                    for minor in [1, 3, 0x8000_0001] {
                        for access in 1..=ACC_ALL {
                            assert_eq!(
                                run(&prog, typ, major, minor, access) == 1,
                                pol.allows(typ, major, minor, access),
                                "{rules:?} -> {pol:?} at {typ} {major}:{minor} {access}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn v1_semantics() {
        // The usual container list: deny all, then allow what is needed.
        let p = Policy::from_rules(&[
            rule(false, None, None, None, "rwm"),
            rule(true, Some("c"), Some(1), Some(3), "rwm"),
            rule(true, Some("c"), Some(136), None, "rw"),
        ])
        .unwrap();
        assert!(!p.default_allow);
        assert!(p.allows(DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(!p.allows(DEV_BLOCK, 1, 3, ACC_READ));
        assert!(p.allows(DEV_CHAR, 136, 7, ACC_WRITE));
        assert!(!p.allows(DEV_CHAR, 136, 7, ACC_MKNOD));
        assert!(!p.allows(DEV_CHAR, 1, 5, ACC_READ));
        // Removing part of an exception.
        let mut q = p.clone();
        q.apply(Rule::One {
            allow: false,
            ex: Exception {
                typ: DEV_CHAR,
                major: Some(1),
                minor: Some(3),
                access: ACC_WRITE,
            },
        });
        assert!(q.allows(DEV_CHAR, 1, 3, ACC_READ));
        assert!(!q.allows(DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        // No hole in a wider exception: allow c 1:3 after deny c *:* in
        // allow-all mode removes nothing.
        let p = Policy::from_rules(&[
            rule(true, Some("a"), None, None, "rwm"),
            rule(false, Some("c"), None, None, "rwm"),
            rule(true, Some("c"), Some(1), Some(3), "rwm"),
        ])
        .unwrap();
        assert!(!p.allows(DEV_CHAR, 1, 3, ACC_READ));
        assert!(p.allows(DEV_BLOCK, 8, 0, ACC_READ));
        // Default allow: denied when any requested bit is excepted.
        let p = Policy::from_rules(&[rule(false, Some("b"), Some(8), None, "w")]).unwrap();
        assert!(!p.allows(DEV_BLOCK, 8, 0, ACC_READ | ACC_WRITE));
        assert!(p.allows(DEV_BLOCK, 8, 0, ACC_READ));
        // A wildcard rule resets whatever its access says (kernel behaviour).
        let p = Policy::from_rules(&[rule(false, Some("a"), Some(1), None, "r")]).unwrap();
        assert_eq!(
            p,
            Policy {
                default_allow: false,
                exceptions: vec![]
            }
        );
    }

    #[test]
    fn bad_rules() {
        for (r, want) in [
            (rule(true, Some("x"), None, None, "r"), "type"),
            (rule(true, Some("c"), Some(-1), None, "r"), "major"),
            (rule(true, Some("c"), Some(1), Some(1 << 40), "r"), "minor"),
            (rule(true, Some("c"), Some(1), None, "rx"), "access"),
            (rule(true, Some("c"), Some(1), None, ""), "access"),
        ] {
            let e = Policy::from_rules(&[r]).unwrap_err().to_string();
            assert!(
                e.contains(&format!("linux.resources.devices[0].{want}")),
                "{e}"
            );
        }
    }

    #[test]
    fn program_shape() {
        let p = Policy::from_rules(&[
            rule(false, None, None, None, "rwm"),
            rule(true, Some("c"), Some(1), Some(3), "rwm"),
        ])
        .unwrap();
        let prog = program(&p);
        // 6 loads, (type, major, minor, r0=1, exit) and the default (r0=0, exit).
        assert_eq!(prog.len(), 6 + 5 + 2);
        assert_eq!(prog[6], insn(op::JNE32_K, R2, 0, 4, DEV_CHAR as i32));
        assert_eq!(prog[11], insn(op::MOV32_K, R0, 0, 0, 0));
    }

    /// Kernel-backed checks: a cgroup this test creates (and removes).
    mod kernel {
        use super::*;
        use std::path::PathBuf;
        use std::process::Command;

        struct TmpCgroup(PathBuf);
        impl Drop for TmpCgroup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }

        fn mount_of(v2: bool, controller: &str) -> Option<PathBuf> {
            let h = crate::Hierarchies::detect().ok()?;
            h.list
                .iter()
                .find(|x| x.v2 == v2 && (v2 || x.has(controller)))
                .map(|x| x.mount_point.clone())
        }

        fn tmp_cgroup(mount: PathBuf, tag: &str) -> TmpCgroup {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let d = mount.join(format!("bulkhead-unit-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir(&d).unwrap();
            TmpCgroup(d)
        }

        /// Run `sh` in the cgroup: it joins, then execs `script`.
        fn in_cgroup(cg: &Path, script: &str) -> (bool, String) {
            let out = Command::new("/bin/sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec /bin/sh -c '{script}'",
                    cg.display()
                ))
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }

        #[test]
        fn filter_bites_and_is_replaced() {
            let Some(mount) = mount_of(true, "") else {
                eprintln!("SKIP: no cgroup2 hierarchy mounted");
                return;
            };
            let cg = tmp_cgroup(mount, "ebpf");
            let deny_all = [rule(false, None, None, None, "rwm")];
            apply(&cg.0, &deny_all).unwrap();
            assert_eq!(attached(&cg.0).unwrap().len(), 1);
            let (ok, err) = in_cgroup(&cg.0, "head -c0 /dev/null");
            assert!(!ok, "deny-all let /dev/null open");
            assert!(err.contains("Operation not permitted"), "{err}");

            // Update: allow /dev/null read-only. One program stays attached.
            let ro_null = [
                rule(false, None, None, None, "rwm"),
                rule(true, Some("c"), Some(1), Some(3), "r"),
            ];
            apply(&cg.0, &ro_null).unwrap();
            assert_eq!(
                attached(&cg.0).unwrap().len(),
                1,
                "old program not replaced"
            );
            assert!(
                in_cgroup(&cg.0, "head -c0 /dev/null").0,
                "read of /dev/null denied"
            );
            assert!(
                !in_cgroup(&cg.0, "echo x > /dev/null").0,
                "write to /dev/null allowed"
            );
            assert!(
                !in_cgroup(&cg.0, "head -c0 /dev/zero").0,
                "/dev/zero allowed"
            );

            // Two programs attached (one added behind our back): the next
            // filter goes in first, then both old ones are detached.
            let extra = load(&program(&Policy::default())).unwrap();
            let f = File::open(&cg.0).unwrap();
            let mut attr = AttachAttr {
                target_fd: f.as_raw_fd() as u32,
                attach_bpf_fd: extra.as_raw_fd() as u32,
                attach_type: BPF_CGROUP_DEVICE,
                attach_flags: BPF_F_ALLOW_MULTI,
                replace_bpf_fd: 0,
            };
            bpf(BPF_PROG_ATTACH, &mut attr).unwrap();
            assert_eq!(attached(&cg.0).unwrap().len(), 2);
            // Default allow with one exception.
            let no_zero = [rule(false, Some("c"), Some(1), Some(5), "rwm")];
            apply(&cg.0, &no_zero).unwrap();
            assert_eq!(attached(&cg.0).unwrap().len(), 1);
            assert!(in_cgroup(&cg.0, "echo x > /dev/null").0);
            assert!(!in_cgroup(&cg.0, "head -c0 /dev/zero").0);
        }

        #[test]
        fn model_matches_the_v1_kernel() {
            let Some(mount) = mount_of(false, "devices") else {
                eprintln!("SKIP: no v1 devices hierarchy mounted");
                return;
            };
            let mut g = Rng(0x2545_f491_4f6c_dd1d);
            for _ in 0..40 {
                let cg = tmp_cgroup(mount.clone(), "devlist");
                // Deny-all first: in that mode devices.list shows every exception.
                let mut rules = vec![rule(false, None, None, None, "rwm")];
                for _ in 0..g.next(10) {
                    let mut r = random_rule(&mut g);
                    if r.typ.as_deref() == Some("a") {
                        r.typ = Some("b".into());
                    }
                    rules.push(r);
                }
                for r in &rules {
                    let f = if r.allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    std::fs::write(cg.0.join(f), crate::devices::v1_rule(r)).unwrap();
                }
                let pol = Policy::from_rules(&rules).unwrap();
                let show = |v: Option<u32>| v.map_or("*".to_string(), |n| n.to_string());
                let want: Vec<String> = pol
                    .exceptions
                    .iter()
                    .map(|e| {
                        let t = if e.typ == DEV_BLOCK { 'b' } else { 'c' };
                        let mut a = String::new();
                        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
                            if e.access & bit != 0 {
                                a.push(c);
                            }
                        }
                        format!("{t} {}:{} {a}", show(e.major), show(e.minor))
                    })
                    .collect();
                let got = std::fs::read_to_string(cg.0.join("devices.list")).unwrap();
                let got: Vec<&str> = got.lines().collect();
                assert_eq!(got, want, "rules {rules:?}");
            }
        }
    }
}
