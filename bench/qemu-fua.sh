#!/usr/bin/env bash
# FUA writes as a guest's QEMU sends them, with QEMU's own block layer as
# the client (C, where bench/fua.py is Python): qemu-img bench, 4 KiB
# writes at QD1 with cache=directsync, under which QEMU makes every write
# durable before it completes it: over NBD each write carries the FUA flag,
# and on QEMU's rbd driver (which has no FUA, and runs librbd without its
# cache under directsync) each write is a write and a flush.
#
#   bench/qemu-fua.sh TARGET SECONDS
#
# TARGET is anything qemu-img opens as raw: an NBD URI, or
# rbd:POOL/IMAGE:conf=FILE. Runs rounds of sequential writes (as a
# guest's journal writes run), each inside a random 16 MiB-aligned
# region of the image: a first round of 256 writes, then rounds sized
# from the rate so far to the time left (at most 4,096 writes, the
# region), until the rounds' own times (qemu-img's "Run completed in",
# so not its start and connection) add up to SECONDS; prints the writes
# per second.
set -euo pipefail
target=$1 seconds=$2
region=$((16 << 20))
py() { /usr/bin/python3 -c "import sys; a = sys.argv[1:]; $1" "${@:2}"; }
py 'sys.exit(not float(a[0]) > 0)' "$seconds" || { echo "qemu-fua: SECONDS must be above 0, not $seconds" >&2; exit 1; }
info=$(qemu-img info --output=json -f raw "$target") || { echo "qemu-fua: cannot open $target" >&2; exit 1; }
size=$(py 'import json; print(json.loads(a[0])["virtual-size"])' "$info")
regions=$((size / region))
[ "$regions" -gt 0 ] || { echo "qemu-fua: $target is smaller than 16 MiB" >&2; exit 1; }
n=0 total=0 count=256
while py 'sys.exit(float(a[0]) >= float(a[1]))' "$total" "$seconds"; do
  off=$(( (RANDOM * 32768 + RANDOM) % regions * region ))
  out=$(qemu-img bench -w -t directsync -d 1 -s 4096 -c "$count" -o "$off" -f raw "$target" 2>&1) ||
    { echo "qemu-fua: qemu-img bench on $target failed: $out" >&2; exit 1; }
  t=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
  [ -n "$t" ] || { echo "qemu-fua: no time in qemu-img bench's output: $out" >&2; exit 1; }
  total=$(py 'print(float(a[0]) + float(a[1]))' "$total" "$t")
  n=$((n + count))
  # The next round: what the rate so far fits in the time left.
  count=$(py 'n, t, s = int(a[0]), float(a[1]), float(a[2]); print(max(256, min(4096, int(n / max(t, 1e-6) * (s - t)))))' "$n" "$total" "$seconds")
done
py 'print(round(int(a[0]) / float(a[1])))' "$n" "$total"
