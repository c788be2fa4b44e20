# shellcheck shell=bash
# vm/node.sh - what every brickup VM boot needs on the host, shared by vm/firstboot.sh and
# vm/faults.sh. Source after vm/lib.sh, once vm_init has made VM_WORK.
#
#   node_build                    brickup (release, musl) and the fixture csf tarball; sets
#                                 BRICKUP_BIN, BIN_SHA, BRICKUP_CSF_TARBALL, CSF_SHA
#   node_image SUITE [ARGS...]    the cached Debian image as $VM_WORK/disk.qcow2 (ARGS go to
#                                 image/build-image.sh); sources disk.env
#   node_serve                    the static server: the apt repo, brickup, csf at its upstream path
#   node_receiver [OUT]           brickup receive with a fresh HMAC secret ($HMAC); sets VM_RECV_OUT
#   node_config FILE PORT [YAML]  an operator's brickup.yaml (FILE), SSH on PORT, YAML appended;
#                                 $NODE_SSH_EXTRA (lines indented by two) goes in its ssh section
#   node_render CONFIG OUT        `brickup render-userdata` for CONFIG (nocloud, binary fetched)
#   node_provider OUT [BOOTCMD...]
#                                 what a VPS provider adds to the user-data OUT: root's password
#                                 ($PASSWORD) with password SSH on, in a drop-in written first
#                                 thing at boot; BOOTCMD lines (cloud-init list items) go first in
#                                 the bootcmd list
#   node_userdata CONFIG OUT [BOOTCMD...]   node_render, then node_provider
#   report_field EVENT FIELD      FIELD of the last EVENT report the receiver verified, as JSON
#   reports_count EVENT           how many EVENT reports the receiver verified
#   serial_tail                   the console's last brickup line, printable
#   ssh_banner HOSTPORT           an SSH banner answers on that host port (a forward)
#   password_refused_at HOSTPORT  sshd itself refuses root's password ($PASSWORD) there

CSF_VERSION=15.10
# The upstream release asset's path (FACTS.md), served by the harness's http server.
CSF_URL_PATH=Aetherinox/csf-firewall/releases/download/$CSF_VERSION/csf-firewall-v$CSF_VERSION.tgz

node_build() {
    local t=$SECONDS
    (cd "$VM_REPO_DIR" && cargo build --release --locked --target x86_64-unknown-linux-musl -q) ||
        { fail "building brickup"; return 1; }
    # cargo builds where CARGO_TARGET_DIR says, when it is set.
    export BRICKUP_BIN=${CARGO_TARGET_DIR:-$VM_REPO_DIR/target}/x86_64-unknown-linux-musl/release/brickup
    vm_stage "brickup built ($((SECONDS - t)) s); building the fixture csf $CSF_VERSION tarball"
    # The script prints the tarball's path (its name follows upstream's; do not guess it).
    BRICKUP_CSF_TARBALL=$(bash "$VM_REPO_DIR/scripts/make-fixture-csf.sh" "$VM_WORK/fixture" "$CSF_VERSION" | tail -n1)
    [[ -f $BRICKUP_CSF_TARBALL ]] ||
        { fail "building the fixture csf (no tarball: '$BRICKUP_CSF_TARBALL')"; return 1; }
    export BRICKUP_CSF_TARBALL
    CSF_SHA=$(sha256sum "$BRICKUP_CSF_TARBALL" | cut -d' ' -f1)
    BIN_SHA=$(sha256sum "$BRICKUP_BIN" | cut -d' ' -f1)
}

node_image() {
    local suite=$1 t=$SECONDS
    shift
    vm_stage "building or reusing the cached $suite image (first time several minutes: mmdebstrap + local apt repo; log $VM_WORK/image.log)"
    "$VM_REPO_DIR/image/build-image.sh" "$VM_WORK/disk.qcow2" --suite "$suite" "$@" >"$VM_WORK/image.log" 2>&1 ||
        { fail "image build ($VM_WORK/image.log)"; tail -n 15 "$VM_WORK/image.log"; return 1; }
    vm_stage "image ready in $((SECONDS - t)) s ($(grep -oE 'base (cached|built)|image (cached|built)' "$VM_WORK/image.log" | paste -sd, -))"
    # shellcheck disable=SC1091
    source "$VM_WORK/disk.env"
}

node_serve() {
    vm_serve_setup "$BRICKUP_IMG_APT_REPO"
    install -D -m 0644 "$BRICKUP_CSF_TARBALL" "$VM_SERVE_DIR/$CSF_URL_PATH"
    vm_serve_start
}

node_receiver() {
    HMAC=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    export VM_HMAC_SECRET_FILE=$VM_WORK/hmac.key VM_RECEIVER=brickup
    printf '%s' "$HMAC" >"$VM_HMAC_SECRET_FILE"
    chmod 600 "$VM_HMAC_SECRET_FILE"
    vm_receiver_start "${1:-$VM_WORK/reports.jsonl}"
}

node_config() {
    local file=$1 port=$2 extra=${3:-}
    cat >"$file" <<YAML
version: 1
ssh:
  port: $port
  authorized_keys:
    - $(cat "$VM_SSH_KEY.pub")
${NODE_SSH_EXTRA:-}
firewall:
  masternode_ports: [pivx]
csf:
  url: http://$VM_GUEST_HTTP_IP/$CSF_URL_PATH
  sha256: $CSF_SHA
  allow_http: true
report:
  url: http://$VM_GUEST_RECV_IP${VM_RECV_GUEST_PORT:+:$VM_RECV_GUEST_PORT}/report
  allow_http: true
  hmac_secret: "$HMAC"
$extra
YAML
    chmod 600 "$file"
}

