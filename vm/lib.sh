# shellcheck shell=bash
# vm/lib.sh - qemu first-boot harness for brickup: boot a Debian image (image/build-image.sh)
# with a NoCloud seed under TCG and talk to it from outside. Source it; it sets no options.
#
# Networking: `-nic user,restrict=on` - the guest reaches NOTHING but what is forwarded here:
#   host 127.0.0.1:<random>  -> guest :22 (and every --hostfwd GUESTPORT)
#   guest 10.0.2.100:80      -> 127.0.0.1:$VM_HTTP_PORT  static files: $VM_SERVE_DIR
#                               (/apt/ = local apt repo, /brickup, /csf.tgz - see vm_serve_setup)
#   guest 10.0.2.101:80      -> 127.0.0.1:$VM_RECV_PORT  status callback receiver
#                               (guest port: $VM_RECV_GUEST_PORT, default 80)
# Each VM has a QMP monitor socket, $VM_QMP (vm_qmp sends it commands, e.g. system_reset).
# All host services listen on 127.0.0.1 only. Every process started here is killed by
# vm_cleanup, which vm_init installs as the EXIT trap.
#
# HOOKS FOR BRICKUP (see vm/README.md):
#   BRICKUP_USERDATA   user-data file for the seed (e.g. from `brickup render-userdata`)
#   BRICKUP_BIN        static brickup binary: served as http://10.0.2.100/brickup and, with
#                      VM_RECEIVER=brickup, run on the host as the callback receiver
#   BRICKUP_CSF_TARBALL  csf tarball fixture: served as http://10.0.2.100/csf.tgz
#   VM_RECEIVER        placeholder (default: vm/recv-placeholder.py) | brickup

VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_REPO_DIR=$(cd "$VM_LIB_DIR/.." && pwd)
export VM_REPO_DIR
VM_GUEST_HTTP_IP=10.0.2.100
VM_GUEST_RECV_IP=10.0.2.101
VM_PIDS=()

