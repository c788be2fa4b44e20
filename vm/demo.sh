#!/usr/bin/env bash
# vm/demo.sh - brickup's main job on an embedded default: boot a throwaway Debian 12 VM under
# qemu, let brickup harden it at first boot from user-data made by `brickup render-userdata`,
# show the signed report and how to log in, and keep the VM until Enter is pressed.
# Run as root on a Debian machine; it installs what it needs (a few minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "vm/demo.sh needs root (mmdebstrap, qemu)" >&2; exit 2; }
scripts/install-deps.sh
exec vm/firstboot.sh --case ok --demo "$@"
