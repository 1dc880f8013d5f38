"""Shared keys are bounded (issue 21, item 3).

What every strategy may write that others read: the doorbell counters ``NS:count:<slot>`` (INCR: an
integer, in a fixed few slots the ACL allows, the others cleared at each settle) and the doorbell
channels ``NS:ready`` and ``NS:joins`` (PUBLISH: nothing is stored; a strategy could once RPUSH and
SADD 1 MB elements into a shared list and set until Redis hit maxmemory).  Here a strategy's rights
are used flat out for 10 s: the counters, and messages of 1 MB (the largest argument the shipped
server takes) on both channels.  The pipeline keeps publishing exact medians with at most one epoch
missed, the trader's memory stays flat, and Redis's memory stays under MEMORY_BOUND_MB: what a flood
can hold is the subscriber's output buffer (client-output-buffer-limit pubsub, 32 MB), after which
Redis closes the trader's subscription; the trader polls meanwhile and subscribes again.
"""
from __future__ import annotations

import threading
import time

from redismedian.keys import DOORBELL_SLOTS
from tests.integ_support import assert_exact, medians, server_epoch, wait_registered
from tests.support import rss_mb, wait_until

FLOOD_S = 10
# The deployment (a few MB), the leading trader's output buffer (32 MB at most), the flooder's own
# query buffers (a few 1 MB arguments in flight) and the allocator's slack.
MEMORY_BOUND_MB = 100


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
    element = b"9" * (1024 * 1024 - 64)     # under proto-max-bulk-len 1mb with the command around it
    receivers = []

    def flood():
        i = 0
        while not stop.is_set():
            pipe = raw.pipeline(transaction=False)
            for slot in range(DOORBELL_SLOTS):
                pipe.incrby(f"t:count:{slot}", 1)
            for _ in range(4):
                pipe.publish("t:ready", element)
                pipe.publish("t:joins", element)
            pipe.publish("t:joins", f"junk{i}")
            receivers.extend(pipe.execute()[DOORBELL_SLOTS:])
            i += 1
            if i % 5 == 0:
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
    print(f"[fault] shared keys flood: Redis peak used_memory {peak[0] / 2**20:.0f} MB, "
          f"{len(got)} of {end - start - 1} epochs published, trader RSS {rss0:.0f} -> {rss_mb(trader.proc.pid):.0f} MB")
    assert flooded_s >= FLOOD_S
    assert sum(receivers) > 0, "the flood reached the trader's subscription"
    # The flood was said (the subscription closed by Redis, or too many join requests), and nothing
    # of it outlives it: no key holds it (the counters are integers, cleared at each settle).
    assert "were no ring and no name" in trader.output() or "doorbell subscription" in trader.output()
    wait_until(lambda: raw.info("memory")["used_memory"] < 40 * 1024 * 1024, 10,
               what="Redis back to its size after the flood")
    assert set(r.keys("t:count:*")) <= {f"t:count:{s}" for s in range(DOORBELL_SLOTS)}
