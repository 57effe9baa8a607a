#!/usr/bin/env bash
# Side-by-side NBD benchmark: archip serve vs nbdkit (file plugin) vs
# qemu-nbd (raw, and fresh qcow2 overlays for the clone rows), over unix
# sockets, with fio's nbd engine, in one run on the same disk.
#
#   bench/nbd.sh                       # 1 GiB disk, 8 s per test
#   SIZE=256M RUNTIME=2 bench/nbd.sh   # quick (CI runs it with RUNTIME=1)
#   ROWS="fsync1 clonewrite" bench/nbd.sh   # only these rows (names below)
#   TMPDIR=/mnt/xfs bench/nbd.sh       # the disks and the store on that file system
#
# Every server's files share one file system (TMPDIR's, or /tmp's), named
# in the table's header: the flush rows depend on it (an ext4 without a
# journal writes a file's inode at each fdatasync after its mtime changed,
# which costs archip's many block files more than one image file; see
# docs/benchmarks.md, "Where a FUA write's time goes on files").
#
# Rows (fio options; every test is --time_based --runtime=$RUNTIME):
#   throughput:  1M read/write QD16, 4k randread/randwrite QD32;
#   flush-heavy, on a fully written volume (no copy-on-write):
#     --rw=randwrite --bs=4k --iodepth=1 --fsync=1  (a FLUSH after every write)
#     --rw=write --bs=64k --iodepth=8 --fsync=32
#     4k random writes with the FUA flag, QD1 (bench/fua.py: fio's nbd engine
#       cannot send FUA; its --sync=1 leaves writes unflagged)
#     qfua: 4k sequential FUA writes at QD1 from QEMU's own NBD client
#       (bench/qemu-fua.sh: qemu-img bench, cache=directsync), as a guest's
#       journal commits reach the server
#     --rw=randrw --rwmixread=70 --bs=4k --iodepth=16 --numjobs=2 (two
#       connections, no flush; reads and writes counted together)
#   fresh clone against a fresh qcow2 overlay (qemu-img create -f qcow2 -b
#   disk.raw -F raw), a never-written clone/overlay per row:
#     --rw=randwrite --bs=4k --iodepth=32
#     --rw=randwrite --bs=4k --iodepth=1 --fsync=1
#
#   metrics: the 4k random read row on the daemon and on a second one
#   serving a copy of the volume with --metrics=false, in turn four times
#   each (on, off, off, on, ...: a drift in the machine's load hits both
#   alike): the cost of the metrics (issue 16's target: on/off >= 0.97x).
#
# Prints a table of MiB/s (1M tests) and IOPS (the others), and the ratio of
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
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "bench: python3-libnbd is missing (scripts/install-test-deps.sh)" >&2; exit 1; }

work=$(mktemp -d)
# fsdesc DIR: the file system DIR is on, for the table's header ("ext4,
# no journal"; "xfs").
fsdesc() {
  local t="" mm="" j
  read -r t mm < <(findmnt -n -o FSTYPE,MAJ:MIN -T "$1" 2>/dev/null || true)
  # ext4 names its /sys/fs/ext4 entry after the block device (dm-0 for
  # an LVM volume, whatever the mount's source says).
  if [ "$t" = ext4 ] && j=$(cat "/sys/fs/ext4/$(basename "$(readlink -f "/sys/dev/block/$mm")")/journal_task" 2>/dev/null); then
    if [ "$j" = "<none>" ]; then t="$t, no journal"; else t="$t, journal"; fi
  fi
  echo "${t:-unknown}"
}
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
serve_nometrics() { "$work/archip" --store "file://$work/store" serve --metrics=false --nbd-listen "unix:$work/b.sock" 2>/dev/null & pids+=($!); }

echo "preparing a $SIZE disk of random data in $work" >&2
fio --name=prep --filename="$work/disk.raw" --size="$SIZE" --rw=write --bs=1M --refill_buffers \
  --output=/dev/null >/dev/null

stop_last() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
waitsock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }

