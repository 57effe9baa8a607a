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
# sized to 3x SIZE (CEPH_MEMSTORE_BYTES). Ratios are archip's MiB/s over the other's.
#
#   bench/move.sh              # 4 GiB
#   SIZE=256M bench/move.sh    # quick
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-4G}
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

# rbd migration, pool to pool.
rbd import --no-progress "$work/src.raw" mvsrc/img >/dev/null
t_prep=$(secs rbd migration prepare mvsrc/img mvdst/img)
t_exec=$(secs rbd migration execute --no-progress mvdst/img)
t_commit=$(secs rbd migration commit --no-progress mvdst/img)
rbd rm --no-progress mvdst/img >/dev/null
t_rbd=$(echo "$t_prep + $t_exec + $t_commit" | bc -l)

# qemu-img convert, file to RBD.
t_qemu=$(secs qemu-img convert -f raw -O raw "$work/src.raw" "rbd:mvdst/cold:conf=$CEPH_CONF")
rbd rm --no-progress mvdst/cold >/dev/null

# archip volume move, file pool to RADOS pool.
cat >"$work/store.toml" <<CONF
metadata = "file://$work/meta"
default = "local"
[pools]
local = "file://$work/local"
rados = "rados://archip?conf=$CEPH_CONF&namespace=benchmove"
CONF
archip() { "$work/archip" --store "pools://$work/store.toml" "$@"; }
archip -q volume create v --size "$SIZE" --block-size 4M >/dev/null 2>&1
archip -q volume write v <"$work/src.raw"
t_move=$(secs archip volume move v --to rados)
# The moved volume reads the source's bytes.
archip volume read v | cmp - "$work/src.raw"

r_move=$(rate "$t_move")
r_exec=$(rate "$t_exec")
r_rbd=$(rate "$t_rbd")
r_qemu=$(rate "$t_qemu")
printf '\nmove of %s (%d MiB of random data), file -> RADOS, one memstore OSD\n\n' "$SIZE" "$mib"
printf '| %-44s | %8s | %8s | %14s |\n' "copy" "seconds" "MiB/s" "archip / it"
printf '|%s|%s|%s|%s|\n' "----------------------------------------------" "----------" "----------" "----------------"
row() { printf '| %-44s | %8.2f | %8.1f | %13.2fx |\n' "$1" "$2" "$3" "$(echo "$r_move / $3" | bc -l)"; }
row "archip volume move (file pool -> rados pool)" "$t_move" "$r_move"
row "rbd migration execute (pool -> pool)" "$t_exec" "$r_exec"
row "rbd migration prepare + execute + commit" "$t_rbd" "$r_rbd"
row "qemu-img convert (file -> rbd:, cold)" "$t_qemu" "$r_qemu"
