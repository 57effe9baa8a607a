#!/usr/bin/python3
"""The provisioning storm's driver (bench/storm.sh sets up and calls it).

For each side, archip then the peer:
  - CLONES clones of one image, created by PROCS worker threads, each
    running one CLI process at a time (so PROCS at once): `archip volume
    clone IMAGE vmNNNN`, or `qemu-img create -f qcow2 -b RAW -F raw`;
  - as soon as its clone exists, every other volume (ATTACH of them) is
    attached and its first 4 KiB written and flushed with libnbd: through
    one of the two `archip serve` daemons (alternately), or through a
    qemu-nbd started for that overlay (--fork: it returns once listening).

Reports clones per second (CLONES over the time from the first clone's
start to the last one's end) and p50/p99 of clone→first acknowledged
write: per attached volume, from the start of its clone command to the
acknowledgement of the flush after its first write. Every failure (a
command's exit status or stderr, an NBD error, a daemon log line) is an
error: nothing is retried. Exits 1 if there was any.
"""
import argparse
import os
import re
import queue
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import nbd

BS = 4096


class Side:
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.errors = []
        self.latency = []  # seconds, clone start → first write acknowledged
        self.clone = []  # seconds, each clone command
        self.clone_span = 0.0

    def error(self, msg):
        with self.lock:
            self.errors.append(msg)


def write_first(uri_connect, side, vol, started):
    """Connects, writes the first 4 KiB, flushes, records the latency."""
    h = nbd.NBD()
    try:
        uri_connect(h)
        h.pwrite(os.urandom(BS), 0)
        h.flush()
        done = time.monotonic()
        with side.lock:
            side.latency.append(done - started)
        h.shutdown()
    except nbd.Error as e:
        side.error(f"{vol}: nbd: {e}")


def run(cmd):
    """Runs a command; returns an error string, or None."""
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0 or p.stderr.strip():
        return f"{' '.join(cmd[-2:])}: exit {p.returncode}: {p.stderr.strip()[:300]}"
    return None


