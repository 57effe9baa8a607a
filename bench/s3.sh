#!/usr/bin/env bash
# archip on S3 (Ceph's radosgw) against archip on RADOS and Ceph's RBD, on
# one throwaway cluster (scripts/ceph-cluster.sh: one memstore OSD,
# replication 1), in one run:
#   - fio through archip's NBD export of a volume on s3://, of one in the
#     split configuration (split: a pools:// store whose metadata, and so
#     whose write log, is on rados:// and whose blocks are on s3://; see
#     docs/pools.md; logs = "metadata": flushed writes stay in the write
#     log there, whose checkpoints store its index, not blocks on S3), and
#     of one on rados:// (unix sockets), and fio's rbd
#     engine without cache
#     (rbd_cache=false, what QEMU uses with cache=none): 1M sequential
#     write and read (QD16), 4k random write and read (QD32), and 4k
#     random writes at QD1 with an fsync after each. Every image is written
#     in full first; tests interleave (s3, split, rados, rbd, and back),
#     each figure the mean of its two runs;
#   - write amplification: 4k random writes with an fsync every 32, a
#     fixed amount (IO, 8 MiB by default), and the bytes the cluster's
#     pools report written meanwhile (rados df: every radosgw pool for
#     s3://, the pool for rados:// and RBD, both for split), per byte the
#     guest wrote,
#     until archip's daemon has closed the volume (its close checkpoints
#     the write log: on S3 it stores the write log index, 24 bytes per
#     extent, where it put each block the writes touched before; see
#     "Write log index" in docs/format.md).
#
#   bench/s3.sh                      # 1 GiB, 8 s per test
#   SIZE=256M RUNTIME=1 bench/s3.sh  # quick
#   TESTS="fsync1" bench/s3.sh       # only these fio tests (of the names below)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-8}
IO=${IO:-8M}
# Four volumes of SIZE (s3, split, rados, rbd) and what the tests overwrite:
# the OSD (memstore, in RAM) holds 6x SIZE, at least 4 GiB.
bytes=$(numfmt --from=iec "$SIZE")
export CEPH_MEMSTORE_BYTES=$(( (6 * bytes > 4294967296) ? 6 * bytes : 4294967296 ))
ceph_start
rgw_start
endpoint=$rgw_endpoint ak=$rgw_ak sk=$rgw_sk
export AWS_SHARED_CREDENTIALS_FILE=$rgw_creds AWS_CONFIG_FILE=/dev/null
# The bucket, made with curl's SigV4 (the keys go through a config file,
# not the command line).
printf 'user = "%s:%s"\n' "$ak" "$sk" >"$work/curl.conf"
curl -sf -K "$work/curl.conf" --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT "$endpoint/archip-bench" \
  -H "x-amz-content-sha256: $(sha256sum </dev/null | cut -d' ' -f1)" >/dev/null
go build -tags ceph,pacific -o "$work/archip" ./cmd/archip

cat >"$work/split.toml" <<CONF
metadata = "rados://archip?conf=$CEPH_CONF&namespace=split"
logs = "metadata"
default = "s3"
[pools]
s3 = "s3://archip-bench/split?endpoint=$endpoint"
CONF
declare -A STORE=(
  [s3]="s3://archip-bench/vol?endpoint=$endpoint"
  [split]="pools://$work/split.toml"
  [rados]="rados://archip?conf=$CEPH_CONF&namespace=bench"
)
declare -A URI SERVE
for kind in s3 split rados; do
  "$work/archip" --store "${STORE[$kind]}" -q volume create vol --size "$SIZE"
  "$work/archip" --store "${STORE[$kind]}" serve --nbd-listen "unix:$work/$kind.sock" --shutdown-timeout 30m 2>"$work/$kind.log" &
  pids+=($!) SERVE[$kind]=$!
  wait_sock "$work/$kind.sock"
  URI[$kind]="nbd+unix:///vol?socket=$work/$kind.sock"
  fio --name=prep --ioengine=nbd --uri="${URI[$kind]}" --rw=write --bs=1M --iodepth=16 --refill_buffers --output=/dev/null >/dev/null
done
rbd create --size "$SIZE" archip/bench
CEPH_ARGS=--rbd_cache=false fio --name=prep --ioengine=rbd --pool=archip --rbdname=bench --clientname=admin \
  --rw=write --bs=1M --iodepth=16 --refill_buffers --output=/dev/null >/dev/null

