"""Registrations survive Redis data loss (docs/guarantees.md, "Registrations").

The rules: a strategy never writes the registry; it asks to be registered (``NS:joins``) and the
trader admits it at its next tick, only while the name's lease shows a live process that was not
deregistered since it started.  A name leaves the registry only by deregistration (`redismedian
deregister`, or an SREM, which the trader's guard records; the last name's too, whether a trader
ran at the time or not).  A registry that vanishes as a whole (two or more names, or a deployment
record that lost its registry version with it), or turns into another type, is restored from
NS:strategies:backup; a Redis that lost everything gets back every registration the trader
remembers; a registration lost at a failover (older registry version) is restored too.  Then the
trader publishes, or reports the lost strategies missing.  A trader that remembers nothing of the
lost data admits the strategies again and holds off for two epochs while they come back.

Most tests drive the components in-process against a private redis-server with a one-hour
period (every call lands in the same epoch); the last ones run real processes.
"""
import logging
import time

import pytest

from redismedian.clock import time_reply_ms
from redismedian.common import Settings, fmt_value
from redismedian.connection import RedisSettings
from redismedian.component import Exit
from redismedian.keys import Keys
from redismedian.status import deregister
from redismedian.strategy import Strategy
from redismedian.trader import Trader
from tests.faultkit import NS, assert_invariant, check_invariant, decision, now_ms
from tests.support import harness_client, wait_until

HOUR_MS = 3_600_000
K = Keys("r")


def names(client, key) -> set:
    return {m.decode() for m in client.smembers(key)}


class Deployment:
    """Strategies and a trader driven call by call (no loops, no sleeping)."""

    def __init__(self, url: str):
        self.url = url
        self.client = harness_client(url=url)
        now = time_reply_ms(self.client.time())
        if now % HOUR_MS > HOUR_MS - 10_000:          # never straddle an epoch boundary
            time.sleep((HOUR_MS - now % HOUR_MS) / 1000 + 0.05)
        self.epoch = time_reply_ms(self.client.time()) // HOUR_MS
        self.strategies: dict[str, Strategy] = {}
        # What the strategies ask on the NS:joins channel, heard on a subscription of the test's own
        self.listener = self.client.pubsub()
        self.listener.subscribe(K.joins_channel)
        self.trader = self.new_trader()
        # The trader runs first and creates the deployment record: strategies started later are
        # younger than it (one older than the record means that Redis lost its data under it).
        assert self.run_trader()["state"] == "idle"

    def settings(self) -> Settings:
        return Settings(RedisSettings(self.url), namespace="r", period_ms=HOUR_MS)

    def new_trader(self) -> Trader:
        t = self._synced(Trader(self.settings(), decision_timeout_ms=1))
        t.bell.ensure()         # a running trader listens (its start-up subscribes)
        return t

    def asked(self) -> set:
        """The names published on NS:joins since the last call (each a request to be registered)."""
        heard = set()
        while (m := self.listener.get_message(timeout=0.05)) is not None:
            if m["type"] == "message":
                heard.add(m["data"].decode())
        return heard

    @staticmethod
    def _synced(c):
        c.clock.sync(c.client)
        return c

    def start(self, *names: str) -> None:
        """Start strategies: each takes its name and asks the trader to register it."""
        for n in names:
            s = self._synced(Strategy(self.settings(), n, ["g"]))
            s.startup()
            self.strategies[n] = s

    def submit(self, *names: str) -> None:
        for n in names:
            self.strategies[n].report(self.epoch, fmt_value(decision("X", self.epoch) + ord(n)), "ok", "")

    def run_trader(self) -> dict:
        """One trader period: its tick (registry guard, admissions), then collect and settle."""
        self.trader.step(self.epoch)
        h = {k.decode(): v.decode() for k, v in self.client.hgetall(K.trader).items()}
        self.client.hdel(K.trader, "published")   # let the next call of the test evaluate again
        self.trader.last_published = -1
        return h


@pytest.fixture
def dep(redis_server):
    return Deployment(redis_server.url)


def test_a_strategy_is_registered_only_by_the_trader_and_only_while_it_runs(dep):
    dep.start("A", "B")
    assert names(dep.client, K.strategies) == set()          # a strategy never writes the registry
    assert dep.asked() == {"A", "B"}                           # it asks
    assert dep.strategies["A"].registered is False
    dep.strategies["B"].shutdown()                             # B stops before the trader looks
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A"} == names(dep.client, K.registry_backup)
    assert h["state"] == "error" and h["reason"].startswith("1 of 1 strategy missing: A:")
    dep.submit("A")
    assert dep.strategies["A"].registered is True
    h = dep.run_trader()
    assert h["state"] == "ok" and h["count"] == "1"


