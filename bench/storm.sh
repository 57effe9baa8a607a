#!/usr/bin/env bash
# The provisioning storm (issue 12), archip against the peer a user would
# script, in one run on one file store:
#   archip: one image imported, CLONES clones of it created through the CLI
#   (`archip volume clone`) by PROCS processes at once, and ATTACH of them
#   attached over NBD through two `archip serve` daemons on the store (half
#   each, unix sockets), each client writing and flushing its first 4 KiB;
#   peer: `qemu-img create -f qcow2 -b RAW -F raw` overlays of the same raw
#   file by PROCS processes, ATTACH of them served by a qemu-nbd each, the
#   same client write.
# Prints clones per second, p50/p99 of clone→first acknowledged write (from
# the start of a volume's clone command to the acknowledgement of the flush
# after its first write) and the errors, for both, with the ratios
# (bench/storm.py drives it). Exits 1 on any error (never on speed).
#
#   bench/storm.sh                     # 200 clones of a 1 GiB image, 8 processes, 100 attached
#   bench/storm.sh --short             # CI: 40 clones, 20 attached, 64 MiB of data in the image
#   CLONES=400 ATTACH=200 PROCS=16 SIZE=10G DATA=2G bench/storm.sh
#
# SIZE is the image's size, DATA how much of it (from the start) holds
# random data, the rest a hole (default: all of it). Flags --clones,
# --attach, --procs, --size and --data set the same.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
short=false
while [ $# -gt 0 ]; do
  case $1 in
    --short) short=true ;;
    --clones) CLONES=$2; shift ;;
    --attach) ATTACH=$2; shift ;;
    --procs) PROCS=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --data) DATA=$2; shift ;;
    *) echo "usage: $0 [--short] [--clones N] [--attach N] [--procs N] [--size SIZE] [--data SIZE]" >&2; exit 2 ;;
  esac
  shift
done
if $short; then
  CLONES=${CLONES:-40} ATTACH=${ATTACH:-20} DATA=${DATA:-64M}
fi
CLONES=${CLONES:-200}
ATTACH=${ATTACH:-100}
PROCS=${PROCS:-8}
SIZE=${SIZE:-1G}
DATA=${DATA:-$SIZE}
for tool in fio qemu-nbd qemu-img; do
  command -v "$tool" >/dev/null || { echo "storm: $tool is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "storm: python3-libnbd is missing (scripts/install-test-deps.sh)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # qemu-nbd servers bench/storm.py started and did not stop (an error).
  for f in "$work"/ovl/*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/archip" ./cmd/archip
store="file://$work/store"

echo "preparing a $SIZE image ($DATA of random data) in $work" >&2
fio --name=prep --filename="$work/disk.raw" --size="$DATA" --rw=write --bs=1M --refill_buffers \
  --output=/dev/null >/dev/null
truncate -s "$SIZE" "$work/disk.raw"
"$work/archip" --store "$store" -q image import "$work/disk.raw" img >/dev/null

waitsock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "storm: no socket $1" >&2; exit 1; }
for d in a b; do
  # The binary itself in the background (not a function), so $! is its PID.
  "$work/archip" --store "$store" serve --node-id "storm-$d" --nbd-listen "unix:$work/$d.sock" -v \
    2>"$work/$d.log" & pids+=($!)
done
waitsock "$work/a.sock"
waitsock "$work/b.sock"

/usr/bin/python3 bench/storm.py --archip "$work/archip" --store "$store" --image img --raw "$work/disk.raw" \
  --work "$work" --sockets "$work/a.sock,$work/b.sock" --logs "$work/a.log,$work/b.log" \
  --clones "$CLONES" --attach "$ATTACH" --procs "$PROCS"
