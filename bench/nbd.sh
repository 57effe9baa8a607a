#!/usr/bin/env bash
# Side-by-side NBD benchmark: archip serve vs nbdkit (file plugin) vs
# qemu-nbd (raw, and a qcow2 overlay for the clone case), over unix
# sockets, with fio's nbd engine, in one run on the same disk.
#
#   bench/nbd.sh                 # 1 GiB disk, 8 s per test
#   SIZE=256M RUNTIME=2 bench/nbd.sh   # quick (what CI runs)
#
# Prints a table of MiB/s (1M tests) and IOPS (4k tests), and the ratio of
# archip to each peer. Numbers on shared 2-core machines vary ±2x from run
# to run: compare only within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-8}
for tool in fio nbdkit qemu-nbd qemu-img nbdcopy; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/archip" ./cmd/archip
archip() { "$work/archip" --store "file://$work/store" "$@"; }
# Start the daemon as the binary itself (not through the function), so
# that $! is its PID.
serve() { "$work/archip" --store "file://$work/store" serve --nbd-listen "unix:$work/a.sock" 2>/dev/null & pids+=($!); }

echo "preparing a $SIZE disk of random data in $work" >&2
fio --name=prep --filename="$work/disk.raw" --size="$SIZE" --rw=write --bs=1M --refill_buffers \
  --output=/dev/null >/dev/null

stop_last() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; }
waitsock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }

# fio_run NAME URI RW BS DEPTH → prints MiB/s for 1M tests, IOPS for 4k
fio_run() {
  local uri=$2 rw=$3 bs=$4 depth=$5 out
  out=$(fio --name="$1" --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$depth" \
    --runtime="$RUNTIME" --time_based --output-format=json 2>/dev/null | sed -n '/^{/,$p')
  /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
d = j["read"] if sys.argv[1].endswith("read") else j["write"]
print(round(d["bw_bytes"] / 2**20) if sys.argv[2] == "1M" else round(d["iops"]))
' "$rw" "$bs" <<<"$out"
}

declare -A R
tests=("seqread:read:1M:16" "seqwrite:write:1M:16" "randread:randread:4k:32" "randwrite:randwrite:4k:32")

run_server_tests() { # LABEL URI
  for t in "${tests[@]}"; do
    IFS=: read -r name rw bs depth <<<"$t"
    R[$1,$name]=$(fio_run "$name" "$2" "$rw" "$bs" "$depth")
    echo "  $1 $name: ${R[$1,$name]}" >&2
  done
}

echo "archip serve" >&2
archip volume create vol --size "$SIZE" >/dev/null
serve
waitsock "$work/a.sock"
nbdcopy --flush "$work/disk.raw" "nbd+unix:///vol?socket=$work/a.sock"
run_server_tests archip "nbd+unix:///vol?socket=$work/a.sock"
# Clone case: a fresh clone of a snapshot; every first write copies.
stop_last
archip volume snapshot vol vol@1 >/dev/null
archip volume clone vol@1 clone >/dev/null
serve
waitsock "$work/a.sock"
R[archip,clonewrite]=$(fio_run clonewrite "nbd+unix:///clone?socket=$work/a.sock" randwrite 4k 32)
echo "  archip clonewrite: ${R[archip,clonewrite]}" >&2
stop_last

echo "nbdkit file" >&2
rm -f "$work/k.sock"
nbdkit -f -U "$work/k.sock" file file="$work/disk.raw" & pids+=($!)
waitsock "$work/k.sock"
run_server_tests nbdkit "nbd+unix:///?socket=$work/k.sock"
stop_last

echo "qemu-nbd" >&2
qemu-nbd -t -e 16 -f raw --cache=writeback -k "$work/q.sock" "$work/disk.raw" & pids+=($!)
waitsock "$work/q.sock"
run_server_tests qemu-nbd "nbd+unix:///?socket=$work/q.sock"
stop_last
rm -f "$work/q.sock"
qemu-img create -q -f qcow2 -b "$work/disk.raw" -F raw "$work/overlay.qcow2"
qemu-nbd -t -e 16 -f qcow2 --cache=writeback -k "$work/q.sock" "$work/overlay.qcow2" & pids+=($!)
waitsock "$work/q.sock"
R[qemu-nbd,clonewrite]=$(fio_run clonewrite "nbd+unix:///?socket=$work/q.sock" randwrite 4k 32)
echo "  qemu-nbd clonewrite (qcow2 overlay): ${R[qemu-nbd,clonewrite]}" >&2
R[nbdkit,clonewrite]="-"

ratio() { /usr/bin/python3 -c 'import sys; a,b=sys.argv[1:]; print("-" if b in ("-","0") else f"{float(a)/float(b):.2f}x")' "$1" "$2"; }
echo
echo "fio over NBD (unix socket), $SIZE disk, ${RUNTIME}s per test; 1M tests in MiB/s, 4k tests in IOPS"
printf '%-34s %10s %10s %10s %12s %12s\n' test archip nbdkit qemu-nbd "vs nbdkit" "vs qemu-nbd"
label() {
  case $1 in
    seqread) echo "1M sequential read, QD16";; seqwrite) echo "1M sequential write, QD16";;
    randread) echo "4k random read, QD32";; randwrite) echo "4k random write, QD32";;
    clonewrite) echo "4k random write, fresh clone/overlay";;
  esac
}
for name in seqread seqwrite randread randwrite clonewrite; do
  printf '%-34s %10s %10s %10s %12s %12s\n' "$(label $name)" "${R[archip,$name]}" "${R[nbdkit,$name]}" "${R[qemu-nbd,$name]}" \
    "$(ratio "${R[archip,$name]}" "${R[nbdkit,$name]}")" "$(ratio "${R[archip,$name]}" "${R[qemu-nbd,$name]}")"
done
