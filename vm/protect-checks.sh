#!/usr/bin/env bash
# vm/protect-checks.sh - issue 13's checks of a VM booted by vm/firstboot.sh. Sourced after
# vm/lib.sh (uses pass/fail/check, vm_ssh, VM_FWD, VM_PID, VM_WORK, VM_SSH_PORT):
#
#   protect_prober_start            right after vm_boot: from power-on, every forwarded port is
#                                   asked (once a second) which auth methods it offers
#   protect_prober_stop             once the finished report is in
#   protect_prober_verdict          PASS iff sshd answered at least once and never offered
#                                   "password" or "keyboard-interactive"
#   protect_prober_saw_password     the verdict's control, for a boot whose sshd does offer
#                                   passwords (the lockout case): PASS iff the prober saw it
#   protect_ssh_audit PORT          ssh-audit against vm/ssh-audit/openssh-X.Y.txt (X.Y from the
#                                   banner): zero failures
#   protect_updates                 the updater's timer enabled and active; a dry run of
#                                   unattended-upgrade selects only the security origin
#   protect_hardened_timing         prints the report's sshHardened (by, afterStartMs, uptimeMs)
#
# Wiring in vm/firstboot.sh (ok case; the prober also in the ssh.socket case):
#   source "$(dirname "$0")/protect-checks.sh"
#   vm_boot ...; protect_prober_start
#   ... wait for the finished report ...; protect_prober_stop; protect_prober_verdict
#   protect_ssh_audit "$VM_SSH_PORT"; protect_updates; protect_hardened_timing
# Needs on the host: ssh (OpenSSH client), ssh-audit (Debian package), python3.

PROTECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# protect_probe HOSTPORT GUESTPORT - one probe: "<seconds since power-on> <guest port> <methods>".
# As root with auth "none": an unknown user's "Invalid user" lines would make lfd block the host.
protect_probe() {
    local host_port=$1 guest_port=$2 out methods
    out=$(timeout 8 ssh -v -p "$host_port" -o BatchMode=yes -o PreferredAuthentications=none \
        -o PubkeyAuthentication=no -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=3 root@127.0.0.1 true 2>&1 </dev/null)
    # "debug1: Authentications that can continue: publickey,password\r" - ssh's debug lines end
    # in CR: left in, "password\r" escapes the verdict's "password(,|$)" (the lockout boot's
    # control caught that).
    methods=$(sed -n 's/.*Authentications that can continue: //p' <<<"$out" | tr -d '\r' | head -n1)
    [[ -n $methods ]] || return 0 # nothing answered, or no auth stage reached
    echo "$((SECONDS - VM_BOOT_T0)) $guest_port $methods"
}

# protect_prober_start GUESTPORT... - the forwarded SSH ports to ask (22 and the new one).
protect_prober_start() {
    PROTECT_SSH_PORTS=("$@")
    PROTECT_PROBE_LOG=$VM_WORK/auth-methods.log
    : >"$PROTECT_PROBE_LOG"
    (
        while kill -0 "$VM_PID" 2>/dev/null; do
            for guest in "${PROTECT_SSH_PORTS[@]}"; do
                protect_probe "${VM_FWD[$guest]}" "$guest" >>"$PROTECT_PROBE_LOG"
            done
            sleep 1
        done
    ) &
    PROTECT_PROBER_PID=$!
    vm_track "$PROTECT_PROBER_PID"
}

protect_prober_stop() {
    [[ -n ${PROTECT_PROBER_PID:-} ]] || return 0
    kill "$PROTECT_PROBER_PID" 2>/dev/null
    wait "$PROTECT_PROBER_PID" 2>/dev/null
    PROTECT_PROBER_PID=
}

protect_prober_verdict() {
    local answers bad first
    answers=$(wc -l <"$PROTECT_PROBE_LOG")
    bad=$(grep -E '(^| |,)(password|keyboard-interactive)(,|$)' "$PROTECT_PROBE_LOG")
    first=$(head -n1 "$PROTECT_PROBE_LOG")
    echo "timing: first SSH auth answer ${first%% *} s after power-on ($answers answers recorded)"
    if ((answers == 0)); then
        fail "prober: sshd never answered (log $PROTECT_PROBE_LOG)"
    elif [[ -n $bad ]]; then
        fail "prober: password auth was offered: $(head -n3 <<<"$bad" | tr '\n' ';')"
    else
        pass "prober: $answers answers from power-on to the report, none offered password or keyboard-interactive (first: $first)"
    fi
}

# The control: the same prober, where password auth is offered, must record it.
protect_prober_saw_password() {
    local answers seen
    answers=$(wc -l <"$PROTECT_PROBE_LOG")
    seen=$(grep -E '(^| |,)password(,|$)' "$PROTECT_PROBE_LOG" | head -n1)
    if [[ -n $seen ]]; then
        pass "prober (control): saw password auth offered where sshd offers it ($answers answers; first: $seen)"
    else
        fail "prober (control): password never seen in $answers answers though sshd offers it (log $PROTECT_PROBE_LOG)"
    fi
}

# protect_banner_version HOSTPORT - "9.2" from "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3".
protect_banner_version() {
    timeout 8 python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),5); s.settimeout(5); print(s.recv(256).decode(errors="replace"))' "$1" 2>/dev/null |
        sed -n 's/^SSH-2.0-OpenSSH_\([0-9]*\.[0-9]*\).*/\1/p' | head -n1
}

protect_ssh_audit() {
    local port=$1 version policy out
    version=$(protect_banner_version "$port")
    policy=$PROTECT_DIR/ssh-audit/openssh-$version.txt
    if [[ ! -f $policy ]]; then
        fail "ssh-audit: no policy for OpenSSH '$version' (add vm/ssh-audit/openssh-$version.txt)"
        return
    fi
    out=$(ssh-audit -P "$policy" -p "$port" 127.0.0.1 2>&1)
    if grep -q 'Result: .*Passed' <<<"$out"; then
        pass "ssh-audit: OpenSSH $version passes $(basename "$policy")"
    else
        fail "ssh-audit: OpenSSH $version fails $(basename "$policy"): $(grep -iE 'fail|error|did not match|expected|actual' <<<"$out" | head -n12 | tr '\n' ';')"
    fi
}

protect_updates() {
    check "apt-daily-upgrade.timer enabled and active" \
        vm_ssh 'systemctl is-enabled apt-daily-upgrade.timer && systemctl is-active apt-daily-upgrade.timer'
    # unattended-upgrade logs "Allowed origins are: ..." at its start, dry run or not.
    local out
    out=$(vm_ssh 'unattended-upgrade --dry-run --debug 2>&1 | grep -m1 "Allowed origins are"')
    echo "updates: $out"
    if grep -q 'Debian-Security' <<<"$out" && ! grep -qE 'label=Debian(,|$| )' <<<"$out"; then
        pass "unattended-upgrade selects only the security origin"
    else
        fail "unattended-upgrade origins: $out"
    fi
}

protect_hardened_timing() {
    echo "report: sshHardened $(report_field finished sshHardened)"
}
