#!/bin/sh
# Build brickup's fixture csf tarball, shaped like the real release: OUTDIR/csf-firewall-v<VERSION>.tgz
# (upstream's asset name) holding exactly the paths, entry types and modes listed in
# tests/fixtures/csf/release-15.10-layout.txt (one top-level csf/ directory). The files brickup and
# the tests use get our own working content from tests/fixtures/csf/ (same relative path); every
# other listed file is an empty placeholder. Nothing of csf's own code or text is used.
# Usage: scripts/make-fixture-csf.sh OUTDIR [VERSION]   (VERSION defaults to 15.10)
# Prints the tarball's path. Reproducible: same inputs, same bytes (and so the same sha256).
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 OUTDIR [VERSION]" >&2
	exit 2
fi
out=$1
version=${2:-15.10}
case "$version" in '' | *[!0-9A-Za-z.-]*) echo "$0: bad version '$version'" >&2; exit 2 ;; esac
src=$(cd "$(dirname "$0")/../tests/fixtures/csf" && pwd)
layout=$src/release-15.10-layout.txt
export LC_ALL=C

# "-rw-rw-r--" -> 664, "drwxrwxr-x" -> 775 (no setuid/sticky bits in the release).
octal() {
	printf '%s\n' "$1" | awk '{
		m = 0
		for (i = 2; i <= 10; i++) { m = m * 2 + (substr($0, i, 1) != "-") }
		printf "%o\n", m
	}'
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
grep -v '^#' "$layout" | while read -r mode path; do
	[ -n "$path" ] || continue
	case "$path" in csf/* | csf/) ;; *) echo "$0: $layout: $path is outside csf/" >&2; exit 1 ;; esac
	rel=${path#csf/}
	dest=$stage/${path%/}
	case "$mode" in
	d*) mkdir -p "$dest" ;;
	-*)
		mkdir -p "$(dirname "$dest")"
		if [ "$rel" = version.txt ]; then
			echo "$version" >"$dest"
		elif [ "$rel" = csf.pl ]; then
			sed "s/@VERSION@/$version/" "$src/csf.pl" >"$dest"
		elif [ -f "$src/$rel" ]; then
			cp "$src/$rel" "$dest"
		else
			: >"$dest"
		fi
		;;
	*) echo "$0: $layout: unsupported entry type '$mode' for $path" >&2; exit 1 ;;
	esac
	chmod "$(octal "$mode")" "$dest"
done

# Every file with our content must be a path of the release (catches renames on either side).
(cd "$src" && find . -type f ! -name README.md ! -name release-15.10-layout.txt) | sed 's|^\./||' |
	while read -r f; do
		grep -qx -- "-[-rwx]* csf/$f" "$layout" ||
			{ echo "$0: tests/fixtures/csf/$f is not a path of the release layout" >&2; exit 1; }
	done

mkdir -p "$out"
tgz="$out/csf-firewall-v$version.tgz"
tar -C "$stage" --sort=name --format=gnu --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - csf |
	gzip -n -9 >"$tgz.partial"
mv "$tgz.partial" "$tgz"
echo "$tgz"
