#!/bin/sh
# The built-in default job: one command in a sandbox — the host's root
# read-only, a private /tmp, its own namespaces, podman's seccomp profile,
# runc's capabilities, no_new_privs, limits — then the isolation layers as
# `bulkhead inspect --self` sees them from inside one. No bundle, no image.
set -eu
TOP="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$TOP/target/x86_64-unknown-linux-gnu/release/bulkhead"
[ -x "$BIN" ] || BIN="$TOP/target/release/bulkhead"
[ -x "$BIN" ] || BIN="$TOP/target/debug/bulkhead"
# podman's default seccomp profile comes with podman (scripts/deps.sh installs it).
SECCOMP=""
if [ ! -f /usr/share/containers/seccomp.json ]; then
    echo "note: /usr/share/containers/seccomp.json is missing: running without seccomp" >&2
    SECCOMP="--seccomp-profile unconfined"
fi
# The sandbox sees the host's files, except /tmp and /run (fresh tmpfs):
# a binary built there is bound in.
INNER="$BIN"
BIND=""
case "$BIN" in
/tmp/* | /run/*) INNER=/tmp/bulkhead; BIND="--bind $BIN:/tmp/bulkhead:ro" ;;
esac

echo "\$ bulkhead sandbox -- sh -c 'id; hostname; ls /'"
# shellcheck disable=SC2086
"$BIN" sandbox $SECCOMP -- sh -c 'id; hostname; ls /'
echo
echo "\$ bulkhead sandbox --memory 256m --pids 64 --timeout 30 -- bulkhead inspect --self"
# shellcheck disable=SC2086
exec "$BIN" sandbox $SECCOMP $BIND --memory 256m --pids 64 --timeout 30 -- "$INNER" inspect --self
