#!/usr/bin/env bash
# Installs what building and testing brickup needs on a Debian machine (idempotent).
set -euo pipefail
pkgs=(openssh-server openssh-client sshpass mmdebstrap apt-utils iptables iproute2 netcat-openbsd
      util-linux perl python3 musl-tools qemu-system-x86 qemu-utils genisoimage cloud-init
      busybox-static file gzip curl openssl ssh-audit)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  # Packages must not start services on the test machine (its own sshd stays as it is).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl
fi
