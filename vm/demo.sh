#!/usr/bin/env bash
# vm/demo.sh - brickup's main job on an embedded default: boot a throwaway Debian 12 VM under
# qemu, let brickup harden it at first boot from user-data made by `brickup render-userdata`,
# show the signed report and how to log in, and keep the VM until Enter is pressed.
# Run as root on a Debian machine; it installs what it needs (a few minutes the first time).
# Every stage prints a "[+Ns] ..." line (seconds since the demo started): the first run
# spends minutes building brickup and the VM image, and qemu without KVM is slow.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "vm/demo.sh needs root (mmdebstrap, qemu)" >&2; exit 2; }
VM_STAGE_T0=$(date +%s)
export VM_STAGE_T0
stage() { echo "[+$(($(date +%s) - VM_STAGE_T0))s] $*"; }
stage "installing host packages and the musl target if missing (scripts/install-deps.sh; first time a few minutes)"
scripts/install-deps.sh
stage "host ready; next: build brickup, build or reuse the VM image, boot it, wait for its first boot, check it from outside"
exec vm/firstboot.sh --case ok --demo "$@"
