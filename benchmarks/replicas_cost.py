"""Part 8 of ``./dev bench``: what ``trader --min-replicas 1`` costs in latency, boundary ->
acknowledged median, against ``--min-replicas 0`` (boundary -> median) and the one-hop floor, in one run.

A master and one replica on loopback (private redis-servers, started here); the original topology (g1,
g2, g3, X, Y, the trader) as real processes, run with ``--min-replicas 0`` and then 1, each beside the
one-hop process of :mod:`benchmarks.onehop`, and that pair of parts repeated ``runs`` times (each part in
a namespace of its own).  Latency of an epoch:

* ``--min-replicas 0``: its ``NS:medians`` entry's ``ts`` minus the boundary (as benchmarks/latency.py);
* ``--min-replicas 1``: its ``NS:acks`` entry's ``ts`` (written after ``WAIT`` returned) minus the
  boundary, and, in the same periods, the median's own ``ts`` (what the ``WAIT`` adds is the difference).

Each part gives a p50 and a p99 per series; the summary is the median over the runs (the floor's over
every part).  The goal (issue 18): at p50 the acknowledged median is at most one hop (the floor's p50)
later than the median with ``--min-replicas 0``.

``python -m benchmarks.replicas_cost [PERIODS] [PERIOD_S] [RUNS]`` runs this part alone (default 40
periods of 0.5 s, 3 runs).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

from redismedian.clock import boundary_ms
from redismedian.keys import Keys

from .harness import BenchClock, Topology
from .onehop import stream_key
from .stats import distribution
from tests.support import RedisServer, wait_until

SERIES = ("median_n0", "median_n1", "acked", "floor")


def run(url: str, admin, min_replicas: int, periods: int, period_s: float, logdir: Path, tag: str = "") -> dict:
    """One part: the original topology with ``--min-replicas min_replicas`` for ``periods`` periods."""
    ns = f"bench-replicas-{min_replicas}{('-' + tag) if tag else ''}"
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
           "published": len(medians), "acknowledged": len(acks),
           # each acknowledgement is written after its median (same server clock): a sanity check of the figures
           "acks_after_medians": all(e in medians and ts >= medians[e] for e, ts in acks.items())}
    return out


def summarize(parts: list[dict]) -> dict:
    """Medians over the runs of each series' p50 and p99 (the floor: over every part), and whether the
    acknowledged median stays within one hop of the median with --min-replicas 0 at p50."""
    series: dict[str, list[dict]] = {
        "median_n0": [p["median_ms"] for p in parts if p["min_replicas"] == 0],
        "median_n1": [p["median_ms"] for p in parts if p["min_replicas"] == 1],
        "acked": [p["acked_ms"] for p in parts if p["min_replicas"] == 1],
        "floor": [p["floor_ms"] for p in parts]}

    def med(values: list[float]) -> float:
        values = [v for v in values if v == v]     # a part with no sample gives NaN
        return statistics.median(values) if values else float("nan")
    out = {name: {"p50": med([d["p50"] for d in ds]), "p99": med([d["p99"] for d in ds]),
                  "p50_by_run": [d["p50"] for d in ds]} for name, ds in series.items()}
    extra = out["acked"]["p50"] - out["median_n0"]["p50"]
    out["extra_p50_ms"] = extra
    out["within_one_hop"] = bool(extra <= out["floor"]["p50"])
    # keyed by --min-replicas as text: the figures go through JSON (results.json) and back
    out["published"] = {str(n): sum(p["published"] for p in parts if p["min_replicas"] == n) for n in (0, 1)}
    out["acknowledged"] = sum(p["acknowledged"] for p in parts if p["min_replicas"] == 1)
    out["periods"] = {str(n): sum(p["periods"] for p in parts if p["min_replicas"] == n) for n in (0, 1)}
    return out


def run_section(periods: int, period_s: float, runs: int, work: Path,
                log: Callable[[str], None] = print) -> dict:
    """Start a master and a replica, run ``runs`` pairs of parts (--min-replicas 0, then 1), summarize."""
    master = RedisServer(work / "replicas-master").start()
    replica = RedisServer(work / "replicas-replica", extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    try:
        admin = master.client(socket_timeout=30)
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
                   what="the replica in sync")
        parts = []
        for i in range(runs):
            for n in (0, 1):
                load = [round(x, 2) for x in os.getloadavg()]
                r = run(master.url, admin, n, periods, period_s, work / "logs", tag=str(i))
                r.update(run=i + 1, load_average=load)
                parts.append(r)
                m, a, f = r["median_ms"], r["acked_ms"], r["floor_ms"]
                log(f"  run {i + 1}, --min-replicas {n}: boundary -> median p50 {m['p50']:.1f} ms"
                    + (f", -> acknowledged median p50 {a['p50']:.1f} ms" if n else "")
                    + f", one-hop floor p50 {f['p50']:.1f} ms ({r['published']}/{periods} published"
                    + (f", {r['acknowledged']} acknowledged" if n else "") + f"; load average {load[0]})")
    finally:
        replica.kill()
        master.kill()
    return {"period_s": period_s, "periods": periods, "runs": runs, "parts": parts, "summary": summarize(parts)}


def main(argv: list[str]) -> None:
    periods = int(argv[0]) if argv else 40
    period_s = float(argv[1]) if len(argv) > 1 else 0.5
    runs = int(argv[2]) if len(argv) > 2 else 3
    load = os.getloadavg()[0]
    r = run_section(periods, period_s, runs, Path(tempfile.mkdtemp(prefix="redismedian-replicas-")))
    s = r["summary"]
    print(f"medians over {runs} runs of {periods} periods of {period_s} s: --min-replicas 0 median p50 "
          f"{s['median_n0']['p50']:.1f} ms; --min-replicas 1 median p50 {s['median_n1']['p50']:.1f} ms, acknowledged "
          f"median p50 {s['acked']['p50']:.1f} ms (p99 {s['acked']['p99']:.1f}); one-hop floor p50 "
          f"{s['floor']['p50']:.1f} ms; extra {s['extra_p50_ms']:.1f} ms at p50 "
          f"({'within' if s['within_one_hop'] else 'MORE than'} one hop); load average at the start {load:.2f}, "
          f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main(sys.argv[1:])
