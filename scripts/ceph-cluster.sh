#!/usr/bin/env bash
# A throwaway single-node Ceph cluster on 127.0.0.1 (one mon, one mgr, one
# memstore OSD, pool "archip"), for tests and benchmarks.
#
#   scripts/ceph-cluster.sh start DIR   # prints the path of DIR/ceph.conf
#   scripts/ceph-cluster.sh stop DIR    # stops the daemons by recorded PID, removes DIR
#
# Needs Debian's ceph-mon, ceph-mgr, ceph-osd and ceph-common
# (scripts/install-test-deps.sh). Ports are chosen free at start.
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
  if [ -f "$dir/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
    for _ in $(seq 50); do
      alive=0
      while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$dir/pids"
      [ $alive = 0 ] && break
      sleep 0.1
    done
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$dir/pids"
  fi
  rm -rf "$dir"
}

freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
  mkdir -p "$dir"/{mon,osd,mgr,run,log}
  dir=$(cd "$dir" && pwd)
  local v2 v1 conf=$dir/ceph.conf
  v2=$(freeport); v1=$(freeport)
  cat >"$conf" <<CONF
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon host = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
[mon.a]
mon data = $dir/mon
public addrv = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
[mgr.x]
mgr data = $dir/mgr
[osd.0]
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = 4294967296
CONF
  export CEPH_CONF=$conf
  ceph() { timeout 30 /usr/bin/ceph --connect-timeout 20 "$@"; }
  : >"$dir/pids"
  ceph-mon --id a --mkfs --keyring /dev/null >/dev/null
  ceph-mon --id a -f >"$dir/log/mon.out" 2>&1 & echo $! >>"$dir/pids"
  ceph-mgr --id x -f >"$dir/log/mgr.out" 2>&1 & echo $! >>"$dir/pids"
  for _ in $(seq 50); do timeout 5 /usr/bin/ceph --connect-timeout 4 -s >/dev/null 2>&1 && break; sleep 0.2; done
  ceph osd create >/dev/null
  ceph osd crush add osd.0 1 root=default >/dev/null 2>&1
  ceph-osd --id 0 --mkjournal --mkfs >"$dir/log/osd-mkfs.out" 2>&1
  ceph-osd --id 0 -f >"$dir/log/osd.out" 2>&1 & echo $! >>"$dir/pids"
  for _ in $(seq 150); do ceph osd stat 2>/dev/null | grep -q '1 up' && break; sleep 0.2; done
  ceph osd stat | grep -q '1 up' || { echo "ceph-cluster: the OSD did not come up (logs in $dir/log)" >&2; exit 1; }
  ceph osd pool create archip 8 >/dev/null 2>&1
  ceph osd pool application enable archip archip >/dev/null 2>&1 || true
  timeout 30 rados -p archip put probe /dev/null && timeout 30 rados -p archip rm probe
  echo "$conf"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
