#!/usr/bin/env bash
# Installs what the tests need: Debian packages (as root, with apt-get),
# only those missing. Safe to run again.
set -euo pipefail
pkgs=()
need() { dpkg -s "$1" >/dev/null 2>&1 || pkgs+=("$1"); }
need ca-certificates
# NBD clients and peers (issue 3): qemu-img, qemu-io, qemu-nbd, nbdinfo, nbdcopy, nbdfuse, nbdsh, fio, nbdkit.
for p in qemu-utils libnbd-bin python3-libnbd nbdkit fio fuse3 e2fsprogs util-linux; do need "$p"; done
# Ceph (issue 4): a throwaway cluster (scripts/ceph-cluster.sh), librados for
# the rados:// backend (go-ceph, cgo), rbd for the benchmark against RBD.
for p in ceph-mon ceph-osd ceph-mgr ceph-common librados-dev librbd-dev; do need "$p"; done
if ((${#pkgs[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: run as root, or install: ${pkgs[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
