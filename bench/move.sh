#!/usr/bin/env bash
# The throughput (MiB/s) of moving a volume from a file pool to a RADOS
# pool (archip volume move, docs/pools.md), side by side with what Ceph and
# QEMU do for the same bytes, on one throwaway cluster
# (scripts/ceph-cluster.sh: one memstore OSD, replication 1):
#   - archip: a volume of SIZE random bytes (nothing to deduplicate, no
#     zeroes to skip) in a file:// pool moves to a rados:// pool of the
#     cluster; the time of 'archip volume move' (its own walk, copy and
#     switch; no writer);
#   - rbd migration: the same bytes imported into an RBD image in one pool,
#     then 'rbd migration prepare' to another pool, 'execute', 'commit'
#     (Ceph's live migration, which stays inside Ceph); execute's time, and
#     the three together;
#   - qemu-img convert: a cold copy of the source file to an RBD image
#     (rbd: target, QEMU's rbd driver, its default 8 coroutines).
# Each leg's copy is removed before the next; the memstore OSD, in RAM, is
# sized to 3x SIZE (CEPH_MEMSTORE_BYTES). Ratios are archip's MiB/s over the
# other's.
#
# The OSD first warms up: 2x SIZE written and removed. A fresh OSD faults
# in and zeroes every page it receives into (60% of its CPU in a profile),
# and keeps the pages its allocator freed for reuse: without the warm-up,
# whichever leg ran on memory the OSD had not touched yet paid 2-4x the OSD
# CPU of the others (docs/benchmarks.md). The cold copies then run ROUNDS
# times, alternating which goes first (qemu-img convert, then the move; the
# move, then qemu-img convert); the table has the median of each, and
# every round.
#
#   bench/move.sh              # 4 GiB, two rounds
#   SIZE=256M bench/move.sh    # quick
#   ROUNDS=4 bench/move.sh
set -euo pipefail
# A failure inside $(...) (a copy, the check of the moved bytes) stops the
# script too.
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-4G}
ROUNDS=${ROUNDS:-2}
# Two copies at once (rbd migration), and the source: the OSD (in RAM)
# must hold 3x SIZE.
bytes=$(numfmt --from=iec "$SIZE")
export CEPH_MEMSTORE_BYTES=$(( (3 * bytes > 4294967296) ? 3 * bytes : 4294967296 ))
ceph_start
go build -tags ceph,pacific -o "$work/archip" ./cmd/archip
bytes=$(numfmt --from=iec "$SIZE")
mib=$((bytes / 1048576))
head -c "$bytes" /dev/urandom >"$work/src.raw"
for p in mvsrc mvdst; do
  ceph -c "$CEPH_CONF" osd pool create "$p" 8 >/dev/null 2>&1
  rbd -c "$CEPH_CONF" pool init "$p"
done
rbd() { command rbd -c "$CEPH_CONF" "$@"; }
# secs CMD...: runs CMD, prints its wall time in seconds.
secs() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; return 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
rate() { echo "scale=1; $mib / $1" | bc -l; }

rados() { command rados -c "$CEPH_CONF" "$@"; }

# Warm-up: 2x SIZE through the OSD (see the header).
rbd import --no-progress "$work/src.raw" mvsrc/warm1 >/dev/null
rbd import --no-progress "$work/src.raw" mvdst/warm2 >/dev/null
rbd rm --no-progress mvsrc/warm1 >/dev/null
rbd rm --no-progress mvdst/warm2 >/dev/null

# rbd migration, pool to pool.
rbd import --no-progress "$work/src.raw" mvsrc/img >/dev/null
t_prep=$(secs rbd migration prepare mvsrc/img mvdst/img)
t_exec=$(secs rbd migration execute --no-progress mvdst/img)
t_commit=$(secs rbd migration commit --no-progress mvdst/img)
rbd rm --no-progress mvdst/img >/dev/null
t_rbd=$(echo "$t_prep + $t_exec + $t_commit" | bc -l)

cat >"$work/store.toml" <<CONF
metadata = "file://$work/meta"
default = "local"
[pools]
local = "file://$work/local"
rados = "rados://archip?conf=$CEPH_CONF&namespace=benchmove"
CONF
archip() { "$work/archip" --store "pools://$work/store.toml" "$@"; }

# qemu-img convert, file to RBD (then removed).
qemu() {
  secs qemu-img convert -f raw -O raw "$work/src.raw" "rbd:mvdst/cold:conf=$CEPH_CONF"
  rbd rm --no-progress mvdst/cold >/dev/null
}
# move R: moves volume vR (written before the round) to the RADOS pool,
# checks its bytes, then removes it and its copy.
move() {
  secs archip volume move "v$1" --to rados
  archip volume read "v$1" | cmp - "$work/src.raw"
  archip -q volume remove "v$1" >/dev/null
  rados purge archip --yes-i-really-really-mean-it >/dev/null
}

declare -a t_moves t_qemus
for r in $(seq "$ROUNDS"); do
  archip -q volume create "v$r" --size "$SIZE" --block-size 4M >/dev/null 2>&1
  archip -q volume write "v$r" <"$work/src.raw"
  sync
  if (( r % 2 )); then
    t_qemus[r]=$(qemu)
    t_moves[r]=$(move "$r")
  else
    t_moves[r]=$(move "$r")
    t_qemus[r]=$(qemu)
  fi
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
t_move=$(median "${t_moves[@]}")
t_qemu=$(median "${t_qemus[@]}")
r_move=$(rate "$t_move")
printf '\nmove of %s (%d MiB of random data), file -> RADOS, one memstore OSD; medians of %d rounds\n\n' "$SIZE" "$mib" "$ROUNDS"
printf '| %-44s | %8s | %8s | %14s |\n' "copy" "seconds" "MiB/s" "archip / it"
printf '|%s|%s|%s|%s|\n' "----------------------------------------------" "----------" "----------" "----------------"
row() { printf '| %-44s | %8.2f | %8.1f | %13.2fx |\n' "$1" "$2" "$(rate "$2")" "$(echo "$r_move / $(rate "$2")" | bc -l)"; }
row "archip volume move (file pool -> rados pool)" "$t_move"
row "qemu-img convert (file -> rbd:, cold)" "$t_qemu"
row "rbd migration execute (pool -> pool)" "$t_exec"
row "rbd migration prepare + execute + commit" "$t_rbd"
printf '\n| %-5s | %-14s | %10s | %14s | %15s |\n' "round" "first" "move MiB/s" "qemu-img MiB/s" "move / qemu-img"
printf '|%s|%s|%s|%s|%s|\n' "-------" "----------------" "------------" "----------------" "-----------------"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then first=qemu-img; else first=move; fi
  printf '| %-5s | %-14s | %10.1f | %14.1f | %14.2fx |\n' "$r" "$first" "$(rate "${t_moves[r]}")" "$(rate "${t_qemus[r]}")" "$(echo "${t_qemus[r]} / ${t_moves[r]}" | bc -l)"
done
