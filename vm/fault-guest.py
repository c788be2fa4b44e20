#!/usr/bin/env python3
"""vm/fault-guest.py - the fault harness's hands inside the guest (vm/faults.sh copies it to
/root/fault.py). It watches brickup from outside the binary and acts; brickup has no hooks.

  wait-step STEP      follow this boot's journal until brickup logs `applying step=STEP`
  wait-proc PATTERN   until a process whose command line matches PATTERN runs; then 1 s more
  last-step           the last `applying step=NAME` of this boot (the step running now)
  apply kill          run `brickup apply`; the moment the sshd drop-in changes on disk (written,
                      not yet restarted), SIGKILL brickup
  apply bind PORT     run `brickup apply`; the moment the sshd drop-in changes, bind PORT (v4+v6)
                      so sshd's restart cannot take it; hold it until brickup exits
  hold PORT           bind PORT and keep it (pid in /run/fault-hold-PORT.pid) until killed
  fill PATH           fill PATH's filesystem to the last block (a file at PATH)
apply prints "rc=N event=E" (E: killed, bound, or none when the drop-in never changed) and
keeps brickup's output in /root/fault-apply.log.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

DROPIN = "/etc/ssh/sshd_config.d/00-brickup.conf"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def step_of(line):
    m = re.search(r"applying.*\bstep=([a-z0-9-]+)", ANSI.sub("", line))
    return m.group(1) if m else None


def journal_steps():
    out = subprocess.run(["journalctl", "-b", "-o", "cat", "--no-pager"], capture_output=True,
                         text=True, errors="replace").stdout
    return [(s, ANSI.sub("", l).strip()) for l in out.splitlines() for s in [step_of(l)] if s]


def wait_step(step):
    # Polled: the journal of one boot is small, and a follower can end with its session.
    while True:
        seen = [line for s, line in journal_steps() if s == step]
        if seen:
            print(seen[0], flush=True)
            return 0
        time.sleep(0.3)


def last_step():
    steps = journal_steps()
    print(steps[-1][0] if steps else "none")
    return 0


def running(pattern):
    """A process whose command line matches PATTERN (a regex), this harness's own excepted."""
    rx = re.compile(pattern)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "fault.py" not in cmd and rx.search(cmd):
            return cmd.strip()
    return None


def wait_proc(pattern):
    while not (cmd := running(pattern)):
        time.sleep(0.1)
    time.sleep(1)
    print("running: " + cmd[:160], flush=True)
    return 0


def listen(port):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    return s


def read_dropin():
    try:
        with open(DROPIN, "rb") as f:
            return f.read()
    except OSError:
        return None


def apply(mode, port=None):
    before = read_dropin()
    log = open("/root/fault-apply.log", "w")
    p = subprocess.Popen(["brickup", "apply"], stdout=log, stderr=subprocess.STDOUT)
    event, held = "none", None
    while p.poll() is None:
        if read_dropin() != before:
            if mode == "kill":
                p.send_signal(signal.SIGKILL)
                event = "killed"
            else:
                held = listen(port)
                event = "bound"
            break
        time.sleep(0.001)
    rc = p.wait()
    if held:
        held.close()
    print("rc=%d event=%s" % (rc, event), flush=True)
    return 0


def hold(port):
    s = listen(port)
    with open("/run/fault-hold-%d.pid" % port, "w") as f:
        f.write("%d\n" % os.getpid())
    while True:
        conn, _ = s.accept()
        conn.close()


def fill(path):
    st = os.statvfs(os.path.dirname(path))
    with open(path, "wb") as f:
        size = st.f_bfree * st.f_frsize
        while size > 0:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
                break
            except OSError:
                size -= size // 50 + 4096
        # Whatever fallocate left (reserved rounding): written until the disk refuses.
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    print("filled %s" % path)
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "wait-step":
        return wait_step(argv[2])
    if cmd == "wait-proc":
        return wait_proc(argv[2])
    if cmd == "last-step":
        return last_step()
    if cmd == "apply":
        return apply(argv[2], int(argv[3]) if len(argv) > 3 else None)
    if cmd == "hold":
        return hold(int(argv[2]))
    if cmd == "fill":
        return fill(argv[2])
    sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
