#!/usr/bin/env bash
# build-image.sh - build (or reuse from cache) a bootable Debian cloud image for the
# brickup first-boot VM harness, plus a local flat apt repository holding csf's
# prerequisites resolved against exactly that image.
#
# usage: image/build-image.sh OUT.qcow2 [--suite bookworm|trixie|bullseye] [--ssh-socket]
#                             [--brickup BIN] [--unit FILE]...
#   --unit (repeatable): a unit file installed in /etc/systemd/system and enabled, as
#   image/brickup.pkr.hcl does for brickup-early.service and brickup-firstboot.service
#
# Outputs (next to OUT):
#   OUT.qcow2     thin qcow2 overlay whose backing file is the cached image
#   OUT.vmlinuz   guest kernel  } boot with qemu -kernel/-initrd, root=/dev/vda (the disk is
#   OUT.initrd    guest initrd  } one bare ext4 filesystem, no partition table, no bootloader)
#   OUT.env       shell variables: BRICKUP_IMG_{SUITE,BASE,KERNEL,INITRD,APT_REPO,KEY}
#
# Cache: ${BRICKUP_VM_CACHE:-/var/cache/brickup-vm}
#   base-<key>.tar   mmdebstrap rootfs, keyed by suite + the build_base recipe
#   repo-<key>/      flat apt repo (Packages, Release, *.deb) for the same key
#   img-<key>.*      final image, keyed by this whole script + options + inputs' sha256
# Set BRICKUP_VM_REBUILD=1 to ignore the cache.
set -euo pipefail

die() { echo "build-image: error: $*" >&2; exit 1; }
# Temporary paths removed on any exit (a failed build leaves no half-made cache entry).
TMP_PATHS=()
trap 'rm -rf "${TMP_PATHS[@]}"' EXIT
log() { echo "build-image: $*" >&2; }

