"""Benchmark 5: capacity.  Does the pipeline publish a median every period with N strategies at a
1 s period?

A real trader process (``python -m redismedian trader``) runs against the private Redis, and the
load generator stands in for N strategy processes that all report right after each boundary
(registered directly, see loadgen.py; every report is the real STRATEGY_REPORT call).  After a
few warm-up periods, ``periods`` consecutive periods are watched: a period counts as published
when ``NS:medians`` holds its median over all N strategies.  For each period the benchmark also
keeps when the load generator had written the last report (after the boundary) and, for the
published ones, when the median landed (its ``ts``).  *Redis busy* is the server's own time for
every command over the window (``INFO commandstats``) divided by the window's length: near 100 %,
Redis itself is the limit.

The trader gives up on an epoch at 80 % of the period (``--decision-timeout``), and a report that
arrives after its epoch ended is refused as late, so the N reports, the trader's reads and its
settle must all fit in that window.
"""
from __future__ import annotations

import time
from pathlib import Path

from redismedian.clock import boundary_ms
from redismedian.keys import Keys

from .harness import BenchClock, Topology
from .loadgen import LoadGenerator, LoadLoop, strategy_names
from .stats import distribution

WARMUP_PERIODS = 3


def _busy_usec(admin) -> int:
    return sum(int(v.get("usec", 0)) for v in admin.info("commandstats").values())


def run(url: str, admin, n: int, periods: int, period_s: float, logdir: Path, log=print) -> dict:
    ns = f"bench-cap-{n}"
    keys = Keys(ns)
    period_ms = int(round(period_s * 1000))
    admin.flushall()
    clock = BenchClock(admin)
    gen = LoadGenerator(url, ns, period_ms, strategy_names(n)).start()
    topo = Topology(url, ns, period_s, Path(logdir) / f"capacity-{n}")
    loop = None
    try:
        gen.preregister()
        gen.submit(clock.now_ms() // period_ms, starting=True)
        topo.start("trader", "trader")
        loop = LoadLoop(gen, clock, period_ms)
        loop.start()
        log(f"  N={n}: trader and load generator at a {period_s:g} s period; {WARMUP_PERIODS} warm-up periods, "
            f"then {periods} measured ...")
        first = clock.next_boundary(period_ms) + WARMUP_PERIODS
        clock.sleep_until(boundary_ms(first, period_ms))
        busy0, t0 = _busy_usec(admin), time.monotonic()
        for e in range(first, first + periods):
            clock.sleep_until(boundary_ms(e + 1, period_ms))
            if (e - first) % 10 == 9:
                topo.check_alive()
                clock.resync()
        busy1, t1 = _busy_usec(admin), time.monotonic()
        # let the last period settle before reading what was published
        clock.sleep_until(boundary_ms(first + periods, period_ms) + 0.9 * period_ms)
        topo.check_alive()
        if loop.error:
            raise RuntimeError(f"load generator failed: {loop.error!r}")
    finally:
        if loop:
            loop.halt(60)
        topo.stop()
        gen.close()
    published = {}
    for _id, f in admin.xrange(keys.medians, min=f"{boundary_ms(first, period_ms)}-0", max="+"):
        e = int(f[b"epoch"])
        if first <= e < first + periods and int(f[b"count"]) == n:
            published[e] = int(f[b"ts"]) - boundary_ms(e, period_ms)
    state = {k.decode(): v.decode(errors="replace") for k, v in admin.hgetall(keys.trader).items()}
    window = range(first, first + periods)
    written = [loop.periods[e]["done_ms"] for e in window if e in loop.periods]
    complete = sum(1 for e in window if loop.periods.get(e, {}).get("submitted") == n)
    out = {
        "n": n, "period_s": period_s, "periods": periods, "published": len(published),
        "all_published": len(published) == periods,
        "loadgen_complete_periods": complete,
        "loadgen_done_ms": distribution(written),
        "publish_ms": distribution([published[e] for e in sorted(published)]),
        "redis_busy_pct": 100.0 * (busy1 - busy0) / 1e6 / (t1 - t0),
        "trader_state_at_end": {k: state.get(k, "")[:300] for k in ("state", "reason", "epoch", "count")},
    }
    lg, pub = out["loadgen_done_ms"], out["publish_ms"]
    log(f"  N={n}: published {len(published)}/{periods} periods; load generator done at p50 {lg['p50']:.0f} ms / "
        f"max {lg['max']:.0f} ms after the boundary ({complete}/{periods} periods complete in time); median "
        f"in at p50 {pub['p50']:.0f} ms; Redis busy {out['redis_busy_pct']:.0f}%")
    return out
