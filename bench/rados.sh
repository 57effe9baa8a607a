#!/usr/bin/env bash
# archip on Ceph RADOS against Ceph's own RBD, on one throwaway cluster
# (scripts/ceph-cluster.sh: one memstore OSD, replication 1 for both), in
# one run:
#   - fio, 1M sequential and 4k random: archip through its NBD export of a
#     volume on rados:// (unix socket); RBD through the same transport
#     (qemu-nbd with QEMU's rbd driver, cache=none); and RBD through fio's
#     rbd engine (librbd in fio's process, no NBD hop) with librbd's client
#     cache (its default) and without (rbd_cache=false, what QEMU uses with
#     cache=none; archip keeps no client-side data cache). Interleaved, each
#     the mean of two runs (see below);
#   - flush-heavy rows on the fully written images, against RBD without
#     cache (fio's rbd engine, rbd_cache=false) and through qemu-nbd:
#     --rw=randwrite --bs=4k --iodepth=1 --fsync=1; --rw=write --bs=64k
#     --iodepth=8 --fsync=32; 4k random writes with NBD's FUA flag at QD1
#     (bench/fua.py; for the rbd engine, plain 4k random writes at QD1:
#     without cache each is durable when acknowledged, which is what FUA
#     asks); qfua: 4k sequential writes at QD1 with QEMU's own block layer
#     as the client (bench/qemu-fua.sh, cache=directsync: FUA over NBD, a
#     write and a flush on QEMU's rbd driver, librbd without its cache), as
#     a guest's journal commits go; a 4k 70/30 random read/write mix, QD16
#     on each of 2 NBD connections (--numjobs=2), for the rbd engine one
#     client at QD32 (two librbd clients on one image would pass its
#     exclusive lock back and forth). Interleaved like the others;
#   - cpu: where the CPU of a 4k random read at QD32 goes, per read: fio
#     with librbd in one process against fio's nbd engine, archip's
#     librados threads and its Go threads; and the OSD's under each;
#   - first writes to a fresh clone (each copies its 4 MiB block): archip
#     (the OSD copies, copy_from) vs RBD (copyup through the client);
#   - 4k random I/O at QD32 and at QD1 (writes synced) straight on
#     archip's librados path, without NBD and the volume engine
#     (BenchmarkRandomIO): what the store alone costs against librbd;
#     and 4k random FUA writes at QD1 through the volume engine, without
#     NBD (BenchmarkRandomFUARados);
#   - clone time: 'rbd snap create + protect + clone' and 'rbd clone' alone
#     vs 'archip volume clone', for 1 GiB and 100 GiB images, and the
#     engine's clone of fully mapped images (BenchmarkCloneRados).
#
#   bench/rados.sh                     # 1 GiB, 8 s per test
#   SIZE=256M RUNTIME=1 bench/rados.sh # quick
#   ROWS="fsync32 fua" bench/rados.sh  # only these rows (names below)
#   BASE=DIR bench/rados.sh            # also archip built from the tree DIR
#                                      # (another worktree: before/after in one run)
#   PROF=FILE bench/rados.sh           # a CPU profile of this tree's archip serve
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-8}
# The OSD holds every image at once (RBD's two, archip's, BASE's, the
# clone rows' copies): a full memstore OSD holds writes forever, so size
# it to 6x SIZE (at least its default).
bytes=$(numfmt --from=iec "$SIZE")
# Its objects as pages (scripts/ceph-cluster.sh): the 4k rows' overwrites
# would otherwise slow the OSD down run after run.
export CEPH_MEMSTORE_PAGES=${CEPH_MEMSTORE_PAGES:-1}
export CEPH_MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-$(( (6 * bytes > 4294967296) ? 6 * bytes : 4294967296 ))}
all=(seqread seqwrite randread randwrite fsync1 fsync32 fua qfua mix cpu cow clone direct engine)
read -r -a rows <<<"${ROWS:-${all[*]}}"
for r in "${rows[@]}"; do
  [[ " ${all[*]} " == *" $r "* ]] || { echo "bench: unknown row $r (rows: ${all[*]})" >&2; exit 1; }
done
want() { [[ " ${rows[*]} " == *" $1 "* ]]; }
ceph_start
export ARCHIP_TEST_CEPH_CONF=$CEPH_CONF
go build -tags ceph,pacific -o "$work/archip" ./cmd/archip
if [ -n "${BASE:-}" ]; then
  (cd "$BASE" && go build -tags ceph,pacific -o "$work/archip-base" ./cmd/archip)