node_render() {
    "$BRICKUP_BIN" render-userdata --config "$1" --provider nocloud \
        --binary-url "http://$VM_GUEST_HTTP_IP/brickup" --binary-sha256 "$BIN_SHA" >"$2" ||
        { fail "render-userdata"; return 1; }
    pass "user-data rendered by brickup render-userdata ($(wc -c <"$2") bytes)"
}

node_userdata() {
    node_render "$1" "$2" || return 1
    local out=$2
    shift 2
    node_provider "$out" "$@"
}

node_provider() {
    local out=$1
    shift
    # Like a VPS provider: root has a password and password SSH is on until brickup turns it off.
    PASSWORD="pw-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    cat >>"$out" <<EOF
ssh_pwauth: true
chpasswd:
  expire: false
  list: |
    root:$PASSWORD
EOF
    # The provider's own sshd drop-in, written first thing at boot. render-userdata's user-data
    # has a bootcmd list already (brickup's early run): the provider's command goes first in it,
    # since a second `bootcmd:` key would replace brickup's.
    python3 - "$out" "$@" <<'PY'
import sys
cmds = ["""  - [sh, -c, 'mkdir -p /etc/ssh/sshd_config.d && printf "PermitRootLogin yes\\nPasswordAuthentication yes\\n" > /etc/ssh/sshd_config.d/10-provider.conf']"""]
cmds += ["  - " + c for c in sys.argv[2:]]
path = sys.argv[1]
lines = open(path).read().rstrip("\n").split("\n")
if "bootcmd:" in lines:
    i = lines.index("bootcmd:") + 1
    lines[i:i] = cmds
else:
    lines += ["bootcmd:"] + cmds
open(path, "w").write("\n".join(lines) + "\n")
PY
}

report_field() {
    python3 - "$VM_RECV_OUT" "$1" "$2" <<'PY'
import json, os, sys
path, event, field = sys.argv[1:]
docs = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
docs = [d for d in docs if d.get("event") == event]
print(json.dumps(docs[-1].get(field)) if docs else "")
PY
}

reports_count() {
    python3 - "$VM_RECV_OUT" "$1" <<'PY'
import json, os, sys
path, event = sys.argv[1:]
docs = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
print(sum(1 for d in docs if d.get("event") == event))
PY
}

serial_tail() {
    # "[  62.38] cloud-init[421]: 2026-11-26T09:32:27.68Z  INFO msg" -> "INFO msg"
    grep -a 'brickup' "$VM_SERIAL_LOG" 2>/dev/null | tail -n1 | sed 's/\x1b\[[0-9;]*[A-Za-z]//g; s/\x1b[A-Za-z]//g' |
        tr -cd '[:print:]' | sed -E 's/^\[ *[0-9.]+\] [^:]+: //; s/^[0-9T:.-]+Z +//' | cut -c1-110
}

# no_banner_but HOSTPORT CONTROL - no SSH banner through HOSTPORT, while the same probe sees one
# through CONTROL (the probe and the forwards work: the silence is the port's).
no_banner_but() {
    ssh_banner "$2" || { echo "    control failed: no SSH banner through $2 either"; return 1; }
    ! ssh_banner "$1"
}

ssh_banner() {
    timeout 8 python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),5); s.settimeout(5); sys.exit(0 if s.recv(4)==b"SSH-" else 1)' \
        "$1" 2>/dev/null
}

# password_refused_at HOSTPORT - a password login is refused by sshd itself: ssh fails with
# sshd's "Permission denied (METHODS)" and METHODS has neither password nor
# keyboard-interactive. Any other failure (connection refused, timeout, no banner) fails it,
# after more tries (up to 8, 5 s apart) when nothing answered: reset, refused, or no banner
# within 30 s (a first boot under TCG can keep sshd from answering within ssh's 10 s: CI saw
# "Connection timed out during banner exchange" once, and the next checks over SSH passed; and
# after a power cut at the first login, the retried first-boot run's sshd restarts reset three
# tries over 15 s while key logins worked before and after).
password_refused_at() {
    local err rc methods try
    for try in 1 2 3 4 5 6 7 8; do
        err=$(SSHPASS=$PASSWORD sshpass -e ssh -p "$1" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
            -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive \
            -o NumberOfPasswordPrompts=1 -o ConnectTimeout=30 root@127.0.0.1 true 2>&1 </dev/null)
        rc=$?
        # A connection that sshd reset, closed or left without a banner (a run restarting sshd
        # right then, a loaded guest) is asked again; an answer - refusal or login - is final.
        if ((rc != 255)) || grep -q 'Permission denied' <<<"$err" ||
            ! grep -qE 'Connection (reset|closed|refused|timed out)|kex_exchange_identification' <<<"$err"; then
            break
        fi
        echo "    password login try $try: no answer from sshd ($(tr '\n' ' ' <<<"$err" | cut -c1-120)); again in 5 s"
        sleep 5
    done
    methods=$(sed -n 's/.*Permission denied (\([^)]*\)).*/\1/p' <<<"$err" | head -n1)
    if ((rc != 0)) && [[ -n $methods ]] && ! grep -qE '(^|,)(password|keyboard-interactive)(,|$)' <<<"$methods"; then
        echo "    sshd: Permission denied ($methods)"
        return 0
    fi
    echo "    password login: exit $rc, not sshd's refusal without password: $(tr '\n' ' ' <<<"$err" | cut -c1-200)"
    return 1
}
