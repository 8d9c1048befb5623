//! A tiny assembler for seccomp BPF: symbolic labels, forward jumps only, and "relaxation"
//! of conditional jumps whose target is more than 255 instructions away.
//!
//! Classic BPF conditional jumps carry 8-bit offsets; only `ja` has a 32-bit one. The
//! compiler writes code with labels and never thinks about distance; here, a conditional
//! jump that cannot reach its target is pointed at a new `ja` placed right after it (a
//! trampoline). Because targets are labels, inserting the trampoline shifts everything
//! after it correctly. Repeat until every jump fits: insertions only ever lengthen
//! distances, and a relaxed jump's new targets are at offsets 0 and 1, so this terminates.

use crate::bpf::{
    SockFilter, BPF_ABS, BPF_ALU, BPF_AND, BPF_JA, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W,
};

pub(crate) type Label = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    /// `ld [k]`: load a 32-bit word of `seccomp_data`.
    Ld(u32),
    /// `and #k`.
    And(u32),
    /// Conditional jump (`op` is BPF_JEQ/JGT/JGE/JSET), comparing A with `k`.
    Jmp {
        op: u16,
        k: u32,
        jt: Label,
        jf: Label,
    },
    /// Unconditional jump.
    Ja(Label),
    /// `ret #k`.
    Ret(u32),
    /// Pseudo-instruction: the label names the next real instruction.
    Bind(Label),
}

#[derive(Default)]
pub(crate) struct Asm {
    items: Vec<Item>,
    labels: u32,
    /// Labels redirected to another label (see [`Asm::retarget`]).
    aliases: Vec<(Label, Label)>,
}

impl Asm {
    pub(crate) fn with_capacity(n: usize) -> Asm {
        Asm {
            items: Vec::with_capacity(n),
            labels: 0,
            aliases: Vec::new(),
        }
    }