fi
store="rados://archip?conf=$CEPH_CONF&namespace=bench"
bstore="rados://archip?conf=$CEPH_CONF&namespace=benchbase"
archip() { "$work/archip" --store "$store" "$@"; }

# fio options of each test; RBDSPEC where fio's rbd engine runs another.
declare -A SPEC=(
  [seqread]="--rw=read --bs=1M --iodepth=16"
  [seqwrite]="--rw=write --bs=1M --iodepth=16"
  [randread]="--rw=randread --bs=4k --iodepth=32"
  [randwrite]="--rw=randwrite --bs=4k --iodepth=32"
  [fsync1]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
  [fsync32]="--rw=write --bs=64k --iodepth=8 --fsync=32"
  [mix]="--rw=randrw --rwmixread=70 --bs=4k --iodepth=16 --numjobs=2 --group_reporting"
)
declare -A RBDSPEC=(
  [fua]="--rw=randwrite --bs=4k --iodepth=1"
  [mix]="--rw=randrw --rwmixread=70 --bs=4k --iodepth=32"
)
tests=() flushtests=()
for r in seqread seqwrite randread randwrite; do want "$r" && tests+=("$r"); done
for r in fsync1 fsync32 fua qfua mix; do want "$r" && flushtests+=("$r"); done
declare -A R

# Both images exist and are written in full before any test, and each
# test runs as rbd, rbd without cache, archip, archip, rbd without cache,
# rbd, each result the mean of its two runs: the memstore OSD slows down as
# it holds more data and more fragmented objects (4k random writes against
# the same image fell from 5,300 to 2,000 IOPS in one session), so running
# one side's tests first would favour it.
rbd create --size "$SIZE" archip/bench
fio --name=prep --ioengine=rbd --pool=archip --rbdname=bench --clientname=admin --rw=write --bs=1M \
  --iodepth=16 --refill_buffers --output=/dev/null >/dev/null
archip volume create vol --size "$SIZE" >/dev/null
"$work/archip" --store "$store" serve --nbd-listen "unix:$work/a.sock" ${PROF:+--cpuprofile "$PROF"} 2>/dev/null & pids+=($!)
apid=$!
wait_sock "$work/a.sock"
uri="nbd+unix:///vol?socket=$work/a.sock"
fio --name=prep --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=16 --refill_buffers --output=/dev/null >/dev/null
base=()
if [ -n "${BASE:-}" ]; then
  # The other tree's archip, on a store namespace of its own.
  "$work/archip-base" --store "$bstore" volume create vol --size "$SIZE" >/dev/null
  "$work/archip-base" --store "$bstore" serve --nbd-listen "unix:$work/b.sock" 2>/dev/null & pids+=($!)
  wait_sock "$work/b.sock"
  buri="nbd+unix:///vol?socket=$work/b.sock"
  fio --name=prep --ioengine=nbd --uri="$buri" --rw=write --bs=1M --iodepth=16 --refill_buffers --output=/dev/null >/dev/null
  base=(base)
fi
# RBD over the same transport: qemu-nbd with QEMU's rbd driver (cache=none:
# no librbd cache), on an image of its own.
rbd create --size "$SIZE" archip/bench-nbd
qemu-nbd -t -e 4 -f raw --cache=none -x bench -k "$work/q.sock" "rbd:archip/bench-nbd:conf=$CEPH_CONF" & pids+=($!)
wait_sock "$work/q.sock"
quri="nbd+unix:///bench?socket=$work/q.sock"
fio --name=prep --ioengine=nbd --uri="$quri" --rw=write --bs=1M --iodepth=16 --refill_buffers --output=/dev/null >/dev/null

