//! Classic BPF as seccomp uses it: the instruction format, the kernel's acceptance rules, an
//! interpreter and a disassembler.
//!
//! The interpreter exists so that a compiled program can be checked without installing it:
//! the tests run every program they compile (ours, and libseccomp's for comparison) on
//! synthetic `seccomp_data`, and [`crate::Filter::evaluate`] lets a caller ask what a filter
//! would do with a syscall (e.g. "is `sendmsg` sent to the notify listener?").

use std::fmt;

/// One BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The input of a seccomp filter (`struct seccomp_data`), in host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `sizeof(struct seccomp_data)`: loads must stay inside it.
pub const SECCOMP_DATA_SIZE: u32 = 64;
/// Offsets inside `struct seccomp_data` (x86 is little-endian: the low half of an
/// argument comes first).
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
pub fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
pub fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

/// The kernel refuses programs longer than this (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

// Opcode pieces (linux/bpf_common.h).
pub const BPF_LD: u16 = 0x00;
pub const BPF_LDX: u16 = 0x01;
pub const BPF_ST: u16 = 0x02;
pub const BPF_STX: u16 = 0x03;
pub const BPF_ALU: u16 = 0x04;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_MISC: u16 = 0x07;
pub const BPF_W: u16 = 0x00;
pub const BPF_IMM: u16 = 0x00;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_MEM: u16 = 0x60;
pub const BPF_LEN: u16 = 0x80;
pub const BPF_K: u16 = 0x00;
pub const BPF_X: u16 = 0x08;
pub const BPF_A: u16 = 0x10;
pub const BPF_ADD: u16 = 0x00;
pub const BPF_SUB: u16 = 0x10;
pub const BPF_MUL: u16 = 0x20;
pub const BPF_DIV: u16 = 0x30;
pub const BPF_OR: u16 = 0x40;
pub const BPF_AND: u16 = 0x50;
pub const BPF_LSH: u16 = 0x60;
pub const BPF_RSH: u16 = 0x70;
pub const BPF_NEG: u16 = 0x80;
pub const BPF_MOD: u16 = 0x90;
pub const BPF_XOR: u16 = 0xa0;
pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGT: u16 = 0x20;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;
pub const BPF_TAX: u16 = 0x00;
pub const BPF_TXA: u16 = 0x80;
/// Scratch memory words (BPF_MEMWORDS).
const MEMWORDS: u32 = 16;

impl SockFilter {
    pub const fn stmt(code: u16, k: u32) -> SockFilter {
        SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }
}

fn class(code: u16) -> u16 {
    code & 0x07
}

/// Check a program the way the kernel does before it accepts it (`bpf_check_classic` plus
/// `seccomp_check_filter`): a known opcode for each instruction, jumps inside the program,
/// loads inside `seccomp_data` and 4-byte aligned, no division by a constant zero, and a
/// return as the last instruction. Returns a description of the first problem.
pub fn validate(prog: &[SockFilter]) -> Result<(), String> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err(format!(
            "program has {} instructions (must be 1..={MAX_INSNS})",
            prog.len()
        ));
    }
    let len = prog.len();
    for (pc, ins) in prog.iter().enumerate() {
        let bad = |what: &str| Err(format!("instruction {pc} ({ins:?}): {what}"));
        match class(ins.code) {
            BPF_LD | BPF_LDX => match ins.code {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    if ins.k >= SECCOMP_DATA_SIZE || ins.k & 3 != 0 {
                        return bad("load outside seccomp_data or unaligned");
                    }
                }
                c if c == BPF_LD | BPF_W | BPF_LEN || c == BPF_LDX | BPF_W | BPF_LEN => {}
                c if c == BPF_LD | BPF_IMM || c == BPF_LDX | BPF_IMM => {}
                c if c == BPF_LD | BPF_MEM || c == BPF_LDX | BPF_MEM => {
                    if ins.k >= MEMWORDS {
                        return bad("scratch memory index out of range");
                    }
                }
                _ => return bad("opcode not allowed in seccomp filters"),
            },
            BPF_ST | BPF_STX => {
                if ins.code & !0x07 != 0 {
                    return bad("unknown store opcode");
                }
                if ins.k >= MEMWORDS {
                    return bad("scratch memory index out of range");
                }
            }
            BPF_ALU => {
                let op = ins.code & 0xf0;
                let src = ins.code & 0x08;
                if ins.code & !0xf8 != BPF_ALU || op > BPF_XOR || op == BPF_MOD {
                    return bad("unknown ALU opcode");
                }
                if op == BPF_NEG && src != 0 {
                    return bad("unknown ALU opcode");
                }
                if (op == BPF_DIV || op == BPF_MOD) && src == BPF_K && ins.k == 0 {
                    return bad("division by constant zero");
                }
                if (op == BPF_LSH || op == BPF_RSH) && src == BPF_K && ins.k >= 32 {
                    return bad("shift by 32 or more");
                }
            }
            BPF_JMP => {
                let op = ins.code & 0xf0;
                if op == BPF_JA {
                    if ins.code != BPF_JMP | BPF_JA {
                        return bad("unknown jump opcode");
                    }
                    if (ins.k as usize) >= len - pc - 1 {
                        return bad("jump out of the program");
                    }
                } else {
                    if !matches!(op, BPF_JEQ | BPF_JGT | BPF_JGE | BPF_JSET)
                        || ins.code & !0xf8 != BPF_JMP
                    {
                        return bad("unknown jump opcode");
                    }
                    if pc + 1 + ins.jt as usize >= len || pc + 1 + ins.jf as usize >= len {
                        return bad("jump out of the program");
                    }
                }
            }
            BPF_RET => {
                if ins.code != BPF_RET | BPF_K && ins.code != BPF_RET | BPF_A {
                    return bad("unknown return opcode");
                }
            }
            BPF_MISC => {
                if ins.code != BPF_MISC | BPF_TAX && ins.code != BPF_MISC | BPF_TXA {
                    return bad("unknown misc opcode");
                }
            }
            _ => unreachable!("class() masks to 3 bits"),
        }
    }
    if class(prog[len - 1].code) != BPF_RET {
        return Err("last instruction is not a return".into());
    }
    Ok(())
}

