#!/usr/bin/env bash
# vm/firstboot.sh - a real first boot: a Debian VM under qemu gets user-data made by
# `brickup render-userdata`, real cloud-init runs `brickup firstboot`, and everything is checked
# from outside the VM.
#
# usage: vm/firstboot.sh [--suite bookworm|trixie|bullseye] [--ssh-socket] [--admin-user]
#                        [--case ok|baked|bad-sha|lockout|foreign-fw] [--demo]
#   ok       hardened, reachable, firewall enforcing, report signed and succeeded, csf.service and
#            lfd.service active+enabled, SSHD_LOG written with sshd's failures (what lfd reads),
#            check/rerun/drift repair (incl. a stopped rsyslog), reboot keeps everything; the
#            receiver listens on guest port 8443 (not in csf's default TCP_OUT), so the repair
#            run's report must pass csf's OUTPUT filter; the seed's network-config gives the
#            NIC a global IPv6 address, so csf's IPv6 is on and TCP6_IN is judged from a network
#            namespace in the guest over a veth pair (QEMU forwards IPv4 only), with controls
#   baked    brickup and its two units baked into the image as image/brickup.pkr.hcl bakes them
#            (image/build-image.sh --brickup --unit --unit); the user-data only carries the
#            config: the early unit hardens sshd before it first starts (password never
#            offered, watched from power-on), the first-boot unit does the rest; then the same
#            checks, drift repair and reboot as ok
#   bad-sha  wrong csf sha256: report failed, SSH still reachable, firewall not enforcing
#   lockout  a config that would lock the owner out: refused, password SSH untouched, report why;
#            the power-on prober must see password offered there (its control for the ok case)
#   foreign-fw  the provider left its own iptables ruleset (INPUT DROP, 22 open): brickup refuses
#            before any change, early and in the first-boot run; the report names it, password SSH
#            on 22 untouched, the ruleset still there
#   --admin-user  (ok, baked) the owner logs in as a named user brickup creates (ssh.user: mnadmin,
#            ssh.create_user, sudo nopasswd): the provider also put the key in root's
#            authorized_keys, root is refused, mnadmin's key login works, `sudo -n` works, and
#            every other check runs through mnadmin's sudo
#   --demo   after the checks, print how to log in and keep the VM until Enter is pressed
# csf comes the way users get it: the fixture tarball is served at the upstream release URL's
# path, http://10.0.2.100/Aetherinox/csf-firewall/releases/download/15.10/csf-firewall-v15.10.tgz
# Progress: "[+Ns] ..." stage lines; "timing: ..." lines (vm/test.sh sums them up).
# Last line: "N passed, N failed"; exit status non-zero on any failure.
set -uo pipefail

SUITE=bookworm SSH_SOCKET=() CASE=ok DEMO=0 ADMIN_USER=""
ARGS=("$@")
while (($#)); do
    case "$1" in
        --suite) SUITE=$2; shift 2 ;;
        --ssh-socket) SSH_SOCKET=(--ssh-socket); shift ;;
        --admin-user) ADMIN_USER=mnadmin; shift ;;
        --case) CASE=$2; shift 2 ;;
        --demo) DEMO=1; shift ;;
        *) echo "usage: $0 [--suite S] [--ssh-socket] [--admin-user] [--case ok|baked|bad-sha|lockout|foreign-fw] [--demo]" >&2; exit 2 ;;
    esac
done

# shellcheck source=vm/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=vm/node.sh
source "$(dirname "$0")/node.sh"
# shellcheck source=vm/protect-checks.sh
source "$(dirname "$0")/protect-checks.sh"

# Whole-run watchdog (not in demo mode, which waits for the operator).
FIRSTBOOT_TIMEOUT=${FIRSTBOOT_TIMEOUT:-1500}
if [[ -z ${FIRSTBOOT_WATCHED:-} && $DEMO == 0 ]]; then
    FIRSTBOOT_WATCHED=1 timeout --foreground -k 10 "$FIRSTBOOT_TIMEOUT" "$0" "${ARGS[@]}"
    rc=$?
    ((rc == 124)) && echo "firstboot: timed out after $FIRSTBOOT_TIMEOUT s" && echo "0 passed, 1 failed"
    exit "$rc"
fi

SSH_PORT=2222 MN_PORT=51472 CLOSED_PORT=8080
# IPv6 (ok case): the NIC's global address, set by the provider's network-config as providers
# that hand out a static /64 do (Hetzner); a veth pair in the guest between the node's side
# (V6_LINK) and a peer network namespace (V6_PEER), the IPv6 client (QEMU's hostfwd is IPv4 only).
V6_NIC=2001:db8::10 V6_LINK=2001:db8:6::1 V6_PEER=2001:db8:6::2
# The ok case's receiver listens on a port outside csf's default TCP_OUT: brickup must open it.
# vm_boot forwards the receiver from this guest port, and node_config puts it in the report URL;
# the other cases keep the default (80).
[[ $CASE == ok ]] && export VM_RECV_GUEST_PORT=8443
RUN_T0=$SECONDS

