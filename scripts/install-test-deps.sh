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
# the rados:// backend (go-ceph, cgo; the C++ headers and g++ for the one
# call its C API lacks), rbd for the benchmark against RBD.
for p in ceph-mon ceph-osd ceph-mgr ceph-common librados-dev libradospp-dev g++ librbd-dev; do need "$p"; done
# S3 (issue 13): Ceph's radosgw on the throwaway cluster; versitygw below.
need radosgw
# The S3 API (issue 14): real clients against archip serve --s3-listen.
for p in awscli s3cmd curl; do need "$p"; done
# The dashboard's browser test (issue 16): headless Chromium, with its
# recommended fonts (the screenshots need them).
need chromium
# QEMU live migration with a tiny guest (issue 6): qemu-system-x86 only
# (its recommends pull in firmware and UI we do not use); the test fetches
# a Debian cloud kernel and busybox-static with apt-get download.
norec=()
dpkg -s qemu-system-x86 >/dev/null 2>&1 || norec+=(qemu-system-x86)
# libvirt's schema check of 'volume disk-xml' (issue 17): virt-xml-validate,
# which runs xmllint; without recommends (no daemon).
for p in libvirt-clients libxml2-utils; do dpkg -s "$p" >/dev/null 2>&1 || norec+=("$p"); done
# promtool checks the daemon's /metrics (issue 16): Debian ships it in
# the prometheus package (the server comes along, unused).
dpkg -s prometheus >/dev/null 2>&1 || norec+=(prometheus)
if ((${#pkgs[@]} + ${#norec[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: run as root, or install: ${pkgs[*]} ${norec[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${pkgs[*]} ${norec[*]}"
  apt-get update -qq
  if ((${#pkgs[@]})); then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; fi
  if ((${#norec[@]})); then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${norec[@]}" >/dev/null; fi
fi

# versitygw (issue 13), an S3 server the s3:// tests start: built with go
# install into a cache outside the repository; scripts/test.sh points the
# tests at it (ARCHIP_TEST_VERSITYGW).
vgw=${ARCHIP_VERSITYGW_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/archip/bin}
if [ ! -x "$vgw/versitygw" ]; then
  echo "install-test-deps: installing versitygw v1.8.0 into $vgw"
  (cd / && GOBIN=$vgw GOFLAGS=-buildvcs=false go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)
fi