# fio options and unit of each test; seq* in MiB/s, the others in IOPS
# (reads and writes added together for the mix).
declare -A SPEC=(
  [seqread]="--rw=read --bs=1M --iodepth=16"
  [seqwrite]="--rw=write --bs=1M --iodepth=16"
  [randread]="--rw=randread --bs=4k --iodepth=32"
  [randwrite]="--rw=randwrite --bs=4k --iodepth=32"
  [fsync1]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
  [fsync32]="--rw=write --bs=64k --iodepth=8 --fsync=32"
  [mix]="--rw=randrw --rwmixread=70 --bs=4k --iodepth=16 --numjobs=2 --group_reporting"
  [clonewrite]="--rw=randwrite --bs=4k --iodepth=32"
  [clonefsync]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
)
all=(seqread seqwrite randread randwrite fsync1 fsync32 fua qfua mix metrics clonewrite clonefsync)
read -r -a rows <<<"${ROWS:-${all[*]}}"
for r in "${rows[@]}"; do
  [[ " ${all[*]} " == *" $r "* ]] || { echo "bench: unknown row $r (rows: ${all[*]})" >&2; exit 1; }
done
tests=() clones=()
for r in "${rows[@]}"; do
  case $r in clone*) clones+=("$r") ;; metrics) ;; *) tests+=("$r") ;; esac
done

# run_test NAME URI → prints the test's figure
run_test() {
  local name=$1 uri=$2 unit=iops out
  case $name in
    fua) bench/fua.py "$uri" "$RUNTIME" 1; return ;;
    qfua) bench/qemu-fua.sh "$uri" "$RUNTIME"; return ;;
  esac
  case $name in seq*) unit=mib ;; esac
  # shellcheck disable=SC2086 # SPEC holds several options
  out=$(fio --name="$name" --ioengine=nbd --uri="$uri" ${SPEC[$name]} \
    --runtime="$RUNTIME" --time_based --output-format=json 2>/dev/null | sed -n '/^{/,$p')
  /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
r, w = j["read"], j["write"]
print(round((r["bw_bytes"] + w["bw_bytes"]) / 2**20) if sys.argv[1] == "mib" else round(r["iops"] + w["iops"]))
' "$unit" <<<"$out"
}

