#!/bin/sh
# Opsicle: one file that holds the whole program (every role and the CLI) after this header.
#
# The first start unpacks the program once into a cache directory named for this build,
# after checking the payload against the SHA-256 below; every later start runs it from there
# at once. The cache is $OPSICLE_CACHE_DIR, else $XDG_CACHE_HOME/opsicle, else
# ~/.cache/opsicle; any of it can be deleted at any time (the next start unpacks again).
# Needs /bin/sh, tail, tar with gzip, sha256sum and mktemp: coreutils or busybox.
#
# Concurrent first starts are safe: each unpacks into its own new directory, and one symbolic
# link publishes a finished directory, made with a single symlink(2), which only one can win.
# packaging/onefile.sh fills in the values below and pads this header to HEADER bytes.
SHA256=@SHA256@
NAME=@NAME@
HEADER=@HEADER@

fail() {
    echo "opsicle: $*" >&2
    exit 1
}

if [ -n "${OPSICLE_CACHE_DIR:-}" ]; then
    base=$OPSICLE_CACHE_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    base=$XDG_CACHE_HOME/opsicle
elif [ -n "${HOME:-}" ]; then
    base=$HOME/.cache/opsicle
else
    fail "no cache directory to unpack into: set OPSICLE_CACHE_DIR (or HOME)"
fi
case $base in
    /*) ;;
    *) base=$(pwd)/$base ;;
esac
dir=$base/$NAME

if [ ! -f "$dir/opsicle" ]; then
    mkdir -p "$base" 2>/dev/null && [ -w "$base" ] ||
        fail "cannot unpack into $base: set OPSICLE_CACHE_DIR to a writable directory"
    tmp=$(mktemp -d "$base/$NAME.XXXXXX") || fail "cannot create a directory in $base"
    trap 'rm -rf "$tmp"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # One copy of the payload is checked and then unpacked, so what runs is what was checked.
    tail -c +"$((HEADER + 1))" "$0" >"$tmp/payload" || fail "cannot read $0"
    if command -v sha256sum >/dev/null 2>&1; then
        sum=$(sha256sum "$tmp/payload")
    else
        sum=$(shasum -a 256 "$tmp/payload" 2>/dev/null) || fail "sha256sum is missing"
    fi
    [ "${sum%% *}" = "$SHA256" ] ||
        fail "$0 is damaged (its payload does not match its SHA-256): download it again"
    tar -xzf "$tmp/payload" -C "$tmp" || fail "cannot unpack into $tmp"
    rm -f "$tmp/payload"
    # A link left behind by a deleted cache entry would block publishing forever.
    if [ -L "$dir" ] && [ ! -e "$dir" ]; then
        rm -f "$dir"
    fi
    if ! ln -sn "${tmp##*/}" "$dir" 2>/dev/null; then
        rm -rf "$tmp" # another start published first: its copy is as good
    fi
    trap - EXIT INT TERM
    [ -f "$dir/opsicle" ] || fail "cannot unpack into $dir"
fi
# Unpacked but not executable: the cache is on a noexec mount (a common /tmp or home setup).
[ -x "$dir/opsicle" ] ||
    fail "cannot run $dir/opsicle (is $base mounted noexec?): set OPSICLE_CACHE_DIR to a directory where programs may run"
exec "$dir/opsicle" "$@"
