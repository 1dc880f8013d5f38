"""Benchmark 1: the trader's cost per period for N registered strategies whose decisions are in.

For each N, N simulated strategies (:mod:`benchmarks.loadgen`) register and then, at each
period boundary, submit their decisions with the real STRATEGY_REPORT script.  Once the last
one is in (it rings the epoch's doorbell), the real :class:`redismedian.trader.Trader` runs
its per-period step for that epoch (BLPOP on the doorbell, then TRADER_COLLECT through
``Trader.collect``: completeness, median, publication), timed from the benchmark.  The
first period is a warm-up (the trader takes the lead); the next ``reps`` are measured.

The floor, measured in the same periods: one round trip that reads N values from Redis
(``HMGET`` of N fields of one hash, parsed by redis-py/hiredis).
"""
from __future__ import annotations

import math
import statistics
import time

from redismedian.common import Settings
from redismedian.connection import make_client
from redismedian.trader import Trader

from .harness import BenchClock
from .loadgen import LoadGenerator, strategy_names

CALIBRATION_N = 2000


def _usec(client, commands=("evalsha", "blpop")) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in commands)


def calibrate(url: str, admin) -> float:
    """Decisions per second the load generator writes on this machine (sets the periods)."""
    gen = LoadGenerator(url, "bench-calibrate", 3_600_000, strategy_names(CALIBRATION_N))
    try:
        now_epoch = admin.time()[0] * 1000 // 3_600_000
        gen.submit(now_epoch, register=True, with_values=False)
        sub = gen.submit(now_epoch)
    finally:
        gen.close()
    admin.flushall()
    return sub.rate


def choose_period_ms(n: int, rate: float, min_period_s: float = 1.0) -> int:
    """Long enough for the load generator to write N decisions well inside one period."""
    seconds = n / rate * 3 + 0.3
    return int(round(max(min_period_s, math.ceil(seconds * 10) / 10) * 1000))


def _summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": xs} if xs else {}


def measure(url: str, admin, clock: BenchClock, n: int, reps: int, rate: float, min_period_s: float = 1.0,
            log=print) -> dict:
    period_ms = choose_period_ms(n, rate, min_period_s)
    ns = f"bench-cost-{n}"
    names = strategy_names(n)
    gen = LoadGenerator(url, ns, period_ms, names)
    trader = Trader(Settings(redis_url=url, namespace=ns, period_ms=period_ms, socket_timeout=60.0),
                    client=make_client(url, 60.0, client_name="redismedian-trader"))
    trader.clock.sync(trader.client)
    keys = trader.keys
    floor_key = f"{ns}:floor"
    log(f"  N={n}: period {period_ms / 1000:g}s, registering {n} strategies ...")
    reg = gen.submit(clock.now_ms() // period_ms, register=True, with_values=False)
    if reg.submitted != n:
        raise RuntimeError(f"registration of {n} strategies failed: {reg.refused}")
    # The floor's hash: N fields holding decision-like values.
    pipe = admin.pipeline(transaction=False)
    values = gen.values()
    for lo in range(0, n, 10_000):
        pipe.hset(floor_key, mapping=dict(zip(names[lo:lo + 10_000], values[lo:lo + 10_000])))
    pipe.execute()

    trader_ms, server_ms, floor_ms, write_s, skipped = [], [], [], [], []
    attempts = 0
    while len(trader_ms) < reps and attempts < reps + 4:
        attempts += 1
        epoch = clock.next_boundary(period_ms, offset_ms=2)
        sub = gen.submit(epoch)
        if sub.submitted != n:
            skipped.append({"epoch": epoch, "why": f"load generator: {sub.submitted}/{n} in time {sub.refused}"})
            continue
        before = _usec(admin)
        t0 = time.perf_counter()
        trader.step(epoch)
        dt = time.perf_counter() - t0
        server = (_usec(admin) - before) / 1000.0
        t0 = time.perf_counter()
        got = admin.hmget(floor_key, names)
        floor = time.perf_counter() - t0
        assert len(got) == n
        published, count = admin.hmget(keys.trader, "published", "count")
        if published is None or int(published) != epoch or int(count or 0) != n:
            skipped.append({"epoch": epoch, "why": f"trader did not publish (published={published}, "
                                                   f"count={count})"})
            continue
        if attempts == 1:
            continue   # warm-up: the trader took the lead in this period
        trader_ms.append(dt * 1000)
        server_ms.append(server)
        floor_ms.append(floor * 1000)
        write_s.append(sub.seconds)
    gen.close()
    trader.client.close()
    mem = admin.info("memory").get("used_memory", 0) / 2**20
    if not trader_ms:
        raise RuntimeError(f"N={n}: no period could be measured: {skipped}")
    t, f = statistics.median(trader_ms), statistics.median(floor_ms)
    out = {
        "n": n, "period_s": period_ms / 1000, "reps": len(trader_ms),
        "trader_ms": _summary(trader_ms), "trader_server_ms": _summary(server_ms),
        "floor_ms": _summary(floor_ms), "ratio_to_floor": t / f,
        "decisions_per_s": n / (t / 1000), "loadgen_write_s": _summary(write_s),
        "loadgen_decisions_per_s": n / statistics.median(write_s), "redis_used_memory_mb": round(mem, 1),
        "skipped": skipped,
    }
    log(f"  N={n}: trader {t:.2f} ms/period (server {statistics.median(server_ms):.2f} ms), "
        f"floor {f:.2f} ms, ratio {t / f:.2f}, load generator {out['loadgen_decisions_per_s']:.0f} decisions/s")
    return out


def run(url: str, admin, sizes: list[int], reps: int, min_period_s: float = 1.0, log=print) -> dict:
    clock = BenchClock(admin)
    admin.flushall()
    rate = calibrate(url, admin)
    log(f"  load generator calibrated at {rate:.0f} decisions/s")
    results = []
    for n in sizes:
        admin.flushall()
        results.append(measure(url, admin, clock, n, reps, rate, min_period_s, log))
        admin.flushall()
    return {"calibration_decisions_per_s": rate, "sizes": results}