CACHE=${BRICKUP_VM_CACHE:-/var/cache/brickup-vm}
MIRROR=${BRICKUP_VM_MIRROR:-http://deb.debian.org/debian}
DISK_SIZE=${BRICKUP_VM_DISK_SIZE:-4G}

# Packages csf needs that brickup must install itself (FACTS.md); the image must NOT have
# them, the local apt repo MUST. `perl` (full) and iptables are listed for completeness.
# rsyslog: lfd reads SSHD_LOG (/var/log/auth.log), which nothing writes on Debian 12/13
# without a syslog daemon; brickup installs it with csf's prerequisites.
# unattended-upgrades: the updates step keeps security updates on.
CSF_PREREQS="libwww-perl e2fsprogs unzip libio-socket-ssl-perl libnet-libidn-perl \
libcrypt-ssleay-perl libio-socket-inet6-perl libsocket6-perl cron bind9-host iptables perl rsyslog \
unattended-upgrades"
# Packages that must never be in the base image (checked after the build) and must be in the
# local apt repo (checked too).
FORBIDDEN="libwww-perl unzip cron bind9-host libio-socket-ssl-perl e2fsprogs rsyslog unattended-upgrades"

install_host_deps() {
    local need=() p
    for p in mmdebstrap qemu-utils e2fsprogs apt-utils; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
    done
    if ((${#need[@]})); then
        log "installing host packages: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

suite_packages() {
    # variant "apt" = Essential packages + apt; everything else is named here so that
    # Priority:required extras (e2fsprogs, ...) stay out.
    local p="linux-image-cloud-amd64,systemd-sysv,udev,dbus,cloud-init,openssh-server,iptables"
    p+=",sudo,passwd,adduser,iproute2,netbase,procps,kmod,ca-certificates,less"
    case "$1" in
        bullseye) p+=",ifupdown,isc-dhcp-client" ;; # cloud-init 20.4 has no networkd renderer
        bookworm | trixie) ;;                         # systemd-networkd (part of systemd)
        *) die "unsupported suite '$1' (bookworm|trixie|bullseye)" ;;
    esac
    echo "$p"
}

# build_base SUITE TAR REPO - mmdebstrap the rootfs into TAR and download CSF_PREREQS with
# their (recommended) dependencies, resolved inside that very rootfs, into the flat repo REPO.
build_base() {
    local suite=$1 tar=$2 repo=$3 tmprepo
    tmprepo=$(mktemp -d "$CACHE/repo-tmp.XXXXXX")
    chmod 755 "$tmprepo"
    TMP_PATHS+=("$tmprepo" "$tar.partial")
    log "mmdebstrap $suite -> $tar (takes 1-2 min)"
    # shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap's shell, not this one
    REPO_OUT=$tmprepo CSF_PREREQS=$CSF_PREREQS mmdebstrap --mode=root --variant=apt \
        --format=tar --aptopt='Apt::Install-Recommends "false"' \
        --include="$(suite_packages "$suite")" \
        --customize-hook='chroot "$1" apt-get install -y --download-only \
            -o APT::Install-Recommends=true $CSF_PREREQS >&2' \
        --customize-hook='cp "$1"/var/cache/apt/archives/*.deb "$REPO_OUT"/' \
        --customize-hook='chroot "$1" dpkg-query -W -f="\${Package}\n" > "$REPO_OUT"/.base-packages' \
        "$suite" "$tar.partial" "$MIRROR" >&2
    (cd "$tmprepo" && apt-ftparchive packages . >Packages && gzip -9k Packages &&
        apt-ftparchive release . >Release)
    mv "$tar.partial" "$tar"
    rm -rf "$repo"
    mv "$tmprepo" "$repo"
}

# check_base REPO - the base image has none of FORBIDDEN; the repo has every one of them.
check_base() {
    local repo=$1 p bad=() missing=()
    for p in $FORBIDDEN; do
        grep -qx "$p" "$repo/.base-packages" && bad+=("$p")
        grep -qx "Package: $p" "$repo/Packages" || missing+=("$p")
    done
    ((${#bad[@]} == 0)) || die "base image contains csf prerequisites: ${bad[*]}"
    ((${#missing[@]} == 0)) || die "local apt repo $repo lacks: ${missing[*]}"
}

# customize ROOTDIR - turn the extracted rootfs into a NoCloud VM image.
customize() {
    local d=$1
    rm -f "$d"/etc/apt/apt.conf.d/99mmdebstrap "$d"/etc/apt/sources.list.d/*
    # The guest has no internet: its only apt source is the harness's local repo (guestfwd).
    echo 'deb [trusted=yes] http://10.0.2.100/apt ./' >"$d/etc/apt/sources.list"
    rm -rf "$d"/var/lib/apt/lists/* "$d"/var/cache/apt/*.bin
    printf 'LABEL=brickup-root / ext4 defaults,errors=remount-ro 0 0\n' >"$d/etc/fstab"
    printf 'localhost\n' >"$d/etc/hostname"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$d/etc/hosts"
    cat >"$d/etc/cloud/cloud.cfg.d/90-brickup-vm.cfg" <<'EOF'
# brickup VM harness: only the NoCloud seed (cidata ISO) is a datasource.
datasource_list: [ NoCloud, None ]
manage_etc_hosts: true
# The root is a fixed-size bare ext4 and e2fsprogs (resize2fs) is left out on purpose (csf
# prerequisite that brickup must install), so no growpart/resizefs.
growpart: {mode: "off"}
resize_rootfs: false
# Only C.UTF-8 exists in the image (no locale-gen run).
locale: C.UTF-8
EOF
    if [[ -d $d/etc/systemd/network ]] && [[ $SUITE != bullseye ]]; then
        cat >"$d/etc/systemd/network/90-brickup-vm-dhcp.network" <<'EOF'
# Fallback DHCP for the virtio NIC (cloud-init's own 10-cloud-init-*.network wins if written).
[Match]
Name=en* eth*
[Network]
DHCP=yes
EOF
        systemctl --root="$d" enable systemd-networkd.service >/dev/null 2>&1
    fi
    # OpenSSH >= 9.8 (trixie) penalises source addresses (PerSourcePenalties). Behind qemu's
    # user networking every test connection comes from 10.0.2.2, so one refused password
    # would lock the harness itself out: exempt that address only. The zz- name sorts last,
    # so any drop-in brickup writes still wins for every other keyword.
    local sshver
    # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
    sshver=$(chroot "$d" dpkg-query -W -f='${Version}' openssh-server)
    if dpkg --compare-versions "$sshver" ge 1:9.8; then
        printf '%s\n' '# brickup VM harness: the qemu user-net gateway is the test client' \
            'PerSourcePenaltyExemptList 10.0.2.2' >"$d/etc/ssh/sshd_config.d/zz-brickup-vm-harness.conf"
    fi
    # Every VM must get its own host keys (cloud-init's ssh module generates them).
    rm -f "$d"/etc/ssh/ssh_host_*
    : >"$d/etc/machine-id"
    if ((SSH_SOCKET)); then
        systemctl --root="$d" disable ssh.service >/dev/null 2>&1
        systemctl --root="$d" enable ssh.socket >/dev/null 2>&1
        [[ -e $d/etc/systemd/system/sockets.target.wants/ssh.socket ]] ||
            die "enabling ssh.socket failed"
    fi
    if [[ -n $BRICKUP_BIN ]]; then
        install -D -m 0755 "$BRICKUP_BIN" "$d/usr/local/bin/brickup"
    fi
    local file unit
    for file in "${UNIT_FILES[@]}"; do
        unit=$(basename "$file")
        install -D -m 0644 "$file" "$d/etc/systemd/system/$unit"
        systemctl --root="$d" enable "$unit" >&2 || die "systemctl enable $unit failed"
    done
}

# build_final TAR OUTPREFIX - extract, customize, make the ext4 disk and kernel files.
build_final() {
    local tar=$1 out=$2 d
    d=$(mktemp -d "$CACHE/root.XXXXXX")
    TMP_PATHS+=("$d" "$out.raw" "$out.vmlinuz.partial" "$out.initrd.partial" "$out.qcow2.partial")
    tar -C "$d" --numeric-owner -xpf "$tar"
    customize "$d"
    local k i
    k=$(find "$d/boot" -name 'vmlinuz-*' | sort -V | tail -1)
    i=$(find "$d/boot" -name 'initrd.img-*' | sort -V | tail -1)
    [[ -n $k && -n $i ]] || die "no kernel/initrd in the image's /boot"
    cp "$k" "$out.vmlinuz.partial"
    cp "$i" "$out.initrd.partial"
    rm -f "$out.raw"
    mke2fs -q -t ext4 -L brickup-root -d "$d" "$out.raw" "$DISK_SIZE"
    qemu-img convert -f raw -O qcow2 "$out.raw" "$out.qcow2.partial"
    rm -f "$out.raw"
    rm -rf "$d"
    for f in vmlinuz initrd qcow2; do mv "$out.$f.partial" "$out.$f"; done
}

# Keep the newest BRICKUP_VM_KEEP_IMAGES (6) final images; each is ~0.5 GB. Overlays made
# from a pruned image stop working, so keep enough for the runs that may be in flight.
prune_images() {
    local old
    # shellcheck disable=SC2012 # cache file names are ours (no spaces); ls -t sorts by age
    for old in $(ls -1t "$CACHE"/img-*.qcow2 2>/dev/null | tail -n +$((${BRICKUP_VM_KEEP_IMAGES:-6} + 1))); do
        log "pruning old image ${old%.qcow2}"
        rm -f "$old" "${old%.qcow2}.vmlinuz" "${old%.qcow2}.initrd"
    done
}

main() {
    local out="" suite=bookworm
    SSH_SOCKET=0 BRICKUP_BIN="" UNIT_FILES=()
    while (($#)); do
        case "$1" in
            --suite) suite=${2:?--suite needs a value}; shift 2 ;;
            --ssh-socket) SSH_SOCKET=1; shift ;;
            --brickup) BRICKUP_BIN=${2:?--brickup needs a file}; shift 2 ;;
            --unit) UNIT_FILES+=("${2:?--unit needs a file}"); shift 2 ;;
            -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) [[ -z $out ]] || die "more than one OUT given"; out=$1; shift ;;
        esac
    done
    [[ $out == *.qcow2 ]] || die "usage: $0 OUT.qcow2 [--suite S] [--ssh-socket] [--brickup BIN] [--unit FILE]..."
    [[ -z $BRICKUP_BIN || -f $BRICKUP_BIN ]] || die "--brickup: no such file $BRICKUP_BIN"
    local f
    for f in "${UNIT_FILES[@]}"; do [[ -f $f ]] || die "--unit: no such file $f"; done
    SUITE=$suite
    suite_packages "$suite" >/dev/null
    [[ $(id -u) == 0 ]] || die "must run as root (mmdebstrap --mode=root, mke2fs -d)"
    install_host_deps
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock -w 1800 9 || die "cache lock $CACHE/.lock busy for 30 min"

    local base_key final_key t0
    base_key=$( { echo "$suite $MIRROR $CSF_PREREQS"; suite_packages "$suite"; declare -f build_base; } |
        sha256sum | cut -c1-16)
    local base="$CACHE/base-$suite-$base_key.tar" repo="$CACHE/repo-$suite-$base_key"
    if [[ ${BRICKUP_VM_REBUILD:-0} == 1 || ! -f $base || ! -f $repo/Release ]]; then
        t0=$SECONDS
        build_base "$suite" "$base" "$repo"
        # A changed recipe makes the suite's older base and repo dead weight.
        find "$CACHE" -maxdepth 1 \( -name "base-$suite-*.tar" -o -name "repo-$suite-*" \) \
            ! -name "base-$suite-$base_key.tar" ! -name "repo-$suite-$base_key" \
            -exec rm -rf {} +
        log "base built in $((SECONDS - t0)) s"
    else
        log "base cached: $base"
    fi
    check_base "$repo"

    final_key=$( {
        sha256sum "$0" | cut -d' ' -f1
        echo "$base_key $SSH_SOCKET $DISK_SIZE"
        [[ -z $BRICKUP_BIN ]] || sha256sum "$BRICKUP_BIN" | cut -d' ' -f1
        for f in "${UNIT_FILES[@]}"; do basename "$f"; sha256sum "$f" | cut -d' ' -f1; done
    } | sha256sum | cut -c1-16)
    local img="$CACHE/img-$suite-$final_key"
    if [[ ${BRICKUP_VM_REBUILD:-0} == 1 || ! -f $img.qcow2 ]]; then
        t0=$SECONDS
        build_final "$base" "$img"
        log "image built in $((SECONDS - t0)) s"
        prune_images
    else
        log "image cached: $img.qcow2"
    fi

    local prefix=${out%.qcow2}
    mkdir -p "$(dirname "$out")"
    rm -f "$out"
    qemu-img create -q -f qcow2 -F qcow2 -b "$img.qcow2" "$out"
    cp "$img.vmlinuz" "$prefix.vmlinuz"
    cp "$img.initrd" "$prefix.initrd"
    cat >"$prefix.env" <<EOF
BRICKUP_IMG_SUITE=$suite
BRICKUP_IMG_KEY=$final_key
BRICKUP_IMG_BASE=$img.qcow2
BRICKUP_IMG_KERNEL=$(realpath "$prefix.vmlinuz")
BRICKUP_IMG_INITRD=$(realpath "$prefix.initrd")
BRICKUP_IMG_APT_REPO=$repo
EOF
    log "ready: $out (backing $img.qcow2), apt repo $repo"
}

main "$@"; exit $?  # exit before bash reads on: the file may be edited meanwhile
