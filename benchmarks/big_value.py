"""The trader's period with one strategy's 50 MB decision, beside the same period without it.

``python -m benchmarks.big_value [--sizes 3,10000] [--reps 5] [--mb 50]`` (issue 21, item 5).

A strategy may write anything into its own decision key.  For each N, N simulated strategies
(:mod:`benchmarks.loadgen`) report every period and the real :class:`redismedian.trader.Trader` runs
its step in this process, as in :mod:`benchmarks.trader_cost`.  First ``reps`` periods as they are
(the floor: the same step, every decision in); then ``reps`` periods in which one strategy's key holds
``--mb`` MB.  Per period: the trader's wall time (it waits for the missing decision until its
deadline, 80% of the period, then settles the epoch in error: not a cost), the trader thread's CPU
time, Redis's own time for the trader's commands (``INFO commandstats``), the outcome, and the
slowest ``PING`` another client saw meanwhile (what every other namespace on the server feels).
The first big period pays one whole read of the value; the others read at most 8 KB of it.

Prints a table; the figures are reported, never judged.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

from redismedian import scripts
from redismedian.common import Settings
from redismedian.connection import RedisSettings, make_client
from redismedian.keys import DEFAULT_NAMESPACE
from redismedian.trader import Trader

from .harness import BenchClock, RedisServer
from .loadgen import LoadGenerator, strategy_names
from .trader_cost import calibrate, choose_period_ms, commandstats

TRADER_COMMANDS = ("evalsha", "mget", "getrange", "get", "hget", "scard", "hset")


class Pinger:
    """Another client's PING round trips while the trader works: the worst one, in ms."""

    def __init__(self, url: str):
        self.client = make_client(url, 30.0, client_name="bench-pinger")
        self.stop = threading.Event()
        self.worst = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.client.ping()
            self.worst = max(self.worst, (time.perf_counter() - t0) * 1000)
            self.stop.wait(0.001)

    def __enter__(self) -> "Pinger":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()


def measure(url: str, admin, clock: BenchClock, n: int, reps: int, big_bytes: int, rate: float, log=print) -> list:
    period_ms = choose_period_ms(n, rate, 1.0)
    names = strategy_names(n)
    admin.flushall()
    scripts.load_scripts(admin)
    gen = LoadGenerator(url, DEFAULT_NAMESPACE, period_ms, names).start()
    gen.preregister()
    gen.submit(clock.now_ms() // period_ms, starting=True)
    trader = Trader(Settings(RedisSettings(url, socket_timeout=60.0), namespace=DEFAULT_NAMESPACE,
                             period_ms=period_ms), client=make_client(url, 60.0, client_name="redismedian-trader"))
    trader.clock.sync(trader.client)
    keys = trader.keys
    blob = b"0" * big_bytes
    rows = []
    try:
        for phase in ("none", "big"):
            for i in range(reps + 1):
                epoch = clock.next_boundary(period_ms, offset_ms=2)
                sub = gen.submit(epoch, plan=gen.plan())
                if phase == "big":
                    admin.set(keys.decision(names[0]), str(epoch).encode() + b"|" + blob)
                s1 = commandstats(admin)
                with Pinger(url) as pinger:
                    c0, t0 = time.thread_time(), time.perf_counter()
                    trader.step(epoch)
                    wall, cpu = (time.perf_counter() - t0) * 1000, (time.thread_time() - c0) * 1000
                s2 = commandstats(admin)
                server = sum(s2.get(c, {}).get("usec", 0) - s1.get(c, {}).get("usec", 0) for c in TRADER_COMMANDS)
                state, reason = admin.hmget(keys.trader, "state", "reason")
                published = admin.hget(keys.trader, "published")
                outcome = ("published" if published is not None and int(published) == epoch
                           else f"{(state or b'?').decode()}: {(reason or b'').decode()[:70]}")
                if phase == "none" and i == 0:
                    continue   # warm-up: the trader took the lead in this period
                label = f"one {big_bytes / 2**20:g} MB value"
                rows.append({"n": n, "phase": f"{label}, first period" if phase == "big" and i == 0
                             else (label if phase == "big" else "none (floor)"),
                             "wall_ms": wall, "cpu_ms": cpu, "redis_ms": server / 1000, "ping_ms": pinger.worst,
                             "outcome": outcome, "submitted": sub.submitted, "period_ms": period_ms})
    finally:
        gen.close()
        trader.client.close()
    return rows


def table(rows: list) -> str:
    out = ["| N | big value | period s | trader wall ms | trader CPU ms | Redis ms | slowest PING ms | outcome |",
           "|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["n"], r["phase"]), []).append(r)
    for (n, phase), rs in groups.items():
        def med(k, rs=rs):
            return statistics.median(x[k] for x in rs)
        outcomes = sorted({x["outcome"] for x in rs})
        out.append(f"| {n:,} | {phase} ({len(rs)}) | {rs[0]['period_ms'] / 1000:g} | {med('wall_ms'):.1f} | "
                   f"{med('cpu_ms'):.1f} | {med('redis_ms'):.2f} | {med('ping_ms'):.2f} | {'; '.join(outcomes)} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.big_value", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="3,10000", help="numbers of strategies N, comma-separated [default: 3,10000]")
    p.add_argument("--reps", type=int, default=5, help="measured periods per N and phase [default: 5]")
    p.add_argument("--mb", type=float, default=50.0, help="size of the one big value in MB [default: 50]")
    args = p.parse_args()
    import tempfile
    from pathlib import Path
    print(f"load average at the start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    server = RedisServer(Path(tempfile.mkdtemp(prefix="redismedian-bench-big-")) / "redis").start()
    try:
        admin = server.client(socket_timeout=120)
        clock = BenchClock(admin)
        rate = calibrate(server.url, admin)
        rows = []
        for n in (int(x) for x in args.sizes.split(",")):
            rows += measure(server.url, admin, clock, n, args.reps, int(args.mb * 1024 * 1024), rate)
    finally:
        server.kill()
    print(table(rows))
    print(f"load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
