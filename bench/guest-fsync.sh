#!/usr/bin/env bash
# Guest-level flush check: a database's write pattern on ext4, on a fresh
# archip clone against a fresh qcow2 overlay served by qemu-nbd, in one run.
#
#   bench/guest-fsync.sh                     # 1 GiB file system, 2000 operations per test
#   SIZE=256M COUNT=200 bench/guest-fsync.sh # quick
#
# Needs root and /dev/fuse. One base image (ext4 made by mkfs.ext4 on a raw
# file, inode tables and journal initialised up front so that no lazy init
# writes during the tests) is copied into an archip volume, which is
# snapshotted and cloned; qemu-nbd serves a fresh qcow2 overlay of the same
# raw file (qemu-img create -f qcow2 -b base.raw -F raw, --cache=writeback).
# Each export becomes a block device the same way (nbdfuse, then a loop
# device: the kernel has no NBD client here) and is mounted with ext4's
# defaults, so every fsync reaches the server as NBD FLUSH requests (ext4's
# journal commit; the loop device turns FUA into a flush). Both are mounted
# at once and the tests alternate between them:
#   append: COUNT times (append 4 KiB to one file, fsync it);
#   sqlite: COUNT single-row INSERT transactions, journal_mode=WAL,
#           synchronous=FULL (one fsync of the WAL per commit).
# Prints operations per second for each and the ratio archip/qcow2. The
# mounts, loop devices, FUSE mounts and servers are removed on exit, also
# on failure or interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
SIZE=${SIZE:-1G}
COUNT=${COUNT:-2000}
for tool in nbdfuse fusermount3 losetup mkfs.ext4 mount umount qemu-nbd qemu-img nbdcopy; do
  command -v "$tool" >/dev/null || { echo "guest-fsync: $tool is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  echo "guest-fsync: needs root and /dev/fuse (for loop devices and nbdfuse)" >&2
  exit 1
fi

work=$(mktemp -d)
pids=() fuses=() loops=() mounts=()
cleanup() {
  set +e
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"; done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  for f in "${fuses[@]}"; do fusermount3 -u "$f" 2>/dev/null || fusermount3 -uz "$f"; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$work/archip" ./cmd/archip
archip() { "$work/archip" --store "file://$work/store" "$@"; }
serve() { "$work/archip" --store "file://$work/store" serve --nbd-listen "unix:$work/a.sock" 2>/dev/null & pids+=($!); }
waitsock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "guest-fsync: no socket $1" >&2; exit 1; }

echo "making a $SIZE ext4 base image in $work" >&2
truncate -s "$SIZE" "$work/base.raw"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/base.raw"

archip volume create base --size "$SIZE" >/dev/null
serve
waitsock "$work/a.sock"
nbdcopy --flush "$work/base.raw" "nbd+unix:///base?socket=$work/a.sock"
kill "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
unset 'pids[-1]'
archip volume snapshot base base@1 >/dev/null
archip volume clone base@1 guest >/dev/null
rm -f "$work/a.sock"
serve
waitsock "$work/a.sock"

qemu-img create -q -f qcow2 -b "$work/base.raw" -F raw "$work/overlay.qcow2"
qemu-nbd -t -e 4 -f qcow2 --cache=writeback -k "$work/q.sock" "$work/overlay.qcow2" & pids+=($!)
waitsock "$work/q.sock"

# attach NAME URI: mounts the export's ext4 at $work/mnt-NAME.
attach() {
  local fuse=$work/fuse-$1 mnt=$work/mnt-$1 loop
  mkdir "$fuse" "$mnt"
  nbdfuse "$fuse" "$2" & pids+=($!)
  fuses+=("$fuse")
  for i in $(seq 200); do
    [ -s "$fuse/nbd" ] && break
    [ "$i" = 200 ] && { echo "guest-fsync: nbdfuse did not expose $2" >&2; exit 1; }
    sleep 0.05
  done
  loop=$(losetup -f --show "$fuse/nbd")
  loops+=("$loop")
  mount -t ext4 "$loop" "$mnt"
  mounts+=("$mnt")
}
attach archip "nbd+unix:///guest?socket=$work/a.sock"
attach qcow2 "nbd+unix:///?socket=$work/q.sock"

# workload KIND DIR → operations per second
workload() {
  /usr/bin/python3 - "$1" "$2" "$COUNT" <<'EOF'
import os, sqlite3, sys, time
kind, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
buf = os.urandom(4096)
if kind == "append":
    fd = os.open(os.path.join(d, "append.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t = time.monotonic()
    for _ in range(n):
        os.write(fd, buf)
        os.fsync(fd)
    t = time.monotonic() - t
    os.close(fd)
else:
    db = sqlite3.connect(os.path.join(d, "bench.db"), isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=full")
    db.execute("create table t (k integer primary key, v blob)")
    t = time.monotonic()
    for i in range(n):
        db.execute("insert into t (v) values (?)", (buf[(i * 200) % 3800:][:200],))
    t = time.monotonic() - t
    db.close()
print(round(n / t))
EOF
}

declare -A R
for kind in append sqlite; do
  for who in archip qcow2; do
    R[$who,$kind]=$(workload "$kind" "$work/mnt-$who")
    echo "  $who $kind: ${R[$who,$kind]}/s" >&2
  done
done

ratio() { /usr/bin/python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print(f"{a/b:.2f}x" if b else "-")' "$1" "$2"; }
echo
echo "ext4 over nbdfuse + loop, $SIZE, fresh archip clone vs fresh qcow2 overlay (qemu-nbd); operations/s, $COUNT each"
printf '%-40s %10s %10s %10s\n' test archip qcow2 ratio
printf '%-40s %10s %10s %10s\n' "append 4 KiB + fsync" "${R[archip,append]}" "${R[qcow2,append]}" "$(ratio "${R[archip,append]}" "${R[qcow2,append]}")"
printf '%-40s %10s %10s %10s\n' "sqlite insert txn (WAL, synchronous=FULL)" "${R[archip,sqlite]}" "${R[qcow2,sqlite]}" "$(ratio "${R[archip,sqlite]}" "${R[qcow2,sqlite]}")"
