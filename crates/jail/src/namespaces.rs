//! Which namespaces a jail gets, and when: at clone3 those that need nothing from the host's
//! view any more; later, by unshare, network (a tap must be opened in the host's network
//! namespace first) and cgroup (its root is the cgroup the process is in when it unshares).

use container::namespaces::clone_flag;
use oci::NamespaceType;

/// Created with the child by clone3.
pub const AT_CLONE: [NamespaceType; 5] = [
    NamespaceType::Pid,
    NamespaceType::Mount,
    NamespaceType::Ipc,
    NamespaceType::Uts,
    NamespaceType::Time,
];

/// Unshared by the child right before it confines itself.
pub const AT_CONFINE: [NamespaceType; 2] = [NamespaceType::Network, NamespaceType::Cgroup];

/// Not used: see the crate documentation.
pub const NOT_USED: [NamespaceType; 1] = [NamespaceType::User];

pub fn flags(types: &[NamespaceType]) -> u64 {
    types.iter().fold(0, |f, t| f | clone_flag(*t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_type_is_decided_once() {
        for t in NamespaceType::ALL {
            let n = [&AT_CLONE[..], &AT_CONFINE[..], &NOT_USED[..]]
                .iter()
                .filter(|l| l.contains(&t))
                .count();
            assert_eq!(n, 1, "{t}");
        }
        assert_eq!(
            flags(&AT_CONFINE),
            (libc::CLONE_NEWNET | libc::CLONE_NEWCGROUP) as u64
        );
    }
}