def storm(side, args, clone_cmd, attach):
    """Runs the clones with args.procs workers, attaching every other one."""
    todo = queue.Queue()
    for i in range(args.clones):
        todo.put(i)
    pool = ThreadPoolExecutor(max_workers=max(1, min(args.attach, 32)))
    futures = []
    flock = threading.Lock()

    def worker():
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            vol = f"vm{i:04d}"
            started = time.monotonic()
            err = run(clone_cmd(vol))
            with side.lock:
                side.clone.append(time.monotonic() - started)
            if err:
                side.error(err)
                continue
            if i % 2 == 0 and i // 2 < args.attach:
                f = pool.submit(attach, side, vol, i // 2, started)
                with flock:
                    futures.append(f)

    t0 = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(args.procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    side.clone_span = time.monotonic() - t0
    for f in futures:
        try:
            f.result()
        except Exception as e:  # a bug here, reported like the others
            side.error(f"attach: {e!r}")
    pool.shutdown()


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def log_problem(line):
    """A daemon's log line that reports a problem: a record at level
    WARN or above, or anything that is no log record (a panic's trace)
    except the old unstructured startup lines."""
    s = line.strip()
    if not s:
        return False
    m = re.search(r'\blevel=(\w+)', s) or re.search(r'"level":"(\w+)"', s)
    if m:
        return m.group(1) not in ("DEBUG", "INFO")
    return "serving" not in s and "admin" not in s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--archip", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--image", required=True, help="the archip image's name")
    ap.add_argument("--raw", required=True, help="the raw file the overlays are backed by")
    ap.add_argument("--work", required=True)
    ap.add_argument("--sockets", required=True, help="the archip daemons' unix sockets, comma-separated")
    ap.add_argument("--logs", default="", help="the archip daemons' log files, comma-separated")
    ap.add_argument("--clones", type=int, default=200)
    ap.add_argument("--attach", type=int, default=100)
    ap.add_argument("--procs", type=int, default=8)
    args = ap.parse_args()
    args.attach = min(args.attach, (args.clones + 1) // 2)
    socks = args.sockets.split(",")

    a = Side("archip")

    def archip_clone(vol):
        return [args.archip, "--store", args.store, "-q", "volume", "clone", args.image, vol]

    def archip_attach(side, vol, k, started):
        sock = socks[k % len(socks)]

        def connect(h):
            h.set_export_name(vol)
            h.connect_unix(sock)

        write_first(connect, side, vol, started)

    print(f"archip: {args.clones} clones by {args.procs} processes, {args.attach} attached", flush=True)
    storm(a, args, archip_clone, archip_attach)
    for log in filter(None, args.logs.split(",")):
        with open(log) as f:
            for line in f:
                if log_problem(line):
                    a.error(f"{os.path.basename(log)}: {line.strip()[:300]}")

    q = Side("qemu")
    ovl = os.path.join(args.work, "ovl")
    os.makedirs(ovl, exist_ok=True)

    def qemu_clone(vol):
        return ["qemu-img", "create", "-q", "-f", "qcow2", "-b", args.raw, "-F", "raw", os.path.join(ovl, vol + ".qcow2")]

    def qemu_attach(side, vol, k, started):
        sock = os.path.join(ovl, vol + ".sock")
        pidfile = os.path.join(ovl, vol + ".pid")  # storm.sh stops what is left
        err = run(["qemu-nbd", "-t", "--fork", "--pid-file", pidfile, "-f", "qcow2", "--cache=writeback",
                   "-k", sock, os.path.join(ovl, vol + ".qcow2")])
        if err:
            side.error(err)
            return

        def connect(h):
            h.connect_unix(sock)

        try:
            write_first(connect, side, vol, started)
        finally:
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read().strip()), signal.SIGTERM)
                os.remove(pidfile)
            except (OSError, ValueError) as e:
                side.error(f"{vol}: stop qemu-nbd: {e}")

    print(f"qemu-img + qemu-nbd: {args.clones} overlays by {args.procs} processes, {args.attach} attached", flush=True)
    storm(q, args, qemu_clone, qemu_attach)

    def ratio(x, y):
        return "-" if y == 0 or x != x or y != y else f"{x / y:.2f}x"

    rows = [
        ("clones/s", args.clones / a.clone_span, args.clones / q.clone_span, "{:.1f}"),
        ("clone command p50 (ms)", pct(a.clone, 50) * 1e3, pct(q.clone, 50) * 1e3, "{:.0f}"),
        ("clone command p99 (ms)", pct(a.clone, 99) * 1e3, pct(q.clone, 99) * 1e3, "{:.0f}"),
        ("clone→first write p50 (ms)", pct(a.latency, 50) * 1e3, pct(q.latency, 50) * 1e3, "{:.0f}"),
        ("clone→first write p99 (ms)", pct(a.latency, 99) * 1e3, pct(q.latency, 99) * 1e3, "{:.0f}"),
        ("first writes acknowledged", len(a.latency), len(q.latency), "{}"),
        ("errors", len(a.errors), len(q.errors), "{}"),
    ]
    print()
    print(f"provisioning storm: {args.clones} clones by {args.procs} processes, {args.attach} attached "
          f"(archip: {len(socks)} daemons), first 4 KiB written and flushed")
    print(f"{'':30} {'archip':>10} {'qemu':>10} {'archip/qemu':>12}")
    for label, x, y, fmt in rows:
        print(f"{label:30} {fmt.format(x):>10} {fmt.format(y):>10} {ratio(x, y):>12}")
    bad = False
    for s in (a, q):
        for e in s.errors[:20]:
            print(f"error ({s.name}): {e}")
        if s.errors or len(s.latency) != args.attach:
            bad = True
    if bad:
        print("storm: FAILED (errors above, or fewer first writes than volumes attached)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
