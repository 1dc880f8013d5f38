"""`redis-cli SREM` deregisters, the last strategy included, whether a trader runs or not (README,
"Deregistering a strategy"; docs/guarantees.md, "Registrations").

Real processes against a private redis-server, the operator's real `redis-cli`.  The SREM of the
last name deletes the key like a DEL would: it must stay a deregistration when the trader that
sees it first is one that starts fresh (no memory of the registry), and when it runs all along.
"""
import subprocess

import pytest

from tests.integ_support import (ORIGINAL_STRATEGIES, SETTLE_PERIODS, START_PERIODS, assert_alive,
                                 assert_exact_by_members, medians, server_epoch, start_original, trader_hash,
                                 wait_medians, wait_registered, wait_trader)
from tests.support import cli_binary

CLI = cli_binary()
pytestmark = pytest.mark.skipif(not CLI, reason="no redis-cli (or valkey-cli) installed")


def srem(redis_server, name: str) -> None:
    """What the operator types: redis-cli SREM t:strategies NAME."""
    out = subprocess.run([CLI, "-p", str(redis_server.port), "SREM", "t:strategies", name],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.strip() == "1", out


def registry(r) -> tuple[set, set, set]:
    return r.smembers("t:strategies"), r.smembers("t:strategies:backup"), set(r.hkeys("t:deregistered"))


def deregistered_and_gone(proc, name: str, timeout: float) -> None:
    """The strategy's process saw its deregistration and exited 0 (not to be restarted)."""
    assert proc.wait(timeout) == 0, proc.output()[-3000:]
    assert f"{name} was deregistered (removed from t:strategies); exiting" in proc.output()


def stays_idle(r, procs, period: float, since_epoch: int, published: list) -> None:
    """The trader reports no strategies for several periods, nothing comes back, and nothing was
    published beyond ``published`` (the medians as they stood right after the last SREM)."""
    wait_trader(r, lambda h: h.get("state") == "idle" and int(h.get("epoch", -1)) >= since_epoch + 4,
                SETTLE_PERIODS * period, "the trader idle for four periods")
    h = trader_hash(r)
    assert h["reason"] == "no strategies registered", h
    assert registry(r)[:2] == (set(), set())
    assert medians(r) == published
    assert "restored" not in procs["trader"].output()


def test_srem_while_no_trader_runs_then_a_fresh_trader(cluster, redis_server):
    """The trader stops; the operator removes Y, then (another stop) the last one, X; each time a
    trader that starts fresh takes the SREM as the deregistration it is."""
    p = cluster.period
    r = redis_server.client(decode_responses=True)
    procs = start_original(cluster)
    e0 = wait_registered(r, ORIGINAL_STRATEGIES, p, timeout=START_PERIODS * p)
    wait_medians(r, 1, timeout=START_PERIODS * p, after_epoch=e0)

    assert procs["trader"].stop() == 0
    srem(redis_server, "Y")                                  # X stays registered
    procs["trader"] = cluster.trader()
    deregistered_and_gone(procs["Y"], "Y", START_PERIODS * p)
    e1 = server_epoch(r, p)
    only_x = wait_medians(r, 3, timeout=START_PERIODS * p, after_epoch=e1)
    assert_exact_by_members(only_x, ORIGINAL_STRATEGIES)
    assert {e["members"] for e in only_x} == {"X"}
    assert registry(r) == ({"X"}, {"X"}, {"Y"})

    assert procs["trader"].stop() == 0
    srem(redis_server, "X")                                  # the last one: the key is gone, as after a DEL
    published = medians(r)
    assert not r.exists("t:strategies") and r.smembers("t:strategies:backup") == {"X"}
    e2 = server_epoch(r, p)
    procs["trader"] = cluster.trader()                       # remembers nothing: the case
    deregistered_and_gone(procs["X"], "X", START_PERIODS * p)
    assert registry(r)[2] == {"X", "Y"}
    stays_idle(r, procs, p, e2, published)
    assert_alive([procs[n] for n in ("g1", "g2", "g3", "trader")])


def test_srem_while_the_trader_runs_then_the_trader_restarts(cluster, redis_server):
    """The trader runs: Y, then the last one, X, removed with redis-cli; then the trader restarts and
    nothing comes back."""
    p = cluster.period
    r = redis_server.client(decode_responses=True)
    procs = start_original(cluster)
    e0 = wait_registered(r, ORIGINAL_STRATEGIES, p, timeout=START_PERIODS * p)
    wait_medians(r, 1, timeout=START_PERIODS * p, after_epoch=e0)

    srem(redis_server, "Y")
    deregistered_and_gone(procs["Y"], "Y", SETTLE_PERIODS * p)
    procs["trader"].wait_for_output(r"deregistered: Y", SETTLE_PERIODS * p)
    e1 = server_epoch(r, p)
    only_x = wait_medians(r, 3, timeout=SETTLE_PERIODS * p, after_epoch=e1)
    assert_exact_by_members(only_x, ORIGINAL_STRATEGIES)
    assert {e["members"] for e in only_x} == {"X"}

    srem(redis_server, "X")                                  # the last one
    published = medians(r)
    e2 = server_epoch(r, p)
    deregistered_and_gone(procs["X"], "X", SETTLE_PERIODS * p)
    procs["trader"].wait_for_output(r"deregistered: X", SETTLE_PERIODS * p)
    assert registry(r) == (set(), set(), {"X", "Y"})
    stays_idle(r, procs, p, e2, published)

    assert procs["trader"].stop() == 0                       # a restart changes nothing
    procs["trader"] = cluster.trader()
    procs["trader"].wait_for_output(r"took the lead", START_PERIODS * p)
    e3 = server_epoch(r, p)
    stays_idle(r, procs, p, e3, published)
    assert_alive([procs[n] for n in ("g1", "g2", "g3", "trader")])
