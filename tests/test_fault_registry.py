"""Registrations survive Redis data loss (docs/guarantees.md, "Registrations").

The rule: a name leaves the registry only by deregistration (`redismedian deregister`, or SREM
on a registry that keeps other names).  A registry that vanishes as a whole, or turns into
another type, is restored from NS:strategies:backup; a Redis that lost everything gets back
every registration the trader remembers; a registration lost at a failover (older registry
version) is restored too.  Then the trader publishes, or reports the lost strategies missing.

Most tests drive the components in-process against a private redis-server with a one-hour
period (every call lands in the same epoch); the last ones run real processes.
"""
import logging
import time

import pytest
import redis

from redismedian.clock import time_reply_ms
from redismedian.common import Settings, fmt_value
from redismedian.component import Exit
from redismedian.keys import Keys
from redismedian.status import deregister
from redismedian.strategy import Strategy
from redismedian.trader import Trader
from tests.faultkit import NS, assert_invariant, check_invariant, decision, now_ms, topo  # noqa: F401
from tests.support import wait_until

HOUR_MS = 3_600_000
K = Keys("r")


def names(client, key) -> set:
    return {m.decode() for m in client.smembers(key)}


class Deployment:
    """Strategies and a trader driven call by call (no loops, no sleeping)."""

    def __init__(self, url: str):
        self.url = url
        self.client = redis.Redis.from_url(url)
        now = time_reply_ms(self.client.time())
        if now % HOUR_MS > HOUR_MS - 10_000:          # never straddle an epoch boundary
            time.sleep((HOUR_MS - now % HOUR_MS) / 1000 + 0.05)
        self.epoch = time_reply_ms(self.client.time()) // HOUR_MS
        self.strategies: dict[str, Strategy] = {}
        self.trader = self._synced(Trader(self.settings(), decision_timeout_ms=1))

    def settings(self) -> Settings:
        return Settings(redis_url=self.url, namespace="r", period_ms=HOUR_MS)

    @staticmethod
    def _synced(c):
        c.clock.sync(c.client)
        return c

    def start(self, *names: str) -> None:
        for n in names:
            s = self._synced(Strategy(self.settings(), n, ["g"]))
            s.startup()
            self.strategies[n] = s

    def submit(self, *names: str) -> None:
        for n in names:
            self.strategies[n].report(self.epoch, fmt_value(decision("X", self.epoch) + ord(n)), "ok", "")

    def run_trader(self) -> dict:
        self.trader.step(self.epoch)
        h = {k.decode(): v.decode() for k, v in self.client.hgetall(K.trader).items()}
        self.client.hdel(K.trader, "published")   # let the next call of the test evaluate again
        self.trader.last_published = -1
        return h


@pytest.fixture
def dep(redis_server):
    return Deployment(redis_server.url)


def test_deleted_registry_is_restored_and_nobody_exits(dep):
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    assert dep.run_trader()["state"] == "ok"
    dep.client.delete(K.strategies)                       # the accident
    dep.submit("A", "B", "C")                             # none of them is told it was deregistered
    assert names(dep.client, K.strategies) == {"A", "B", "C"}
    h = dep.run_trader()
    assert h["state"] == "ok" and h["count"] == "3"


def test_registry_of_another_type_is_restored(dep):
    dep.start("A", "B")
    dep.client.delete(K.strategies)
    dep.client.set(K.strategies, "garbage")
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B"}
    assert h["state"] == "error" and "2 of 2 strategies missing" in h["reason"]


def test_srem_of_one_name_is_a_deregistration(dep, caplog):
    caplog.set_level(logging.INFO)
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    dep.run_trader()
    dep.client.srem(K.strategies, "B")
    with pytest.raises(Exit) as e:
        dep.submit("B")
    assert e.value.code == 0
    dep.submit("A", "C")
    h = dep.run_trader()
    assert h["state"] == "ok" and h["count"] == "2"
    assert names(dep.client, K.registry_backup) == {"A", "C"}
    assert "deregistered: B" in caplog.text


def test_deregistering_the_last_strategy_with_the_cli_leaves_nothing_to_restore(dep):
    dep.start("A")
    dep.submit("A")
    dep.run_trader()
    deregister(dep.client, K, "A")
    assert not dep.client.exists(K.strategies) and not dep.client.exists(K.registry_backup)
    with pytest.raises(Exit):
        dep.submit("A")
    assert dep.run_trader()["state"] == "idle"


def test_srem_of_the_last_strategy_is_its_deregistration(dep):
    """SREM of the last name deletes the key, exactly like DEL: with one name in the backup the
    vanished registry is taken as that name's deregistration (it is recorded)."""
    dep.start("A")
    dep.run_trader()
    dep.client.srem(K.strategies, "A")
    with pytest.raises(Exit):
        dep.submit("A")
    assert dep.client.hexists(K.deregistered, "A")
    assert dep.run_trader()["state"] == "idle"


def test_two_names_removed_at_once_look_like_a_deletion_and_are_restored(dep):
    """The documented limit: a registry emptied in one go (here SREM of both names) cannot be
    told from DEL, and two or more names vanishing at once are restored."""
    dep.start("A", "B")
    dep.run_trader()
    dep.client.srem(K.strategies, "A", "B")
    dep.submit("A")
    assert names(dep.client, K.strategies) == {"A", "B"}