def test_decisions_written_before_admission_count_in_the_epoch_of_admission(dep):
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")                                 # not registered yet: written all the same
    h = dep.run_trader()                                      # admits them, then reads their decisions
    assert h["state"] == "ok" and h["count"] == "3"
    assert names(dep.client, K.strategies) == {"A", "B", "C"}


def test_deleted_registry_is_restored_and_nobody_exits(dep):
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    assert dep.run_trader()["state"] == "ok"
    dep.client.delete(K.strategies)                       # the accident
    dep.submit("A", "B", "C")                             # none of them is told it was deregistered
    assert all(s.registered is False for s in dep.strategies.values())   # they ask to be registered
    h = dep.run_trader()                                  # the trader's guard restores the registry
    assert names(dep.client, K.strategies) == {"A", "B", "C"}
    assert h["state"] == "ok" and h["count"] == "3"
    assert not dep.client.hkeys(K.deregistered)


def test_registry_of_another_type_is_restored(dep):
    dep.start("A", "B")
    dep.run_trader()
    dep.client.delete(K.strategies)
    dep.client.set(K.strategies, "garbage")
    dep.submit("A")                                       # a report does not fail on it
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B"}
    assert h["state"] == "error" and h["reason"].startswith("1 of 2 strategies missing: B:")


def test_srem_of_one_name_is_a_deregistration(dep, caplog):
    caplog.set_level(logging.INFO)
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    dep.run_trader()
    dep.client.srem(K.strategies, "B")
    dep.submit("A", "B", "C")                             # B reports before the trader noticed: it asks back
    assert "B" in dep.asked()
    h = dep.run_trader()                                  # records the SREM before it looks at the requests
    assert h["state"] == "ok" and h["count"] == "2"
    assert names(dep.client, K.strategies) == {"A", "C"} == names(dep.client, K.registry_backup)
    assert dep.client.hexists(K.deregistered, "B")
    assert "deregistered: B" in caplog.text
    with pytest.raises(Exit) as e:                        # B's next report: it exits
        dep.submit("B")
    assert e.value.code == 0


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
    vanished registry is taken as that name's deregistration (the trader's guard records it)."""
    dep.start("A")
    dep.run_trader()
    dep.client.srem(K.strategies, "A")
    dep.submit("A")                                       # not recorded yet: A asks to be registered
    assert dep.run_trader()["state"] == "idle"            # recorded, and A's request refused
    assert dep.client.hexists(K.deregistered, "A")
    assert names(dep.client, K.strategies) == set()
    with pytest.raises(Exit):
        dep.submit("A")


def test_srem_of_the_last_strategy_while_no_trader_runs_is_its_deregistration(dep):
    """The same with the trader stopped at the time: the trader that starts next remembers nothing
    (no deployment instance), and takes the vanished registry as the deregistration all the same."""
    dep.start("A")
    dep.run_trader()
    dep.trader.shutdown()
    dep.client.srem(K.strategies, "A")
    dep.submit("A")                                       # no record yet: A asks to be registered
    dep.trader = dep.new_trader()
    assert dep.run_trader()["state"] == "idle"
    assert dep.client.hexists(K.deregistered, "A") and names(dep.client, K.registry_backup) == set()
    with pytest.raises(Exit):
        dep.submit("A")


def test_a_deployment_record_lost_with_a_one_name_registry_restores_it(dep):
    """What tells a data loss from an SREM: the registry version in NS:meta, which a data loss takes
    with the record.  Here the record and the registry are gone, the backup is left."""
    dep.start("A")
    dep.submit("A")
    dep.run_trader()
    dep.client.delete(K.meta, K.strategies)
    dep.trader.shutdown()
    dep.trader = dep.new_trader()                         # even a trader that remembers nothing
    dep.submit("A")
    dep.run_trader()
    assert names(dep.client, K.strategies) == {"A"} and not dep.client.hexists(K.deregistered, "A")
    dep.submit("A")                                       # A goes on
    assert dep.strategies["A"].registered is True


def test_two_names_removed_at_once_look_like_a_deletion_and_are_restored(dep):
    """The documented limit: a registry emptied in one go (here SREM of both names) cannot be
    told from DEL, and two or more names vanishing at once are restored."""
    dep.start("A", "B")
    dep.run_trader()
    dep.client.srem(K.strategies, "A", "B")
    dep.submit("A")
    dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B"}
    dep.submit("A", "B")                                  # neither exits


def test_data_loss_restores_what_the_trader_knew_and_names_the_dead(dep):
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    assert dep.run_trader()["state"] == "ok"
    dep.asked()                                           # (what they asked at their start)
    dep.client.flushall()                                 # Redis lost everything; B is dead meanwhile
    dep.submit("A", "C")                                  # the live ones re-create the record and ask back
    assert dep.asked() == {"A", "C"}
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B", "C"}
    assert h["state"] == "error" and h["reason"].startswith("1 of 3 strategies missing: B:")
    assert not dep.client.hexists(K.meta, "recreated")    # it restored everything: no grace needed


def test_fresh_trader_after_data_loss_admits_the_live_strategies_and_holds_off(dep):
    """A trader that remembers nothing of the lost data (it started after the loss) admits the
    strategies that ask; they are older than the new deployment record, so it marks the record
    'recreated' and publishes nothing in that epoch and the next, while the others come back."""
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    assert dep.run_trader()["state"] == "ok"
    dep.client.flushall()
    dep.trader.shutdown()
    dep.trader = dep.new_trader()                         # the old trader is gone with its memory
    dep.submit("A", "C")
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "C"}
    assert dep.client.hexists(K.meta, "recreated")
    assert h["state"] == "starting" and "Redis lost its data" in h["reason"], h
    assert f"since epoch {dep.epoch} " in h["reason"] and h["reason"].endswith(f"from epoch {dep.epoch + 2}"), h
    assert dep.client.xlen(K.medians) == 0


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
    strategy asks to be registered again instead of exiting, and the trader restores it before
    publishing; a trader that does not remember it admits it again."""
    dep.start("A", "B")
    dep.submit("A", "B")
    dep.run_trader()
    lose_registration(dep, "B")
    dep.submit("B")                                       # does not exit: asks to be registered again
    assert dep.strategies["B"].registered is False
    h = dep.run_trader()                                  # the trader restores it before publishing
    assert names(dep.client, K.strategies) == {"A", "B"}
    assert h["state"] == "ok" and h["count"] == "2"      # B's decision of this epoch counts again
    lose_registration(dep, "B")
    dep.trader.shutdown()                                 # (gives up the lead)
    dep.trader = dep.new_trader()                         # a trader that never knew B
    dep.submit("B")
    h = dep.run_trader()                                  # admits B: a live process, never deregistered
    assert names(dep.client, K.strategies) == {"A", "B"}
    assert h["state"] == "ok" and h["count"] == "2"


