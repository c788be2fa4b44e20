#!/usr/bin/env bash
# vm/selftest.sh - fast host-side tests of vm/lib.sh (no VM, a few seconds): seed ISO, file
# server and the exact `nc -N` command the guestfwd runs, the callback receiver and its
# `brickup receive` hook, free ports, cleanup killing every host process.
# Last line: "N passed, N failed"; non-zero exit on any failure.
set -uo pipefail
# shellcheck source=vm/lib.sh
source "$(dirname "$0")/lib.sh"

PASS=0 FAIL=0
check() {
    local what=$1
    shift
    if "$@"; then PASS=$((PASS + 1)); echo "PASS: $what"; else FAIL=$((FAIL + 1)); echo "FAIL: $what"; fi
}
vm_require_host_tools || { echo "0 passed, 1 failed"; exit 1; }
T=$(mktemp -d /tmp/brickup-vm-selftest.XXXXXX)
trap 'rm -rf "$T"' EXIT

# What the guest's guestfwd does for one connection: `nc -N 127.0.0.1 PORT` on stdin/stdout.
guest_get() { printf 'GET %s HTTP/1.0\r\nHost: x\r\n\r\n' "$2" | timeout 10 nc -N 127.0.0.1 "$1"; }
guest_post() {
    printf 'POST /report HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
        "${#2}" "$2" | timeout 10 nc -N 127.0.0.1 "$1"
}

# --- free port
p=$(vm_free_port)
check "vm_free_port prints a port nobody listens on" \
    bash -c "[[ $p =~ ^[0-9]+$ ]] && ! nc -z 127.0.0.1 $p"

# --- seed ISO (run in a subshell: vm_init installs traps)
seed_test() (
    vm_init "$T/seed-work" 2>/dev/null
    printf '#cloud-config\nruncmd: [true]\n' >"$T/ud"
    printf 'version: 2\nethernets: {}\n' >"$T/nc"
    vm_make_seed "$T/a.iso" --user-data "$T/ud" --network-config "$T/nc" --hostname h1
    vm_make_seed "$T/b.iso" --user-data "$T/ud"
    isoinfo -d -i "$T/a.iso" | grep -qx 'Volume id: cidata' || exit 1
    [[ $(isoinfo -R -i "$T/a.iso" -x /user-data) == "$(cat "$T/ud")" ]] || exit 2
    [[ $(isoinfo -R -i "$T/a.iso" -x /network-config) == "$(cat "$T/nc")" ]] || exit 3
    isoinfo -R -i "$T/a.iso" -x /meta-data | grep -qx 'local-hostname: h1' || exit 4
    a=$(isoinfo -R -i "$T/a.iso" -x /meta-data | grep instance-id)
    b=$(isoinfo -R -i "$T/b.iso" -x /meta-data | grep instance-id)
    [[ -n $a && $a != "$b" ]] || exit 5
    isoinfo -R -f -i "$T/b.iso" | grep -q network-config && exit 6
    exit 0
)
check "seed ISO: cidata label, user-data/network-config verbatim, fresh instance-id" seed_test

# --- file server + receiver + hooks + cleanup, in a subshell whose EXIT runs vm_cleanup
mkdir -p "$T/repo"
echo "Package: fake" >"$T/repo/Packages"
printf 'fake-brickup-binary' >"$T/brickup"
printf 'fake-csf-tarball' >"$T/csf.tgz"
printf 'secret' >"$T/hmac"
# Stand-in for the future `brickup receive`: checks the argument contract vm_receiver_start
# uses, then runs the placeholder receiver on the given address.
cat >"$T/brickup-standin" <<EOF
#!/bin/sh
[ "\$1" = receive ] && [ "\$2" = --listen ] && [ "\$4" = --out ] && [ "\$6" = --hmac-secret-file ] &&
    [ "\$(cat "\$7")" = secret ] || { echo "bad args: \$*" >&2; exit 2; }
exec python3 "$VM_LIB_DIR/recv-placeholder.py" "\${3#127.0.0.1:}" "\$5"
EOF
chmod +x "$T/brickup-standin"

services_test() (
    vm_init "$T/svc-work" 2>/dev/null
    BRICKUP_BIN=$T/brickup BRICKUP_CSF_TARBALL=$T/csf.tgz vm_serve_setup "$T/repo"
    vm_serve_start 2>/dev/null
    vm_receiver_start "$T/placeholder.out" 2>/dev/null
    placeholder_port=$VM_RECV_PORT
    BRICKUP_BIN=$T/brickup-standin VM_RECEIVER=brickup VM_HMAC_SECRET_FILE=$T/hmac \
        vm_receiver_start "$T/hook.out" 2>/dev/null
    echo "${VM_PIDS[*]}" >"$T/pids"
    for port in "$VM_HTTP_PORT" "$placeholder_port" "$VM_RECV_PORT"; do
        ss -Hltn "sport = :$port" | awk '{print $4}'
    done >"$T/listen"
    guest_get "$VM_HTTP_PORT" /apt/Packages | tail -1 >"$T/got-packages"
    guest_get "$VM_HTTP_PORT" /brickup | tail -1 >"$T/got-brickup"
    guest_get "$VM_HTTP_PORT" /csf.tgz | tail -1 >"$T/got-csf"
    guest_post "$placeholder_port" '{"a": 1}' >/dev/null
    guest_post "$VM_RECV_PORT" '{"b": 2}' >/dev/null
    exit 0
)
services_test
check "file server: /apt/ is the repo (via nc -N, as guestfwd)" grep -qx 'Package: fake' "$T/got-packages"
check "file server: BRICKUP_BIN served as /brickup" grep -qx 'fake-brickup-binary' "$T/got-brickup"
check "file server: BRICKUP_CSF_TARBALL served as /csf.tgz" grep -qx 'fake-csf-tarball' "$T/got-csf"
check "placeholder receiver appended the POST body" grep -qx '{"a": 1}' "$T/placeholder.out"
check "VM_RECEIVER=brickup hook: receive --listen/--out/--hmac-secret-file contract" \
    grep -qx '{"b": 2}' "$T/hook.out"
pids_gone() {
    local pid
    [[ -s $T/pids ]] || return 1
    for pid in $(cat "$T/pids"); do kill -0 "$pid" 2>/dev/null && return 1; done
    return 0
}
check "vm_cleanup killed every host service ($(wc -w <"$T/pids") processes)" pids_gone
check "vm_cleanup removed the work dir after success" test ! -e "$T/svc-work"
listens_only_loopback() {
    [[ $(wc -l <"$T/listen") == 3 ]] && ! grep -v '^127\.0\.0\.1:' "$T/listen"
}
check "host services bind 127.0.0.1 only" listens_only_loopback

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
