"""What ``trader --min-replicas 1`` costs in latency: boundary -> acknowledged median, against
``--min-replicas 0`` (boundary -> median) and the one-hop floor, in one run.

A master and one replica on loopback (private redis-servers); the original topology (g1, g2, g3, X, Y,
the trader) as real processes, run twice in a row at the same period: once with ``--min-replicas 0``,
once with 1, each beside the one-hop process of :mod:`benchmarks.onehop`.  Latency of an epoch:

* ``--min-replicas 0``: its ``NS:medians`` entry's ``ts`` minus the boundary (as benchmarks/latency.py);
* ``--min-replicas 1``: its ``NS:acks`` entry's ``ts`` (written after ``WAIT`` returned) minus the
  boundary, and, in the same periods, the median's own ``ts`` (what the ``WAIT`` adds is the difference).

``python -m benchmarks.replicas_cost [PERIODS] [PERIOD_S]`` (default 40 periods of 0.5 s).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from redismedian.clock import boundary_ms
from redismedian.keys import Keys

from .harness import BenchClock, Topology
from .onehop import stream_key
from .stats import distribution
from tests.support import RedisServer, wait_until


def run(url: str, admin, min_replicas: int, periods: int, period_s: float, logdir: Path) -> dict:
    ns = f"bench-replicas-{min_replicas}"
    keys = Keys(ns)
    period_ms = int(round(period_s * 1000))
    os.environ["REDISMEDIAN_MIN_REPLICAS"] = str(min_replicas)    # the trader's, through Topology.env
    topo = Topology(url, ns, period_s, logdir / ns)
    try:
        topo.original()
        topo.start_helper("onehop", "benchmarks.onehop")
        wait_until(lambda: admin.xlen(keys.medians) >= 2 and admin.hget(keys.trader, "count") == b"2", 60,
                   what="the first complete medians")
        clock = BenchClock(admin)
        first = clock.next_boundary(period_ms, offset_ms=0)
        clock.sleep_until(boundary_ms(first + periods, period_ms) + 0.9 * period_ms)
        topo.check_alive()
    finally:
        topo.stop()
        os.environ.pop("REDISMEDIAN_MIN_REPLICAS", None)

    def by_epoch(key: str) -> dict[int, int]:
        out = {}
        for entry_id, f in admin.xrange(key, min=f"{boundary_ms(first, period_ms)}-0"):
            e = int(f[b"epoch"])
            ts = int(f[b"ts"]) if b"ts" in f else int(entry_id.split(b"-", 1)[0])
            if first <= e < first + periods:
                out[e] = ts - boundary_ms(e, period_ms)
        return out
    medians, acks, floor = by_epoch(keys.medians), by_epoch(keys.acks), by_epoch(stream_key(ns))
    out = {"min_replicas": min_replicas, "periods": periods, "median_ms": distribution(list(medians.values())),
           "acked_ms": distribution(list(acks.values())), "floor_ms": distribution(list(floor.values())),
           "published": len(medians), "acknowledged": len(acks)}
    return out


def main(argv: list[str]) -> None:
    periods = int(argv[0]) if argv else 40
    period_s = float(argv[1]) if len(argv) > 1 else 0.5
    work = Path(tempfile.mkdtemp(prefix="redismedian-replicas-"))
    master = RedisServer(work / "master").start()
    replica = RedisServer(work / "replica", extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    try:
        admin = master.client(socket_timeout=30)
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
                   what="the replica in sync")
        load = os.getloadavg()[0]
        for n in (0, 1):
            r = run(master.url, admin, n, periods, period_s, work)
            m, a, f = r["median_ms"], r["acked_ms"], r["floor_ms"]
            line = (f"--min-replicas {n}: boundary -> median p50 {m['p50']:.1f} ms p99 {m['p99']:.1f} ms "
                    f"({r['published']}/{periods} published)")
            if n:
                line += (f"; boundary -> acknowledged median p50 {a['p50']:.1f} ms p99 {a['p99']:.1f} ms "
                         f"({r['acknowledged']} acknowledged)")
            print(line + f"; one-hop floor p50 {f['p50']:.1f} ms p99 {f['p99']:.1f} ms", flush=True)
        print(f"load average at the start {load:.2f}, {os.cpu_count()} cores, period {period_s} s, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    finally:
        replica.kill()
        master.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
