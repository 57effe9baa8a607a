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
# rbd:POOL/IMAGE:conf=FILE. Runs rounds of 4,000 sequential writes (16 MiB,
# as a guest's journal writes run), each round at a random 16 MiB-aligned
# offset of the image, until the rounds' own times (qemu-img's "Run
# completed in", so not its start and connection) add up to SECONDS;
# prints the writes per second.
set -euo pipefail
target=$1 seconds=$2
count=4000
size=$(qemu-img info --output=json -f raw "$target" | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])')
regions=$((size / (count * 4096)))
[ "$regions" -gt 0 ] || { echo "qemu-fua: $target is smaller than $((count * 4)) KiB" >&2; exit 1; }
n=0 total=0
while /usr/bin/python3 -c 'import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))' "$total" "$seconds"; do
  off=$(( (RANDOM * 32768 + RANDOM) % regions * count * 4096 ))
  t=$(qemu-img bench -w -t directsync -d 1 -s 4096 -c "$count" -o "$off" -f raw "$target" 2>&1 |
    sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')
  [ -n "$t" ] || { echo "qemu-fua: qemu-img bench on $target failed" >&2; exit 1; }
  total=$(/usr/bin/python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$total" "$t")
  n=$((n + count))
done
/usr/bin/python3 -c 'import sys; print(round(int(sys.argv[1]) / float(sys.argv[2])))' "$n" "$total"
