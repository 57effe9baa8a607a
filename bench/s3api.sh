#!/usr/bin/env bash
# The S3 API's throughput, side by side in one run: `aws s3 cp` (the AWS
# CLI's default multipart settings: 8 MiB parts, 10 requests at once) of
# a file of SIZE up and down against
#   - archip serve --s3-listen on a file store,
#   - versitygw's posix backend, its directory on the same disk,
#   - radosgw on a throwaway Ceph cluster (one memstore OSD; RGW=0 skips it).
# Each server is started by PID on a loopback port chosen now and stopped
# on exit. Every upload is of a fresh random file (archip deduplicates: a
# file uploaded twice would cost it no writes), and targets interleave
# (archip, versitygw, radosgw, then the reverse; ROUNDS of each), each
# figure the mean of its rounds. The first download of each target is
# compared with what was uploaded. "CPU/GiB up" is the server's own CPU
# time (user + system, from /proc) per GiB uploaded, which the noise of a
# shared machine moves less than its rate. archip answers an upload once it is
# durable; versitygw's posix backend never fsyncs (with this machine's
# memory a 1 GiB upload never waits for the disk), so a second upload
# figure, durable, adds to its time an fsync of the file it wrote.
#
#   bench/s3api.sh                          # 1 GiB, 2 rounds
#   SIZE=256M ROUNDS=1 RGW=0 bench/s3api.sh # quick
#   PROFILE=DIR bench/s3api.sh              # also archip's CPU profile in DIR/archip.pprof
#   BASE=DIR bench/s3api.sh                 # also archip built from the tree DIR, as "base"
#
# versitygw: $ARCHIP_TEST_VERSITYGW or ~/.cache/archip/bin/versitygw
# (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-1G}
ROUNDS=${ROUNDS:-2}
RGW=${RGW:-1}
VGW=${ARCHIP_TEST_VERSITYGW:-$HOME/.cache/archip/bin/versitygw}
AWS=/usr/bin/aws
[ -x "$AWS" ] || AWS=aws
[ -x "$VGW" ] || { echo "s3api.sh: no versitygw at $VGW: install it (see the header) or set ARCHIP_TEST_VERSITYGW" >&2; exit 2; }
bytes=$(numfmt --from=iec "$SIZE")
go build -o "$work/archip" ./cmd/archip
[ -n "${BASE:-}" ] && (cd "$BASE" && go build -o "$work/archip-base" ./cmd/archip)

# The AWS CLI's files: one profile a target, keys only in these files.
export AWS_CONFIG_FILE=$work/aws-config AWS_SHARED_CREDENTIALS_FILE=$work/aws-credentials
export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=
: >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"
chmod 600 "$AWS_SHARED_CREDENTIALS_FILE"
declare -A ENDPOINT
# target NAME ENDPOINT ACCESS SECRET: the AWS CLI's profile NAME.
target() {
  ENDPOINT[$1]=$2
  printf '[profile %s]\nregion = us-east-1\ns3 =\n    addressing_style = path\n    signature_version = s3v4\n' "$1" >>"$AWS_CONFIG_FILE"
  printf '[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$1" "$3" "$4" >>"$AWS_SHARED_CREDENTIALS_FILE"
}
s3() { local who=$1; shift; "$AWS" --profile "$who" --endpoint-url "${ENDPOINT[$who]}" s3 "$@"; }
key() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# archip NAME BINARY: archip serve on a file store of its own.
declare -A PID
archip() {
  local ak sk port prof=()
  ak=AK$(key) sk=$(key)
  printf '%s %s\n' "$ak" "$sk" >"$work/$1-keys"
  chmod 600 "$work/$1-keys"
  port=$(freeport)
  [ -n "${PROFILE:-}" ] && mkdir -p "$PROFILE" && prof=(--cpuprofile "$PROFILE/$1.pprof")
  "$2" --store "file://$work/$1-store" serve --nbd-listen "unix:$work/$1-nbd.sock" "${prof[@]}" \
    --s3-listen "127.0.0.1:$port" --s3-keys-file "$work/$1-keys" 2>"$work/$1.log" & pids+=($!)
  PID[$1]=$!
  wait_port "$port" || { cat "$work/$1.log" >&2; exit 1; }
  target "$1" "http://127.0.0.1:$port" "$ak" "$sk"
}
archip archip "$work/archip"
whos=(archip)
[ -n "${BASE:-}" ] && archip base "$work/archip-base" && whos+=(base)

# versitygw's posix backend.
ak=AK$(key) sk=$(key)
port=$(freeport)
mkdir "$work/vgw"
ROOT_ACCESS_KEY=$ak ROOT_SECRET_KEY=$sk "$VGW" --port "127.0.0.1:$port" posix "$work/vgw" >"$work/vgw.log" 2>&1 & pids+=($!)
PID[versitygw]=$!
wait_port "$port" || { cat "$work/vgw.log" >&2; exit 1; }
target versitygw "http://127.0.0.1:$port" "$ak" "$sk"

whos+=(versitygw)
if [ "$RGW" != 0 ]; then
  ceph_start
  rgw_start
  target radosgw "$rgw_endpoint" "$rgw_ak" "$rgw_sk"
  PID[radosgw]=$(cat "$work/ceph/rgw.pid")
  whos+=(radosgw)