def test_registry_and_backup_both_deleted(dep):
    """Both copies gone, nothing recorded as deregistered: the live strategies ask to be
    registered again, and the trader restores all it knew (then reports the dead one missing)."""
    dep.start("A", "B", "C")
    dep.submit("A", "B", "C")
    dep.run_trader()
    dep.client.delete(K.strategies, K.registry_backup)
    dep.submit("A", "C")                                  # neither exits
    h = dep.run_trader()
    assert names(dep.client, K.strategies) == {"A", "B", "C"}
    assert h["state"] == "ok" and h["count"] == "3"      # B's decision of this epoch was already in
    dep.client.delete(K.decision("B"))                    # B is dead: its report expires
    dep.submit("A", "C")
    h = dep.run_trader()
    assert h["state"] == "error" and h["reason"].startswith("1 of 3 strategies missing: B: no decision")


def test_every_deregistration_is_recorded(dep):
    dep.start("A", "B", "C")
    dep.run_trader()
    dep.client.srem(K.strategies, "A")                   # by hand
    deregister(dep.client, K, "B")                        # with the CLI
    dep.run_trader()
    assert set(dep.client.hkeys(K.deregistered)) == {b"A", b"B"}
    record = int(dep.client.hget(K.deregistered, "A"))
    dep.strategies["A"].shutdown()                        # (gives up its name lease)
    wait_until(lambda: time_reply_ms(dep.client.time()) > record + 5, 5, what="a later millisecond")
    dep.start("A")                                        # a new process under that name asks
    assert dep.client.hexists(K.deregistered, "A")        # (it cannot clear the record itself)
    dep.run_trader()                                      # admitted: it started after the record
    assert names(dep.client, K.strategies) == {"A", "C"}
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
    dep.run_trader()                                      # its own admission: no need to read it back
    assert calls == []
    assert dep.trader.memory.names == {"A", "B", "C"}
    deregister(dep.client, K, "C")                        # somebody else moved the version
    dep.run_trader()
    assert calls == [1]
    assert dep.trader.memory.names == {"A", "B"}


# -- with real processes --------------------------------------------------------------------

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


def test_live_deregistration_by_srem_still_works(topo):
    topo.start()
    topo.watcher.wait_for_median_after(now_ms(), 10, "a median")
    topo.client().srem(f"{NS}:strategies", "Y")
    assert topo.procs["Y"].wait(10) == 0
    t = now_ms()
    e = topo.watcher.wait_for_median_after(t, 10, "a median without Y")
    assert e.members == ("X", "Z")
    # exact medians throughout (over X, Y, Z before the SREM, over X, Z after), no epoch twice
    # (and each over the registry of its moment, as the watcher read it)
    observed, registry = topo.watcher.observed()
    assert check_invariant(topo.watcher.snapshot(), None, observed, registry) == []
