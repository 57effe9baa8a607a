#!/usr/bin/env bash
# The catalog at scale (issue 12): a store filled with N volume records
# (generated directly: BenchmarkCatalogOps' fill), then, through package
# manage as the CLI runs them, create, lookup, snapshot, clone, rename and
# remove of one name (lookup: a random filled name; lookup-hot: the name
# just created; lookup-cold: a random filled name after the kernel's
# caches, and a Ceph OSD's, were dropped, COLD below), and the first page
# of 100 and of 1000 of a listing; and the time 'archip volume list' takes to
# print its first record and 'archip volume info' of one volume takes
# (from 10^4 records). On
# the file store and on RADOS (a throwaway cluster: scripts/ceph-cluster.sh,
# one OSD, a pool per N; the OSD is bluestore on a sparse file when a RADOS
# size is above 200,000, else memstore, which keeps every object in memory,
# about 12 KiB each; CEPH_OBJECTSTORE=memstore|bluestore chooses). Prints
# per operation the mean and p99 in ms as the range over RUNS runs, and the
# ratio of the largest N's mean to the smallest's (the lower of each's runs,
# and run by run).
#
#   bench/catalog.sh                                   # file and RADOS 10^3,10^5,10^6
#   FILE_SIZES="1000 100000" RADOS_SIZES= bench/catalog.sh
#   FILE_SIZES=100 RADOS_SIZES= OPS=3 LISTS=1 RUNS=1 bench/catalog.sh   # seconds
#
# DIR keeps the filled file stores (about 16 KiB and 4 inodes a record:
# 16 GB at 10^6) for a later run with the same sizes; by default a
# temporary directory, removed at the end. CEPH_CONF: use that cluster
# instead of starting one (pools catbench-N are created in it). RADOS at
# 10^6 on bluestore: about 2x10^6 objects, some GB of the sparse file;
# CEPH_OSD_MEMORY sizes the OSD's caches (scripts/ceph-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
FILE_SIZES=${FILE_SIZES-1000 100000 1000000}
RADOS_SIZES=${RADOS_SIZES-1000 100000 1000000}
RUNS=${RUNS:-2}
OPS=${OPS:-100}   # rounds of the single-name operations per run
LISTS=${LISTS:-5} # first pages of 100 and 1000 per run
COLD=${COLD:-10}  # cold lookups per run (root only; 0: none)
[ -w /proc/sys/vm/drop_caches ] || COLD=0
keep=${DIR:+1}
DIR=${DIR:-$(mktemp -d)}
mkdir -p "$DIR"
work=$(mktemp -d)
started_ceph=
cleanup() {
  [ -n "$started_ceph" ] && scripts/ceph-cluster.sh stop "$work/ceph" >/dev/null 2>&1
  rm -rf "$work"
  [ -n "$keep" ] || rm -rf "$DIR"
}
trap cleanup EXIT

tags=
if [ -n "$RADOS_SIZES" ]; then
  tags="-tags ceph,pacific"
  if [ -z "${CEPH_CONF:-}" ]; then
    for n in $RADOS_SIZES; do
      [ "$n" -le 200000 ] || export CEPH_OBJECTSTORE=${CEPH_OBJECTSTORE:-bluestore}
    done
    CEPH_CONF=$(scripts/ceph-cluster.sh start "$work/ceph")
    started_ceph=1
  fi
fi
# shellcheck disable=SC2086
go test -c $tags -o "$work/catbench.test" ./internal/manage
# shellcheck disable=SC2086
go build $tags -o "$work/archip" ./cmd/archip

results=${RESULTS:-$work/results} # RESULTS keeps the raw figures (one line each)
: >"$results"
run() { # backend n store-url benchmarks...: one run of each benchmark
  local backend=$1 n=$2 url=$3 line b benches drop
  shift 3
  benches="$*"
  drop=
  [ "$backend" = rados ] && drop="ceph -c $CEPH_CONF tell 'osd.*' cache drop >/dev/null"
  for b in $benches; do
    line=$(ARCHIP_BENCH_DROP=$drop ARCHIP_BENCH_STORE=$url ARCHIP_BENCH_N=$n "$work/catbench.test" -test.run '^$' \
      -test.bench "^BenchmarkCatalog${b%%:*}\$" -test.benchtime "${b##*:}x" -test.timeout 0 2>&1 |
      tee -a "$work/log" | grep '^BenchmarkCatalog') || { tail -20 "$work/log" >&2; exit 1; }
    echo "$backend $n $r $line" >>"$results"
  done
  if [ "$n" -ge 10000 ] && [ "${benches#Ops}" != "$benches" ]; then
    line=$(bench/firstline.py "$work/archip" --store "$url" volume list)
    echo "$backend $n $r cli 1 ${line%% *} cli-s" >>"$results"
    line=$(bench/elapsed.py "$work/archip" --store "$url" volume info v00000000)
    echo "$backend $n $r info 1 $line info-s" >>"$results"
  fi
}
for n in $RADOS_SIZES; do
  ceph -c "$CEPH_CONF" osd pool create "catbench-$n" 8 >/dev/null 2>&1 || true