fi
for who in "${whos[@]}"; do s3 "$who" mb s3://bench >/dev/null; done

# ms CMD...: runs CMD quietly, prints how long it took in ms.
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null || return 1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
mibs() { /usr/bin/python3 -c 'import sys; print(round(int(sys.argv[1]) / 2**20 / (int(sys.argv[2]) / 1000)))' "$bytes" "$1"; }
# cpu PID: the process's user + system time so far, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
declare -A UP DOWN SYNCED CHECKED CPU
order=()
for _ in $(seq "$ROUNDS"); do order+=("${whos[@]}"); for ((i = ${#whos[@]} - 1; i >= 0; i--)); do order+=("${whos[i]}"); done; done
n=0
for who in "${order[@]}"; do
  n=$((n + 1))
  head -c "$bytes" /dev/urandom >"$work/up"
  c=$(cpu "${PID[$who]}")
  t=$(ms s3 "$who" cp --no-progress "$work/up" "s3://bench/f$n")
  UP[$who]="${UP[$who]:-} $(mibs "$t")"
  CPU[$who]="${CPU[$who]:-} $(($(cpu "${PID[$who]}") - c))"
  # Durable: archip answers once the data is on disk; versitygw's posix
  # backend never fsyncs, so its figure here adds an fsync of the file
  # (and its directory) made right after the upload.
  case $who in
  archip | base) SYNCED[$who]="${SYNCED[$who]:-} $(mibs "$t")" ;;
  versitygw) SYNCED[$who]="${SYNCED[$who]:-} $(mibs $((t + $(ms sync "$work/vgw/bench/f$n" "$work/vgw/bench"))))" ;;
  esac
  t=$(ms s3 "$who" cp --no-progress "s3://bench/f$n" "$work/down")
  DOWN[$who]="${DOWN[$who]:-} $(mibs "$t")"
  if [ -z "${CHECKED[$who]:-}" ]; then
    cmp "$work/up" "$work/down" || { echo "s3api.sh: $who returned other bytes" >&2; exit 1; }
    CHECKED[$who]=1
  fi
  s3 "$who" rm "s3://bench/f$n" >/dev/null
  # radosgw leaves a deleted object's data to its garbage collection,
  # hours later by default: purge it now, or the memstore OSD fills up
  # (a full cluster answers no delete: two runs hung on one).
  [ "$who" != radosgw ] || timeout 300 radosgw-admin gc process --include-all >/dev/null 2>&1 ||
    echo "s3api.sh: radosgw-admin gc process failed: the OSD may fill up" >&2
  rm -f "$work/down"
  echo "  $who: up ${UP[$who]##* } MiB/s, down ${DOWN[$who]##* } MiB/s" >&2
done
mean() { /usr/bin/python3 -c 'import sys; v = [float(x) for x in sys.argv[1:]]; print(round(sum(v) / len(v)))' $1; }
# Seconds of CPU per GiB uploaded, from ticks per upload.
cpugib() { /usr/bin/python3 -c 'import sys; v = [float(x) for x in sys.argv[3:]]; print("%.2f" % (sum(v) / len(v) / int(sys.argv[1]) / (int(sys.argv[2]) / 2**30)))' "$ticks" "$bytes" $1; }
for who in "${whos[@]}"; do
  UP[$who]=$(mean "${UP[$who]}") DOWN[$who]=$(mean "${DOWN[$who]}") CPU[$who]=$(cpugib "${CPU[$who]}")
  SYNCED[$who]=$([ -n "${SYNCED[$who]:-}" ] && mean "${SYNCED[$who]}" || echo -)
done
if [ -n "${PROFILE:-}" ]; then
  for who in archip base; do
    [ -n "${PID[$who]:-}" ] || continue
    kill -INT "${PID[$who]}"
    wait "${PID[$who]}" 2>/dev/null || true
  done
fi

echo
echo "aws s3 cp of $SIZE (default multipart: 8 MiB parts, 10 at once), MiB/s, mean of $((ROUNDS * 2)) runs each"
echo "(one loopback machine shared with other work: compare within a run only)"
echo "(durable: until the upload is on disk; versitygw's upload and then an fsync of its file)"
echo "(CPU/GiB up: seconds of the server process's CPU per GiB uploaded; radosgw's without its OSD's)"
[ -n "${BASE:-}" ] && echo "(base: archip built from $BASE, run beside it)"
printf '%-10s %8s %8s %8s %12s %12s %12s %12s\n' server upload durable download "CPU/GiB up" "up vs vgw" "dur vs vgw" "down vs vgw"
for who in "${whos[@]}"; do
  dur=-
  [ "${SYNCED[$who]}" != - ] && dur=$(ratio "${SYNCED[$who]}" "${SYNCED[versitygw]}")
  printf '%-10s %8s %8s %8s %12s %12s %12s %12s\n' "$who" "${UP[$who]}" "${SYNCED[$who]}" "${DOWN[$who]}" "${CPU[$who]}" \
    "$(ratio "${UP[$who]}" "${UP[versitygw]}")" "$dur" "$(ratio "${DOWN[$who]}" "${DOWN[versitygw]}")"
done
