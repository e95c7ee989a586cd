#!/usr/bin/env bash
# Builds a minimal glibc base image for packaging/Dockerfile from this host's own files, without
# pulling anything: glibc and zlib (all the one-file executable links against) and
# busybox-static for the Dockerfile's few shell steps. For machines that cannot pull
# debian:bookworm-slim. Usage: packaging/base-image.sh [TAG]   (default opsicle-base:local)
set -euo pipefail

TAG=${1:-opsicle-base:local}
LIBDIR=/lib/$(uname -m)-linux-gnu

log() { printf 'base-image: %s\n' "$*" >&2; }

for need in "$LIBDIR/libc.so.6" "$LIBDIR/libz.so.1" /bin/busybox; do
    if [ ! -e "$need" ]; then
        log "$need is missing (install libc6, zlib1g and busybox-static)"
        exit 1
    fi
done
if ldd /bin/busybox >/dev/null 2>&1; then
    log "/bin/busybox is linked dynamically; install busybox-static"
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs$LIBDIR" "$rootfs/lib64" "$rootfs/bin" "$rootfs/usr/local/bin" \
    "$rootfs/etc" "$rootfs/tmp" "$rootfs/root" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" \
    "$rootfs/run" "$rootfs/var/lib"
chmod 1777 "$rootfs/tmp"

# glibc's own libraries (not its gconv modules) and zlib: what `ldd dist/opsicle` and the
# libraries the executable unpacks ask for. -L: copy the files the .so names point at.
for lib in "$LIBDIR"/ld-linux*.so* "$LIBDIR"/lib{c,m,dl,pthread,rt,util,resolv,anl}.so.* \
    "$LIBDIR"/libnss_{files,dns}.so.* "$LIBDIR"/libz.so.1; do
    [ -e "$lib" ] && cp -L "$lib" "$rootfs$LIBDIR/"
done
loader=$(basename "$LIBDIR"/ld-linux*.so.*)
ln -s "$LIBDIR/$loader" "$rootfs/lib64/$loader"

cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
    >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$rootfs/etc/hosts"

tar -C "$rootfs" -cf "$work/rootfs.tar" .
docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    "$work/rootfs.tar" "$TAG" >&2
log "built $TAG"
