"""Shared keys are bounded (issue 21, item 3).

The keys every strategy may write are the doorbells: ``NS:count:<slot>`` (INCR), ``NS:ready:<slot>``
(RPUSH) and ``NS:joins`` (SADD).  Their names are a fixed few (the ACL allows no other: a strategy
could once INCR ``NS:count:forever`` and RPUSH ``NS:ready:99999999999``, never to expire), and the
trader clears every slot but the current epoch's at each settle and a flooded join set at each tick.
Here a strategy's credentials write all of them as fast as one client can for 10 s: the pipeline
keeps publishing exact medians with at most one epoch missed, the trader's memory stays flat, and
Redis's memory stays within what one period of such writes can hold.
"""
from __future__ import annotations

import threading
import time

from redismedian.keys import DOORBELL_SLOTS
from tests.integ_support import assert_exact, medians, server_epoch, wait_registered
from tests.support import rss_mb, wait_until

FLOOD_S = 10
MEMORY_BOUND_MB = 300   # one 0.5 s period of one client's fastest writes, plus the deployment itself


def test_a_strategy_writing_every_shared_key_flat_out_stops_nothing(cluster, redis_server):
    for g, sig in {"g1": "sig_a", "g2": "sig_b", "g3": "sig_c"}.items():
        cluster.generator(g, f"tests.plugins:{sig}")
    trader = cluster.trader()
    cluster.strategy("X", "g1")
    cluster.strategy("Y", "g2,g3")
    r = redis_server.client(decode_responses=True)
    wait_registered(r, ["X", "Y"], cluster.period, timeout=40)
    e0 = server_epoch(r, cluster.period)
    wait_until(lambda: [m for m in medians(r) if m["epoch"] > e0], 20, what="a median before the flood")
    rss0 = rss_mb(trader.proc.pid)
    missed0 = int(r.hget("t:trader", "missed") or 0)

    raw = redis_server.client()
    stop = threading.Event()
    peak = [0]
    element = b"x" * 1024

    def flood():
        i = 0
        while not stop.is_set():
            pipe = raw.pipeline(transaction=False)
            for slot in range(DOORBELL_SLOTS):
                pipe.incrby(f"t:count:{slot}", 1)
                pipe.rpush(f"t:ready:{slot}", *([element] * 50))
            pipe.sadd("t:joins", *(f"junk{i}-{j}" for j in range(200)))
            pipe.execute()
            i += 1
            if i % 20 == 0:
                peak[0] = max(peak[0], raw.info("memory")["used_memory"])
    flooder = threading.Thread(target=flood, daemon=True)
    start = server_epoch(r, cluster.period)
    flooder.start()
    t0 = time.monotonic()
    try:
        stop.wait(FLOOD_S)
    finally:
        stop.set()
        flooder.join(10)
    flooded_s = time.monotonic() - t0
    end = server_epoch(r, cluster.period)
    got = [m for m in medians(r) if start < m["epoch"] < end]
    assert_exact(got)
    # every epoch of the flood published but at most one (and any epoch not published is recorded)
    assert len(got) >= (end - start - 1) - 1, (start, end, [m["epoch"] for m in got])
    assert int(r.hget("t:trader", "missed") or 0) - missed0 <= 1
    assert rss_mb(trader.proc.pid) < rss0 + 20, (rss0, rss_mb(trader.proc.pid))
    assert peak[0] < MEMORY_BOUND_MB * 1024 * 1024, f"Redis used {peak[0] / 2**20:.0f} MB during the flood"
    assert flooded_s >= FLOOD_S
    # Nothing of it outlives the flood by more than a period or two: the slots are cleared at each
    # settle, the join set at each tick (or by its flood rule), and no other key name was writable.
    wait_until(lambda: sum(r.llen(f"t:ready:{s}") for s in range(DOORBELL_SLOTS)) == 0
               and r.scard("t:joins") == 0, 10, what="the shared keys emptied after the flood")
