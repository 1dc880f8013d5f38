"""Benchmark 3: Redis round trips per component per period, for N registered strategies.

The original topology runs as real processes (generators g1, g2, g3; strategies X and Y;
the trader), and the load generator stands in for the other N - 2 registered strategies,
submitting their decisions every period with the real script.  Each component process
reaches Redis through its own counting proxy on loopback, so every command it sends is
attributed to it; one command is one round trip (no component pipelines on the healthy
path).  The counts are checked against the server's own ``INFO commandstats``: over the
measured window, the server's EVALSHA, XREAD and BLPOP calls must equal what the proxies
counted plus what the load generator sent.  (``INFO commandstats`` alone cannot attribute
commands to processes, and it also counts the commands scripts run inside Redis, which are
not round trips.)
"""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from redismedian.clock import boundary_ms
from redismedian.keys import Keys

from .harness import BenchClock, CountingProxy, Topology, commandstats
from .latency import _wait_for_median
from .loadgen import LoadGenerator, strategy_names
from .trader_cost import choose_period_ms

CHECKED = ("evalsha", "xread", "blpop")


class _LoadLoop(threading.Thread):
    """Submits the simulated strategies' decisions right after every boundary."""

    def __init__(self, gen: LoadGenerator, clock: BenchClock, period_ms: int):
        super().__init__(name="loadgen", daemon=True)
        self.gen, self.clock, self.period_ms = gen, clock, period_ms
        self.stop = threading.Event()
        self.sent = 0          # STRATEGY_REPORT calls sent so far
        self.late = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                epoch = self.clock.next_boundary(self.period_ms, offset_ms=1)
                if self.stop.is_set():
                    return
                sub = self.gen.submit(epoch)
                self.sent += sub.commands
                self.late += len(self.gen.names) - sub.submitted
        except BaseException as e:  # noqa: BLE001 - reported by the benchmark
            self.error = e


def run(url: str, admin, upstream_port: int, n: int, periods: int, rate: float, logdir: Path,
        min_period_s: float = 1.0, log=print) -> dict:
    period_ms = choose_period_ms(max(n - 2, 0), rate, min_period_s)
    ns = f"bench-rt-{n}"
    keys = Keys(ns)
    proxy = CountingProxy(upstream_port).start()
    topo = Topology(url, ns, period_ms / 1000, Path(logdir) / f"roundtrips-{n}")
    clock = BenchClock(admin)
    gen = None
    loop = None
    try:
        if n > 2:
            gen = LoadGenerator(url, ns, period_ms, strategy_names(n - 2))
            gen.submit(clock.now_ms() // period_ms, register=True, with_values=False)
            loop = _LoadLoop(gen, clock, period_ms)
            loop.start()
        topo.original(url_for=proxy.url_for)
        log(f"  N={n}: period {period_ms / 1000:g}s, waiting for the first complete median ...")
        _wait_for_median(admin, keys, n, topo, timeout=30 + 5 * period_ms / 1000)
        labels = [c.label for c in topo.components]
        kinds = {c.label: c.kind for c in topo.components}
        # Snapshots late in each period, when every component is done with it.
        first = clock.next_boundary(period_ms, offset_ms=0.85 * period_ms)
        snaps = [(proxy.snapshot(), commandstats(admin), loop.sent if loop else 0)]
        for e in range(first + 1, first + 1 + periods):
            clock.sleep_until(boundary_ms(e, period_ms) + 0.85 * period_ms)
            snaps.append((proxy.snapshot(), commandstats(admin), loop.sent if loop else 0))
        topo.check_alive()
        if loop and loop.error:
            raise RuntimeError(f"load generator failed: {loop.error!r}")
        published = [int(f[b"epoch"]) for _i, f in admin.xrange(keys.medians, min=f"{boundary_ms(first + 1, period_ms)}-0")
                     if int(f[b"count"]) == n]
    finally:
        if loop:
            loop.stop.set()
            loop.join(period_ms / 1000 * 3 + 60)
        topo.stop()
        proxy.close()
        if gen:
            gen.close()

    per_label = {}
    for label in labels:
        per_period = [sum((b[0][label] - a[0][label]).values()) for a, b in zip(snaps, snaps[1:])]
        total = snaps[-1][0][label] - snaps[0][0][label]
        per_label[label] = {
            "kind": kinds[label], "per_period": per_period,
            "mean": sum(per_period) / len(per_period), "max": max(per_period),
            "commands_per_period": {cmd: c / periods for cmd, c in sorted(total.items())},
        }
    per_kind = {}
    for info in per_label.values():
        k = per_kind.setdefault(info["kind"], {"mean": 0.0, "max": 0})
        k["mean"] = max(k["mean"], info["mean"])
        k["max"] = max(k["max"], info["max"])
    # The server's count of the same commands over the same window.
    proxies_total = Counter()
    for label in labels:
        proxies_total.update({c.lower(): v for c, v in (snaps[-1][0][label] - snaps[0][0][label]).items()})
    loadgen_sent = snaps[-1][2] - snaps[0][2]
    server = {c: snaps[-1][1].get(c, 0) - snaps[0][1].get(c, 0) for c in CHECKED}
    expected = {c: proxies_total.get(c, 0) + (loadgen_sent if c == "evalsha" else 0) for c in CHECKED}
    out = {
        "n": n, "period_s": period_ms / 1000, "periods": periods,
        "published_in_window": len(published), "per_kind": per_kind, "per_process": per_label,
        "server_check": {"server": server, "proxies_plus_loadgen": expected, "agree": server == expected},
    }
    log(f"  N={n}: round trips per period (mean/max): "
        + ", ".join(f"{k} {v['mean']:.2f}/{v['max']}" for k, v in per_kind.items())
        + f"; server commandstats agree: {server == expected}")
    return out