vm_require_host_tools || { echo "0 passed, 1 failed"; exit 1; }
# shellcheck disable=SC2119 # no work dir given: a fresh one
vm_init
on_exit() {
    local rc=$?
    ((rc != 0 && FAIL == 0)) && fail "aborted (exit $rc)"
    [[ -n ${VM_SERIAL_LOG:-} ]] && echo "serial console log: $VM_SERIAL_LOG"
    vm_cleanup "$FAIL"
    echo "$PASS passed, $FAIL failed"
    exit $((FAIL > 0))
}
trap on_exit EXIT

# --- host side: the static binary, the fixture csf, the image, servers ---------------------
cd "$VM_REPO_DIR" || exit 1
vm_stage "case $CASE${SSH_SOCKET:+ (ssh.socket)} on $SUITE: building brickup (cargo build --release, musl; first time a few minutes)"
node_build || exit 1
[[ $CASE == bad-sha ]] && CSF_SHA=$(printf '%064d' 0)
BAKE=()
[[ $CASE == baked ]] && BAKE=(--brickup "$BRICKUP_BIN" --unit image/brickup-early.service --unit image/brickup-firstboot.service)
node_image "$SUITE" "${SSH_SOCKET[@]}" "${BAKE[@]}" || exit 1
node_serve
# shellcheck disable=SC2119 # the default report file
node_receiver

# --- the operator's part: a config and user-data from render-userdata ---------------------
if [[ -n $ADMIN_USER ]]; then
    NODE_SSH_EXTRA="  user: $ADMIN_USER
  create_user:
    groups: [adm]"
fi
node_config "$VM_WORK/brickup.yaml" "$SSH_PORT"
node_render "$VM_WORK/brickup.yaml" "$VM_WORK/user-data" || exit 1
if [[ $CASE == lockout ]]; then
    # An owner who hand-edited the user-data and left no key: render-userdata itself refuses that
    # config, so swap it in afterwards, as a hand-made user-data would carry it.
    sed "s|    - $(cat "$VM_SSH_KEY.pub")||; s|authorized_keys:|authorized_keys: []|" \
        "$VM_WORK/brickup.yaml" >"$VM_WORK/lockout.yaml"
    check "render-userdata refuses the lockout config" \
        bash -c "! '$BRICKUP_BIN' render-userdata --config '$VM_WORK/lockout.yaml' --binary-url http://x/b --binary-sha256 $BIN_SHA >/dev/null 2>&1"
    good=$(base64 -w0 <"$VM_WORK/brickup.yaml")
    bad=$(base64 -w0 <"$VM_WORK/lockout.yaml")
    sed -i "s|$good|$bad|" "$VM_WORK/user-data"
fi
if [[ $CASE == foreign-fw ]]; then
    # A provider's own iptables ruleset, loaded before anything of brickup's runs (the first
    # bootcmd entry, as a netfilter-persistent of the image's would): INPUT policy DROP, 22 open.
    rules="iptables -w -A INPUT -i lo -j ACCEPT; iptables -w -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT; iptables -w -A INPUT -p tcp --dport 22 -j ACCEPT; iptables -w -P INPUT DROP"
    sed -i "s|^bootcmd:\$|bootcmd:\n  - [sh, -c, '$rules']|" "$VM_WORK/user-data"
    check "the provider's ruleset is the first bootcmd entry" grep -q "^  - \[sh, -c, 'iptables -w -A INPUT -i lo" "$VM_WORK/user-data"
fi
if [[ $CASE == baked ]]; then
    # The image has brickup and its unit: the user-data carries only the config.
    printf '#cloud-config\nwrite_files:\n  - path: /etc/brickup/brickup.yaml\n    permissions: %s\n    encoding: b64\n    content: %s\n' \
        "'0600'" "$(base64 -w0 <"$VM_WORK/brickup.yaml")" >"$VM_WORK/user-data"
fi
PROVIDER_CMDS=()
# The provider put the owner's key in root's authorized_keys (as Hetzner does for a chosen key):
# root's refusal is then sshd's PermitRootLogin, not a missing key.
[[ -n $ADMIN_USER ]] &&
    PROVIDER_CMDS+=("[sh, -c, 'mkdir -p -m 700 /root/.ssh && echo \"$(cat "$VM_SSH_KEY.pub")\" >> /root/.ssh/authorized_keys']")
