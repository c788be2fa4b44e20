#!/bin/sh
# Build brickup's fixture csf tarball: OUTDIR/csf-fixture-<version>.tgz with one top-level csf/
# directory, laid out like a csf release (see tests/fixtures/csf/; all of it written by us).
# Usage: scripts/make-fixture-csf.sh OUTDIR [VERSION]   (VERSION defaults to 15.10)
# The archive is reproducible: same inputs, same bytes (and so the same sha256).
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 OUTDIR [VERSION]" >&2
	exit 2
fi
out=$1
version=${2:-15.10}
case "$version" in '' | *[!0-9A-Za-z.-]*) echo "$0: bad version '$version'" >&2; exit 2 ;; esac
src=$(cd "$(dirname "$0")/../tests/fixtures/csf" && pwd)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/csf"
for f in install.sh install.generic.sh csf lfd csftest.pl csf.generic.conf csf.service lfd.service; do
	cp "$src/$f" "$stage/csf/$f"
done
sed "s/@VERSION@/$version/" "$src/csf" >"$stage/csf/csf"
echo "$version" >"$stage/csf/version.txt"
chmod 755 "$stage/csf"
chmod 644 "$stage/csf/"*
chmod 755 "$stage/csf/install.sh" "$stage/csf/install.generic.sh" "$stage/csf/csf" \
	"$stage/csf/lfd" "$stage/csf/csftest.pl"

mkdir -p "$out"
tgz="$out/csf-fixture-$version.tgz"
tar -C "$stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - csf |
	gzip -n -9 >"$tgz.partial"
mv "$tgz.partial" "$tgz"
echo "$tgz"