    pub(crate) fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }

    pub(crate) fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    pub(crate) fn push(&mut self, i: Item) {
        self.items.push(i);
    }

    pub(crate) fn jmp(&mut self, op: u16, k: u32, jt: Label, jf: Label) {
        self.items.push(Item::Jmp { op, k, jt, jf });
    }

    /// Make the (never bound) label `from` mean `to`: lets code jump to a place whose label
    /// is only known after the jump is written.
    pub(crate) fn retarget(&mut self, from: Label, to: Label) {
        self.aliases.push((from, to));
    }

    /// Resolve labels into offsets and encode. Errors are internal (a label used but never
    /// bound, or bound before its use): they mean a compiler bug, reported rather than
    /// panicking in a container's start path.
    pub(crate) fn assemble(self) -> Result<Vec<SockFilter>, String> {
        let Asm {
            mut items,
            mut labels,
            aliases,
        } = self;
        loop {
            let mut pos = vec![usize::MAX; labels as usize];
            let mut n = 0usize;
            for it in &items {
                match *it {
                    Item::Bind(l) => pos[l as usize] = n,
                    _ => n += 1,
                }
            }
            // Aliases may chain (a subtree's entry can itself be an alias); resolve until
            // nothing changes. There are few, and chains are as deep as the search tree.
            let mut changed = true;
            while changed {
                changed = false;
                for &(from, to) in &aliases {
                    if pos[from as usize] != pos[to as usize] && pos[to as usize] != usize::MAX {
                        pos[from as usize] = pos[to as usize];
                        changed = true;
                    }
                }
            }
            let dist = |from: usize, l: Label| -> Result<usize, String> {
                let p = pos[l as usize];
                if p == usize::MAX || p < from + 1 {
                    return Err(format!(
                        "internal error: label {l} unbound or behind instruction {from}"
                    ));
                }
                Ok(p - from - 1)
            };
            let mut out = Vec::with_capacity(n);
            // For each real instruction: does its jt / jf need a trampoline?
            let mut far: Vec<(bool, bool)> = Vec::new();
            for it in &items {
                let pc = out.len();
                let ins = match *it {
                    Item::Bind(_) => continue,
                    Item::Ld(k) => SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, k),
                    Item::And(k) => SockFilter::stmt(BPF_ALU | BPF_AND | BPF_K, k),
                    Item::Ret(k) => SockFilter::stmt(BPF_RET | BPF_K, k),
                    Item::Ja(l) => {
                        let d = dist(pc, l)?;
                        let d = u32::try_from(d).map_err(|_| "program too large".to_string())?;
                        SockFilter::stmt(BPF_JMP | BPF_JA, d)
                    }
                    Item::Jmp { op, k, jt, jf } => {
                        let (t, f) = (dist(pc, jt)?, dist(pc, jf)?);
                        if t > 255 || f > 255 {
                            if far.is_empty() {
                                far = vec![(false, false); n];
                            }
                            far[pc] = (t > 255, f > 255);
                        }
                        SockFilter::jump(
                            BPF_JMP | op | BPF_K,
                            k,
                            t.min(255) as u8,
                            f.min(255) as u8,
                        )
                    }
                };
                out.push(ins);
            }
            if far.is_empty() {
                return Ok(out);
            }
            let mut relaxed = Vec::with_capacity(items.len() + 32);
            let mut pc = 0usize;
            for it in items {
                match it {
                    Item::Bind(_) => {
                        relaxed.push(it);
                        continue;
                    }
                    Item::Jmp { op, k, jt, jf } if far[pc] != (false, false) => {
                        let (ft, ff) = far[pc];
                        let mut tramps = Vec::with_capacity(2);
                        let mut jump = (jt, jf);
                        if ft {
                            jump.0 = labels;
                            tramps.push((labels, jt));
                            labels += 1;
                        }
                        if ff {
                            jump.1 = labels;
                            tramps.push((labels, jf));
                            labels += 1;
                        }
                        relaxed.push(Item::Jmp {
                            op,
                            k,
                            jt: jump.0,
                            jf: jump.1,
                        });
                        for (l, target) in tramps {
                            relaxed.push(Item::Bind(l));
                            relaxed.push(Item::Ja(target));
                        }
                    }
                    _ => relaxed.push(it),
                }
                pc += 1;
            }
            items = relaxed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{run, validate, SeccompData, BPF_JEQ, BPF_JGE};

    #[test]
    fn far_jumps_get_trampolines() {
        // nr == 7 ? (300 filler loads, ret 1) : ret 2 -- with the "ret 2" placed after
        // the filler, both branches of the jeq are out of 8-bit reach.
        let mut a = Asm::default();
        let (yes, no) = (a.label(), a.label());
        a.push(Item::Ld(0));
        a.jmp(BPF_JEQ, 7, yes, no);
        a.push(Item::Ja(yes));
        for _ in 0..300 {
            a.push(Item::Ld(4));
        }
        a.bind(no);
        a.push(Item::Ret(2));
        for _ in 0..300 {
            a.push(Item::Ld(4));
        }
        a.bind(yes);
        a.push(Item::Ret(1));
        let prog = a.assemble().unwrap();
        validate(&prog).unwrap();
        let d = |nr| SeccompData {
            nr,
            ..Default::default()
        };
        assert_eq!(run(&prog, &d(7)), Ok(1));
        assert_eq!(run(&prog, &d(8)), Ok(2));
    }

    #[test]
    fn backward_or_unbound_labels_are_errors() {
        let mut a = Asm::default();
        let l = a.label();
        a.bind(l);
        a.push(Item::Ld(0));
        a.jmp(BPF_JGE, 1, l, l);
        a.push(Item::Ret(0));
        assert!(a.assemble().unwrap_err().contains("internal error"));
        let mut b = Asm::default();
        let l = b.label();
        b.push(Item::Ja(l));
        b.push(Item::Ret(0));
        assert!(b.assemble().is_err());
    }
}