/// Run a program on `data` and return the value of the `ret` it reaches.
/// The program must have passed [`validate`]; an invalid one gives an error, not a panic.
pub fn run(prog: &[SockFilter], data: &SeccompData) -> Result<u32, String> {
    run_counted(prog, data).map(|(v, _)| v)
}

/// [`run`], also returning how many instructions were executed.
pub fn run_counted(prog: &[SockFilter], data: &SeccompData) -> Result<(u32, usize), String> {
    let word = |off: u32| -> Result<u32, String> {
        Ok(match off {
            0 => data.nr,
            4 => data.arch,
            8 => data.instruction_pointer as u32,
            12 => (data.instruction_pointer >> 32) as u32,
            o if (16..SECCOMP_DATA_SIZE).contains(&o) && o % 4 == 0 => {
                let a = data.args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            o => return Err(format!("load at offset {o} outside seccomp_data")),
        })
    };
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; MEMWORDS as usize];
    let mut pc = 0usize;
    let mut steps = 0usize;
    loop {
        let ins = *prog
            .get(pc)
            .ok_or_else(|| format!("fell off the end at {pc}"))?;
        pc += 1;
        steps += 1;
        let k = ins.k;
        match class(ins.code) {
            BPF_LD | BPF_LDX => {
                let v = match ins.code & 0xe0 {
                    BPF_ABS => word(k)?,
                    BPF_IMM => k,
                    BPF_MEM => *mem.get(k as usize).ok_or("bad scratch index")?,
                    BPF_LEN => SECCOMP_DATA_SIZE,
                    _ => return Err(format!("unsupported load {:#x}", ins.code)),
                };
                if class(ins.code) == BPF_LD {
                    a = v
                } else {
                    x = v
                }
            }
            BPF_ST => *mem.get_mut(k as usize).ok_or("bad scratch index")? = a,
            BPF_STX => *mem.get_mut(k as usize).ok_or("bad scratch index")? = x,
            BPF_ALU => {
                let src = if ins.code & BPF_X != 0 { x } else { k };
                a = match ins.code & 0xf0 {
                    BPF_ADD => a.wrapping_add(src),
                    BPF_SUB => a.wrapping_sub(src),
                    BPF_MUL => a.wrapping_mul(src),
                    BPF_DIV => a.checked_div(src).unwrap_or(0),
                    BPF_MOD => a.checked_rem(src).unwrap_or(0),
                    BPF_OR => a | src,
                    BPF_AND => a & src,
                    BPF_XOR => a ^ src,
                    BPF_LSH => a.checked_shl(src).unwrap_or(0),
                    BPF_RSH => a.checked_shr(src).unwrap_or(0),
                    BPF_NEG => a.wrapping_neg(),
                    _ => return Err(format!("unsupported ALU {:#x}", ins.code)),
                };
            }
            BPF_JMP => {
                let op = ins.code & 0xf0;
                if op == BPF_JA {
                    pc += k as usize;
                    continue;
                }
                let src = if ins.code & BPF_X != 0 { x } else { k };
                let taken = match op {
                    BPF_JEQ => a == src,
                    BPF_JGT => a > src,
                    BPF_JGE => a >= src,
                    BPF_JSET => a & src != 0,
                    _ => return Err(format!("unsupported jump {:#x}", ins.code)),
                };
                pc += if taken { ins.jt } else { ins.jf } as usize;
            }
            BPF_RET => return Ok((if ins.code & BPF_A != 0 { a } else { k }, steps)),
            BPF_MISC => {
                if ins.code & 0xf8 == BPF_TXA {
                    a = x
                } else {
                    x = a
                }
            }
            _ => unreachable!("class() masks to 3 bits"),
        }
    }
}

