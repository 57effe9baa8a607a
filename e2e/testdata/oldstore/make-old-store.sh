#!/bin/bash
# make-old-store.sh BIN OUTDIR: build the store that TestUpgradeOldStore
# opens, with the archip binary BIN of the commit named in manifest.json
# ("commit"), and write OUTDIR/store.tar.gz and OUTDIR/manifest.json.
#
# Run it by hand, with the binary of that commit (git worktree add ...
# COMMIT; go build -o BIN ./cmd/archip), never from a test: the point is
# a store written by old code. It needs /usr/bin/python3 with libnbd's
# module (python3-libnbd) for the trims and the takeover.
#
# The store exercises everything that format had: a volume of 64 KiB
# blocks with full, partly written, wholly and partly trimmed and never
# written blocks; a snapshot; the volume written after it (copy-on-write);
# a clone of the snapshot with writes of its own; a hashed snapshot; an
# imported image (content blocks, a zero block, a duplicate block, a
# partial tail) and a larger clone of it; a volume whose writer was killed
# and whose lease was taken over (unsealed epoch in its head); a removed
# volume; a gc run.
set -euo pipefail
BIN=$(realpath "$1")
OUT=$(realpath "$2")
COMMIT=${COMMIT:-$(git rev-parse --short HEAD)}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
S="file://$W/store"
a() { "$BIN" --store "$S" -q "$@"; }
PY=/usr/bin/python3

# pattern(label, n): n bytes, 512-byte sectors "LABEL <sector>\n" padded
# with dots: distinct everywhere, and small once compressed.
PATTERN='
def pattern(label, n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += (b"%s %06d\n" % (label.encode(), i)).ljust(512, b".")
        i += 1
    return bytes(out[:n])
'
# gen LABEL LEN: pattern(LABEL, LEN) on standard output.
gen() { $PY -c "$PATTERN"'
import sys
sys.stdout.buffer.write(pattern(sys.argv[1], int(sys.argv[2])))' "$1" "$2"; }

# nbdops URI OP...: w:OFF:LEN:LABEL writes gen(LABEL), t:OFF:LEN trims,
# z:OFF:LEN writes zeroes, f flushes, h prints "holding" and keeps the
# connection (and so the daemon's lease) open.
NBDOPS="$PATTERN"'
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for op in sys.argv[2:]:
    f = op.split(":")
    if f[0] == "w":
        h.pwrite(pattern(f[3], int(f[2])), int(f[1]))
    elif f[0] == "t":
        h.trim(int(f[2]), int(f[1]))
    elif f[0] == "z":
        h.zero(int(f[2]), int(f[1]))
    elif f[0] == "f":
        h.flush()
    elif f[0] == "h":
        print("holding", flush=True)
        import time
        time.sleep(3600)
h.shutdown()
'
nbdops() { $PY -c "$NBDOPS" "$@"; }

# serve ARGS...: start the daemon on $W/nbd.sock; sets PID.
serve() {
	rm -f "$W/nbd.sock"
	"$BIN" --store "$S" serve --nbd-listen "unix:$W/nbd.sock" "$@" 2>"$W/serve.log" &
	PID=$!
	for _ in $(seq 100); do
		grep -q "over NBD on" "$W/serve.log" && return
		sleep 0.1
	done
	echo "serve did not start" >&2
	cat "$W/serve.log" >&2
	exit 1
}
uri() { echo "nbd+unix:///$1?socket=$W/nbd.sock"; }

K=65536
a store init

# vol: 16 blocks of 64 KiB. Blocks 0-2 full, 3 partly written, 5 and 6
# to be trimmed, 7 with a write across its end into 8.
a volume create vol --size 1M --block-size 64K
gen vol-a $((3 * K)) | a volume write vol
gen vol-b 5000 | a volume write vol --offset $((3 * K + 1000))
gen vol-c $((2 * K)) | a volume write vol --offset $((5 * K))
gen vol-d 20000 | a volume write vol --offset $((8 * K - 10000))
a volume snapshot vol snap1
# After the snapshot: copy-on-write of a shared block, a fresh block.
gen vol-e 4096 | a volume write vol --offset $((1 * K + 8192))
gen vol-f 4096 | a volume write vol --offset $((10 * K))

a volume clone snap1 clone1
gen clone-a 4096 | a volume write clone1 --offset $((2 * K + 4096))
gen clone-b $K | a volume write clone1 --offset $((12 * K))
a volume snapshot clone1 clonesnap
a volume hash clonesnap

# An image: block 0 data, 1 data, 2 zero, 3 same as 0, tail of 3000 bytes.
gen img-a $K >"$W/img"
gen img-b $K >>"$W/img"
head -c $K /dev/zero >>"$W/img"
gen img-a $K >>"$W/img"
gen img-c 3000 >>"$W/img"
a image import "$W/img" image1 --block-size 64K
a volume clone image1 imgclone --size 512K
gen imgclone-a 4096 | a volume write imgclone --offset 4096
gen imgclone-b 4096 | a volume write imgclone --offset $((6 * K))

# Trims through NBD: block 5 whole, part of block 6, zeroes in block 0.
serve --flush-interval 0
nbdops "$(uri vol)" t:$((5 * K)):$K t:$((6 * K + 4096)):8192 z:100:2000 w:$((14 * K + 512)):1024:vol-g f
kill -TERM $PID
wait $PID

# tk: written by a daemon that is killed, then taken over by another
# writer: its head records an unsealed epoch.
a volume create tk --size 256K --block-size 64K
gen tk-a $((2 * K)) | a volume write tk
serve --flush-interval 0 --lease-ttl 2s --max-clock-drift 200ms --node-id old
$PY -c "$NBDOPS" "$(uri tk)" w:$((K + 100)):3000:tk-b f w:$((2 * K)):4096:tk-c f h >"$W/hold" &
HOLD=$!
until grep -q holding "$W/hold"; do sleep 0.1; done
"$BIN" --store "$S" lease show tk | grep -q "state: *held"
kill -KILL $PID
wait $PID || true
kill $HOLD
wait $HOLD || true
a lease break tk --now
gen tk-d 4096 | a volume write tk --offset $((3 * K))

# A removed volume leaves garbage for gc.
a volume create gone --size 256K --block-size 64K
gen gone $((2 * K)) | a volume write gone
a volume snapshot gone gonesnap
a volume remove gone
a gc --grace 20m

# The manifest: every name's kind, size and SHA-256 of its whole content.
"$BIN" --store "$S" volume list --json >"$W/list.json"
{
	echo "{"
	echo "  \"commit\": \"$COMMIT\","
	echo "  \"entries\": ["
	first=1
	for name in $($PY -c 'import json,sys; print(" ".join(sorted(r["name"] for r in json.load(open(sys.argv[1])))))' "$W/list.json"); do
		read -r kind size < <($PY -c 'import json,sys
for r in json.load(open(sys.argv[1])):
    if r["name"] == sys.argv[2]: print(r["kind"], r["size"])' "$W/list.json" "$name")
		sum=$(a volume read "$name" | sha256sum | cut -d" " -f1)
		[ $first = 1 ] || echo ","
		first=0
		printf '    {"name": "%s", "kind": "%s", "size": %s, "sha256": "%s"}' "$name" "$kind" "$size" "$sum"
	done
	echo
	echo "  ]"
	echo "}"
} >"$OUT/manifest.json"
tar -C "$W" --owner=0 --group=0 --numeric-owner -czf "$OUT/store.tar.gz" store
ls -l "$OUT"
