#!/usr/bin/env python3
"""The Python side of bench/bench_subprocess.c: spawn /bin/true with
asyncio.create_subprocess_exec, wait for it (asyncio reaps it), N times one
after the other, after one warm-up child. Prints one RESULT line in the
same form as the C program, so bench/os.sh can compare the two.

    python3 bench/subprocess_asyncio.py [N]      (default 1000)
"""
import asyncio
import sys
import time


async def main(n):
    proc = await asyncio.create_subprocess_exec("/bin/true")  # warm-up
    await proc.wait()
    t0 = time.perf_counter_ns()
    for i in range(n):
        proc = await asyncio.create_subprocess_exec("/bin/true")
        code = await proc.wait()
        if code != 0:
            raise SystemExit(f"subprocess_asyncio: child {i}: code {code}")
    return time.perf_counter_ns() - t0


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    if n <= 0:
        raise SystemExit("usage: subprocess_asyncio.py [N > 0]")
    ns = asyncio.run(main(n))
    ms = ns / 1e6
    print(f"RESULT bench=subprocess_asyncio n={n} total_ms={ms:.1f} "
          f"ms_per_child={ms / n:.4f}")
