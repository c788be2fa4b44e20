#!/usr/bin/env bash
# vm/test.sh - the first-boot VM tests (run by scripts/test after the fast tests).
# Default (CI): Debian 12 with ssh.service and with ssh.socket, plus the two failure boots.
# BRICKUP_VM_FULL=1 adds Debian 13 and Debian 11.
# Last line: "N passed, N failed" over all boots' checks; non-zero exit on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=(
    "--case ok"
    "--case ok --ssh-socket"
    "--case baked"
    "--case bad-sha"
    "--case lockout"
)
if [[ ${BRICKUP_VM_FULL:-0} == 1 ]]; then
    runs+=("--case ok --suite trixie" "--case ok --suite bullseye")
fi
passed=0 failed=0 status=0
for args in "${runs[@]}"; do
    echo "=== vm/firstboot.sh $args"
    log=$(mktemp)
    # shellcheck disable=SC2086
    vm/firstboot.sh $args 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)
    p=${line%% passed*}
    f=${line#*, }
    f=${f%% failed}
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-1}))
    ((rc == 0)) || status=1
    rm -f "$log"
done
echo "vm: $passed passed, $failed failed"
echo "$passed passed, $failed failed"
exit "$status"