node_provider "$VM_WORK/user-data" "${PROVIDER_CMDS[@]}"
mkdir -p "$VM_WORK/seed"
cp "$VM_WORK/user-data" "$VM_WORK/seed/user-data"
vm_stage "booting the VM (qemu TCG: no KVM here, so everything is slow)"
# The ok case's NIC gets a global IPv6 address (the documentation prefix) from the seed's
# network-config next to DHCPv4, so `firewall.ipv6: auto` turns csf's IPv6 on and TCP6_IN is
# judged (ipv6_checks). (QEMU's own IPv6 router advertisements were tried first, with
# ipv6-net=2001:db8::/64: networkd's wait-online was satisfied by the SLAAC address and the
# guest had no IPv4 address 150 s later, so the binary could not be fetched.)
if [[ $CASE == ok ]]; then
    cat >"$VM_WORK/seed/network-config" <<EOF
version: 1
config:
  - type: physical
    name: ens2
    mac_address: "52:54:00:12:34:56"
    subnets:
      - type: dhcp
      - type: static6
        address: $V6_NIC/64
EOF
fi
vm_boot "node-$CASE" --image "$VM_WORK/disk.qcow2" --seed-dir "$VM_WORK/seed" \
    --hostfwd "$SSH_PORT" --hostfwd "$MN_PORT" --hostfwd "$CLOSED_PORT"
PORT22=${VM_FWD[22]}
# From power-on: which auth methods does any SSH port offer? (render-userdata's bootcmd, or the
# baked image's early unit, hardens sshd before it first starts.)
# The lockout case leaves the provider's password SSH on 22: there the same prober must see
# password offered, or its "never offered" in the ok case would measure nothing.
case $CASE in
    ok | baked) protect_prober_start 22 "$SSH_PORT" ;;
    lockout | foreign-fw) protect_prober_start 22 ;;
esac

# --- wait for the finished report ----------------------------------------------------------
vm_stage "waiting for first boot: cloud-init fetches brickup, brickup hardens sshd, installs csf and its prerequisites, reports (typically 3-6 min)"
deadline=$((SECONDS + 1200)) next=$((SECONDS + 30))
until [[ -n $(report_field finished status) ]] || ((SECONDS > deadline)); do
    kill -0 "$VM_PID" 2>/dev/null || break
    sleep 5
    if ((SECONDS >= next)); then
        next=$((SECONDS + 30))
        vm_stage "  still waiting, $((SECONDS - VM_BOOT_T0)) s since power-on; console: $(serial_tail)"
    fi
done
STATUS=$(report_field finished status)
FIRSTBOOT_S=$((SECONDS - VM_BOOT_T0))
case $CASE in
    ok | baked) protect_prober_stop; protect_prober_verdict ;;
    lockout | foreign-fw) protect_prober_stop; protect_prober_saw_password ;;
esac
echo "report: finished $STATUS after $FIRSTBOOT_S s; error: $(report_field finished error)"
echo "timing: first boot $FIRSTBOOT_S s (power-on -> signed finished report)"
vm_stage "first boot done; checking the node from outside"
if [[ -n $STATUS ]]; then
    pass "signed 'finished' report received (brickup receive verified it)"
else
    fail "no finished report (serial log $VM_SERIAL_LOG)"
    exit 1
fi

no_banner() { ! ssh_banner "$1"; } # no_banner HOSTPORT - nothing answers with an SSH banner
password_refused() { password_refused_at "$VM_SSH_PORT"; }
# password_is_right - control for password_refused: the password the login was refused with is
# root's password in the guest's /etc/shadow (the refusal is not a wrong password's).
password_is_right() {
    # shellcheck disable=SC2016 # perl code
    local script='open my $f, "<", "/etc/shadow" or die "shadow: $!";
while (<$f>) { my ($u, $h) = split /:/; exit(crypt($ARGV[0], $h) eq $h ? 0 : 1) if $u eq "root" }
exit 2;'
    vm_ssh "perl -e $(printf %q "$script") $(printf %q "$PASSWORD")"
}
fetch() { timeout 15 python3 -c 'import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=6).read()' "http://127.0.0.1:$1/" 2>/dev/null; }
not_fetch() { ! fetch "$1"; }
# fetch_inside GUESTPORT - the guest's own server on GUESTPORT answers from inside (loopback).
fetch_inside() {
    vm_ssh "timeout 15 python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:$1/\", timeout=6).read()'"
}
# port22_closed_inside - inside the guest nothing listens on 22, while the SSH port has a
# listener (sshd, or systemd holding ssh.socket): ss itself is shown to see listeners.
port22_closed_inside() {
    local on22 onssh
    on22=$(vm_ssh "ss -Hltnp 'sport = :22'") || { echo "    ss failed in the guest"; return 1; }
    onssh=$(vm_ssh "ss -Hltnp 'sport = :$SSH_PORT'")
    if [[ -z $on22 ]] && grep -qE '"(sshd|systemd)"' <<<"$onssh"; then
        return 0
    fi
    echo "    listening on 22: ${on22:-nothing}"
    echo "    listening on $SSH_PORT: ${onssh:-nothing}"
    return 1
}
# socket_on_new_port - ssh.socket is active and listens where brickup put sshd: its Listen
# property has the SSH port and not 22 (the image's socket listened on 22).
socket_on_new_port() {
    local listen
    listen=$(vm_ssh "systemctl is-active -q ssh.socket && systemctl show -p Listen --value ssh.socket") ||
        { echo "    ssh.socket not active"; return 1; }
    echo "    ssh.socket Listen: $(tr '\n' ' ' <<<"$listen")"
    grep -qE ":$SSH_PORT \(Stream\)" <<<"$listen" && ! grep -qE ':22 \(Stream\)' <<<"$listen"
}
# finished_reports - how many finished reports the receiver has verified so far.
finished_reports() {
    python3 -c 'import json, sys
print(sum(1 for l in open(sys.argv[1]) if l.strip() and json.loads(l).get("event") == "finished"))' "$VM_RECV_OUT"
}
error_mentions() { grep -q "$1" <<<"$(report_field finished error)"; }

