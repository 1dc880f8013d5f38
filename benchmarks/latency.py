"""Benchmarks 2 and 4: end-to-end latency, and each component's idle cost.

Real component processes (``python -m redismedian ...``) run against the private Redis:
the original topology (generators g1, g2, g3; strategy X on g1, Y on g2,g3; the trader),
and the same with many strategy processes.  Latency of an epoch = the server time at which
its median entered ``NS:medians`` (the ``ts`` the trader's script wrote, from Redis ``TIME``)
minus the epoch's boundary: the whole chain generator -> strategy -> trader, measured on
the one clock every component uses.

The floor, in the same periods: a one-hop process (:mod:`benchmarks.onehop`) that wakes at each
boundary the way the components do and makes one ``XADD``; its latency is the entry id's server
time minus the boundary.  It runs beside the components, so it competes for the CPU at the boundary
like they do.

While the pipeline runs, the benchmark samples each process's CPU time and resident memory
(``/proc``): idle CPU is measured between periods (from 45% to 95% of each period, after
the period's work is done), average CPU over the whole run.
"""
from __future__ import annotations

import time
from pathlib import Path

from redismedian.clock import boundary_ms
from redismedian.keys import Keys

from .harness import BenchClock, Topology, cpu_seconds, rss_mb
from .onehop import stream_key
from .stats import distribution

STRATEGY_SIGNALS = ["g1", "g2,g3", "g2", "g3", "g1,g2,g3"]


def _wait_for_median(admin, keys: Keys, count: int, topo: Topology, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topo.check_alive()
        last = admin.xrevrange(keys.medians, count=1)
        if last and int(last[0][1].get(b"count", 0)) == count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no median over {count} strategies within {timeout:.0f}s; "
                       + "; ".join(f"{c.label}: {c.tail(300)!r}" for c in topo.components[:8]))


def run_topology(url: str, admin, strategies: int, periods: int, period_s: float, logdir: Path,
                 log=print) -> dict:
    """Run generators g1..g3, a trader and ``strategies`` strategy processes; measure ``periods`` periods."""
    label = "original" if strategies == 2 else f"{strategies}-strategies"
    ns = f"bench-lat-{strategies}"
    keys = Keys(ns)
    period_ms = int(round(period_s * 1000))
    topo = Topology(url, ns, period_s, Path(logdir) / label)
    try:
        if strategies == 2:
            topo.original()
        else:
            for g in ("g1", "g2", "g3"):
                topo.start(g, "generator", "--name", g)
            topo.start("trader", "trader")
            width = len(str(strategies))
            for i in range(strategies):
                name = f"S{i + 1:0{width}d}"
                topo.start(name, "strategy", "--name", name, "--signals", STRATEGY_SIGNALS[i % len(STRATEGY_SIGNALS)])
        topo.start_helper("onehop", "benchmarks.onehop")
        log(f"  {label}: {len(topo.components)} processes started, waiting for the first complete median ...")
        _wait_for_median(admin, keys, strategies, topo, timeout=30 + strategies * 0.5 + 5 * period_s)
        clock = BenchClock(admin)
        comps = list(topo.components)
        first = clock.next_boundary(period_ms, offset_ms=0)
        cpu_start = {c.label: cpu_seconds(c.pid) for c in comps}
        wall_start = time.monotonic()
        idle_cpu = {c.label: 0.0 for c in comps}
        rss = {c.label: 0.0 for c in comps}
        idle_wall = 0.0
        for e in range(first, first + periods):
            b = boundary_ms(e, period_ms)
            clock.sleep_until(b + 0.45 * period_ms)
            t0, before = time.monotonic(), {c.label: cpu_seconds(c.pid) for c in comps}
            clock.sleep_until(b + 0.95 * period_ms)
            t1, after = time.monotonic(), {c.label: cpu_seconds(c.pid) for c in comps}
            idle_wall += t1 - t0
            for c in comps:
                idle_cpu[c.label] += after[c.label] - before[c.label]
                rss[c.label] = max(rss[c.label], rss_mb(c.pid))
            if (e - first) % 10 == 9:
                topo.check_alive()
                clock.resync()
        # let the last period's median land (and settle) before reading the stream
        clock.sleep_until(boundary_ms(first + periods, period_ms) + 0.45 * period_ms)
        wall = time.monotonic() - wall_start
        cpu_end = {c.label: cpu_seconds(c.pid) for c in comps}
        topo.check_alive()
    finally:
        topo.stop()

    start_id, end_id = f"{boundary_ms(first, period_ms)}-0", f"{boundary_ms(first + periods, period_ms)}-0"
    by_epoch = {}
    for _id, f in admin.xrange(keys.medians, min=start_id, max="+"):
        e = int(f[b"epoch"])
        if first <= e < first + periods and int(f[b"count"]) == strategies:
            by_epoch[e] = int(f[b"ts"]) - boundary_ms(e, period_ms)
    signals = {}
    for g in ("g1", "g2", "g3"):
        for _id, f in admin.xrange(keys.signal_feed(g), min=start_id, max=end_id):
            e = int(f[b"epoch"])
            if first <= e < first + periods:
                signals[e] = max(signals.get(e, 0), int(f[b"ts"]) - boundary_ms(e, period_ms))
    latencies = [by_epoch[e] for e in sorted(by_epoch)]
    floor = {}
    for entry_id, f in admin.xrange(stream_key(ns), min=start_id, max=end_id):
        e = int(f[b"epoch"])
        if first <= e < first + periods:
            floor[e] = int(entry_id.split(b"-", 1)[0]) - boundary_ms(e, period_ms)
    components = {}
    for c in comps:
        components[c.label] = {
            "kind": c.kind,
            "idle_cpu_pct": 100.0 * idle_cpu[c.label] / idle_wall if idle_wall > 0 else float("nan"),
            "avg_cpu_pct": 100.0 * (cpu_end[c.label] - cpu_start[c.label]) / wall,
            "rss_mb": rss[c.label],
        }
    d = distribution(latencies)
    fl = distribution([floor[e] for e in sorted(floor)])
    out = {
        "topology": label, "generators": 3, "strategies": strategies, "period_s": period_s,
        "periods": periods, "published": len(latencies), "missed": periods - len(latencies),
        "latency_ms": d, "signals_in_ms": distribution([signals[e] for e in sorted(signals)]),
        "floor_ms": fl, "floor_samples_ms": [floor[e] for e in sorted(floor)],
        "latency_samples_ms": latencies, "first_epoch": first, "components": components,
        "idle_window_s": idle_wall, "idle_by_kind": summarize_idle(components),
    }
    log(f"  {label}: boundary -> median p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.0f} ms "
        f"over {len(latencies)}/{periods} periods; one-hop floor p50 {fl['p50']:.1f} ms, p99 {fl['p99']:.1f} ms")
    return out


def summarize_idle(components: dict) -> dict:
    """Per kind: the worst idle CPU, average CPU and memory among its processes."""
    out = {}
    for info in components.values():
        k = out.setdefault(info["kind"], {"processes": 0, "idle_cpu_pct": 0.0, "avg_cpu_pct": 0.0, "rss_mb": 0.0})
        k["processes"] += 1
        for f in ("idle_cpu_pct", "avg_cpu_pct", "rss_mb"):
            k[f] = max(k[f], info[f])
    return out
