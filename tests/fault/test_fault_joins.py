"""Join requests cannot stall the trader or lock a strategy out (issue 21, item 2).

Every strategy may ask to be registered.  Asking was once an SADD into a shared set, which a strategy's
credentials filled with hundreds of MB of junk (the trader's tick popped a ~500 MB reply, lost its lead,
missed epochs and kept its memory), or with over a million junk names (a restarted strategy stayed out
of the registry for over 40 s while medians went out without it and ``check`` said OK).  Now a request
is a message on the ``NS:joins`` channel: nothing is stored, the trader reads at most 8 MB of them a
period and admits at most 1,000 valid names (each needs a live lease), a flood of requests is said
(log, NS:events, metric), and a strategy waiting to join is shown by ``status`` and ``check`` until it
is admitted.
"""
from __future__ import annotations

import threading

from redismedian.scripts import JOINS_FLOOD
from tests.integ_support import medians, server_epoch, wait_registered
from tests.support import rss_mb, wait_until


def _flood(r, n: int, start: int = 0) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.publish("t:joins", f"junk{i}")
        pipe.publish("t:joins", f"bad name {i}!")
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def test_junk_in_the_join_set_costs_nothing_and_a_flood_is_cleared(cluster, redis_server):
    for g, sig in {"g1": "sig_a", "g2": "sig_b", "g3": "sig_c"}.items():
        cluster.generator(g, f"tests.plugins:{sig}")
    trader = cluster.trader()
    x = cluster.strategy("X", "g1")
    cluster.strategy("Y", "g2,g3")
    r = redis_server.client(decode_responses=True)
    wait_registered(r, ["X", "Y"], cluster.period, timeout=40)
    wait_until(lambda: trader.alive() and rss_mb(trader.proc.pid) > 0, 10, what="the trader's memory")
    rss0 = rss_mb(trader.proc.pid)

    # Big junk (20 messages of 1 MB each): read and dropped, nothing kept.
    raw = redis_server.client()
    for i in range(20):
        raw.publish("t:joins", b"Z" * (1024 * 1024) + str(i).encode())
    e1 = server_epoch(r, cluster.period)
    assert not r.exists("t:joins")
    wait_until(lambda: [m for m in medians(r) if m["epoch"] > e1 + 1 and m["members"] == "X,Y"], 10,
               what="medians of X and Y after the big junk")
    assert rss_mb(trader.proc.pid) < rss0 + 15, (rss0, rss_mb(trader.proc.pid))

    # X deregistered and started again while a flood of junk names goes on: the trader says the flood
    # (log, NS:events) and admits at most 1,000 valid names a period; check and status show X waiting
    # to join; once the flood stops X is admitted within a few periods.
    assert cluster.cli("deregister", "X").returncode == 0
    assert x.wait(10) == 0
    stop = threading.Event()

    def flood():
        i = 0
        while not stop.is_set():
            _flood(raw, JOINS_FLOOD, i)     # two names each: twice the threshold every round
            i += JOINS_FLOOD
            stop.wait(0.02)
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        cluster.strategy("X", "g1")
        wait_until(lambda: trader.wait_for_output(r"\d+ messages on t:joins in one period", 10), 15,
                   what="the flood said")

        # Each tick admits the valid names it read (at most 1,000, each with a live lease): X gets in
        # when its request is among them, and until then `check` names X as kept out.
        seen = []

        def admitted_or_named():
            c = cluster.cli("check")
            seen[:] = [c.stdout + c.stderr]
            assert "\n" not in c.stdout.strip(), c.stdout
            return r.sismember("t:strategies", "X") or (c.returncode == 1 and "strategy X: asked to join" in c.stdout)
        try:
            wait_until(admitted_or_named, 20, what="X admitted, or named by check as kept out")
        except AssertionError as e:
            raise AssertionError(f"{e}; check said last: {seen}") from None
        flooded = [e for _i, e in r.xrange("t:events") if e.get("status") == "joins_flooded"]
        assert flooded and "flooded" in flooded[0]["reason"], flooded
    finally:
        stop.set()
        flooder.join(10)
    e2 = server_epoch(r, cluster.period)
    wait_registered(r, ["X", "Y"], cluster.period, timeout=10)
    wait_until(lambda: [m for m in medians(r) if m["epoch"] > e2 and m["members"] == "X,Y"], 10,
               what="medians of X and Y again after the flood")
    assert rss_mb(trader.proc.pid) < rss0 + 15, (rss0, rss_mb(trader.proc.pid))
    assert "lost the lead" not in trader.output()
