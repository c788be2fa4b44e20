#!/usr/bin/env bash
# brickup's benchmarks: prints figures, asserts nothing (the README keeps the latest).
#   - release musl binary: size and gzip -9 size (budget: 4 MB stripped)
#   - `brickup check` on a converged root (the test rootfs): wall time and peak RSS
#   - verified download of 5 MB and 200 MB: wall time and peak RSS (memory must stay flat)
#   - `brickup receive` on loopback: 200 signed reports from 20 senders while 50 slow clients
#     hold connections open: throughput and p50/p99 latency of the reports
#   - the login proof on a live root (tests/live_lockouts.rs, bench_login_proof_cost): its
#     duration in a first-boot apply, a repair apply and a check
# Needs root and the test rootfs (scripts/build-test-rootfs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-10}

cargo build --release --locked --target x86_64-unknown-linux-musl -q
bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/brickup
echo "binary: size_bytes=$(stat -c %s "$bin") gzip9_bytes=$(gzip -9c "$bin" | wc -c)"

# Peak RSS and wall time of one command (python's getrusage on the child).
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wall = time.monotonic() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{wall:.4f} {rss} {r.returncode}")
PY
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a /var/cache/brickup-test/rootfs-bookworm/. "$work/root/" 2>/dev/null || { mkdir -p "$work/root"; cp -a /var/cache/brickup-test/rootfs-bookworm/. "$work/root/"; }
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
cat > "$work/brickup.yaml" <<YAML
version: 1
ssh:
  port: 2222
  authorized_keys:
    - $(cat "$work/key.pub")
YAML
"$bin" apply --root "$work/root" --config "$work/brickup.yaml" 2>/dev/null
total=0; peak=0
for _ in $(seq "$runs"); do
  read -r wall rss code < <(measure "$bin" check --root "$work/root" --config "$work/brickup.yaml")
  [ "$code" = 0 ] || { echo "check did not report converged (exit $code)" >&2; exit 1; }
  total=$(python3 -c "print($total + $wall)")
  [ "$rss" -gt "$peak" ] && peak=$rss
done
echo "check (converged root, real sshd -T in chroot): runs=$runs mean_wall_s=$(python3 -c "print(round($total / $runs, 4))") peak_rss_kb=$peak"

cargo build --release --example bench_download -q
for mb in 5 200; do
  target/release/examples/bench_download "$mb"
done

cargo build --release --example bench_receive -q
target/release/examples/bench_receive 200 20 50

cargo test -q --test live_lockouts -- --ignored --nocapture bench_login_proof_cost 2>/dev/null | grep '^login proof'
