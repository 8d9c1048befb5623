#!/bin/sh
# The built-in default job: a busybox container that prints where it runs.
set -eu
BIN="$(cd "$(dirname "$0")/.." && pwd)/target/release/bulkhead"
[ -x "$BIN" ] || BIN="$(cd "$(dirname "$0")/.." && pwd)/target/debug/bulkhead"
B="$(mktemp -d /tmp/bulkhead-demo.XXXXXX)"
trap 'rm -rf "$B"' EXIT
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/sys" "$B/rootfs/dev" "$B/rootfs/etc" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/busybox"
for c in $(/bin/busybox --list); do [ "$c" = busybox ] || ln -s busybox "$B/rootfs/bin/$c"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$B/rootfs/etc/passwd"
# podman's default seccomp profile, when podman's data is installed.
PROFILE=/usr/share/containers/seccomp.json
if [ -f "$PROFILE" ]; then
    "$BIN" spec --bundle "$B" --seccomp-profile "$PROFILE"
else
    "$BIN" spec --bundle "$B"
fi
# Not interactive, and run a short script instead of a shell.
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sh", "-c", "echo hello from a bulkhead container: hostname $(hostname), pid $$, uid $(id -u); grep -E \\"^(Cap(Eff|Bnd)|NoNewPrivs|Seccomp):\\" \/proc\/self\/status"/' "$B/config.json"
exec "$BIN" run --bundle "$B" "demo-$$"