declare -A SPEC=(
  [seqwrite]="--rw=write --bs=1M --iodepth=16"
  [seqread]="--rw=read --bs=1M --iodepth=16"
  [randwrite]="--rw=randwrite --bs=4k --iodepth=32"
  [randread]="--rw=randread --bs=4k --iodepth=32"
  [fsync1]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
)
read -r -a tests <<<"${TESTS:-seqwrite seqread randwrite randread fsync1}"
declare -A R

# fioon WHO ARGS...: fio against WHO (s3, split, rados: archip's NBD export;
# rbd: fio's rbd engine without cache).
fioon() {
  local who=$1
  shift
  if [ "$who" = rbd ]; then
    CEPH_ARGS=--rbd_cache=false fio --name=t --ioengine=rbd --pool=archip --rbdname=bench --clientname=admin "$@"
  else
    fio --name=t --ioengine=nbd --uri="${URI[$who]}" "$@"
  fi
}
# shellcheck disable=SC2086 # SPEC holds several options
one() {
  local unit=iops
  case $2 in seq*) unit=mib ;; esac
  fioon "$1" ${SPEC[$2]} --runtime="$RUNTIME" --time_based --output-format=json 2>/dev/null | fio_json "$unit"
}
for name in "${tests[@]}"; do
  for who in s3 split rados rbd rbd rados split s3; do
    r=$(one "$who" "$name")
    R[$who,$name]=$(( ${R[$who,$name]:-0} + r ))
    echo "  $who $name: $r" >&2
  done
  for who in s3 split rados rbd; do R[$who,$name]=$(( R[$who,$name] / 2 )); done
done

# written POOL...: the bytes the pools report written so far. The
# manager's figures lag the OSDs' by seconds (more after a burst): read
# them until two readings 6 s apart agree (at most a minute).
written() {
  local prev=-1 cur
  for _ in $(seq 10); do
    sleep 6
    cur=$(rados df -f json | /usr/bin/python3 -c '
import json, sys
want = set(sys.argv[1:])
print(sum(p["write_bytes"] for p in json.load(sys.stdin)["pools"] if p["name"] in want or ("*rgw" in want and "rgw" in p["name"])))
' "$@")
    [ "$cur" = "$prev" ] && break
    prev=$cur
  done
  echo "$cur"
}
declare -A AMP
for who in s3 split rados rbd; do
  pools=archip
  [ "$who" = s3 ] && pools="*rgw"
  [ "$who" = split ] && pools="archip *rgw"
  # shellcheck disable=SC2086 # pools holds several names
  before=$(written $pools)
  fioon "$who" --rw=randwrite --bs=4k --iodepth=1 --fsync=32 --io_size="$IO" --output=/dev/null >/dev/null 2>&1
  # The daemon's close checkpoints its write log (on S3: the write log
  # index): a cost of these writes too, so it is counted.
  if [ "$who" != rbd ]; then kill -TERM "${SERVE[$who]}"; wait "${SERVE[$who]}" || true; fi
  # shellcheck disable=SC2086
  after=$(written $pools)
  AMP[$who]=$(/usr/bin/python3 -c "import sys; print('%.2f' % ((int(sys.argv[2]) - int(sys.argv[1])) / float(sys.argv[3])))" \
    "$before" "$after" "$(numfmt --from=iec "$IO")")
  echo "  $who amplification: ${AMP[$who]}" >&2
done

echo
echo "archip on s3:// (radosgw), split (metadata and write log on rados://, blocks on s3://) and rados://, and RBD without cache, one memstore OSD ($SIZE, ${RUNTIME}s per test)"
printf '%-34s %9s %9s %9s %9s %9s %10s %9s\n' test s3 split rados "rbd" "s3/rbd" "split/rbd" "s3/rados"
for name in "${tests[@]}"; do
  case $name in
    seqwrite) label="1M sequential write, QD16 (MiB/s)" ;; seqread) label="1M sequential read, QD16 (MiB/s)" ;;
    randwrite) label="4k random write, QD32" ;; randread) label="4k random read, QD32" ;;
    fsync1) label="4k random write, QD1, fsync=1" ;;
  esac
  printf '%-34s %9s %9s %9s %9s %9s %10s %9s\n' "$label" "${R[s3,$name]}" "${R[split,$name]}" "${R[rados,$name]}" "${R[rbd,$name]}" \
    "$(ratio "${R[s3,$name]}" "${R[rbd,$name]}")" "$(ratio "${R[split,$name]}" "${R[rbd,$name]}")" "$(ratio "${R[s3,$name]}" "${R[rados,$name]}")"
done
printf '%-34s %9s %9s %9s %9s\n' "bytes written per byte, fsync=32 (IO $IO, incl. close)" "${AMP[s3]}" "${AMP[split]}" "${AMP[rados]}" "${AMP[rbd]}"
