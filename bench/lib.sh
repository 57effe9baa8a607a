# Shared by the bench scripts (source it: `. "$(dirname "$0")/lib.sh"`).
# On sourcing: the working directory is the repository's root, go is on
# PATH, $work is a fresh temporary directory, and on exit every PID in
# the array pids is stopped, the throwaway Ceph cluster (if ceph_start
# started one) is stopped, and $work is removed.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
work=$(mktemp -d)
pids=()
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -d "$work/ceph" ]; then scripts/ceph-cluster.sh stop "$work/ceph" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap bench_cleanup EXIT

# ceph_start: starts a throwaway cluster in $work/ceph (one memstore OSD,
# pool "archip") and exports CEPH_CONF.
ceph_start() {
  CEPH_CONF=$(scripts/ceph-cluster.sh start "$work/ceph")
  export CEPH_CONF
}

# rgw_start: starts a radosgw on the cluster; sets rgw_endpoint, and
# rgw_ak and rgw_sk, its user's keys (also in the shared-credentials file
# rgw_creds).
rgw_start() {
  read -r rgw_endpoint rgw_creds < <(scripts/ceph-cluster.sh start-rgw "$work/ceph")
  rgw_ak=$(sed -n 's/^aws_access_key_id *= *//p' "$rgw_creds")
  rgw_sk=$(sed -n 's/^aws_secret_access_key *= *//p' "$rgw_creds")
}

# freeport: a free TCP port on 127.0.0.1.
freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_sock PATH: waits up to 5 s for the unix socket PATH.
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

# wait_port PORT: waits up to 30 s for a listener on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# fio_json UNIT: fio's JSON on stdin → MiB/s (UNIT mib) or IOPS, reads
# and writes added together.
fio_json() { sed -n '/^{/,$p' | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
r, w = j["read"], j["write"]
print(round((r["bw_bytes"] + w["bw_bytes"]) / 2**20) if sys.argv[1] == "mib" else round(r["iops"] + w["iops"]))
' "$1"; }

# ratio A B: A/B as "1.23x", "-" when B is 0 or empty.
ratio() { /usr/bin/python3 -c 'import sys; a, b = (float(x or 0) for x in sys.argv[1:]); print(f"{a/b:.2f}x" if b else "-")' "$1" "$2"; }
