#!/usr/bin/python3
"""FUA writes over NBD, which fio's nbd engine cannot issue.

fio's nbd engine sends every write with no flags (its --sync=1 changes
nothing on the wire), so this drives the export with libnbd itself:
4 KiB writes at random 4 KiB-aligned offsets, each with NBD_CMD_FLAG_FUA,
DEPTH of them in flight, for SECONDS; prints the writes per second.

    bench/fua.py URI SECONDS [DEPTH]

Prints "-" when the server does not advertise FUA.
"""
import os
import random
import sys
import time

import nbd

BS = 4096


def main():
    uri, seconds = sys.argv[1], float(sys.argv[2])
    depth = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    h = nbd.NBD()
    h.connect_uri(uri)
    if not h.can_fua():
        print("-")
        return
    blocks = h.get_size() // BS
    bufs = [nbd.Buffer.from_bytearray(bytearray(os.urandom(BS))) for _ in range(64)]
    rnd = random.Random(1)
    done = 0
    inflight = 0
    deadline = time.monotonic() + seconds
    start = time.monotonic()

    def completed(err):
        nonlocal done, inflight
        if err.value:
            raise OSError(err.value, "fua write failed")
        done += 1
        inflight -= 1
        return 1  # let libnbd retire the command

    while True:
        now = time.monotonic()
        if now >= deadline and inflight == 0:
            break
        while now < deadline and inflight < depth:
            h.aio_pwrite(bufs[rnd.randrange(len(bufs))], rnd.randrange(blocks) * BS,
                         completion=completed, flags=nbd.CMD_FLAG_FUA)
            inflight += 1
        h.poll(-1)
    elapsed = time.monotonic() - start
    h.shutdown()
    print(round(done / elapsed))


if __name__ == "__main__":
    main()
