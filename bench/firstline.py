#!/usr/bin/env python3
"""Run a command and print the seconds until its second line of output
(the first record after a table's header); then stop it."""
import subprocess, sys, time

t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
p.stdout.readline()
line = p.stdout.readline()
first = time.monotonic() - t0
p.kill()
p.wait()
if not line:
    sys.exit(f"firstline: {sys.argv[1:]} printed no record")
print(f"{first:.3f}")