declare -A R
# run_row TEST LABEL URI...: the test on each server in turn, so that a
# change in the machine's load hits every column of a row alike.
run_row() {
  local t=$1; shift
  while [ $# -gt 0 ]; do
    R[$1,$t]=$(run_test "$t" "$2")
    echo "  $1 $t: ${R[$1,$t]}" >&2
    shift 2
  done
}

echo "starting archip serve, nbdkit file and qemu-nbd raw" >&2
archip volume create vol --size "$SIZE" >/dev/null
archip volume create vol-nometrics --size "$SIZE" >/dev/null
serve
pid_on=${pids[-1]}
serve_nometrics
pid_off=${pids[-1]}
waitsock "$work/a.sock"
waitsock "$work/b.sock"
# Every block written: the flush-heavy rows measure no copy-on-write.
nbdcopy --flush "$work/disk.raw" "nbd+unix:///vol?socket=$work/a.sock"
nbdcopy --flush "$work/disk.raw" "nbd+unix:///vol-nometrics?socket=$work/b.sock"
nbdkit -f -U "$work/k.sock" file file="$work/disk.raw" & pids+=($!)
qemu-nbd -t -e 16 -f raw --cache=writeback -k "$work/q.sock" "$work/disk.raw" & pids+=($!)
waitsock "$work/k.sock"
waitsock "$work/q.sock"
for t in ${tests[@]+"${tests[@]}"}; do
  run_row "$t" archip "nbd+unix:///vol?socket=$work/a.sock" nbdkit "nbd+unix:///?socket=$work/k.sock" \
    qemu-nbd "nbd+unix:///?socket=$work/q.sock"
done
# cputicks PID: the process's user + system CPU time so far, in clock ticks.
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A MET=([on,iops]=0 [off,iops]=0 [on,ticks]=0 [off,ticks]=0)
if [[ " ${rows[*]} " == *" metrics "* ]]; then
  for order in on off off on on off off on; do
    if [ $order = on ]; then pid=$pid_on uri="nbd+unix:///vol?socket=$work/a.sock"
    else pid=$pid_off uri="nbd+unix:///vol-nometrics?socket=$work/b.sock"; fi
    t0=$(cputicks "$pid")
    n=$(run_test randread "$uri")
    MET[$order,ticks]=$((MET[$order,ticks] + $(cputicks "$pid") - t0))
    MET[$order,iops]=$((MET[$order,iops] + n))
    echo "  metrics $order randread: $n" >&2
  done
fi
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
# Clone rows: a fresh clone of a snapshot per row (every first write to a
# block copies), against a fresh qcow2 overlay of the raw disk.
if [ ${#clones[@]} -gt 0 ]; then
  archip volume snapshot vol vol@1 >/dev/null
  for t in "${clones[@]}"; do
    archip volume clone vol@1 "$t" >/dev/null
  done
  rm -f "$work/a.sock"
  serve
  waitsock "$work/a.sock"
  for t in "${clones[@]}"; do
    rm -f "$work/q.sock"
    qemu-img create -q -f qcow2 -b "$work/disk.raw" -F raw "$work/$t.qcow2"
    qemu-nbd -t -e 16 -f qcow2 --cache=writeback -k "$work/q.sock" "$work/$t.qcow2" & pids+=($!)
    waitsock "$work/q.sock"
    run_row "$t" archip "nbd+unix:///$t?socket=$work/a.sock" qemu-nbd "nbd+unix:///?socket=$work/q.sock"
    stop_last
    R[nbdkit,$t]="-"
  done
fi

ratio() { /usr/bin/python3 -c 'import sys; a,b=sys.argv[1:]; print("-" if "-" in (a,b) or float(b)==0 else f"{float(a)/float(b):.2f}x")' "$1" "$2"; }
label() {
  case $1 in
    seqread) echo "1M sequential read, QD16";; seqwrite) echo "1M sequential write, QD16";;
    randread) echo "4k random read, QD32";; randwrite) echo "4k random write, QD32";;
    fsync1) echo "4k random write, QD1, fsync=1";; fsync32) echo "64k sequential write, QD8, fsync=32";;
    fua) echo "4k random write, QD1, FUA";; qfua) echo "4k seq write, QD1, FUA, QEMU's client";; mix) echo "4k random r/w 70/30, QD16, 2 conns";;
    clonewrite) echo "4k random write, QD32, fresh clone/overlay";;
    clonefsync) echo "4k rand write, QD1, fsync=1, fresh clone/ovl";;
  esac
}
if [ ${#tests[@]} -gt 0 ] || [ ${#clones[@]} -gt 0 ]; then
  echo
  echo "fio over NBD (unix socket), $SIZE disk, ${RUNTIME}s per test, files on $(fsdesc "$work"); 1M tests in MiB/s, the others in IOPS"
  echo "(clone rows: qemu-nbd on a fresh qcow2 overlay of the raw disk, archip on a fresh clone)"
  printf '%-44s %10s %10s %10s %12s %12s\n' test archip nbdkit qemu-nbd "vs nbdkit" "vs qemu-nbd"
  for name in "${rows[@]}"; do
    [ "$name" = metrics ] && continue
    printf '%-44s %10s %10s %10s %12s %12s\n' "$(label $name)" "${R[archip,$name]}" "${R[nbdkit,$name]}" "${R[qemu-nbd,$name]}" \
      "$(ratio "${R[archip,$name]}" "${R[nbdkit,$name]}")" "$(ratio "${R[archip,$name]}" "${R[qemu-nbd,$name]}")"
  done
fi
if [ "${MET[off,iops]}" != 0 ]; then
  # The daemon's CPU time per read (µs) says the same with less noise
  # from a loaded machine than the rate does.
  us() { /usr/bin/python3 -c 'import os, sys; t, iops, rt = map(float, sys.argv[1:]); hz = os.sysconf("SC_CLK_TCK"); print(f"{t / hz * 1e6 / (iops * rt):.1f}")' "$@"; }
  on_us=$(us "${MET[on,ticks]}" "${MET[on,iops]}" "$RUNTIME") off_us=$(us "${MET[off,ticks]}" "${MET[off,iops]}" "$RUNTIME")
  echo
  echo "metrics cost, 4k random read QD32, 4 runs each in turn: $((MET[on,iops] / 4)) IOPS with metrics, $((MET[off,iops] / 4)) without: $(ratio "${MET[on,iops]}" "${MET[off,iops]}") (target >= 0.97x);"
  echo "  the daemon's CPU per read: $on_us µs with metrics, $off_us µs without: $(ratio "$off_us" "$on_us") as a rate"
fi