done
# Each run measures every size in turn (the first one fills the stores),
# so that a load that changes during the bench weighs on every size alike.
# The cold lookups come after every run of the others: a drop of the
# caches would slow the operations measured after it.
each() { # benchmarks...
  for n in $FILE_SIZES; do
    run file "$n" "file://$DIR/file-$n" "$@"
  done
  for n in $RADOS_SIZES; do
    run rados "$n" "rados://catbench-$n?conf=$CEPH_CONF&namespace=b" "$@"
  done
}
for r in $(seq "$RUNS"); do
  each "Ops:$OPS" "List:$LISTS"
done
if [ "$COLD" -gt 0 ]; then
  for r in $(seq "$RUNS"); do
    each "LookupCold:$COLD"
  done
fi

/usr/bin/env python3 - "$results" <<'PY'
import collections, sys
vals = collections.defaultdict(list)  # (backend, metric, n) -> [values]
byrun = {}  # (backend, metric, n, run) -> value
for line in open(sys.argv[1]):
    f = line.split()
    backend, n, r = f[0], int(f[1]), f[2]
    for v, unit in zip(f[5::2], f[6::2]):
        if unit.endswith("-ms") or unit in ("cli-s", "info-s"):
            vals[(backend, unit, n)].append(float(v))
            byrun[(backend, unit, n, r)] = float(v)
runs = sorted({k[3] for k in byrun})
ops = ["create", "lookup", "lookup-hot", "lookup-cold", "snapshot", "clone", "rename", "remove", "list100", "list1000"]
for backend in ("file", "rados"):
    sizes = sorted({n for (b, _, n) in vals if b == backend})
    if not sizes:
        continue
    rng = lambda xs: (f"{min(xs):.3g}" if max(xs) - min(xs) < 0.005 * max(xs) else f"{min(xs):.3g}–{max(xs):.3g}") if xs else "-"
    head = "| op | " + " | ".join(f"N={n:,} mean (p99) ms" for n in sizes) + f" | {sizes[-1]:,}/{sizes[0]:,} | per run |"
    print(f"\n{backend} store\n\n{head}\n|" + "---|" * (len(sizes) + 3))
    for op in ops:
        cells = [f"{rng(vals[(backend, op + '-ms', n)])} ({rng(vals[(backend, op + '-p99-ms', n)])})" for n in sizes]
        lo, hi = vals[(backend, op + "-ms", sizes[0])], vals[(backend, op + "-ms", sizes[-1])]
        ratio = f"{min(hi) / min(lo):.2f}x" if lo and hi and len(sizes) > 1 else "-"
        # The same ratio within each run: the sizes of a run were measured
        # one after the other, under about the same load.
        paired = [byrun[(backend, op + "-ms", sizes[-1], r)] / byrun[(backend, op + "-ms", sizes[0], r)]
                  for r in runs if (backend, op + "-ms", sizes[-1], r) in byrun and byrun.get((backend, op + "-ms", sizes[0], r))]
        per = ", ".join(f"{x:.2f}x" for x in paired) if len(sizes) > 1 and paired else "-"
        print(f"| {op} | " + " | ".join(cells) + f" | {ratio} | {per} |")
    cli = [f"{rng(vals[(backend, 'cli-s', n)])}" if vals[(backend, 'cli-s', n)] else "-" for n in sizes]
    if any(c != "-" for c in cli):
        print("| `volume list`, first record (s) | " + " | ".join(cli) + " | | |")
    info = [f"{rng(vals[(backend, 'info-s', n)])}" if vals[(backend, 'info-s', n)] else "-" for n in sizes]
    if any(c != "-" for c in info):
        print("| `volume info` of one volume (s) | " + " | ".join(info) + " | | |")
PY