def test_data_loss_restores_what_the_trader_knew_and_names_the_dead(dep):
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    assert dep.run_trader()["state"] == "ok"
    dep.client.flushall()                                 # Redis lost everything; B is dead meanwhile
    dep.submit("A", "C")                                  # the live ones re-register themselves
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B", "C"}
    assert h["state"] == "error" and h["reason"].startswith("1 of 3 strategies missing: B:")


def test_data_loss_with_no_strategy_running_is_an_error_not_idle(dep):
    dep.start("A", "B")
    dep.run_trader()
    dep.client.flushall()
    h = dep.run_trader()
    assert h["state"] == "error" and "2 of 2 strategies missing" in h["reason"]


def test_backup_damaged_by_hand_is_rebuilt_from_the_trader_memory(dep):
    dep.start("A", "B")
    dep.run_trader()
    dep.client.delete(K.registry_backup)
    dep.client.delete(K.strategies)                       # and then the registry is lost too
    dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B"} == names(dep.client, K.registry_backup)


def lose_registration(dep, name):
    """What a replica that missed ``name``'s registration looks like after a failover: the name
    absent from registry and backup, the registry version one lower, no deregistration record."""
    version = int(dep.client.hget(K.meta, "registry"))
    dep.client.srem(K.strategies, name)
    dep.client.srem(K.registry_backup, name)
    dep.client.hset(K.meta, "registry", version - 1)


def test_registration_lost_at_a_failover_is_restored_not_taken_as_deregistration(dep):
    """Asynchronous replication can drop the last writes.  With no deregistration record, the
    strategy re-registers instead of exiting, and the trader restores it before publishing."""
    dep.start("A", "B")
    dep.submit("A", "B")
    dep.run_trader()
    lose_registration(dep, "B")
    dep.submit("B")                                       # does not exit
    assert names(dep.client, K.strategies) == {"A", "B"}
    lose_registration(dep, "B")
    h = dep.run_trader()                                  # the trader restores it before publishing
    assert names(dep.client, K.strategies) == {"A", "B"}
    assert h["state"] == "ok" and h["count"] == "2"      # B's decision of this epoch counts again


def test_registry_and_backup_both_deleted(dep):
    """Both copies gone, nothing recorded as deregistered: the live strategies re-register, and
    the trader restores the dead one (then reports it missing)."""
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    dep.run_trader()
    dep.client.delete(K.strategies, K.registry_backup)
    dep.submit("A", "C")                                  # neither exits
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B", "C"}
    assert h["state"] == "ok" and h["count"] == "3"      # B's decision of this epoch was already in
    dep.client.delete(K.decisions(dep.epoch))
    dep.submit("A", "C")
    h = dep.run_trader()
    assert h["state"] == "error" and h["reason"].startswith("1 of 3 strategies missing: B:")


def test_every_deregistration_is_recorded(dep):
    dep.start("A", "B", "C")
    dep.client.srem(K.strategies, "A")                   # by hand
    deregister(dep.client, K, "B")                        # with the CLI
    dep.run_trader()
    assert set(dep.client.hkeys(K.deregistered)) == {b"A", b"B"}
    dep.strategies["A"].shutdown()                        # (gives up its name lease)
    dep.start("A")                                        # registering again clears the record
    assert set(dep.client.hkeys(K.deregistered)) == {b"B"}


def test_trader_only_refetches_the_registry_when_its_version_moves(dep, monkeypatch):
    dep.start("A", "B")
    dep.run_trader()
    calls = []
    real = dep.trader.read_registry
    monkeypatch.setattr(dep.trader, "read_registry", lambda: (calls.append(1), real())[1])
    for _ in range(3):
        dep.run_trader()
    assert calls == []
    dep.start("C")
    dep.run_trader()
    assert calls == [1]
    assert dep.trader.memory.names == {"A", "B", "C"}


# -- with real processes --------------------------------------------------------------------

@pytest.mark.integration
def test_live_registry_deleted_twice_no_strategy_exits_no_wrong_median(topo):
    topo.start()
    c = topo.client()
    for _ in range(2):
        topo.watcher.wait_for_median_after(now_ms(), 10, "a median")
        c.delete(f"{NS}:strategies")
        topo.wait_periods(1.5)
    t = now_ms()
    topo.watcher.wait_for_median_after(t + 500, 10, "medians after the deletions")
    assert all(p.alive() for p in topo.procs.values())
    assert_invariant(topo, min_entries=3)


@pytest.mark.integration
def test_live_deregistration_by_srem_still_works(topo):
    topo.start()
    topo.watcher.wait_for_median_after(now_ms(), 10, "a median")
    topo.client().srem(f"{NS}:strategies", "Y")
    assert topo.procs["Y"].wait(10) == 0
    t = now_ms()
    e = topo.watcher.wait_for_median_after(t, 10, "a median without Y")
    assert e.members == ("X", "Z")
    # exact medians throughout (over X, Y, Z before the SREM, over X, Z after), no epoch twice
    assert check_invariant(topo.watcher.snapshot(), complete_from_ms=None) == []