# one WHO NAME: one run of test NAME; WHO is archip, base (archip built
# from BASE), qnbd (RBD through qemu-nbd), rbdtrue or rbdfalse (fio's rbd
# engine with and without cache).
# shellcheck disable=SC2086 # SPEC and RBDSPEC hold several options
one() {
  local who=$1 name=$2 unit=iops
  case $name in seq*) unit=mib ;; esac
  if [ "$who" = archip ] || [ "$who" = qnbd ] || [ "$who" = base ]; then
    local u=$uri
    [ "$who" = qnbd ] && u=$quri
    [ "$who" = base ] && u=$buri
    case $name in
      fua) bench/fua.py "$u" "$RUNTIME" 1; return ;;
      qfua) bench/qemu-fua.sh "$u" "$RUNTIME"; return ;;
    esac
    fio --name="$name" --ioengine=nbd --uri="$u" ${SPEC[$name]} \
      --runtime="$RUNTIME" --time_based --output-format=json 2>/dev/null | fio_json "$unit"
  elif [ "$name" = qfua ]; then
    # QEMU's rbd driver under directsync: librbd without its cache.
    bench/qemu-fua.sh "rbd:archip/bench:conf=$CEPH_CONF" "$RUNTIME"
  else
    CEPH_ARGS="--rbd_cache=${who#rbd}" fio --name="$name" --ioengine=rbd --pool=archip --rbdname=bench --clientname=admin \
      ${RBDSPEC[$name]:-${SPEC[$name]}} --runtime="$RUNTIME" --time_based --output-format=json 2>/dev/null | fio_json "$unit"
  fi
}
# interleave NAME WHO...: runs NAME for each WHO in that order, each WHO
# listed twice (the first half, then mirrored); each gets the mean of its
# two runs.
interleave() {
  local name=$1 who r
  shift
  for who in "$@"; do
    r=$(one "$who" "$name")
    R[$who,$name]=$(( ${R[$who,$name]:-0} + r ))
    echo "  $who $name: $r" >&2
  done
  for who in "${@:1:$#/2}"; do R[$who,$name]=$(( R[$who,$name] / 2 )); done
}
for name in "${tests[@]}"; do
  interleave "$name" rbdtrue rbdfalse qnbd "${base[@]}" archip archip "${base[@]}" qnbd rbdfalse rbdtrue
done
for name in "${flushtests[@]}"; do
  interleave "$name" rbdfalse qnbd "${base[@]}" archip archip "${base[@]}" qnbd rbdfalse
done

