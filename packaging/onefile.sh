#!/usr/bin/env bash
# Usage: packaging/onefile.sh FOLDER VERSION OUTPUT
# Wraps a program folder (FOLDER/opsicle and what it loads) into one executable file:
# packaging/launcher.sh, padded to HEADER bytes, followed by the folder as a tar.gz. On its
# first start the file unpacks the folder once into a per-build cache directory, after
# checking it against the SHA-256 written into the header; later starts run from there.
set -euo pipefail
HEADER=8192
folder=$1 version=$2 output=$3
launcher="$(dirname "$0")/launcher.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tar -C "$folder" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . |
  gzip -n -6 > "$work/payload"
sha=$(sha256sum "$work/payload" | cut -d' ' -f1)
# The name is a directory name and a sed replacement: any character of the version other than
# a letter, digit or . _ + - (a '/', '&' or '\' would break either) becomes '_'.
name="opsicle-$(printf '%s' "$version" | tr -c 'A-Za-z0-9._+-' '_')-${sha:0:16}"
sed -e "s/@SHA256@/$sha/" -e "s/@NAME@/$name/" -e "s/@HEADER@/$HEADER/" \
  "$launcher" > "$work/header"
size=$(wc -c < "$work/header")
if [ "$size" -ge "$HEADER" ]; then
  echo "$launcher is $size bytes: more than the $HEADER-byte header" >&2
  exit 1
fi
{
  cat "$work/header"
  head -c $((HEADER - size - 1)) /dev/zero | tr '\0' '#'
  echo
  cat "$work/payload"
} > "$work/onefile"
chmod 755 "$work/onefile"
mv "$work/onefile" "$output"
echo "$name"
