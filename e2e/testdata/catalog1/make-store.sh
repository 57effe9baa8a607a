#!/bin/bash
# make-store.sh BIN OUTDIR: build the store that TestUpgradeCatalogFormat1
# opens: a store whose catalog is format 1 (one "catalog" object), written
# by the archip binary BIN of the commit named in manifest.json
# ("commit"), and write OUTDIR/store.tar.gz and OUTDIR/manifest.json.
#
# Run it by hand with the binary of the last commit of format 1 (git
# archive COMMIT | tar -x -C DIR; go build -o BIN ./cmd/archip in DIR),
# never from a test: the point is a store written by old code.
#
# The store: volumes, snapshots (one of a clone), clones of snapshots and
# of images, images, names with '@' and '_', a renamed volume and a
# renamed snapshot with clones, a removed volume whose snapshot stays,
# and 40 clones of one image.
set -euo pipefail
BIN=$(realpath "$1")
OUT=$(realpath "$2")
COMMIT=${COMMIT:-$(git rev-parse --short HEAD)}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
S="file://$W/store"
a() { "$BIN" --store "$S" -q "$@"; }
# gen LABEL LEN: LEN bytes of lines "LABEL <n>", distinct per label.
gen() { python3 -c 'import sys
label, n = sys.argv[1], int(sys.argv[2])
out = b"".join(b"%s %07d\n" % (label.encode(), i) for i in range(n // 8 + 1))
sys.stdout.buffer.write(out[:n])' "$1" "$2"; }

a store init
a volume create vol_1 --size 1M --block-size 64K
gen vol1-a 200000 | a volume write vol_1
a volume snapshot vol_1 vol_1@monday
gen vol1-b 70000 | a volume write vol_1 --offset 300000
a volume snapshot vol_1 vol_1@tuesday
a volume clone vol_1@monday web-1
gen web1 5000 | a volume write web-1 --offset 65536
a volume snapshot web-1 web-1@s
a volume clone web-1@s web-2 --size 2M
gen web2 9000 | a volume write web-2 --offset 1500000

gen img-a 300000 >"$W/img"
a image import "$W/img" base.img --block-size 64K
for i in $(seq -w 1 40); do
	a volume clone base.img "vm$i"
done
gen vm07 4096 | a volume write vm07 --offset 8192
gen vm33 100000 | a volume write vm33 --offset 100000

a volume create old-name --size 512K --block-size 64K
gen old 100000 | a volume write old-name
a volume snapshot old-name old-name@1
a volume rename old-name renamed
a volume rename old-name@1 renamed@1
a volume clone renamed@1 from-renamed
gen fr 3000 | a volume write from-renamed --offset 4000

a volume create gone --size 256K --block-size 64K
gen gone 100000 | a volume write gone
a volume snapshot gone gone@kept
a volume remove gone

# The manifest: every name's kind, size, lineage and SHA-256 of its
# whole content.
"$BIN" --store "$S" volume list --json >"$W/list.json"
{
	echo "{"
	echo "  \"commit\": \"$COMMIT\","
	echo "  \"entries\": ["
	first=1
	for name in $(python3 -c 'import json,sys; print(" ".join(sorted(r["name"] for r in json.load(open(sys.argv[1])))))' "$W/list.json"); do
		"$BIN" --store "$S" --json volume info "$name" >"$W/info.json"
		sum=$(a volume read "$name" | sha256sum | cut -d" " -f1)
		[ $first = 1 ] || echo ","
		first=0
		python3 -c 'import json,sys
i = json.load(open(sys.argv[1]))
print("    " + json.dumps({"name": i["name"], "kind": i["kind"], "size": i["size"], "parent_name": i.get("parent_name", ""),
    "origin_name": i.get("origin_name", ""), "children": sorted(i["children"]), "sha256": sys.argv[2]}), end="")' "$W/info.json" "$sum"
	done
	echo
	echo "  ]"
	echo "}"
} >"$OUT/manifest.json"
tar -C "$W" --owner=0 --group=0 --numeric-owner -czf "$OUT/store.tar.gz" store
ls -l "$OUT"
