#!/usr/bin/env bash
# vm/test.sh - the VM tests (run by scripts/test after the fast tests).
# Default (CI): first boots of Debian 12 with ssh.service and with ssh.socket (the owner logs in
# as a named user brickup creates, root refused), a baked image, the three failure boots (bad
# sha256, lockout, a provider's foreign ruleset), and the fault matrix's
# default set (vm/faults.sh). BRICKUP_VM_FULL=1 adds Debian 13 and 11 and every fault case.
# BRICKUP_VM_LANES=N runs the runs in N lanes side by side (default 2; each VM then gets
# VM_SMP=1 vCPU unless VM_SMP is set: two 2-vCPU guests under TCG on 2 cores would fight); a
# run's output is printed whole when all have ended. 1: one run after another (2 vCPUs each),
# output as it comes.
# Prints each run's time (whole run, first boot, reboot), the fault matrix's summary line and the
# total at the end. Last line: "N passed, N failed" over all checks; non-zero exit on any failure
# (a lockout in the fault matrix included).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
# Longest first, so lanes end close together.
runs=(
    "vm/firstboot.sh --case ok"
    "vm/firstboot.sh --case ok --ssh-socket --admin-user"
    "vm/firstboot.sh --case baked"
    "vm/faults.sh"
    "vm/firstboot.sh --case bad-sha"
    "vm/firstboot.sh --case foreign-fw"
    "vm/firstboot.sh --case lockout"
)
if [[ ${BRICKUP_VM_FULL:-0} == 1 ]]; then
    runs+=("vm/firstboot.sh --case ok --suite trixie" "vm/firstboot.sh --case ok --suite bullseye")
fi
lanes=${BRICKUP_VM_LANES:-2}
[[ $lanes =~ ^[1-9]$ ]] || { echo "BRICKUP_VM_LANES must be 1-9, not '$lanes'" >&2; exit 2; }
((lanes == 1)) || export VM_SMP=${VM_SMP:-1}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total_t0=$SECONDS

# run_one I - run runs[I]; its output in $out/I.log, "SECONDS RC" in $out/I.done.
run_one() {
    local i=$1 t0=$SECONDS rc
    # Each run's stage lines count from its own start.
    if ((lanes == 1)); then
        echo "=== ${runs[$i]}"
        # shellcheck disable=SC2086
        VM_STAGE_T0=$(date +%s) ${runs[$i]} 2>&1 | tee "$out/$i.log"
        rc=${PIPESTATUS[0]}
    else
        # shellcheck disable=SC2086
        VM_STAGE_T0=$(date +%s) ${runs[$i]} >"$out/$i.log" 2>&1
        rc=$?
    fi
    echo "$((SECONDS - t0)) $rc" >"$out/$i.done"
}

# Lane L takes runs L, L+lanes, ... in order.
pids=()
for ((l = 0; l < lanes; l++)); do
    if ((lanes == 1)); then
        for ((i = 0; i < ${#runs[@]}; i++)); do run_one "$i"; done
    else
        (for ((i = l; i < ${#runs[@]}; i += lanes)); do
            run_one "$i"
            echo "=== lane $l: ${runs[$i]} ended after $(cut -d' ' -f1 "$out/$i.done") s (exit $(cut -d' ' -f2 "$out/$i.done"))"
        done) &
        pids+=($!)
    fi
done
for p in "${pids[@]}"; do wait "$p"; done

passed=0 failed=0 status=0 summary=() matrix=""
for ((i = 0; i < ${#runs[@]}; i++)); do
    args=${runs[$i]} log=$out/$i.log
    if ((lanes > 1)); then
        echo "=== $args"
        cat "$log"
    fi
    read -r secs rc <"$out/$i.done" 2>/dev/null || { secs=- rc=1; }
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
done
echo "vm: per boot (whole run, power-on -> finished report, reboot -> SSH + csf/lfd active):"
printf '  %s\n' "${summary[@]}"
echo "vm: total $((SECONDS - total_t0)) s for ${#runs[@]} runs in $lanes lane(s)$( ((lanes == 1)) || echo ", ${VM_SMP} vCPU each")"
echo "vm: ${matrix:-fault matrix: no summary line (vm/faults.sh did not finish)}"
echo "vm: $passed passed, $failed failed"
echo "$passed passed, $failed failed"
exit "$status"
