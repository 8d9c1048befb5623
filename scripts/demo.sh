#!/bin/sh
# The built-in default job: one command in a sandbox — the host's root
# read-only, a private /tmp, its own namespaces, bulkhead's seccomp profile,
# few capabilities, no_new_privs, limits — then the breakout-probe battery's
# score from inside one, and the isolation layers as `bulkhead inspect --self`
# sees them; then, with the VM guest image built, a command in a micro-VM.
# No bundle, no image.
set -eu
TOP="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$TOP/target/x86_64-unknown-linux-musl/release/bulkhead"
[ -x "$BIN" ] || BIN="$TOP/target/release/bulkhead"
[ -x "$BIN" ] || BIN="$TOP/target/debug/bulkhead"
# The sandbox sees the host's files, except /tmp and /run (fresh tmpfs):
# a binary built there is bound in.
INNER="$BIN"
BIND=""
case "$BIN" in
/tmp/* | /run/*) INNER=/tmp/bulkhead; BIND="--bind $BIN:/tmp/bulkhead:ro" ;;
esac

echo "\$ bulkhead sandbox -- sh -c 'id; hostname; ls /'"
"$BIN" sandbox -- sh -c 'id; hostname; ls /'
echo
echo "\$ bulkhead sandbox -- bulkhead probe | tail -n 1"
# shellcheck disable=SC2086
"$BIN" sandbox $BIND -- "$INNER" probe | tail -n 1
echo
echo "\$ bulkhead sandbox --memory 256m --pids 64 --timeout 30 -- bulkhead inspect --self"
# shellcheck disable=SC2086
"$BIN" sandbox $BIND --memory 256m --pids 64 --timeout 30 -- "$INNER" inspect --self
# The same sandbox in a micro-VM, when the guest image exists (setup.sh builds it): QEMU
# shares the host's root read-only over 9p, the command runs on the guest's own kernel.
if [ -e /var/cache/bulkhead/vm/default ]; then
    echo
    echo "\$ bulkhead sandbox --vm --vm-backend qemu -- sh -c 'uname -r; bulkhead inspect --self | tail -n 1'"
    # shellcheck disable=SC2086
    exec "$BIN" sandbox --vm --vm-backend qemu $BIND -- sh -c "uname -r; $INNER inspect --self | tail -n 1"
fi
