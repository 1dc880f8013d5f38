"""Benchmark 3: Redis round trips per component per period, for N registered strategies.

The original topology runs as real processes (generators g1, g2, g3; strategies X and Y;
the trader), and the load generator stands in for the other N - 2 registered strategies
(registered directly, see loadgen.py), submitting their decisions every period with the real
script.  Each component process reaches Redis through its own counting proxy on loopback, so
every command it sends is attributed to it.  What is counted is round trips, not commands: a
pipeline is one round trip however many commands it holds (the trader's read, ``GET`` of the count
+ ``HGET`` + ``SCARD`` + ``MGET``, is one round trip, four commands); both counts are reported.  The command counts are checked
against the server's own ``INFO commandstats``: over the measured window, the server's EVALSHA,
XREAD and MGET calls must equal what the proxies counted plus the scripts the load generator
sent (a full report or a fast report's doorbell each; the fast reports' plain commands are also
commands that scripts run inside Redis, so those cannot be checked this way).  (``INFO commandstats`` alone cannot attribute commands to processes, cannot tell a
pipeline from separate round trips, and also counts the commands scripts run inside Redis.)
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from redismedian.clock import boundary_ms
from redismedian.keys import Keys

from .harness import BenchClock, CountingProxy, Topology, commandstats
from .latency import _wait_for_median
from .loadgen import LoadGenerator, LoadLoop, strategy_names
from .trader_cost import choose_period_ms

CHECKED = ("evalsha", "xread", "mget")


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
            gen = LoadGenerator(url, ns, period_ms, strategy_names(n - 2)).start()
            gen.preregister()
            gen.submit(clock.now_ms() // period_ms, starting=True)
            loop = LoadLoop(gen, clock, period_ms)
            loop.start()
        topo.original(url_for=proxy.url_for)
        log(f"  N={n}: period {period_ms / 1000:g}s, waiting for the first complete median ...")
        _wait_for_median(admin, keys, n, topo, timeout=30 + 5 * period_ms / 1000)
        labels = [c.label for c in topo.components]
        kinds = {c.label: c.kind for c in topo.components}
        # Snapshots late in each period, when every component is done with it.
        first = clock.next_boundary(period_ms, offset_ms=0.85 * period_ms)
        snaps = [(proxy.snapshot(), commandstats(admin), gen.scripts_sent if gen else 0)]
        for e in range(first + 1, first + 1 + periods):
            clock.sleep_until(boundary_ms(e, period_ms) + 0.85 * period_ms)
            snaps.append((proxy.snapshot(), commandstats(admin), gen.scripts_sent if gen else 0))
        topo.check_alive()
        if loop and loop.error:
            raise RuntimeError(f"load generator failed: {loop.error!r}")
        published = [int(f[b"epoch"]) for _i, f in admin.xrange(keys.medians, min=f"{boundary_ms(first + 1, period_ms)}-0")
                     if int(f[b"count"]) == n]
    finally:
        if loop:
            loop.halt(period_ms / 1000 * 3 + 60)
        topo.stop()
        proxy.close()
        if gen:
            gen.close()

    per_label = {}
    for label in labels:
        trips = [b[0][label][0] - a[0][label][0] for a, b in zip(snaps, snaps[1:])]
        cmds = [sum((b[0][label][1] - a[0][label][1]).values()) for a, b in zip(snaps, snaps[1:])]
        total = snaps[-1][0][label][1] - snaps[0][0][label][1]
        per_label[label] = {
            "kind": kinds[label], "per_period": trips, "commands_per_period_list": cmds,
            "mean": sum(trips) / len(trips), "max": max(trips),
            "commands_mean": sum(cmds) / len(cmds), "commands_max": max(cmds),
            "commands_per_period": {cmd: c / periods for cmd, c in sorted(total.items())},
        }
    per_kind = {}
    for info in per_label.values():
        k = per_kind.setdefault(info["kind"], {"mean": 0.0, "max": 0, "commands_mean": 0.0, "commands_max": 0})
        for f in k:
            k[f] = max(k[f], info[f])
    # The server's count of the same commands over the same window.
    proxies_total = Counter()
    for label in labels:
        proxies_total.update({c.lower(): v for c, v in (snaps[-1][0][label][1] - snaps[0][0][label][1]).items()})
    loadgen_sent = snaps[-1][2] - snaps[0][2]
    server = {c: snaps[-1][1].get(c, 0) - snaps[0][1].get(c, 0) for c in CHECKED}
    expected = {c: proxies_total.get(c, 0) + (loadgen_sent if c == "evalsha" else 0) for c in CHECKED}
    out = {
        "n": n, "period_s": period_ms / 1000, "periods": periods,
        "published_in_window": len(published), "per_kind": per_kind, "per_process": per_label,
        "server_check": {"server": server, "proxies_plus_loadgen": expected, "agree": server == expected},
    }
    log(f"  N={n}: round trips (commands) per period, mean/max: "
        + ", ".join(f"{k} {v['mean']:.2f}/{v['max']} ({v['commands_mean']:.2f}/{v['commands_max']})"
                    for k, v in per_kind.items())
        + f"; server commandstats agree: {server == expected}")
    return out
