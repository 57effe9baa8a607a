#!/usr/bin/env bash
# The main job on the embedded file store: build archip, import an image,
# make VM disks from it in milliseconds, and show what is stored.
# Usage: scripts/demo.sh [STORE_URL]   (default: file://$PWD/archip-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

go build -o bin/archip ./cmd/archip
archip() { bin/archip "$@"; }
export ARCHIP_STORE="${1:-file://$PWD/archip-demo}"
echo "== store: $ARCHIP_STORE"

img=$(mktemp --suffix=.raw)
trap 'rm -f "$img"' EXIT
# A 2 GiB raw image: 256 MiB of data, the rest a hole.
head -c 256M /dev/urandom >"$img"
truncate -s 2G "$img"

name="demo-$(date +%s)"
echo "== import a 2 GiB image (zero blocks are not stored)"
archip image import "$img" "$name-image"
echo "== import it again (every block is already stored)"
archip image import "$img" "$name-copy"
echo "== three VM disks from the image: thin clones, no data copied"
for i in 1 2 3; do archip volume clone "$name-image" "$name-vm$i" --size 20G; done
echo "== write to one of them, snapshot it, and compare"
echo "hello from vm1" | archip volume write "$name-vm1" --offset 1M
archip volume snapshot "$name-vm1" "$name-vm1@1"
archip volume read "$name-vm1@1" --offset 1M --length 15; echo
archip volume diff "$name-image" "$name-vm1"
echo "== what the store holds"
archip volume list
archip store stats
