#!/usr/bin/python3
"""The peer of bench_pg: the same `SELECT $1::int` round trips with Python
asyncpg (Debian's python3-asyncpg), against the same server.

    bench_pg_asyncpg.py [-n N] [-b BATCH] [-t TASKS] [-c CONNS] [--uvloop] WORKLOAD

    prepared    one connection, one fetchval at a time; asyncpg's statement
                cache prepares the statement on first use (untimed warm-up),
                then each fetchval is Bind/Execute/Sync: one round trip.
    unprepared  the same with statement_cache_size=0: asyncpg then prepares
                an unnamed statement for every call (Parse/Describe/Sync,
                then Bind/Execute/Sync: two round trips).
    pipeline    asyncpg has no pipeline API for fetches (and a second
                operation started on a busy connection raises
                InterfaceError, so concurrent fetchvals on one connection
                are not pipelined either). Its closest equivalent is
                executemany, which pipelines Bind/Execute for every argument
                tuple of a prepared statement and ends with one Sync: N /
                BATCH calls of executemany with BATCH arguments. It discards
                the rows (nothing is returned or checked), so it does less
                than cio's pipeline, which reads and checks every result.
    pool        TASKS tasks (32) over create_pool(min_size=CONNS,
                max_size=CONNS) (8); each task loops: pool.acquire(),
                fetchval, release, until N queries are done in all. asyncpg's
                release resets the connection (a second round trip:
                pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL).
    pool_noreset the same with that reset query switched off (a Connection
                subclass whose _get_reset_query returns ""): one round trip
                per query, as in cio's pool.

Connecting and a warm-up are not timed. Every fetched value is checked.
Prints: RESULT bench=pg_WORKLOAD backend=asyncio|uvloop queries=N qps=Q us_per_query=U
cpu_us_per_query=C, C being this process's CPU time (user + system) over the
timed part divided by N.
The server is CIO_PG_DSN (a libpq key=value string, read here for host,
port, dbname, user and password).
"""
import argparse
import asyncio
import os
import sys
import time

import asyncpg

SQL = "SELECT $1::int"
WARMUP = 200


def dsn_kwargs():
    """asyncpg's connect arguments from CIO_PG_DSN (libpq key=value form;
    a postgresql:// URI is passed through as dsn)."""
    dsn = os.environ.get("CIO_PG_DSN", "")
    if dsn.startswith("postgres"):
        return {"dsn": dsn}
    kw = {}
    names = {"host": "host", "port": "port", "dbname": "database",
             "user": "user", "password": "password"}
    for item in dsn.split():
        key, _, value = item.partition("=")
        if key in names:
            kw[names[key]] = int(value) if key == "port" else value
    return kw


class Clock:
    """Wall and process CPU time (user + system) from its creation."""

    def __init__(self):
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()

    def stop(self):
        """(wall seconds, CPU seconds) since the start."""
        t1 = time.perf_counter()
        return t1 - self.t0, time.process_time() - self.cpu0


def check(got, want):
    if got != want:
        raise RuntimeError(f"got {got!r}, want {want!r}")


async def sequential(n, cache):
    con = await asyncpg.connect(statement_cache_size=100 if cache else 0, **dsn_kwargs())
    try:
        for i in range(WARMUP):
            check(await con.fetchval(SQL, i), i)
        clock = Clock()
        for i in range(n):
            check(await con.fetchval(SQL, i), i)
        return clock.stop()
    finally:
        await con.close()


async def pipeline(n, batch):
    con = await asyncpg.connect(**dsn_kwargs())
    try:
        await con.executemany(SQL, [(i,) for i in range(min(batch, WARMUP))])
        args = [[(i,) for i in range(first, min(n, first + batch))]
                for first in range(0, n, batch)]
        clock = Clock()
        for a in args:
            await con.executemany(SQL, a)
        return clock.stop()
    finally:
        await con.close()


class NoResetConnection(asyncpg.Connection):
    """A connection that the pool gives back without the reset query."""

    def _get_reset_query(self):
        return ""


async def pool(n, tasks, conns, reset):
    kw = dsn_kwargs()
    if not reset:
        kw["connection_class"] = NoResetConnection
    p = await asyncpg.create_pool(min_size=conns, max_size=conns, **kw)
    state = {"next": 0, "done": 0}

    async def worker(limit):
        while state["next"] < limit:
            i = state["next"]
            state["next"] += 1
            async with p.acquire() as con:
                check(await con.fetchval(SQL, i), i)
            state["done"] += 1

    try:
        # Warm-up: every connection prepares the statement (its cache).
        await asyncio.gather(*(worker(WARMUP) for _ in range(tasks)))
        state["next"] = 0
        state["done"] = 0
        clock = Clock()
        await asyncio.gather(*(worker(n) for _ in range(tasks)))
        times = clock.stop()
        if state["done"] != n:
            raise RuntimeError(f"{state['done']} queries done, expected {n}")
        return times
    finally:
        await p.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-b", type=int, default=1000)
    ap.add_argument("-t", type=int, default=32)
    ap.add_argument("-c", type=int, default=8)
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("workload", choices=["prepared", "unprepared", "pipeline", "pool",
                                         "pool_noreset"])
    a = ap.parse_args()
    if a.uvloop:
        import uvloop
        uvloop.install()
    if a.workload in ("prepared", "unprepared"):
        coro = sequential(a.n, a.workload == "prepared")
    elif a.workload == "pipeline":
        coro = pipeline(a.n, a.b)
    else:
        coro = pool(a.n, a.t, a.c, a.workload == "pool")
    elapsed, cpu = asyncio.run(coro)
    print(f"RESULT bench=pg_{a.workload} backend={'uvloop' if a.uvloop else 'asyncio'} "
          f"queries={a.n} qps={a.n / elapsed:.0f} us_per_query={elapsed * 1e6 / a.n:.2f} "
          f"cpu_us_per_query={cpu * 1e6 / a.n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
