#!/usr/bin/env python3
"""Run a command and print the seconds it took (its output discarded)."""
import subprocess, sys, time

t0 = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"{time.monotonic() - t0:.3f}")
