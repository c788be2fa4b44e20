#!/usr/bin/env bash
# vm/smoke.sh - boot the harness's Debian image with a plain cloud-init user-data (no brickup
# yet) and check from outside that the pieces the brickup first-boot test builds on work:
# key and password SSH through hostfwd, cloud-init, the local apt repo via guestfwd, the
# callback receiver, restrict=on isolation.
#
# usage: vm/smoke.sh [--suite bookworm|trixie|bullseye] [--ssh-socket]
# env:   VM_KEEP=1 keeps the work dir (serial log, seed, overlay); SMOKE_TIMEOUT (s, default 840)
# Last line: "N passed, N failed"; exit status non-zero on any failure.
set -uo pipefail

SUITE=bookworm
SSH_SOCKET=()
while (($#)); do
    case "$1" in
        --suite) SUITE=$2; shift 2 ;;
        --ssh-socket) SSH_SOCKET=(--ssh-socket); shift ;;
        *) echo "usage: $0 [--suite S] [--ssh-socket]" >&2; exit 2 ;;
    esac
done

# shellcheck source=vm/lib.sh
source "$(dirname "$0")/lib.sh"

# Whole-run watchdog: a hung step can never keep the run alive past SMOKE_TIMEOUT.
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-840}
if [[ -z ${SMOKE_WATCHED:-} ]]; then
    SMOKE_WATCHED=1 timeout --foreground -k 10 "$SMOKE_TIMEOUT" "$0" "$@" "${SSH_SOCKET[@]}" \
        --suite "$SUITE"
    rc=$?
    ((rc == 124)) && echo "smoke: timed out after $SMOKE_TIMEOUT s" && echo "0 passed, 1 failed"
    exit "$rc"
fi

finish() {
    echo "timings: image ${T_IMAGE:-?} s, power-on->ssh ${T_SSH:-?} s," \
        "power-on->cloud-init done ${T_CI:-?} s, guest apt update+install ${T_APT:-?} s"
    echo "$PASS passed, $FAIL failed"
    ((FAIL == 0))
}

vm_require_host_tools || { echo "0 passed, 1 failed"; exit 1; }
vm_init
on_exit() {
    local rc=$?
    ((rc != 0 && FAIL == 0)) && fail "aborted (exit $rc)"
    vm_cleanup "$FAIL"
    finish
    exit $((FAIL > 0))
}
trap on_exit EXIT

t0=$SECONDS
if "$VM_REPO_DIR/image/build-image.sh" "$VM_WORK/disk.qcow2" --suite "$SUITE" "${SSH_SOCKET[@]}"; then
    pass "image built (${SSH_SOCKET[*]:-ssh.service} $SUITE)"
else
    fail "image build"
    exit 1
fi
T_IMAGE=$((SECONDS - t0))
# shellcheck disable=SC1091
source "$VM_WORK/disk.env"

vm_serve_setup "$BRICKUP_IMG_APT_REPO"
vm_serve_start
vm_receiver_start "$VM_WORK/callbacks.jsonl"

# --- user-data: HOOK - the brickup first-boot test replaces this with
#     `brickup render-userdata ...` output (set BRICKUP_USERDATA to use a given file).
PASSWORD="smoke-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
MARKER="marker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
mkdir -p "$VM_WORK/seed"
if [[ -n ${BRICKUP_USERDATA:-} ]]; then
    cp "$BRICKUP_USERDATA" "$VM_WORK/seed/user-data"
else
    if [[ $SUITE == bullseye ]]; then
        chpw="  list: |
    root:$PASSWORD"
    else
        chpw="  users:
    - {name: root, password: $PASSWORD, type: text}"
    fi
    cat >"$VM_WORK/seed/user-data" <<EOF
#cloud-config
disable_root: false
ssh_pwauth: true
ssh_authorized_keys:
  - $(cat "$VM_SSH_KEY.pub")
chpasswd:
  expire: false
$chpw
write_files:
  - path: /etc/ssh/sshd_config.d/10-provider.conf
    permissions: '0644'
    content: |
      # like a typical VPS provider: root may log in with a password
      PermitRootLogin yes
      PasswordAuthentication yes
  - path: /root/brickup-smoke-marker
    permissions: '0600'
    content: |
      $MARKER