# check_converged LABEL - `brickup check` in the guest exits 0; its output is shown otherwise.
check_converged() {
    local out=$VM_WORK/check-${1// /-}.txt
    vm_ssh brickup check >"$out" 2>&1 && return 0
    echo "    brickup check (exit $?):"
    tail -n 20 "$out" | sed 's/^/    /'
    return 1
}
# units_up - csf.service and lfd.service are `active` and `enabled` as systemd sees them.
units_up() {
    local out
    # shellcheck disable=SC2016 # expanded by the guest's shell
    out=$(vm_ssh 'for u in csf.service lfd.service; do echo "$u $(systemctl is-active $u) $(systemctl is-enabled $u)"; done')
    [[ $(grep -cE '^(csf|lfd)\.service active enabled$' <<<"$out") == 2 ]] && return 0
    # shellcheck disable=SC2001 # indent every line
    sed 's/^/    /' <<<"$out"
    vm_ssh 'systemctl status --no-pager -n 5 csf.service lfd.service' 2>&1 | sed 's/^/    /' | tail -n 30
    return 1
}
# SSHD_LOG: the file lfd reads sshd's lines from, as csf.conf says (csf's default on Debian:
# /var/log/auth.log, which only a syslog daemon writes).
SSHD_LOG=""
read_sshd_log() {
    SSHD_LOG=$(vm_ssh "awk -F'\"' '/^SSHD_LOG *=/ {v=\$2} END {print v}' /etc/csf/csf.conf")
    echo "    csf.conf SSHD_LOG = \"$SSHD_LOG\""
    [[ $SSHD_LOG == /* ]]
}
# sshd_log_written - positive control: an auth.info line from logger(1) shows up in SSHD_LOG.
sshd_log_written() {
    local tag="brickup-probe-$RANDOM$RANDOM"
    vm_ssh "logger -p auth.info $tag; for i in \$(seq 15); do grep -qF $tag '$SSHD_LOG' 2>/dev/null && exit 0; sleep 1; done
        ls -l '$SSHD_LOG' >&2; systemctl is-active rsyslog.service syslog.socket >&2; exit 1"
}
ssh-keygen -q -t ed25519 -N '' -C wrong-key -f "$VM_WORK/wrong_key"
# ssh_failure_logged - a login as an unknown user with a key the node does not know, from the
# host, on the new port: refused, and within 15 s SSHD_LOG has sshd's "Invalid user U from IP"
# line (one of the lines lfd counts, FACTS.md) in a syslog line shape lfd parses.
ssh_failure_logged() {
    local user="nosuchuser$RANDOM" re
    if ssh -p "$VM_SSH_PORT" -i "$VM_WORK/wrong_key" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o PreferredAuthentications=publickey -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -o ConnectTimeout=10 "$user@127.0.0.1" true </dev/null 2>/dev/null; then
        echo "    login as $user with a wrong key succeeded?!"
        return 1
    fi
    re='^([0-9]{4}-[0-9]{2}-[0-9]{2}T[^ ]+|[A-Z][a-z]{2} +[0-9]+ [0-9:]{8}) ([^ ]+ )?sshd(-session)?\[[0-9]+\]: Invalid user '$user' from 10\.0\.2\.2( |$)'
    vm_ssh "for i in \$(seq 15); do grep -Eq '$re' '$SSHD_LOG' 2>/dev/null && { grep -E '$re' '$SSHD_LOG' | tail -n1 | sed 's/^/    seen: /'; exit 0; }; sleep 1; done
        echo '    no match for: $re'; grep -a $user '$SSHD_LOG' | sed 's/^/    in SSHD_LOG: /'
        journalctl -q --no-pager -n 5 --grep $user | sed 's/^/    journal: /'; exit 1"
}
# node_sound WHEN - the checks every firewall-enabling case makes at every point.
node_sound() {
    check "csf.service and lfd.service active and enabled ($1)" units_up
    check "brickup check exits 0 ($1)" check_converged "$1"
    check "SSHD_LOG is set in csf.conf ($1)" read_sshd_log
    check "SSHD_LOG ($SSHD_LOG) is being written: logger probe seen ($1)" sshd_log_written
    check "lfd's SSHD_LOG records a failed SSH login as 'Invalid user ... from 10.0.2.2' ($1)" ssh_failure_logged
}

# --- IPv6 (ok case) ------------------------------------------------------------------------
# QEMU's hostfwd carries IPv4 only, so the IPv6 client lives inside the guest: a network
# namespace joined to the node by a veth pair. Its SYNs arrive on the node's veth side like a
# client's on the provider's interface, and csf's ip6tables rules judge them (csf filters every
# interface but lo). probe6 answers "open [first line read]", "timeout" (dropped), "refused" or
# "error ...".
PROBE6_PY='import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except socket.timeout:
    sys.exit(print("timeout"))
except ConnectionRefusedError:
    sys.exit(print("refused"))
except OSError as e:
    sys.exit(print("error %s" % e))
try:
    line = s.recv(64).split(b"\r\n")[0].decode("ascii", "replace")
except socket.timeout:
    line = ""
print(("open " + line).strip())'
# probe6_is PATTERN [--peer] ADDR PORT - the probe's answer (from the peer namespace with --peer,
# else from the node itself) matches the glob PATTERN; the answer is shown otherwise.
probe6_is() {
    local want=$1 ns="" got
    shift
    [[ $1 == --peer ]] && { ns="ip netns exec bu6"; shift; }
    got=$(vm_ssh "$ns python3 /root/probe6.py $1 $2")
    # shellcheck disable=SC2053 # a glob on purpose
    [[ $got == $want ]] && return 0
    echo "    [$1]:$2 answered '${got:-nothing}', expected '$want'"
    return 1
}
# tcp6_in_ok - csf.conf's TCP6_IN holds the SSH and masternode ports and neither 22 nor the
# closed port.
tcp6_in_ok() {
    local v
    v=$(vm_ssh "sed -n 's/^TCP6_IN *= *\"\(.*\)\"/\1/p' /etc/csf/csf.conf")
    echo "    TCP6_IN = \"$v\""
    v=",$v,"
    [[ $v == *",$SSH_PORT,"* && $v == *",$MN_PORT,"* && $v != *",22,"* && $v != *",$CLOSED_PORT,"* ]]
}
ipv6_checks() {
    vm_stage "IPv6: csf's TCP6_IN judged from a peer network namespace inside the guest"
    check "control: the NIC has its global IPv6 address $V6_NIC (the seed's network-config)" \
        vm_ssh "ip -6 -o addr show scope global | grep -q ' $V6_NIC/64'"
    check "csf's IPv6 is on (firewall.ipv6: auto saw the global address): IPV6 = \"1\", ip6tables INPUT policy DROP" \
        vm_ssh "grep -qx 'IPV6 = \"1\"' /etc/csf/csf.conf && ip6tables -S INPUT | grep -qx -- '-P INPUT DROP'"
    check "TCP6_IN holds $SSH_PORT and $MN_PORT, not 22 or $CLOSED_PORT" tcp6_in_ok
    # The peer reaches the NIC's address through the veth (its default route): the SYNs arrive
    # on bu6-node with the node's public address as destination.
    check "a peer network namespace joined to the node by a veth pair ($V6_PEER -> $V6_LINK)" \
        vm_ssh "echo $(base64 -w0 <<<"$PROBE6_PY") | base64 -d >/root/probe6.py &&
            ip netns add bu6 && ip link add bu6-node type veth peer name bu6-peer netns bu6 &&
            ip addr add $V6_LINK/64 dev bu6-node nodad && ip link set bu6-node up &&
            ip -n bu6 addr add $V6_PEER/64 dev bu6-peer nodad && ip -n bu6 link set bu6-peer up &&
            ip -n bu6 link set lo up && ip -n bu6 -6 route add default via $V6_LINK"
    check "over IPv6 from the peer: sshd answers on [$V6_NIC]:$SSH_PORT (TCP6_IN)" \
        probe6_is "open SSH-2.0-*" --peer "$V6_NIC" "$SSH_PORT"
    check "over IPv6 from the peer: the masternode port $MN_PORT answers (TCP6_IN)" \
        probe6_is "open*" --peer "$V6_NIC" "$MN_PORT"
    check "control: the server on $CLOSED_PORT answers on [$V6_NIC] from the node itself" \
        probe6_is "open*" "$V6_NIC" "$CLOSED_PORT"
    check "port $CLOSED_PORT (not in TCP6_IN) is dropped over IPv6 from the peer (its SYN times out)" \
        probe6_is timeout --peer "$V6_NIC" "$CLOSED_PORT"
    accept6() { vm_ssh "ip6tables -w $1 INPUT -p tcp --dport $CLOSED_PORT -j ACCEPT"; }
    accept6 -I
    check "control: with an ACCEPT for $CLOSED_PORT inserted by hand the peer reaches it (the drop is ip6tables', not the path's)" \
        probe6_is "open*" --peer "$V6_NIC" "$CLOSED_PORT"
    accept6 -D
    check "port 22 over IPv6 from the peer: dropped, no answer" probe6_is timeout --peer "$V6_NIC" 22
    vm_ssh "ip netns del bu6; rm -f /root/probe6.py"
}

# --- the named admin user (--admin-user) ---------------------------------------------------
# root_key_refused - root's key login is refused by sshd (Permission denied, publickey offered),
# with the same key that logs mnadmin in.
root_key_refused() {
    local err
    err=$(vm_ssh_as root true 2>&1) && { echo "    root logged in with the key"; return 1; }
    grep -q 'Permission denied' <<<"$err" && return 0
    echo "    root login failed otherwise: $(tr '\n' ' ' <<<"$err" | cut -c1-200)"
    return 1
}
# admin_is_itself - a key login as the admin user, without sudo, runs as that user (not uid 0).
admin_is_itself() {
    local who
    who=$(vm_ssh_as "$ADMIN_USER" 'echo "$(id -un) $(id -u)"')
    echo "    id: $who"
    [[ $who == "$ADMIN_USER "[1-9]* ]]
}
admin_user_checks() {
    local key
    key=$(awk '{print $2}' "$VM_SSH_KEY.pub")
    check "key login as $ADMIN_USER gives a shell as $ADMIN_USER itself (uid not 0)" admin_is_itself
    check "sudo -n true works for $ADMIN_USER (sudo: nopasswd, the default)" vm_ssh_as "$ADMIN_USER" "sudo -n true"
    check "$ADMIN_USER's password is locked (no password login possible)" \
        vm_ssh "passwd -S $ADMIN_USER | awk '{exit \$2 == \"L\" ? 0 : 1}'"
    check "control: root's authorized_keys holds the owner's key (the provider put it there)" \
        vm_ssh "grep -qF '$key' /root/.ssh/authorized_keys"
    check "the key goes to $ADMIN_USER's authorized_keys" vm_ssh "grep -qF '$key' /home/$ADMIN_USER/.ssh/authorized_keys"
    check "sshd refuses root (sshd -T: permitrootlogin no)" vm_ssh "sshd -T | grep -qx 'permitrootlogin no'"
    check "root's key login is refused by sshd" root_key_refused
}

case "$CASE" in
lockout)
    check "report says failed" test "$STATUS" == '"failed"'
    check "report says why (locked out)" error_mentions "locked out"
    VM_SSH_PORT=$PORT22
    check "password SSH on port 22 untouched" test "$(vm_ssh_password "$PASSWORD" echo pw-ok)" == pw-ok
    check "no brickup drop-in was written" vm_ssh_password "$PASSWORD" "! test -e /etc/ssh/sshd_config.d/00-brickup.conf"
    ;;
foreign-fw)
    # Refused before any change (early and again in the first-boot run): the owner keeps the
    # image's way in, and the report says what was found.
    check "report says failed" test "$STATUS" == '"failed"'
    check "report names the provider's ruleset" error_mentions "packet filters brickup does not manage"
    VM_SSH_PORT=$PORT22
    check "password SSH on port 22 untouched" test "$(vm_ssh_password "$PASSWORD" echo pw-ok)" == pw-ok
    check "no brickup drop-in was written" vm_ssh_password "$PASSWORD" "! test -e /etc/ssh/sshd_config.d/00-brickup.conf"
    check "the provider's ruleset still stands (INPUT policy DROP)" vm_ssh_password "$PASSWORD" "iptables -w -S INPUT | grep -qx -- '-P INPUT DROP'"
    ;;
bad-sha)
    check "report says failed" test "$STATUS" == '"failed"'
    check "report names the sha256 mismatch" error_mentions "sha256 mismatch"
    VM_SSH_PORT=${VM_FWD[$SSH_PORT]}
    check "SSH with the key still works (new port)" vm_wait_ssh 120
    check "firewall not enforcing (INPUT policy ACCEPT, csf not installed)" \
        vm_ssh "iptables -S INPUT | grep -qx -- '-P INPUT ACCEPT' && ! test -e /usr/sbin/csf"
    check "report's firewall state is off" test "$(report_field finished firewall)" == '"off"'
    check "a failed first boot is not recorded as done" vm_ssh "! test -e /var/lib/brickup/firstboot-done"
    ;;
ok | baked)
    check "report says succeeded" test "$STATUS" == '"succeeded"'
    if [[ $STATUS != '"succeeded"' ]]; then
        # Everything below would fail in cascade (and wait minutes for SSH): show why instead.
        echo "    brickup's errors and failed units on the console:"
        sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$VM_SERIAL_LOG" | grep -aE 'ERROR|WARN|FAILED|Failed to|failed  ' |
            cut -c1-240 | tail -n 20 | sed 's/^/    /'
        exit 1
    fi
    check "report's firewall state is enforcing" test "$(report_field finished firewall)" == '"enforcing"'
    check "report's SSH port is $SSH_PORT" test "$(report_field finished sshPort)" == "$SSH_PORT"
    VM_SSH_PORT=${VM_FWD[$SSH_PORT]}
    [[ -z $ADMIN_USER ]] || VM_SSH_USER=$ADMIN_USER
    check "SSH with the key works on port $SSH_PORT (as $VM_SSH_USER)" vm_wait_ssh 120
    [[ -z $ADMIN_USER ]] || admin_user_checks
    if [[ $CASE == ok ]]; then
        protect_ssh_audit "$VM_SSH_PORT"
        protect_updates
        protect_hardened_timing
    fi
    keyscan_matches() {
        local seen f keys
        seen=$(ssh-keyscan -p "$VM_SSH_PORT" 127.0.0.1 2>/dev/null | ssh-keygen -lf - | awk '{print $2}' | sort -u)
        keys=$(report_field finished hostKeys)
        [[ -n $seen ]] || return 1
        for f in $seen; do grep -qF "$f" <<<"$keys" || return 1; done
    }
    check "host key fingerprints in the report match what ssh sees" keyscan_matches
    check "control: the password tried is root's password in the guest's /etc/shadow" password_is_right
    check "password login refused by sshd (Permission denied, no password method) though the provider enabled it" password_refused
    check "port 22 no longer answers from outside (control: $SSH_PORT answers the same probe)" no_banner_but "$PORT22" "$VM_SSH_PORT"
    check "inside the guest nothing listens on 22; something (sshd/ssh.socket) listens on $SSH_PORT" port22_closed_inside
    if [[ ${#SSH_SOCKET[@]} -gt 0 ]]; then
        check "still socket-activated: ssh.socket active and listening on $SSH_PORT, not 22" socket_on_new_port
    fi
    if [[ $CASE == baked ]]; then
        check "the baked unit did the first boot" \
            vm_ssh "journalctl -b -u brickup-firstboot.service | grep -q 'first boot of this instance'"
        check "the baked early unit hardened sshd before it started" \
            vm_ssh "journalctl -b -u brickup-early.service | grep -q 'applying step=sshd' && test -s /var/lib/brickup/firstboot-early.json"
    fi
    # --bind ::  - one dual-stack socket (IPv4 too): the IPv6 checks need them on IPv6, where
    # python's default (0.0.0.0) would leave them refused.
    vm_ssh "nohup python3 -m http.server --bind :: $MN_PORT >/dev/null 2>&1 & nohup python3 -m http.server --bind :: $CLOSED_PORT >/dev/null 2>&1 &"
    # Both must listen before the firewall is judged (python starts slowly on a loaded host).
    vm_ssh "timeout 60 sh -c 'until ss -Hltn | grep -q :$MN_PORT && ss -Hltn | grep -q :$CLOSED_PORT; do sleep 1; done'" ||
        echo "    test servers in the guest not listening after 60 s"
    check "masternode port $MN_PORT (in TCP_IN) is reachable" fetch "${VM_FWD[$MN_PORT]}"
    check "control: the server on $CLOSED_PORT answers from inside the guest" fetch_inside "$CLOSED_PORT"
    check "port $CLOSED_PORT (not in TCP_IN) is filtered from outside" not_fetch "${VM_FWD[$CLOSED_PORT]}"
    check "csf TESTING is 0 and INPUT policy is DROP" \
        vm_ssh "grep -qx 'TESTING = \"0\"' /etc/csf/csf.conf && iptables -S INPUT | grep -qx -- '-P INPUT DROP'"
    [[ $CASE == ok ]] && ipv6_checks
    # Right after first boot, before anything is rerun.
    node_sound "after first boot"
    vm_stage "rerun and drift repair"
    apply_json=$(vm_ssh brickup apply --json 2>/dev/null)
    unchanged_rerun() { # the steps that changed are named on failure
        python3 -c 'import json, sys
d = json.loads(sys.argv[1] or "{}")
if d.get("changed") is False and d.get("status") == "succeeded":
    sys.exit(0)
print("    status %s; changed: %s" % (d.get("status"), [(s.get("name"), s.get("message")) for s in d.get("steps", []) if s.get("outcome") != "unchanged"]))
sys.exit(1)' "$1"
    }
    check "a second apply changes nothing" unchanged_rerun "$apply_json"
    # Drift: an early drop-in turning passwords back on, csf back in TESTING, and SSHD_LOG's
    # writer gone (rsyslog and its socket stopped: lfd would be blind).
    vm_ssh "printf 'PasswordAuthentication yes\\n' > /etc/ssh/sshd_config.d/00-aaa-drift.conf && sed -i 's/^TESTING = \"0\"/TESTING = \"1\"/' /etc/csf/csf.conf && systemctl stop syslog.socket rsyslog.service"
    vm_ssh brickup check >"$VM_WORK/drift.txt" 2>&1
    drift_rc=$? fails_before=$FAIL
    check "injected drift makes check exit 1 (exit $drift_rc)" test "$drift_rc" == 1
    check "drift report names passwordauthentication" grep -q passwordauthentication "$VM_WORK/drift.txt"
    check "drift report names TESTING" grep -q TESTING "$VM_WORK/drift.txt"
    check "drift report names SSHD_LOG or syslog (rsyslog stopped)" grep -qiE 'SSHD_LOG|syslog' "$VM_WORK/drift.txt"
    ((FAIL == fails_before)) || sed 's/^/    drift: /' "$VM_WORK/drift.txt" | tail -n 25
    # The repair, measured: a full live apply (sshd restart, csf enable sequence).
    reports_before=$(finished_reports)
    bench=$(vm_ssh "python3 -c 'import resource, subprocess, time
t = time.monotonic()
rc = subprocess.run([\"brickup\", \"apply\"], stdout=subprocess.DEVNULL, stderr=open(\"/root/repair-apply.log\", \"w\")).returncode
print(f\"rc={rc} wall_s={time.monotonic() - t:.1f} peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\")'")
    echo "benchmark: repair apply in the VM: $bench"
    check "apply repairs the drift" test "${bench%% *}" == rc=0 || true
    [[ ${bench%% *} == rc=0 ]] || vm_ssh "tail -n 25 /root/repair-apply.log"
    check "rsyslog running again after the repair" vm_ssh "systemctl is-active -q rsyslog.service"
    if [[ $CASE == ok ]]; then
        # The repair ran with csf enforcing (OUTPUT policy DROP): its report reached the receiver
        # on guest port $VM_RECV_GUEST_PORT only because brickup put that port in TCP_OUT.
        check "csf filters OUTPUT (policy DROP) and TCP_OUT has the report's port $VM_RECV_GUEST_PORT" \
            vm_ssh "iptables -S OUTPUT | grep -qx -- '-P OUTPUT DROP' && grep -E '^TCP_OUT *=' /etc/csf/csf.conf | grep -qE '[\",]${VM_RECV_GUEST_PORT}[\",]'"
        repair_report() {
            local n _
            for _ in $(seq 20); do
                n=$(finished_reports)
                ((n > reports_before)) && break
                sleep 1
            done
            echo "    finished reports: $reports_before before the repair, $n after; last status $(report_field finished status)"
            ((n > reports_before)) && [[ $(report_field finished status) == '"succeeded"' ]]
        }
        check "the repair run's finished report (sent while csf enforces) reached the receiver on guest port $VM_RECV_GUEST_PORT" repair_report
    fi
    node_sound "after the repair"
    check "password login still refused after the repair" password_refused
    # Reboot: everything stays, and firstboot does not redo the work.
    vm_stage "rebooting the VM"
    vm_ssh "systemctl reboot" >/dev/null 2>&1
    sleep 15
    VM_BOOT_T0=$((SECONDS - 15))
    check "SSH with the key on port $SSH_PORT after reboot" vm_wait_ssh 300
    # At boot sshd can answer a few seconds before csf.service has loaded the rules.
    vm_ssh "timeout 120 sh -c 'until systemctl is-active -q csf.service && systemctl is-active -q lfd.service; do sleep 2; done'"
    REBOOT_S=$((SECONDS - VM_BOOT_T0))
    echo "timing: reboot $REBOOT_S s (reboot -> SSH on $SSH_PORT, csf and lfd active)"
    check "firewall still enforcing after reboot" \
        vm_ssh "iptables -S INPUT | grep -qx -- '-P INPUT DROP' && grep -qx 'TESTING = \"0\"' /etc/csf/csf.conf"
    check "firstboot did not run the work again" \
        vm_ssh "journalctl -b -u brickup-firstboot.service | grep -q 'already done'"
    check "port 22 still closed after reboot (control: $SSH_PORT answers the same probe)" no_banner_but "$PORT22" "$VM_SSH_PORT"
    node_sound "after reboot"
    ;;
*) fail "unknown case $CASE" ;;
esac
echo "timing: whole run $((SECONDS - RUN_T0)) s"
vm_stage "checks done"

if [[ $DEMO == 1 && $FAIL == 0 ]]; then
    echo
    echo "The VM is hardened. Its last report, as received and verified by brickup receive:"
    tail -n1 "$VM_RECV_OUT" | python3 -m json.tool | head -40
    echo
    echo "Log in with:"
    echo "  ssh -i $VM_SSH_KEY -p $VM_SSH_PORT -o UserKnownHostsFile=/dev/null $VM_SSH_USER@127.0.0.1"
    echo "Serial console log: $VM_SERIAL_LOG"
    read -r -p "Press Enter to stop the VM... " _ || true
fi
