"""Claims per second: N processes drain sleep jobs (claim -> finish succeeded) on SQLite and PostgreSQL.

Usage: .venv/bin/python benchmarks/claims.py [--procs 16] [--jobs 2000] [--pg postgresql://...]
Prints a markdown table (backend, procs, jobs, wall s, claims/s, claim p50/p99 ms, duplicates, errors).
The PostgreSQL database's haares tables are dropped first: point --pg at a scratch database.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections import Counter


def _drain(url: str, barrier, results) -> None:
    from haares.jobs import claim, finish, make_engine

    engine = make_engine(url)
    claimed, latencies, errors = [], [], 0
    barrier.wait()
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        try:
            lease = claim(engine=engine, worker_id=f"b{os.getpid()}", host="bench", pid=os.getpid(), pid_start=None,
                          gpu=None, lease_ttl_s=60)
        except Exception:  # noqa: BLE001 - counted, the benchmark goes on
            errors += 1
            continue
        latencies.append(time.perf_counter() - t0)
        if lease is None:
            break
        claimed.append(lease.job_id)
        errors += not finish(engine=engine, lease=lease, outcome="succeeded")
    results.put((claimed, latencies, errors, start, time.perf_counter(), "torch" in sys.modules))
    engine.dispose()


def bench(url: str, *, procs: int, jobs: int) -> dict:
    from haares.jobs import enqueue_configs, make_engine

    engine = make_engine(url)
    # Claimed and finished here, never run: any kind name will do.
    enqueue_configs(engine=engine, kind="sleep", grid="sleep", configs=[{"seconds": 0}] * jobs)
    engine.dispose()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_drain, args=(url, barrier, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    reports = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    wall = max(r[4] for r in reports) - min(r[3] for r in reports)
    lat = sorted(x for r in reports for x in r[1])
    seen = Counter(j for r in reports for j in r[0])
    return {
        "procs": procs, "jobs": sum(seen.values()), "wall_s": wall, "claims_per_s": sum(seen.values()) / wall,
        "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
        "duplicates": sum(c - 1 for c in seen.values() if c > 1), "errors": sum(r[2] for r in reports),
        "torch": any(r[5] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--pg", default=os.environ.get("HAARES_TEST_PG_URL"))
    args = parser.parse_args()
    targets = [("SQLite (WAL, local disk)", f"sqlite:///{tempfile.mkdtemp(prefix='haares-bench-')}/q.db")]
    if args.pg:
        import sqlalchemy as sa

        from haares.jobs.schema import Base

        eng = sa.create_engine(args.pg.replace("postgresql://", "postgresql+psycopg://"))
        with eng.begin() as conn:
            Base.metadata.drop_all(conn)
        eng.dispose()
        targets.append(("PostgreSQL", args.pg))
    print("| backend | procs | jobs | wall s | claims/s | claim p50 ms | claim p99 ms | duplicates | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, url in targets:
        r = bench(url, procs=args.procs, jobs=args.jobs)
        print(f"| {name} | {r['procs']} | {r['jobs']} | {r['wall_s']:.1f} | {r['claims_per_s']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['duplicates']} | {r['errors']} |", flush=True)


if __name__ == "__main__":
    main()