runcmd:
  - - sh
    - -c
    - |
      t0=\$(date +%s)
      export DEBIAN_FRONTEND=noninteractive
      { apt-get -o DPkg::Lock::Timeout=600 update &&
        apt-get -o DPkg::Lock::Timeout=600 install -y libwww-perl; } >/var/log/smoke-apt.log 2>&1
      echo "rc=\$? secs=\$((\$(date +%s) - t0))" >/var/log/smoke-apt.result
  - - python3
    - -c
    - |
      import json, urllib.request
      body = json.dumps({"marker": open("/root/brickup-smoke-marker").read().strip()}).encode()
      req = urllib.request.Request("http://$VM_GUEST_RECV_IP/report", data=body,
                                   headers={"Content-Type": "application/json"})
      print(urllib.request.urlopen(req, timeout=30).read().decode())
EOF
fi

vm_boot smoke --image "$VM_WORK/disk.qcow2" --seed-dir "$VM_WORK/seed"

if vm_wait_ssh 300; then
    T_SSH=$((SECONDS - VM_BOOT_T0))
    pass "ssh with key through hostfwd (root@127.0.0.1:$VM_SSH_PORT)"
else
    fail "ssh with key through hostfwd"
    exit 1
fi
check "cloud-init finished without errors" vm_wait_cloud_init 480
T_CI=$((SECONDS - VM_BOOT_T0))
vm_ssh cloud-init status --long >"$VM_WORK/cloud-init-status.txt" 2>&1

check "marker file written by user-data" \
    test "$(vm_ssh cat /root/brickup-smoke-marker)" == "$MARKER"
check "password login (sshpass) works before hardening" \
    test "$(vm_ssh_password "$PASSWORD" echo pw-ok)" == pw-ok
wrong_password_refused() { ! vm_ssh_password "wrong-$PASSWORD" true 2>/dev/null; }
check "wrong password is refused" wrong_password_refused
if [[ ${#SSH_SOCKET[@]} -gt 0 ]]; then
    check "ssh is socket-activated (ssh.socket active, ssh.service disabled)" \
        vm_ssh 'systemctl is-active -q ssh.socket && ! systemctl is-enabled -q ssh.service'
else
    check "ssh.service is active" vm_ssh systemctl is-active -q ssh.service
fi

apt_result=$(vm_ssh cat /var/log/smoke-apt.result 2>/dev/null)
T_APT=$(sed -n 's/.*secs=//p' <<<"$apt_result")
check "apt-get update && install libwww-perl from the local repo (${apt_result:-no result})" \
    test "${apt_result%% *}" == rc=0
check "libwww-perl is installed" vm_ssh "dpkg-query -W -f='\${Status}' libwww-perl | grep -qx 'install ok installed'"
check "guest's only apt source is the local repo" \
    vm_ssh "test \"\$(grep -rhv '^#' /etc/apt/sources.list /etc/apt/sources.list.d/ | grep -v '^\$')\" = 'deb [trusted=yes] http://$VM_GUEST_HTTP_IP/apt ./'"
check "the image lacks csf's other prerequisites (cron unzip bind9-host e2fsprogs)" \
    vm_ssh '! dpkg-query -W -f="\${Status}\n" cron unzip bind9-host e2fsprogs 2>/dev/null | grep -q "ok installed"'
check "every csf prerequisite is downloadable from the local repo" \
    vm_ssh "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --download-only \
        libwww-perl e2fsprogs unzip libio-socket-ssl-perl libnet-libidn-perl libcrypt-ssleay-perl \
        libio-socket-inet6-perl libsocket6-perl cron bind9-host iptables perl >/dev/null"
check "callback receiver got the guest's POST" grep -q "\"marker\": \"$MARKER\"" "$VM_RECV_OUT"
check "restrict=on: guest cannot reach the host's 127.0.0.1 services via 10.0.2.2" \
    vm_ssh "! timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/$VM_HTTP_PORT' 2>/dev/null"
check "guest fetches a served file via guestfwd" \
    vm_ssh "python3 -c 'import urllib.request; urllib.request.urlopen(\"http://$VM_GUEST_HTTP_IP/apt/Release\", timeout=20).read()'"

check "guest powers off cleanly" vm_stop 90
