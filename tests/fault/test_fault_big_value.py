"""One big value cannot stall the trader (issue 21, item 5).

A strategy may SET its own decision key to anything (it is its own key).  A 50 MB value there made
the trader miss every epoch ("the epoch ended before the trader could settle it"), lose its lead and
never name the strategy: every read of every period pulled the 50 MB again.  Now the first read that
meets it costs one read; from then on the key is read with GETRANGE (at most DECISION_MAX_BYTES + 1
bytes), each epoch settles in ``error`` naming that strategy, the trader keeps its lead, and at most
one epoch is missed.
"""
from __future__ import annotations

import threading

from redismedian.scripts import DECISION_MAX_BYTES
from tests.integ_support import medians, server_epoch, wait_registered, wait_trader
from tests.support import wait_until

STRATEGIES = {"X": "g1", "Y": "g2,g3"}
BIG = 50 * 1024 * 1024


def test_a_50_mb_decision_settles_in_error_naming_its_strategy(cluster, redis_server):
    for g, sig in {"g1": "sig_a", "g2": "sig_b", "g3": "sig_c"}.items():
        cluster.generator(g, f"tests.plugins:{sig}")
    trader = cluster.trader()
    for s, gs in STRATEGIES.items():
        cluster.strategy(s, gs)
    r = redis_server.client(decode_responses=True)
    raw = redis_server.client()
    # Z is run by hand with Z's own rights: it holds its name's lease (a live process), asks to join,
    # and writes 50 MB into its own decision key instead of a report.
    sec, usec = raw.time()
    lease = f"attacker:1|{sec * 1000 + usec // 1000}"
    stop = threading.Event()

    def z():
        while not stop.is_set():
            raw.set("t:lease:strategy:Z", lease, px=2000)
            if not raw.sismember("t:strategies", "Z"):
                raw.publish("t:joins", "Z")
            stop.wait(0.1)
    holder = threading.Thread(target=z, daemon=True)
    holder.start()
    try:
        wait_registered(r, ["X", "Y", "Z"], cluster.period, timeout=40)
        missed_before = int(r.hget("t:trader", "missed") or 0)
        fence = r.hget("t:trader", "fence")
        raw.set("t:decision:Z", b"7|" + b"0" * BIG)
        e1 = server_epoch(r, cluster.period)     # every epoch after this one sees the big value
        h = wait_trader(r, lambda h: h.get("state") == "error" and int(h.get("epoch", 0)) > e1
                        and "t:decision:Z holds more than" in h.get("reason", ""), 20,
                        what="an error naming Z's oversized decision")
        errors = wait_until(lambda: (lambda e: e if len(e) >= 4 else None)(
            [x for _i, x in r.xrange("t:events") if x.get("status") == "error" and int(x["epoch"]) > e1]),
            20, what="4 epochs settled in error")
    finally:
        stop.set()
        holder.join(5)
    assert all("Z: no decision (t:decision:Z holds more than" in x["reason"] for x in errors), errors
    assert "1 of 3 strategies missing" in h["reason"], h
    # It kept its lead, and at most one epoch went by unsettled.
    assert r.hget("t:trader", "fence") == fence
    assert "lost the lead" not in trader.output()
    assert int(r.hget("t:trader", "missed") or 0) - missed_before <= 1, r.hgetall("t:trader")
    warned = [line for line in trader.output().splitlines() if "more than any report" in line]
    assert len(warned) == 1 and f"({DECISION_MAX_BYTES})" in warned[0], warned
    # Z deregistered by the operator: medians of X and Y again.
    assert cluster.cli("deregister", "Z").returncode == 0
    after = int(errors[-1]["epoch"])
    wait_until(lambda: [m for m in medians(r) if m["epoch"] > after and m["members"] == "X,Y"], 20,
               what="a median of X and Y after Z was deregistered")
