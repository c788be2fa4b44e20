#!/usr/bin/env bash
# vm/test.sh - the VM tests (run by scripts/test after the fast tests).
# Default (CI): first boots of Debian 12 with ssh.service and with ssh.socket (the owner logs in
# as a named user brickup creates, root refused), a baked image, the three failure boots (bad
# sha256, lockout, a provider's foreign ruleset), and the fault matrix's
# default set (vm/faults.sh). BRICKUP_VM_FULL=1 adds Debian 13 and 11 and every fault case.
# Prints each run's time (whole run, first boot, reboot), the fault matrix's summary line and the
# total at the end. Last line: "N passed, N failed" over all checks; non-zero exit on any failure
# (a lockout in the fault matrix included).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
runs=(
    "vm/firstboot.sh --case ok"
    "vm/firstboot.sh --case ok --ssh-socket --admin-user"
    "vm/firstboot.sh --case baked"
    "vm/firstboot.sh --case bad-sha"
    "vm/firstboot.sh --case lockout"
    "vm/firstboot.sh --case foreign-fw"
    "vm/faults.sh"
)
if [[ ${BRICKUP_VM_FULL:-0} == 1 ]]; then
    runs+=("vm/firstboot.sh --case ok --suite trixie" "vm/firstboot.sh --case ok --suite bullseye")
fi
passed=0 failed=0 status=0 total_t0=$SECONDS
summary=() matrix=""
for args in "${runs[@]}"; do
    echo "=== $args"
    log=$(mktemp)
    t0=$SECONDS
    # Each run's stage lines count from its own start.
    # shellcheck disable=SC2086
    VM_STAGE_T0=$(date +%s) $args 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$((SECONDS - t0))
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)
    p=${line%% passed*}
    f=${line#*, }
    f=${f%% failed}
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-1}))
    ((rc == 0)) || status=1
    first=$(sed -n 's/^timing: first boot \([0-9]*\) s.*/\1/p' "$log" | tail -n1)
    reboot=$(sed -n 's/^timing: reboot \([0-9]*\) s.*/\1/p' "$log" | tail -n1)
    matrix+=$(grep -E '^fault matrix: ' "$log" | tail -n1)
    summary+=("$(printf '%-48s %5s s  first boot %4s s  reboot %4s s  %s' "$args" "$secs" \
        "${first:--}" "${reboot:--}" "${line:-no result (exit $rc)}")")
    echo "=== $args: $secs s (first boot ${first:--} s, reboot ${reboot:--} s)"
    rm -f "$log"
done
echo "vm: per boot (whole run, power-on -> finished report, reboot -> SSH + csf/lfd active):"
printf '  %s\n' "${summary[@]}"
echo "vm: total $((SECONDS - total_t0)) s for ${#runs[@]} runs"
echo "vm: ${matrix:-fault matrix: no summary line (vm/faults.sh did not finish)}"
echo "vm: $passed passed, $failed failed"
echo "$passed passed, $failed failed"
exit "$status"
