#!/usr/bin/env bash
# vm/faults.sh - the fault matrix: power cuts, kills and failures injected into real brickup
# runs in a Debian VM under qemu, each checked from outside. brickup has no hooks for this:
# the harness watches the guest's journal for brickup's `applying step=NAME` line (or the sshd
# drop-in on disk) and acts - QMP system_reset, SIGKILL, a port taken, a package that is not
# there, a full disk, a held dpkg lock, a receiver that is down.
#
# usage: vm/faults.sh [--full] [--boots LIST]   (BRICKUP_VM_FULL=1 is --full)
#   --boots: which boots to run, of "power lock disk" (default: power; --full: all three)
#
# Boots (default set: cases 1, 3, 4, 5 and the runtime lockout guard):
#   power    first boot from user-data; a power cut (QMP system_reset) at the first key login,
#            while what cloud-init wrote seconds before (brickup's config, host keys, the unit)
#            is still in the page cache; then while dpkg runs in `packages` [1]; --full also
#            during `csf-install` and the firewall enable [2]. The boot after the last cut must
#            converge. Its disk, powered off, is the golden disk.
#   rerun    a qcow2 overlay of the golden disk; reruns of `brickup apply` with faults:
#            the new port taken before the run [5]; the runtime lockout guard, twice, with a port
#            change: the host denying the user (DenyUsers), and the new port reading keys from a
#            file brickup never writes (Match LocalPort); a port move plus a package that does not
#            exist [4]; SIGKILL between writing the sshd drop-in and the restart [3]; the new
#            port taken after preflight, so sshd's restart cannot bind it
#   --full adds two first boots:
#   lock     the dpkg lock held by another apt-like process at boot [7], and the report
#            receiver down for the whole first boot, then back [8]
#   disk     a power cut in the first `apt-get update` [1], the disk full from the moment
#            `csf-install` starts [9], then csftest FATAL [6]
# After every fault, from the host: a key login works on the old or the new port (else it is a
# LOCKOUT), password login gets "Permission denied" on every answering port, sshd listens and
# csf's TCP_IN opens no port the config did not ask for, the report tells the truth, and a plain
# rerun converges (`brickup check` exit 0).
# Prints each case's time against its budget and, last but one, "fault matrix: N faults injected, N lockouts,
# N converged on rerun"; last line "N passed, N failed". Non-zero exit on a lockout or any failed
# check.
# shellcheck disable=SC2016 # single-quoted commands are expanded by the guest's shell
set -uo pipefail

FULL=${BRICKUP_VM_FULL:-0} BOOTS=""
ARGS=("$@")
while (($#)); do
    case "$1" in
        --full) FULL=1; shift ;;
        --boots) BOOTS=$2; shift 2 ;;
        *) echo "usage: $0 [--full] [--boots 'power lock disk']" >&2; exit 2 ;;
    esac
done
[[ -n $BOOTS ]] || BOOTS=$([[ $FULL == 1 ]] && echo "power lock disk" || echo power)

# shellcheck source=vm/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=vm/node.sh
source "$(dirname "$0")/node.sh"

FAULTS_TIMEOUT=${FAULTS_TIMEOUT:-$((FULL == 1 ? 5400 : 2700))}
if [[ -z ${FAULTS_WATCHED:-} ]]; then
    FAULTS_WATCHED=1 timeout --foreground -k 10 "$FAULTS_TIMEOUT" "$0" "${ARGS[@]}"
    rc=$?
    ((rc == 124)) && echo "faults: timed out after $FAULTS_TIMEOUT s" && echo "0 passed, 1 failed"
    exit "$rc"
fi

SSH_PORT=2222 MN_PORT=51472
FAULTS=0 LOCKOUTS=0 CONVERGED=0 RUN_T0=$SECONDS
CASE_TIMES=()

vm_require_host_tools || { echo "0 passed, 1 failed"; exit 1; }
# shellcheck disable=SC2119 # no work dir given: a fresh one
vm_init
on_exit() {
    local rc=$?
    ((rc != 0 && FAIL == 0)) && fail "aborted (exit $rc)"
    echo "faults: per case:"
    printf '  %s\n' "${CASE_TIMES[@]}"
    echo "timing: whole fault matrix $((SECONDS - RUN_T0)) s"
    echo "fault matrix: $FAULTS faults injected, $LOCKOUTS lockouts, $CONVERGED converged on rerun"
    vm_cleanup "$FAIL"
    echo "$PASS passed, $FAIL failed"
    exit $((FAIL > 0 || LOCKOUTS > 0))
}
trap on_exit EXIT