# Check bookkeeping for the test scripts; they print "$PASS passed, $FAIL failed" last.
PASS=0 FAIL=0
pass() { PASS=$((PASS + 1)); echo "PASS: $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
check() { # check DESCRIPTION CMD... - pass iff CMD exits 0
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

vm_log() { echo "[vm $(date +%H:%M:%S)] $*" >&2; }

# vm_stage TEXT - a progress line on stdout, "[+SECONDSs] TEXT", counted from VM_STAGE_T0
# (epoch seconds; set once and exported, so a caller's clock carries into the scripts it runs).
: "${VM_STAGE_T0:=$(date +%s)}"
export VM_STAGE_T0
vm_stage() { echo "[+$(($(date +%s) - VM_STAGE_T0))s] $*"; }
vm_die() {
    vm_log "FATAL: $*"
    exit 1
}

# Host packages the harness needs; installed once, idempotently.
VM_HOST_PKGS="qemu-system-x86 qemu-utils mmdebstrap genisoimage openssh-client sshpass \
netcat-openbsd python3 apt-utils e2fsprogs"
vm_require_host_tools() {
    local need=() p
    for p in $VM_HOST_PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
    done
    ((${#need[@]} == 0)) && return 0
    vm_log "installing host packages: ${need[*]}"
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

# vm_init [WORKDIR] - work dir, throwaway ssh key, EXIT trap. Sets VM_WORK, VM_SSH_KEY.
vm_init() {
    VM_WORK=${1:-$(mktemp -d /tmp/brickup-vm.XXXXXX)}
    mkdir -p "$VM_WORK"
    VM_SSH_KEY=$VM_WORK/id_ed25519
    [[ -f $VM_SSH_KEY ]] || ssh-keygen -q -t ed25519 -N '' -C brickup-vm-test -f "$VM_SSH_KEY"
    trap vm_cleanup EXIT
    trap 'exit 130' INT TERM
    vm_log "work dir: $VM_WORK"
}

# vm_track PID - kill PID (and its process group if it leads one) in vm_cleanup.
vm_track() { VM_PIDS+=("$1"); }

# vm_cleanup [RC] - kill everything tracked; keep VM_WORK when RC != 0 or VM_KEEP=1.
vm_cleanup() {
    local rc=${1:-$?} pid
    for pid in "${VM_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        kill "$pid" 2>/dev/null
    done
    sleep 0.5
    for pid in "${VM_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    VM_PIDS=()
    [[ -n ${VM_SERIAL_LOG:-} ]] && vm_log "serial log: $VM_SERIAL_LOG"
    if [[ ${VM_KEEP:-0} != 1 && $rc == 0 && -n ${VM_WORK:-} ]]; then
        rm -rf "$VM_WORK"
    elif [[ -n ${VM_WORK:-} ]]; then
        vm_log "kept work dir: $VM_WORK"
    fi
    return "$rc"
}

# vm_free_port - print a TCP port that is free on 127.0.0.1 right now.
vm_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# vm_wait_port PORT TIMEOUT - wait until something listens on 127.0.0.1:PORT.
vm_wait_port() {
    local port=$1 deadline=$((SECONDS + $2))
    until nc -z 127.0.0.1 "$port" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# vm_make_seed OUT.iso --user-data F [--meta-data F] [--network-config F] [--hostname H]
# A NoCloud `cidata` ISO; meta-data (unless given) carries a fresh instance-id.
vm_make_seed() {
    local out=$1 ud="" md="" nc="" host=brickup-vm d
    shift
    while (($#)); do
        case "$1" in
            --user-data) ud=$2; shift 2 ;;
            --meta-data) md=$2; shift 2 ;;
            --network-config) nc=$2; shift 2 ;;
            --hostname) host=$2; shift 2 ;;
            *) vm_die "vm_make_seed: unknown option $1" ;;
        esac
    done
    [[ -f $ud ]] || vm_die "vm_make_seed: user-data file '$ud' missing"
    d=$(mktemp -d "$VM_WORK/seed.XXXXXX")
    cp "$ud" "$d/user-data"
    if [[ -n $md ]]; then
        cp "$md" "$d/meta-data"
    else
        printf 'instance-id: iid-brickup-%s\nlocal-hostname: %s\n' \
            "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" "$host" >"$d/meta-data"
    fi
    [[ -z $nc ]] || cp "$nc" "$d/network-config"
    if command -v genisoimage >/dev/null; then
        genisoimage -quiet -output "$out" -volid cidata -joliet -rock "$d"/* 2>/dev/null
    else
        xorriso -as mkisofs -quiet -output "$out" -volid cidata -joliet -rock "$d"/*
    fi || vm_die "building seed ISO $out failed"
}

# vm_serve_setup REPO_DIR - lay out $VM_SERVE_DIR: apt/ -> REPO_DIR, and the hook files
# BRICKUP_BIN -> /brickup, BRICKUP_CSF_TARBALL -> /csf.tgz when set. Add more files freely.
vm_serve_setup() {
    VM_SERVE_DIR=$VM_WORK/serve
    mkdir -p "$VM_SERVE_DIR"
    [[ -f $1/Packages ]] || vm_die "no apt repo at $1 (run image/build-image.sh)"
    ln -sfn "$1" "$VM_SERVE_DIR/apt"
    [[ -z ${BRICKUP_BIN:-} ]] || cp "$BRICKUP_BIN" "$VM_SERVE_DIR/brickup"
    [[ -z ${BRICKUP_CSF_TARBALL:-} ]] || cp "$BRICKUP_CSF_TARBALL" "$VM_SERVE_DIR/csf.tgz"
    return 0
}

# vm_serve_start - static file server for $VM_SERVE_DIR on 127.0.0.1. Sets VM_HTTP_PORT.
vm_serve_start() {
    VM_HTTP_PORT=$(vm_free_port)
    python3 -m http.server --bind 127.0.0.1 --directory "$VM_SERVE_DIR" "$VM_HTTP_PORT" \
        >"$VM_WORK/http.log" 2>&1 &
    vm_track $!
    vm_wait_port "$VM_HTTP_PORT" 10 || vm_die "http server did not start ($VM_WORK/http.log)"
    vm_log "serving $VM_SERVE_DIR on 127.0.0.1:$VM_HTTP_PORT (guest: http://$VM_GUEST_HTTP_IP/)"
}

# vm_receiver_start OUTFILE - status callback receiver on 127.0.0.1. Sets VM_RECV_PORT (keeps a
# port set before: a receiver started after the VM booted against it), VM_RECV_OUT.
# Guest URL: http://10.0.2.101/ (any path).
# HOOK: VM_RECEIVER=brickup runs the real receiver
#   $BRICKUP_BIN receive --listen 127.0.0.1:PORT --out OUTFILE --hmac-secret-file $VM_HMAC_SECRET_FILE
# The default is vm/recv-placeholder.py (TO BE REPLACED: appends raw POST bodies, no HMAC).
vm_receiver_start() {
    VM_RECV_OUT=$1
    VM_RECV_PORT=${VM_RECV_PORT:-$(vm_free_port)}
    case "${VM_RECEIVER:-placeholder}" in
        brickup)
            [[ -x ${BRICKUP_BIN:-} ]] || vm_die "VM_RECEIVER=brickup needs BRICKUP_BIN"
            [[ -f ${VM_HMAC_SECRET_FILE:-} ]] || vm_die "VM_RECEIVER=brickup needs VM_HMAC_SECRET_FILE"
            "$BRICKUP_BIN" receive --listen "127.0.0.1:$VM_RECV_PORT" --out "$VM_RECV_OUT" \
                --hmac-secret-file "$VM_HMAC_SECRET_FILE" >"$VM_WORK/recv.log" 2>&1 &
            ;;
        placeholder)
            python3 "$VM_LIB_DIR/recv-placeholder.py" "$VM_RECV_PORT" "$VM_RECV_OUT" \
                >"$VM_WORK/recv.log" 2>&1 &
            ;;
        *) vm_die "VM_RECEIVER must be placeholder or brickup" ;;
    esac
    vm_track $!
    vm_wait_port "$VM_RECV_PORT" 10 || vm_die "receiver did not start ($VM_WORK/recv.log)"
    vm_log "receiver (${VM_RECEIVER:-placeholder}) on 127.0.0.1:$VM_RECV_PORT -> $VM_RECV_OUT"
}

# vm_boot NAME --image X.qcow2 (--seed ISO | --seed-dir D) [--hostfwd GUESTPORT]...
#         [--kernel K --initrd I] [--mem MB] [--smp N] [--append ARGS]
# Boots a qcow2 overlay of X under TCG, in the background. Needs vm_serve_start (and
# optionally vm_receiver_start) first. Sets VM_NAME, VM_PID, VM_SERIAL_LOG, VM_SSH_PORT
# (host port of guest :22) and VM_FWD[GUESTPORT]=HOSTPORT for every forwarded port.
# X.env from build-image.sh supplies kernel and initrd unless given.
vm_boot() {
    VM_NAME=$1
    shift
    local image="" seed="" kernel="" initrd="" mem=${VM_MEM:-1536} smp=${VM_SMP:-2}
    local append="" fwd=(22) p
    while (($#)); do
        case "$1" in
            --image) image=$2; shift 2 ;;
            --seed) seed=$2; shift 2 ;;
            --seed-dir)
                seed=$VM_WORK/$VM_NAME-seed.iso
                local extra=()
                [[ ! -f $2/meta-data ]] || extra+=(--meta-data "$2/meta-data")
                [[ ! -f $2/network-config ]] || extra+=(--network-config "$2/network-config")
                vm_make_seed "$seed" --user-data "$2/user-data" --hostname "$VM_NAME" "${extra[@]}"
                shift 2 ;;
            --hostfwd) fwd+=("$2"); shift 2 ;;
            --kernel) kernel=$2; shift 2 ;;
            --initrd) initrd=$2; shift 2 ;;
            --mem) mem=$2; shift 2 ;;
            --smp) smp=$2; shift 2 ;;
            --append) append=$2; shift 2 ;;
            *) vm_die "vm_boot: unknown option $1" ;;
        esac
    done
    [[ -f $image ]] || vm_die "vm_boot: image '$image' missing"
    [[ -f $seed ]] || vm_die "vm_boot: seed '$seed' missing"
    [[ -n ${VM_HTTP_PORT:-} ]] || vm_die "vm_boot: call vm_serve_start first"
    if [[ -z $kernel ]]; then
        # shellcheck disable=SC1090
        source "${image%.qcow2}.env"
        kernel=$BRICKUP_IMG_KERNEL initrd=$BRICKUP_IMG_INITRD
    fi
    local overlay=$VM_WORK/$VM_NAME.qcow2
    qemu-img create -q -f qcow2 -F qcow2 -b "$(realpath "$image")" "$overlay" ||
        vm_die "qemu-img create overlay failed"

    declare -gA VM_FWD=()
    local nic="user,model=virtio-net-pci,restrict=on"
    for p in "${fwd[@]}"; do
        VM_FWD[$p]=$(vm_free_port)
        nic+=",hostfwd=tcp:127.0.0.1:${VM_FWD[$p]}-:$p"
    done
    VM_SSH_PORT=${VM_FWD[22]}
    # cmd: spawns one nc per guest connection (a tcp: chardev would serve one connection only).
    nic+=",guestfwd=tcp:$VM_GUEST_HTTP_IP:80-cmd:nc -N 127.0.0.1 $VM_HTTP_PORT"
    [[ -z ${VM_RECV_PORT:-} ]] ||
        nic+=",guestfwd=tcp:$VM_GUEST_RECV_IP:${VM_RECV_GUEST_PORT:-80}-cmd:nc -N 127.0.0.1 $VM_RECV_PORT"

    VM_SERIAL_LOG=$VM_WORK/$VM_NAME-serial.log
    VM_QMP=$VM_WORK/$VM_NAME.qmp
    vm_log "booting $VM_NAME: ssh -> 127.0.0.1:$VM_SSH_PORT, serial log: $VM_SERIAL_LOG"
    qemu-system-x86_64 -name "$VM_NAME" -accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem" \
        -nodefaults -display none -no-user-config \
        -kernel "$kernel" -initrd "$initrd" \
        -append "root=/dev/vda rw console=ttyS0 $append" \
        -drive "file=$overlay,if=virtio,format=qcow2,discard=unmap" \
        -drive "file=$seed,if=virtio,format=raw,readonly=on" \
        -nic "$nic" -device virtio-rng-pci \
        -serial "file:$VM_SERIAL_LOG" -qmp "unix:$VM_QMP,server=on,wait=off" -pidfile "$VM_WORK/$VM_NAME.pid" \
        >"$VM_WORK/$VM_NAME-qemu.log" 2>&1 &
    VM_PID=$!
    vm_track "$VM_PID"
    VM_BOOT_T0=$SECONDS
    sleep 1
    kill -0 "$VM_PID" 2>/dev/null ||
        vm_die "qemu exited at once: $(cat "$VM_WORK/$VM_NAME-qemu.log")"
}

# vm_qmp COMMAND - run one QMP command (e.g. system_reset: a power cut and restart) on the VM.
vm_qmp() {
    python3 - "$VM_QMP" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())  # greeting
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" in r:
            continue
        if "error" in r:
            sys.exit("qmp %s: %s" % (cmd, r["error"]))
        break
PY
}

VM_SSH_USER=${VM_SSH_USER:-root}
vm_ssh_opts() {
    echo "-p $VM_SSH_PORT -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null" \
        "-o LogLevel=ERROR -o ConnectTimeout=30 -o ServerAliveInterval=5 -o ServerAliveCountMax=6"
}

# vm_ssh CMD... - run CMD in the guest as $VM_SSH_USER with the test key (exit code passes).
# A login user other than root (ssh.create_user) runs CMD through its sudo rule, non-interactive
# (`sudo -n`): a rule that asks for a password fails every such call.
vm_ssh() {
    local cmd=("$@")
    [[ $VM_SSH_USER == root ]] || cmd=("sudo -n bash -c $(printf %q "$*")")
    vm_ssh_as "$VM_SSH_USER" "${cmd[@]}"
}

# vm_ssh_as USER CMD... - CMD as USER itself with the test key, no sudo (exit code passes).
vm_ssh_as() {
    local user=$1
    shift
    # shellcheck disable=SC2046
    ssh $(vm_ssh_opts) -o BatchMode=yes -o IdentitiesOnly=yes -i "$VM_SSH_KEY" \
        "$user@127.0.0.1" "$@" </dev/null
}

# vm_ssh_password PASSWORD CMD... - password-only login (keys and agent disabled).
vm_ssh_password() {
    local pw=$1
    shift
    # shellcheck disable=SC2046
    SSHPASS=$pw sshpass -e ssh $(vm_ssh_opts) -o PubkeyAuthentication=no \
        -o PreferredAuthentications=password,keyboard-interactive -o NumberOfPasswordPrompts=1 \
        "$VM_SSH_USER@127.0.0.1" "$@" </dev/null
}

# vm_wait_ssh [TIMEOUT=300] - wait until key login works; fails early if qemu dies.
vm_wait_ssh() {
    local deadline=$((SECONDS + ${1:-300}))
    while ((SECONDS < deadline)); do
        kill -0 "$VM_PID" 2>/dev/null || { vm_log "qemu died; serial log $VM_SERIAL_LOG"; return 1; }
        if vm_ssh true 2>/dev/null; then
            vm_log "ssh up $((SECONDS - VM_BOOT_T0)) s after power-on"
            return 0
        fi
        sleep 3
    done
    vm_log "ssh not up after ${1:-300} s; serial log $VM_SERIAL_LOG"
    return 1
}

# vm_wait_cloud_init [TIMEOUT=600] - wait until cloud-init's final stage is over
# (boot-finished), then return `cloud-init status`'s code (0 done, non-zero error/timeout).
vm_wait_cloud_init() {
    local t=${1:-600} rc
    vm_ssh "timeout $t sh -c 'until test -f /var/lib/cloud/instance/boot-finished; do sleep 2; done' &&
        cloud-init status" >/dev/null
    rc=$?
    vm_log "cloud-init finished (rc $rc) $((SECONDS - VM_BOOT_T0)) s after power-on"
    return "$rc"
}

# vm_stop [TIMEOUT=60] - poweroff via ssh, then TERM/KILL qemu if it lingers.
# Returns 0 when the guest powered off by itself, 1 when qemu had to be killed.
vm_stop() {
    local deadline=$((SECONDS + ${1:-60}))
    [[ -n ${VM_PID:-} ]] || return 0
    vm_ssh systemctl poweroff --no-block >/dev/null 2>&1
    while kill -0 "$VM_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
    local rc=0
    if kill -0 "$VM_PID" 2>/dev/null; then
        rc=1
        vm_log "qemu $VM_PID still running: killing"
        kill "$VM_PID" 2>/dev/null
        sleep 2
        kill -9 "$VM_PID" 2>/dev/null
    fi
    wait "$VM_PID" 2>/dev/null
    VM_PID=""
    return "$rc"
}