# CPU per operation, where it goes: 4k random reads at QD32 (the randread
# row, which the cluster's CPU limits on a small machine), as RBD without
# cache in fio's process and as archip through NBD, twice each,
# interleaved. Counted from /proc (user + system time, every thread): fio
# with librbd and librados in one process; fio's nbd engine (the NBD
# client alone); archip's daemon, split into its Go threads (named as the
# process) and librados's own (msgr-worker, io_context_pool...); and the
# OSD under each. An NBD server in a process of its own pays the client's
# share and its own librados threads before any code of its own runs.
if want cpu; then
  tck=$(getconf CLK_TCK)
  osd=
  for p in $(cat "$work/ceph/pids"); do [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ceph-osd ] && osd=$p; done
  [ -n "$osd" ] || { echo "bench: no ceph-osd among the cluster's processes ($work/ceph/pids)" >&2; exit 1; }
  # ticks PID [go|lib]: CPU ticks of PID's threads: all, those named as
  # the process (Go's), or the others.
  ticks() {
    local comm n sum=0 t
    comm=$(cat "/proc/$1/comm")
    for t in /proc/"$1"/task/*; do
      n=$(cat "$t/comm" 2>/dev/null) || continue
      case ${2:-all} in go) [ "$n" = "$comm" ] || continue ;; lib) [ "$n" != "$comm" ] || continue ;; esac
      sum=$((sum + $(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{n = $12 + $13} END {print n + 0}')))
    done
    echo "$sum"
  }
  # cpurun CMD...: runs CMD (a fio with --output-format=json) and prints
  # its operations and its CPU ticks; fails if CMD does.
  cpurun() {
    /usr/bin/python3 -c '
import json, os, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if r.returncode:
    sys.exit(f"bench: {sys.argv[1]} failed: {r.stderr.strip()}")
j = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(j["read"]["total_ios"] + j["write"]["total_ios"], round((u.ru_utime + u.ru_stime) * os.sysconf("SC_CLK_TCK")))
' "$@"
  }
  declare -A U=()
  for who in rbd archip archip rbd; do
    o0=$(ticks "$osd") g0=$(ticks "$apid" go) l0=$(ticks "$apid" lib)
    if [ "$who" = rbd ]; then
      r=$(CEPH_ARGS="--rbd_cache=false" cpurun fio --name=cpu --ioengine=rbd --pool=archip --rbdname=bench --clientname=admin \
        --rw=randread --bs=4k --iodepth=32 --runtime="$RUNTIME" --time_based --output-format=json)
    else
      r=$(cpurun fio --name=cpu --ioengine=nbd --uri="$uri" --rw=randread --bs=4k --iodepth=32 \
        --runtime="$RUNTIME" --time_based --output-format=json)
      U[go]=$(( ${U[go]:-0} + $(ticks "$apid" go) - g0 )) U[lib]=$(( ${U[lib]:-0} + $(ticks "$apid" lib) - l0 ))
    fi
    read -r n c <<<"$r"
    U[$who,n]=$(( ${U[$who,n]:-0} + n )) U[$who,c]=$(( ${U[$who,c]:-0} + c ))
    U[$who,osd]=$(( ${U[$who,osd]:-0} + $(ticks "$osd") - o0 ))
    echo "  $who cpu: $n reads, client $c ticks" >&2
  done
fi

# Copy-on-write: 4k writes, each to a block of a fresh clone not written
# before (4 MiB apart), so each one copies its block: archip has the OSD
# copy it (copy_from), RBD's copyup reads the parent's object into the
# client and writes it back. Each side twice, interleaved, on a fresh clone
# of its fully written image.
if want cow; then
  cowpat=(--rw=write:4092k --bs=4k --iodepth=16 --size="$SIZE" --number_ios=32 --output-format=json)
  archip volume snapshot vol vol@cow >/dev/null
  rbd snap create archip/bench@cow >/dev/null 2>&1
  rbd snap protect archip/bench@cow
  n=0
  for who in rbd archip archip rbd; do
    n=$((n + 1))
    if [ "$who" = archip ]; then
      archip volume clone vol@cow "cow$n" >/dev/null
      r=$(fio --name=cow --ioengine=nbd --uri="nbd+unix:///cow$n?socket=$work/a.sock" "${cowpat[@]}" 2>/dev/null | fio_json iops)
    else
      rbd clone archip/bench@cow "archip/cow$n"
      r=$(CEPH_ARGS="--rbd_cache=false" fio --name=cow --ioengine=rbd --pool=archip --rbdname="cow$n" --clientname=admin \
        "${cowpat[@]}" 2>/dev/null | fio_json iops)
    fi
    R[$who,cow]=$(( ${R[$who,cow]:-0} + r ))
    echo "  $who clone first writes: $r" >&2
  done
  for who in rbd archip; do R[$who,cow]=$(( R[$who,cow] / 2 )); done
fi

for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
declare -A C
want clone && for sz in 1G 100G; do
  rbd create --size "$sz" "archip/base$sz"
  C[rbd-all,$sz]=$(ms bash -c "rbd snap create archip/base$sz@s && rbd snap protect archip/base$sz@s && rbd clone archip/base$sz@s archip/clone$sz")
  C[rbd,$sz]=$(ms rbd clone "archip/base$sz@s" "archip/clone2$sz")
  archip volume create "base$sz" --size "$sz" >/dev/null
  archip volume snapshot "base$sz" "base$sz@s" >/dev/null
  C[archip,$sz]=$(ms "$work/archip" --store "$store" volume clone "base$sz@s" "clone$sz")
done
engine= direct=
want engine && engine=$(go test -tags ceph,pacific -run '^$' -bench CloneRados -benchtime 10x ./internal/volume 2>/dev/null | grep '^Benchmark')
want direct && direct=$(go test -tags ceph,pacific -run '^$' -bench RandomIO -benchtime "${RUNTIME}s" ./internal/objstore/rados 2>/dev/null | grep '^Benchmark'
  go test -tags ceph,pacific -run '^$' -bench RandomFUARados -benchtime "${RUNTIME}s" ./internal/volume 2>/dev/null | grep '^Benchmark')

echo
echo "Ceph RADOS, one memstore OSD, replication 1; $SIZE image, ${RUNTIME}s per test; 1M in MiB/s, 4k in IOPS"
echo "(archip and qemu-nbd over NBD on a unix socket; fio's rbd engine in process)"
[ ${#base[@]} -gt 0 ] && echo "(base: archip built from $BASE, run beside it; 'vs base' is this tree's archip over it)"
printf '%-10s %7s %12s %12s %14s %10s %10s %10s %7s %8s\n' test archip "rbd qemu-nbd" "rbd (cache)" "rbd (no cache)" "vs q-nbd" "vs cache" "vs no cache" base "vs base"
for name in "${tests[@]}"; do
  printf '%-10s %7s %12s %12s %14s %10s %10s %10s %7s %8s\n' "$name" "${R[archip,$name]}" "${R[qnbd,$name]}" "${R[rbdtrue,$name]}" "${R[rbdfalse,$name]}" \
    "$(ratio "${R[archip,$name]}" "${R[qnbd,$name]}")" "$(ratio "${R[archip,$name]}" "${R[rbdtrue,$name]}")" "$(ratio "${R[archip,$name]}" "${R[rbdfalse,$name]}")" \
    "${R[base,$name]:--}" "$(ratio "${R[archip,$name]}" "${R[base,$name]:-}")"
done
echo
echo "flush-heavy, on the fully written images; IOPS (the mix: reads and writes together)"
printf '%-38s %7s %12s %14s %10s %10s %7s %8s\n' test archip "rbd qemu-nbd" "rbd (no cache)" "vs q-nbd" "vs no cache" base "vs base"
flabel() {
  case $1 in
    fsync1) echo "4k random write, QD1, fsync=1";; fsync32) echo "64k sequential write, QD8, fsync=32";;
    fua) echo "4k random write, QD1, FUA (rbd: plain)";; qfua) echo "4k seq FUA, QD1, QEMU (rbd: +flush)";; mix) echo "4k random r/w 70/30, QD16 x 2 conns";;
  esac
}
for name in "${flushtests[@]}"; do
  printf '%-38s %7s %12s %14s %10s %10s %7s %8s\n' "$(flabel "$name")" "${R[archip,$name]}" "${R[qnbd,$name]}" "${R[rbdfalse,$name]}" \
    "$(ratio "${R[archip,$name]}" "${R[qnbd,$name]}")" "$(ratio "${R[archip,$name]}" "${R[rbdfalse,$name]}")" \
    "${R[base,$name]:--}" "$(ratio "${R[archip,$name]}" "${R[base,$name]:-}")"
done
if want cpu; then
  # us TICKS OPS: microseconds of CPU per operation.
  us() { /usr/bin/python3 -c 'import sys; t, n, hz = map(float, sys.argv[1:]); print(f"{t / hz * 1e6 / n:.1f}" if n else "-")' "$1" "$2" "$tck"; }
  echo
  echo "CPU per 4k random read at QD32, microseconds (user + system; two runs each):"
  printf '%-44s %8s %8s\n' "" "rbd" "archip"
  printf '%-44s %8s %8s\n' "reads/s" "$(( U[rbd,n] / (2 * RUNTIME) ))" "$(( U[archip,n] / (2 * RUNTIME) ))"
  printf '%-44s %8s %8s\n' "client process (fio + librbd / fio's NBD)" "$(us "${U[rbd,c]}" "${U[rbd,n]}")" "$(us "${U[archip,c]}" "${U[archip,n]}")"
  printf '%-44s %8s %8s\n' "archip daemon: librados threads" - "$(us "${U[lib]}" "${U[archip,n]}")"
  printf '%-44s %8s %8s\n' "archip daemon: Go threads" - "$(us "${U[go]}" "${U[archip,n]}")"
  printf '%-44s %8s %8s\n' "OSD" "$(us "${U[rbd,osd]}" "${U[rbd,n]}")" "$(us "${U[archip,osd]}" "${U[archip,n]}")"
fi
if want cow; then
  echo
  echo "first 4k write to each 4 MiB block of a fresh clone (copy-on-write), QD16, writes/s:"
  printf '%-10s %7s %14s %10s\n' test archip "rbd (no cache)" ratio
  printf '%-10s %7s %14s %10s\n' cow "${R[archip,cow]}" "${R[rbd,cow]}" "$(ratio "${R[archip,cow]}" "${R[rbd,cow]}")"
fi
if want direct; then
  echo
  echo "4k random I/O, QD32 and QD1, on archip's librados path alone (no NBD, no volume engine),"
  echo "and 4k random FUA writes at QD1 through the volume engine (no NBD):"
  echo "$direct"
fi
if want clone; then
  echo
  echo "clone time, command line, ms (process start and cluster connect included)"
  printf '%-8s %14s %24s %12s\n' size "rbd clone" "rbd snap+protect+clone" "archip clone"
  for sz in 1G 100G; do printf '%-8s %14s %24s %12s\n' "$sz" "${C[rbd,$sz]}" "${C[rbd-all,$sz]}" "${C[archip,$sz]}"; done
fi
if want engine; then
  echo
  echo "engine clone of fully mapped images on RADOS (no process start):"
  echo "$engine"
fi