# case_begin NAME BUDGET ... case_end: each case's time against its budget (seconds measured
# here on 2 busy cores, with room; a case over budget is flagged, not failed: CI load varies).
CASE_NAME="" CASE_T0=0 CASE_BUDGET=0
case_begin() {
    CASE_NAME=$1 CASE_BUDGET=$2 CASE_T0=$SECONDS
    vm_stage "case: $1 (budget $2 s)"
}
case_end() {
    local secs=$((SECONDS - CASE_T0)) over=""
    ((secs <= CASE_BUDGET)) || over="  OVER BUDGET"
    CASE_TIMES+=("$(printf '%-62s %5d s  budget %5d s%s' "$CASE_NAME" "$secs" "$CASE_BUDGET" "$over")")
    echo "timing: case $CASE_NAME $secs s (budget $CASE_BUDGET s)$over"
}

# --- talking to the guest, port by port (guest port -> its host forward) ---------------------
on_port() { # on_port GUESTPORT CMD... - vm_ssh through that port
    local p=$1
    shift
    VM_SSH_PORT=${VM_FWD[$p]} vm_ssh "$@"
}
on_port_again() { # like on_port, asked again when ssh itself fails (255: a run restarting sshd)
    local rc try
    for try in 1 2 3 4 5; do
        on_port "$@"
        rc=$?
        ((rc == 255)) || return "$rc"
        echo "    (ssh through port $1 failed, try $try)" >&2
        sleep 3
    done
    return "$rc"
}
on_port_stdin() { # like on_port, with the caller's stdin
    local p=$1
    shift
    # shellcheck disable=SC2046
    ssh $(VM_SSH_PORT=${VM_FWD[$p]} vm_ssh_opts) -o BatchMode=yes -o IdentitiesOnly=yes \
        -i "$VM_SSH_KEY" root@127.0.0.1 "$@"
}
key_login() { on_port "$1" true 2>/dev/null; }
wait_key() { # wait_key GUESTPORT SECS - until a key login works there
    local deadline=$((SECONDS + $2))
    until key_login "$1"; do
        ((SECONDS < deadline)) && kill -0 "$VM_PID" 2>/dev/null || return 1
        sleep 5
    done
}
banner() { ssh_banner "${VM_FWD[$1]}"; } # banner GUESTPORT - an SSH banner answers through the forward
no_banner() { ! banner "$1"; }
# no_banner_but GUESTPORT CONTROL - as node.sh's, by guest ports through their forwards
faults_no_banner_but() { no_banner_but "${VM_FWD[$1]}" "${VM_FWD[$2]}"; }
password_refused() { password_refused_at "${VM_FWD[$1]}"; } # password_refused GUESTPORT
push_helper() { # (again, while a run restarts sshd)
    local try
    for try in 1 2 3 4 5; do
        on_port_stdin "$1" 'cat > /root/fault.py' <"$VM_LIB_DIR/fault-guest.py" && return 0
        sleep 3
    done
    return 1
}
put_config() { # put_config VIA PORT [YAML] - the node's brickup.yaml, with SSH on PORT
    node_config "$VM_WORK/node.yaml" "$2" "${3:-}"
    on_port_stdin "$1" 'umask 077; cat > /etc/brickup/brickup.yaml' <"$VM_WORK/node.yaml"
}
# guest_apply VIA LABEL - `brickup apply` in the guest; output in $VM_WORK/LABEL.log; prints rc
guest_apply() {
    on_port "$1" brickup apply >"$VM_WORK/$2.log" 2>&1
    echo $?
}
show_log() { tail -n 12 "$1" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'; }

# ports_within VIA ALLOWED... - sshd listens, and csf's TCP_IN (and TCP6_IN when csf's IPV6 is
# on: else csf loads no IPv6 rules) open, only ALLOWED SSH ports (csf's other entries must be
# the masternode port). csf's lists count while csf holds rules (INPUT DROP); before that a
# failed first boot leaves the node as the provider gave it, which the cases check apart.
ports_within() {
    local via=$1 out try
    shift
    # A run going on may restart sshd under the harness's login (kex closed): asked again. The
    # login may also have been served by the early run's proof sshd (a boot after a cut runs the
    # early stage again), whose listener is gone before ssh.service first starts: no sshd line
    # yet is asked again too, and stays a failure after the last try.
    for try in 1 2 3 4 5 6 7 8 9 10; do
        out=$(on_port "$via" "ss -Hltnp | awk '/\"sshd\"/ {n=split(\$4,a,\":\"); print \"sshd\", a[n]}' | sort -u
        keys=TCP_IN; grep -qx 'IPV6 = \"1\"' /etc/csf/csf.conf 2>/dev/null && keys='TCP_IN TCP6_IN'
        iptables -S INPUT | grep -qx -- '-P INPUT DROP' || keys=''
        for k in \$keys; do awk -F'\"' -v k=\$k '\$0 ~ \"^\"k\" *=\" {print k, \$2}' /etc/csf/csf.conf 2>/dev/null; done
        true") && grep -q '^sshd ' <<<"$out" && break
        echo "    (no answer through port $via, or no sshd listening yet: try $try)"
        sleep 3
    done
    python3 - "$out" "$MN_PORT" "$@" <<'PY'
import sys
out, mn, allowed = sys.argv[1], sys.argv[2], set(sys.argv[3:])
bad = []
for line in out.splitlines():
    what, _, val = line.partition(" ")
    ports = set(p.strip() for p in val.split(",") if p.strip())
    extra = ports - allowed - ({mn} if what != "sshd" else set())
    if extra:
        bad.append("%s has %s" % (what, sorted(extra)))
    if what == "sshd" and not ports:
        bad.append("sshd listens nowhere")
if bad or not out.strip():
    print("    allowed %s (+%s in csf); seen: %s" % (sorted(allowed), mn, "; ".join(bad) or repr(out)))
    sys.exit(1)
PY
}

# after_fault LABEL ALLOWED... - the invariant after any fault. Sets WORKING to a port whose key
# login works; counts a lockout when none works within 600 s.
after_fault() {
    local label=$1 p deadline=$((SECONDS + 600))
    shift
    WORKING=""
    while [[ -z $WORKING ]] && ((SECONDS < deadline)); do
        for p in "$@"; do key_login "$p" && { WORKING=$p; break; }; done
        [[ -n $WORKING ]] || { kill -0 "$VM_PID" 2>/dev/null || break; sleep 5; }
    done
    if [[ -z $WORKING ]]; then
        LOCKOUTS=$((LOCKOUTS + 1))
        fail "$label: LOCKOUT - no key login on port(s) $* within 600 s (serial log $VM_SERIAL_LOG)"
        echo "    the console's last lines about ssh, brickup and the boot:"
        grep -aiE 'ssh|brickup|cloud-init|Reached target|Failed' "$VM_SERIAL_LOG" 2>/dev/null | tail -n 40 |
            sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | tr -cd '[:print:]\n' | cut -c1-200 | sed 's/^/    | /'
        return 1
    fi
    pass "$label: key login works on port $WORKING"
    # The port the key works on is always asked (a banner probe that catches sshd restarting
    # must not skip it); any other port when it answers.
    for p in "$@"; do
        [[ $p == "$WORKING" ]] || banner "$p" || continue
        check "$label: password login refused on port $p (Permission denied)" password_refused "$p"
    done
    check "$label: sshd and csf open no SSH port beyond $*" ports_within "$WORKING" "$@"
}

# converges VIA LABEL [AFTER] - a plain rerun through port VIA: `brickup apply` exits 0 and
# `brickup check` then 0 (through port AFTER when the rerun moved SSH there).
converges() {
    local rc after=${3:-$1}
    rc=$(guest_apply "$1" "$2-rerun")
    if [[ $rc != 0 ]]; then
        fail "$2: the plain rerun converges (apply exit $rc)"
        show_log "$VM_WORK/$2-rerun.log"
        return 1
    fi
    if on_port "$after" brickup check >"$VM_WORK/$2-check.log" 2>&1; then
        CONVERGED=$((CONVERGED + 1))
        pass "$2: the plain rerun converges (apply 0, check 0)"
    else
        fail "$2: check after the rerun exits 0"
        show_log "$VM_WORK/$2-check.log"
        return 1
    fi
}
# refused LABEL LOG SETUP UNDO RC LOG_NEEDLE [REPORT_NEEDLE] - after SETUP (a guest command),
# a rerun moving SSH to 2200 is refused before any change: exit RC ("any": non-zero),
# LOG_NEEDLE in its output and REPORT_NEEDLE in the finished report; sshd's config, csf.conf
# and sshd's pid unchanged; the key still works and no password; then UNDO, the config back
# on the SSH port, and a plain rerun converges.
refused() {
    local label=$1 log=$2 setup=$3 undo=$4 want=$5 needle=$6 report=${7:-} rc before
    on_port "$SSH_PORT" "$setup"
    before=$(fingerprint "$SSH_PORT")
    put_config "$SSH_PORT" 2200
    rc=$(guest_apply "$SSH_PORT" "$log")
    FAULTS=$((FAULTS + 1))
    if [[ $want == any ]]; then
        check "$label: apply fails (exit $rc)" test "$rc" != 0
    else
        check "$label: apply refuses with exit $want (got $rc)" test "$rc" == "$want"
    fi
    check "$label: the refusal names $needle" grep -qF -- "$needle" "$VM_WORK/$log.log"
    ((rc != 0)) || show_log "$VM_WORK/$log.log"
    check "$label: nothing changed (sshd config, csf.conf, sshd not restarted)" \
        test "$(fingerprint "$SSH_PORT")" == "$before"
    [[ -z $report ]] || check "$label: the report says failed and why" report_says failed "$report"
    after_fault "$label" "$SSH_PORT"
    on_port "$SSH_PORT" "$undo"
    put_config "$SSH_PORT" "$SSH_PORT"
    converges "$SSH_PORT" "$log"
}
one_finished_report() { # exactly one finished report stored; else what each one says
    [[ $(reports_count finished) == 1 ]] && return 0
    python3 - "$VM_RECV_OUT" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l) if l.strip() else {}
    if d.get("event") == "finished":
        print("    finished:", d.get("status"), "started", d.get("startedAt"), "finished", d.get("finishedAt"), d.get("error") or "")
PY
    return 1
}
report_says() { # report_says STATUS [TEXT] - the last finished report's status (and error text)
    [[ $(report_field finished status) == "\"$1\"" ]] || { echo "    last finished: $(report_field finished status) $(report_field finished error)"; return 1; }
    [[ -z ${2:-} ]] || grep -qF -- "$2" <<<"$(report_field finished error)" ||
        { echo "    error: $(report_field finished error)"; return 1; }
}
not_listening_inside() { # not_listening_inside VIA PORT - control: ss shows the listener on VIA
    on_port "$1" "ss -Hltn | awk '{print \$4}' | grep -qE ':$1\$' ||
        { echo '    control failed: ss shows no listener on $1, the port this login came through'; exit 1; }
        ! ss -Hltn | awk '{print \$4}' | grep -qE ':$2\$'"
}
fingerprint() { # what must not change when brickup refuses: the sshd config, csf.conf, sshd's pid
    on_port "$1" 'cat /etc/ssh/sshd_config.d/*.conf /etc/csf/csf.conf | sha256sum; systemctl show -p MainPID --value ssh.service'
}
units_up() {
    on_port "$1" 'for u in csf.service lfd.service; do systemctl is-active -q $u && systemctl is-enabled -q $u || exit 1; done'
}
enforcing() {
    on_port "$1" "grep -qx 'TESTING = \"0\"' /etc/csf/csf.conf && iptables -S INPUT | grep -qx -- '-P INPUT DROP'"
}

# wait_run_over VIA - the boot's jobs are all done (cloud-init's runcmd, or the retry unit
# after a cut, one way or the other) and no brickup runs.
wait_run_over() {
    on_port "$1" 'timeout 1500 sh -c "systemctl is-system-running --wait >/dev/null; while pgrep -x brickup >/dev/null; do sleep 3; done"'
}

# --- host side ----------------------------------------------------------------------------
vm_stage "fault matrix ($([[ $FULL == 1 ]] && echo full || echo default) set): building brickup (cargo build --release, musl)"
node_build || exit 1
node_image bookworm || exit 1
node_serve
# shellcheck disable=SC2119 # the default report file
node_receiver

# first_boot NAME [BOOTCMD...] - render user-data for SSH_PORT and boot it (VM_FWD for 22,
# SSH_PORT and the masternode port).
first_boot() {
    local name=$1
    shift
    node_config "$VM_WORK/brickup.yaml" "$SSH_PORT"
    mkdir -p "$VM_WORK/seed-$name"
    node_userdata "$VM_WORK/brickup.yaml" "$VM_WORK/seed-$name/user-data" "$@" || return 1
    vm_boot "$name" --image "$VM_WORK/disk.qcow2" --seed-dir "$VM_WORK/seed-$name" \
        --hostfwd "$SSH_PORT" --hostfwd "$MN_PORT"
}
node_converged_checks() { # node_converged_checks LABEL VIA
    check "$1: csf.service and lfd.service active and enabled" units_up "$2"
    check "$1: firewall enforcing (TESTING 0, INPUT DROP)" enforcing "$2"
    check "$1: nothing listens on port 22 inside" not_listening_inside "$2" 22
}

# ============================ power: cuts during the first boot, then reruns ==============
# The power boot's disk is the golden disk the rerun cases start from.
boot_power() {
    # Each cut: the step, then what must be running in it (a regex on a process's command line,
    # see wait-proc in vm/fault-guest.py) or a delay. "boot|first login": at once, when the first
    # key login works - cloud-init's writes of a few seconds before are not on disk yet (the
    # kernel writes dirty pages back after 30 s), which a fast machine hits in `packages` too.
    # After it the retry unit reaches `packages` before the harness can watch, and its
    # `apt-get update` lasts 2 s: the cut in `apt-get update` is the disk boot's (--full), made
    # while the harness watches from the start.
    POWER_CUTS=("boot|first login" "packages|dpkg --status-fd")
    [[ $FULL == 1 ]] && POWER_CUTS+=("csf-install|sh install.sh" "firewall|delay 2")
    case_begin "power cuts: ${#POWER_CUTS[@]} (first login, dpkg$([[ $FULL == 1 ]] && echo ', csf install, firewall enable')) [1$([[ $FULL == 1 ]] && echo ', 2')]" $((300 * ${#POWER_CUTS[@]} + 300))
    first_boot node-power || exit 1
    for cut in "${POWER_CUTS[@]}"; do
        step=${cut%%|*} when=${cut#*|}
        wait_key "$SSH_PORT" 900 || { fail "no SSH on $SSH_PORT to watch the run"; exit 1; }
        if [[ $step == boot ]]; then
            line="the first key login" landed=boot
        else
            push_helper "$SSH_PORT"
            vm_stage "  waiting for brickup's 'applying step=$step', then: $when"
            if ! line=$(on_port_again "$SSH_PORT" timeout 1500 python3 /root/fault.py wait-step "$step"); then
                fail "brickup never reached step $step"
                exit 1
            fi
            if [[ $when == delay* ]]; then
                sleep "${when#delay }"
            elif ! on_port_again "$SSH_PORT" "timeout 600 python3 /root/fault.py wait-proc $(printf %q "$when")"; then
                fail "no '$when' ran in step $step"
                exit 1
            fi
            landed=$(on_port_again "$SSH_PORT" python3 /root/fault.py last-step)
        fi
        vm_qmp system_reset || { fail "QMP system_reset"; exit 1; }
        FAULTS=$((FAULTS + 1))
        echo "fault: power cut (system_reset) after: $line, when: $when; running: step=$landed"
        check "the power cut landed in step $step ($when)" test "$landed" == "$step"
        sleep 5
        after_fault "power cut in $step ($when)" "$SSH_PORT"
    done
    wait_run_over "$SSH_PORT"
    check "the boot after the last cut finished the first-boot run" on_port "$SSH_PORT" test -e /var/lib/brickup/firstboot-done
    check "power: exactly one finished report (no cut run claimed to finish)" one_finished_report
    check "power: the finished report says succeeded" report_says succeeded
    if on_port "$SSH_PORT" brickup check >"$VM_WORK/power-check.log" 2>&1; then
        CONVERGED=$((CONVERGED + ${#POWER_CUTS[@]}))
        pass "power: converged after the cuts (check exit 0)"
    else
        fail "power: converged after the cuts (check exit 0)"
        show_log "$VM_WORK/power-check.log"
    fi
    node_converged_checks power "$SSH_PORT"
    check "power: no dpkg work left pending" on_port "$SSH_PORT" 'test -z "$(ls -A /var/lib/dpkg/updates)" && ! dpkg --audit | grep -q .'
    case_end
    GOLDEN_SEED=$VM_WORK/node-power-seed.iso
    VM_SSH_PORT=${VM_FWD[$SSH_PORT]} vm_stop 120 || echo "    (the golden VM did not power off by itself)"
    GOLDEN=$VM_WORK/golden.qcow2
    mv "$VM_WORK/node-power.qcow2" "$GOLDEN"
    cp "$VM_WORK/disk.env" "$VM_WORK/golden.env"
    ((FAIL == 0)) || { echo "the golden disk is not sound: no rerun cases"; exit 1; }

    # ============================ rerun: faults in `brickup apply` ============================
    vm_stage "booting a qcow2 overlay of the golden disk (first boot done, hardened)"
    vm_boot node-rerun --image "$GOLDEN" --seed "$GOLDEN_SEED" \
        --hostfwd "$SSH_PORT" --hostfwd 2200 --hostfwd 2300 --hostfwd "$MN_PORT"
    wait_key "$SSH_PORT" 600 || { fail "golden overlay: no SSH on $SSH_PORT"; exit 1; }
    on_port "$SSH_PORT" "timeout 120 sh -c 'until systemctl is-active -q csf.service; do sleep 2; done'"
    push_helper "$SSH_PORT"

    case_begin "new port taken before the run [5]" 240
    refused "port taken" port-taken \
        'nohup python3 /root/fault.py hold 2200 >/dev/null 2>&1 & sleep 1; timeout 30 sh -c "until ss -Hltn | grep -q :2200; do sleep 1; done"' \
        'kill $(cat /run/fault-hold-2200.pid)' 2 "2200"
    case_end

    case_begin "runtime lockout guard: DenyUsers on the host" 240
    refused guard guard "printf 'DenyUsers root\\n' > /etc/ssh/sshd_config.d/05-deny.conf" \
        'rm /etc/ssh/sshd_config.d/05-deny.conf' any \
        "AllowUsers/DenyUsers would refuse root" "would refuse root"
    case_end

    # A config that validates, but whose key sshd would not read: for the new port only, a host
    # drop-in points AuthorizedKeysFile at a file the key step never writes. Only the candidate
    # config asked for every port it will listen on can see it.
    case_begin "runtime lockout guard: the new port reads keys from another file" 240
    refused "guard (keys file)" guard-keys \
        "printf 'Match LocalPort 2200\\n    AuthorizedKeysFile /etc/ssh/nowhere/%%u\\n' > /etc/ssh/sshd_config.d/05-keys.conf" \
        'rm /etc/ssh/sshd_config.d/05-keys.conf' any "/etc/ssh/nowhere/root" "/etc/ssh/nowhere/root"
    case_end

    case_begin "port move, then a package that is not there [4]" 240
    put_config "$SSH_PORT" 2200 $'packages:\n  extra: [brickup-fault-no-such-package]'
    rc=$(guest_apply "$SSH_PORT" move-fail)
    FAULTS=$((FAULTS + 1))
    check "move+fail: apply fails with exit 3 (got $rc)" test "$rc" == 3
    ((rc == 3)) || show_log "$VM_WORK/move-fail.log"
    check "move+fail: the report says failed and names the package" report_says failed brickup-fault-no-such-package
    after_fault "move+fail" "$SSH_PORT" 2200
    check "move+fail: the old port $SSH_PORT still takes the key" key_login "$SSH_PORT"
    check "move+fail: the new port 2200 takes the key" key_login 2200
    put_config 2200 2200
    converges 2200 move-fail
    check "move+fail: the old port $SSH_PORT is closed after the rerun (outside; control: 2200 answers)" faults_no_banner_but "$SSH_PORT" 2200
    check "move+fail: nothing listens on $SSH_PORT inside" not_listening_inside 2200 "$SSH_PORT"
    check "move+fail: the rerun's report says succeeded" report_says succeeded
    check "move+fail: the rerun's report says SSH is on 2200" test "$(report_field finished sshPort)" == 2200
    case_end

    case_begin "SIGKILL between the sshd drop-in and the restart [3]" 240
    put_config 2200 2300
    finished=$(reports_count finished)
    out=$(on_port 2200 python3 /root/fault.py apply kill)
    FAULTS=$((FAULTS + 1))
    echo "fault: $out"
    check "kill: brickup was killed right after writing the drop-in" grep -q "event=killed" <<<"$out"
    check "kill: sshd was not restarted (nothing listens on 2300)" not_listening_inside 2200 2300
    after_fault "kill -9" 2200 2300
    check "kill: the killed run sent no finished report" test "$(reports_count finished)" == "$finished"
    converges 2200 kill 2300
    check "kill: sshd moved to 2300 on the rerun" key_login 2300
    check "kill: nothing listens on 2200 after the rerun" not_listening_inside 2300 2200
    check "kill: the rerun's report says succeeded" report_says succeeded
    case_end

    case_begin "new port taken after preflight: sshd's restart cannot bind it" 240
    put_config 2300 "$SSH_PORT"
    out=$(on_port 2300 python3 /root/fault.py apply bind "$SSH_PORT")
    FAULTS=$((FAULTS + 1))
    echo "fault: $out"
    check "restart: the port was taken after the drop-in was written" grep -q "event=bound" <<<"$out"
    check "restart: apply fails with exit 3" grep -q "^rc=3 " <<<"$out"
    on_port 2300 cat /root/fault-apply.log >"$VM_WORK/restart.log" 2>&1
    check "restart: the error says the previous config was restored and sshd restarted" \
        grep -q "previous sshd config was restored and sshd restarted" "$VM_WORK/restart.log"
    grep -q "^rc=3 " <<<"$out" || show_log "$VM_WORK/restart.log"
    check "restart: the report says failed" report_says failed
    after_fault "restart fails" 2300 "$SSH_PORT"
    check "restart: sshd is back on 2300" key_login 2300
    converges 2300 restart "$SSH_PORT"
    check "restart: sshd on $SSH_PORT after the rerun" key_login "$SSH_PORT"
    check "restart: nothing listens on 2300 after the rerun" not_listening_inside "$SSH_PORT" 2300
    node_converged_checks rerun "$SSH_PORT"
    case_end
    VM_SSH_PORT=${VM_FWD[$SSH_PORT]} vm_stop 60 >/dev/null

}

# ============================ lock: dpkg lock held, receiver down ============================
boot_lock() {
    case_begin "dpkg lock held at first boot [7], receiver down then back [8]" 1200
    # Another apt process holding the dpkg locks for 300 s from early boot, as unattended-upgrades
    # does; a cloud-init-per guard keeps it to the first boot.
    hold="import fcntl,time; a=open('/var/lib/dpkg/lock-frontend','w'); fcntl.lockf(a,fcntl.LOCK_EX); b=open('/var/lib/dpkg/lock','w'); fcntl.lockf(b,fcntl.LOCK_EX); print('fake-apt: holding the dpkg locks',flush=True); time.sleep(300); print('fake-apt: released',flush=True)"
    kill "$(pgrep -f "receive --listen 127.0.0.1:$VM_RECV_PORT")" 2>/dev/null
    sleep 1
    reports_before=$(reports_count finished)
    first_boot node-lock "[cloud-init-per, once, fakeapt, systemd-run, --no-block, -p, DefaultDependencies=no, --unit=fake-apt, python3, -c, \"$hold\"]" || exit 1
    FAULTS=$((FAULTS + 2))
    wait_key "$SSH_PORT" 900 || { fail "lock: no SSH on $SSH_PORT"; exit 1; }
    wait_run_over "$SSH_PORT"
    check "lock: the first-boot run succeeded though the receiver was down" on_port "$SSH_PORT" test -e /var/lib/brickup/firstboot-done
    check "lock: the dpkg lock was held when brickup's packages step began, and it waited" on_port "$SSH_PORT" python3 - <<'PY'
import re, subprocess, sys
def times(args, pat):
    out = subprocess.run(["journalctl", "-b", "-o", "short-unix"] + args, capture_output=True, text=True).stdout
    return [float(l.split()[0]) for l in out.splitlines() if re.search(pat, re.sub(r"\x1b\[[0-9;]*m", "", l))]
held = times(["-u", "fake-apt"], "holding the dpkg locks")
released = times(["-u", "fake-apt"], "fake-apt: released")
began = times([], r"applying.*step=packages")
done = times([], r"step=packages.*outcome")
print("    held %s released %s packages began %s done %s" % (held, released, began, done))
sys.exit(0 if held and released and began and done and held[0] < began[0] < released[0] < done[-1] else 1)
PY
    after_fault "lock+receiver" "$SSH_PORT"
    check "receiver: nothing arrived while it was down" test "$(reports_count finished)" == "$reports_before"
    vm_receiver_start "$VM_RECV_OUT"
    on_port "$SSH_PORT" brickup firstboot >/dev/null 2>&1
    check "receiver: the next run delivered the finished report once" test "$(reports_count finished)" == $((reports_before + 1))
    check "receiver: it says succeeded" report_says succeeded
    on_port "$SSH_PORT" brickup firstboot >/dev/null 2>&1
    check "receiver: a further run sends it no second time" test "$(reports_count finished)" == $((reports_before + 1))
    if on_port "$SSH_PORT" brickup check >/dev/null 2>&1; then
        CONVERGED=$((CONVERGED + 2))
        pass "lock+receiver: converged (check exit 0)"
    else
        fail "lock+receiver: converged (check exit 0)"
    fi
    node_converged_checks lock "$SSH_PORT"
    case_end
    VM_SSH_PORT=${VM_FWD[$SSH_PORT]} vm_stop 60 >/dev/null

}

# ============================ disk: full disk, then csftest FATAL ============================
boot_disk() {
    case_begin "power cut in apt-get update [1], disk full in csf-install [9], then csftest FATAL [6]" 1500
    first_boot node-disk || exit 1
    wait_key "$SSH_PORT" 900 || { fail "disk: no SSH on $SSH_PORT to watch the run"; exit 1; }
    push_helper "$SSH_PORT"
    # A cut while the first `apt-get update` fetches the lists (an update cut short once left
    # a Packages file that later updates kept: "Unable to locate package" on every retry).
    if ! { on_port_again "$SSH_PORT" timeout 1500 python3 /root/fault.py wait-step packages >/dev/null &&
        on_port_again "$SSH_PORT" "timeout 600 python3 /root/fault.py wait-proc 'apt-get .*update'"; }; then
        fail "disk: no apt-get update to cut"
        exit 1
    fi
    vm_qmp system_reset || { fail "QMP system_reset"; exit 1; }
    FAULTS=$((FAULTS + 1))
    echo "fault: power cut (system_reset) while apt-get update ran"
    sleep 5
    after_fault "power cut in apt-get update" "$SSH_PORT"
    wait_key "$SSH_PORT" 900 || { fail "disk: no SSH on $SSH_PORT after the cut"; exit 1; }
    push_helper "$SSH_PORT"
    on_port_again "$SSH_PORT" timeout 1500 python3 /root/fault.py wait-step csf-install >/dev/null
    on_port_again "$SSH_PORT" python3 /root/fault.py fill /var/brickup-fault-fill
    FAULTS=$((FAULTS + 1))
    wait_run_over "$SSH_PORT"
    check "disk: the report says failed" report_says failed
    check "disk: the run is not recorded as done" on_port "$SSH_PORT" '! test -e /var/lib/brickup/firstboot-done'
    after_fault "disk full" "$SSH_PORT"
    check "disk: sshd's config is whole (sshd -t)" on_port "$SSH_PORT" sshd -t
    check "disk: the firewall does not enforce a half-installed csf" on_port "$SSH_PORT" "iptables -S INPUT | grep -qx -- '-P INPUT ACCEPT'"
    on_port "$SSH_PORT" rm -f /var/brickup-fault-fill
    # csftest's verdict for the next run (the fixture reads it from this file).
    on_port "$SSH_PORT" "mkdir -p /etc/csf && echo 'csf will not function on this server due to FATAL errors from missing modules [ip_tables]' > /etc/csf/fixture-csftest-result"
    on_port "$SSH_PORT" brickup firstboot >"$VM_WORK/fatal.log" 2>&1
    FAULTS=$((FAULTS + 1))
    check "fatal: the run fails naming csftest's FATAL" grep -q "FATAL" "$VM_WORK/fatal.log"
    check "fatal: the report says failed" report_says failed FATAL
    check "fatal: csf.service and lfd.service are not enabled" on_port "$SSH_PORT" '! systemctl is-enabled -q csf.service && ! systemctl is-enabled -q lfd.service'
    after_fault "csftest FATAL" "$SSH_PORT"
    on_port "$SSH_PORT" rm /etc/csf/fixture-csftest-result
    if on_port "$SSH_PORT" brickup firstboot >"$VM_WORK/disk-rerun.log" 2>&1 &&
        on_port "$SSH_PORT" brickup check >/dev/null 2>&1; then
        CONVERGED=$((CONVERGED + 3))
        pass "disk+fatal: the next run converges (firstboot 0, check 0)"
    else
        fail "disk+fatal: the next run converges"
        show_log "$VM_WORK/disk-rerun.log"
    fi
    check "disk+fatal: the report says succeeded" report_says succeeded
    node_converged_checks disk "$SSH_PORT"
    case_end
    VM_SSH_PORT=${VM_FWD[$SSH_PORT]} vm_stop 60 >/dev/null
}

for boot in $BOOTS; do
    case $boot in
        power) boot_power ;;
        lock) boot_lock ;;
        disk) boot_disk ;;
        *) fail "unknown boot $boot"; exit 2 ;;
    esac
done