/// A program printed one instruction per line, with absolute jump targets.
pub struct Disassembly<'a>(pub &'a [SockFilter]);

impl fmt::Display for Disassembly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (pc, i) in self.0.iter().enumerate() {
            let t = pc + 1 + i.jt as usize;
            let e = pc + 1 + i.jf as usize;
            let op = i.code & 0xf0;
            match class(i.code) {
                BPF_LD if i.code & 0xe0 == BPF_ABS => {
                    let what = match i.k {
                        OFF_NR => "nr".to_string(),
                        OFF_ARCH => "arch".to_string(),
                        o if o >= 16 => {
                            let half = if (o - 16) % 8 == 0 { "lo" } else { "hi" };
                            format!("args[{}].{half}", (o - 16) / 8)
                        }
                        o => format!("[{o}]"),
                    };
                    writeln!(f, "{pc:4}: ld  {what}")?
                }
                BPF_ALU if op == BPF_AND => writeln!(f, "{pc:4}: and {:#x}", i.k)?,
                BPF_JMP if op == BPF_JA => writeln!(f, "{pc:4}: ja  {}", pc + 1 + i.k as usize)?,
                BPF_JMP => {
                    let name = match op {
                        BPF_JEQ => "jeq",
                        BPF_JGT => "jgt",
                        BPF_JGE => "jge",
                        _ => "jset",
                    };
                    writeln!(f, "{pc:4}: {name} {:#x} ? {t} : {e}", i.k)?
                }
                BPF_RET => writeln!(f, "{pc:4}: ret {}", crate::action_name(i.k))?,
                _ => writeln!(f, "{pc:4}: {:?}", i)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_what_the_kernel_rejects() {
        let ret = SockFilter::stmt(BPF_RET | BPF_K, 0);
        assert!(validate(&[ret]).is_ok());
        assert!(validate(&[]).unwrap_err().contains("instructions"));
        let ld_out = SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, 64);
        assert!(validate(&[ld_out, ret]).unwrap_err().contains("outside"));
        let ld_unaligned = SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, 2);
        assert!(validate(&[ld_unaligned, ret]).is_err());
        let far = SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 5, 0);
        assert!(validate(&[far, ret])
            .unwrap_err()
            .contains("out of the program"));
        let no_ret = SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, 0);
        assert!(validate(&[no_ret]).unwrap_err().contains("return"));
        let div0 = SockFilter::stmt(BPF_ALU | BPF_DIV | BPF_K, 0);
        assert!(validate(&[div0, ret]).unwrap_err().contains("zero"));
    }

    #[test]
    fn interpreter_reads_both_halves_of_arguments() {
        // ld args[1].hi; jeq 0x11223344 ? ret 1 : ret 2
        let prog = [
            SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, off_arg_hi(1)),
            SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, 0x1122_3344, 0, 1),
            SockFilter::stmt(BPF_RET | BPF_K, 1),
            SockFilter::stmt(BPF_RET | BPF_K, 2),
        ];
        validate(&prog).unwrap();
        let mut d = SeccompData::default();
        d.args[1] = 0x1122_3344_5566_7788;
        assert_eq!(run(&prog, &d), Ok(1));
        d.args[1] = 0x5566_7788;
        assert_eq!(run(&prog, &d), Ok(2));
    }
}
