#!/usr/bin/env bash
# Builds (once, cached outside the repo) what the real-part tests use:
#   $CACHE/rootfs-<suite>/     a Debian minbase rootfs with openssh-server (real sshd, real apt), sudo
#                              (the created admin user's rule, checked by the real visudo) and
#                              iproute2 (brickup's login proof; Debian's cloud images have it)
#   $CACHE/apt-<suite>/        a flat apt repository with csf's prerequisites, unattended-upgrades and their
#                              dependencies, so the rootfs's apt-get installs them offline, and
#                              nftables (a provider's own packet filter, in the live-root tests)
# Rebuilt only when this script changes. Needs root, mmdebstrap and apt-utils.
set -euo pipefail
suite=${1:-bookworm}
cache=${BRICKUP_TEST_CACHE:-/var/cache/brickup-test}
here=$(cd "$(dirname "$0")" && pwd)
stamp=$(sha256sum "$here/build-test-rootfs.sh" | cut -c1-16)
rootfs=$cache/rootfs-$suite
repo=$cache/apt-$suite
prereqs="perl libwww-perl liblwp-protocol-https-perl libio-socket-ssl-perl libio-socket-inet6-perl libsocket6-perl libnet-libidn-perl e2fsprogs iptables bind9-host unzip cron rsyslog unattended-upgrades"
extras="nftables"

if [ -f "$rootfs/.brickup-stamp" ] && [ "$(cat "$rootfs/.brickup-stamp")" = "$stamp" ] && [ -f "$repo/Packages" ]; then
  echo "test rootfs up to date: $rootfs"
  exit 0
fi
mkdir -p "$cache"
rm -rf "$rootfs.new" "$repo.new"
echo "building $rootfs (mmdebstrap, about a minute)"
mmdebstrap --variant=minbase --include=openssh-server,passwd,sudo,ca-certificates,iproute2 \
  "$suite" "$rootfs.new" http://deb.debian.org/debian
# The prerequisites' .debs, resolved against exactly this rootfs.
mkdir -p "$repo.new"
chroot "$rootfs.new" apt-get -q update
chroot "$rootfs.new" apt-get -q -y --no-install-recommends install --download-only $prereqs $extras
cp "$rootfs.new"/var/cache/apt/archives/*.deb "$repo.new/"
(cd "$repo.new" && apt-ftparchive packages . > Packages)
# The rootfs forgets the mirror: tests point it at the local repository.
chroot "$rootfs.new" apt-get clean
rm -rf "$rootfs.new"/var/lib/apt/lists/*
rm -f "$rootfs.new"/etc/apt/sources.list "$rootfs.new"/etc/apt/sources.list.d/*
echo "$stamp" > "$rootfs.new/.brickup-stamp"
rm -rf "$rootfs" "$repo"
mv "$rootfs.new" "$rootfs"
mv "$repo.new" "$repo"
echo "test rootfs ready: $rootfs, apt repo: $repo ($(ls "$repo" | grep -c deb) packages)"
