"""Nothing another process writes into Redis crashes a component.

Keys a component owns are repaired; keys it does not own are reported (in its log, in the
trader's or strategy's reason, in ``status``).  Each case runs the whole pipeline through
``Component.run`` (the production loop) for a few periods after writing garbage.
"""
import json
import logging

import pytest

from redismedian.strategy import META_CHECK_EVERY

from redismedian.common import NUMBER_RULE
from redismedian.scripts import Report, parse_report
from redismedian.status import gather, render, to_json
from tests.unit_support import messages

MEDIAN = 1.5                # X decides 1.0 (g1), Y decides 2.0 (mean of g1=1, g2=3)
TYPES = ("string", "list", "set", "hash", "zset", "stream")


def put(r, key, kind, value="garbage"):
    r.delete(key)
    {"string": lambda: r.set(key, value), "list": lambda: r.rpush(key, value), "set": lambda: r.sadd(key, value),
     "hash": lambda: r.hset(key, value, "1"), "zset": lambda: r.zadd(key, {value: 1}),
     "stream": lambda: r.xadd(key, {value: "1"})}[kind]()


class Pipeline:
    """g1 and g2; X on g1, Y on g1,g2; one trader.  Leases are kept between run() calls."""

    def __init__(self, env):
        self.env = env
        self.g1 = env.generator("g1", fn=lambda e: 1.0)
        self.g2 = env.generator("g2", fn=lambda e: 3.0)
        self.x = env.strategy("X", ["g1"])
        self.y = env.strategy("Y", ["g1", "g2"])
        self.t = env.trader()
        self.all = [self.g1, self.g2, self.x, self.y, self.t]
        for c in self.all:
            c.shutdown = lambda: None

    def epoch(self, epoch, order=None):
        self.env.at(epoch)
        for c in order or self.all:
            c.last_epoch = epoch - 1
            code = c.run(max_epochs=1)
            assert code == 0, f"{c.kind} {c.name} exited with {code}"

    def published(self):
        return {int(m["epoch"]): float(m["median"]) for m in self.env.medians()}


def report(env, name="X"):
    return parse_report(env.r.get(env.k.decision(name)))


def status_survives(env):
    data = gather(env.r, env.k)
    text = render(data, "redis://127.0.0.1:1/0")
    json.loads(to_json(data))
    return data, text


# keys the components own: repaired, and the pipeline publishes again by itself
OWNED = {
    "signal hash": lambda k, E: k.signal("g1"),
    "signal feed": lambda k, E: k.signal_feed("g1"),
    "decision": lambda k, E: k.decision("X"),
    "count": lambda k, E: k.count(E),
    "other count slot": lambda k, E: k.other_doorbells(E)[0],
    "trader hash": lambda k, E: k.trader,
    "medians": lambda k, E: k.medians,
    "generator lease": lambda k, E: k.lease("generator", "g1"),
    "strategy lease": lambda k, E: k.lease("strategy", "X"),
    "trader lease": lambda k, E: k.lease("trader"),
    "fence": lambda k, E: k.trader_fence,
}
RIGHT_TYPE = {"signal hash": "hash", "signal feed": "stream", "decision": "string", "count": "string",
              "other count slot": "string", "trader hash": "hash", "medians": "stream",
              "generator lease": "string", "strategy lease": "string", "trader lease": "string",
              "fence": "string"}


@pytest.mark.parametrize("what,kind", [(w, t) for w in sorted(OWNED) for t in TYPES if t != RIGHT_TYPE[w]])
def test_owned_keys_of_the_wrong_type_are_repaired(env, what, kind, caplog):
    p = Pipeline(env)
    E = env.E
    p.epoch(E)
    assert p.published() == {E: MEDIAN}
    put(env.r, OWNED[what](env.k, E + 1), kind)
    with caplog.at_level(logging.INFO):
        p.epoch(E + 1)
        p.epoch(E + 2)
    assert p.published().get(E + 2) == MEDIAN, messages(caplog, logging.WARNING)
    assert p.published().get(E + 1) == MEDIAN, messages(caplog, logging.WARNING)
    status_survives(env)


@pytest.mark.parametrize("what", sorted(OWNED))
@pytest.mark.parametrize("kind", ["string", "hash"])
def test_garbage_before_anything_ran(env, what, kind):
    """The same garbage on a fresh Redis, before the components' first period."""
    if kind == RIGHT_TYPE[what]:
        kind = "list"
    put(env.r, OWNED[what](env.k, env.E), kind)
    p = Pipeline(env)
    p.epoch(env.E)
    p.epoch(env.E + 1)
    assert p.published().get(env.E + 1) == MEDIAN
    status_survives(env)


@pytest.mark.parametrize("kind", ["string", "list", "set", "zset", "stream"])
def test_a_garbage_deployment_record_is_reported_everywhere(env, kind, caplog):
    p = Pipeline(env)
    p.epoch(env.E)
    put(env.r, env.k.meta, kind)
    # Strategies check the deployment record every META_CHECK_EVERY reports (their hot path is a few
    # commands): within that many periods every component has said it, once.
    last = env.E + 1 + META_CHECK_EVERY
    with caplog.at_level(logging.ERROR):
        for e in range(env.E + 1, last + 1):
            p.epoch(e)
    errors = messages(caplog, logging.ERROR)
    assert len([m for m in errors if f"t:meta is a {kind}, expected a hash" in m]) == 5, \
        "each component says it, once"
    assert sorted(p.published()) == [env.E], "nothing is published without a deployment record"
    data, text = status_survives(env)
    assert any("t:meta" in prob for prob in data["problems"]) and "PROBLEM" in text
    env.r.delete(env.k.meta)                    # the operator repairs it
    p.epoch(last + 1)
    assert p.published().get(last + 1) == MEDIAN


@pytest.mark.parametrize("kind", ["string", "list", "hash", "zset", "stream"])
def test_a_garbage_registry_is_restored_from_its_backup(env, kind, caplog):
    """A registry of another type is removed and restored from NS:strategies:backup at once
    (docs/guarantees.md, "Registrations"): nobody is deregistered, the epoch is published."""
    p = Pipeline(env)
    p.epoch(env.E)
    put(env.r, env.k.strategies, kind)
    with caplog.at_level(logging.WARNING):
        p.epoch(env.E + 1)
    assert p.published().get(env.E + 1) == MEDIAN
    assert {m.decode() for m in env.r.smembers(env.k.strategies)} == {"X", "Y"}
    warnings = messages(caplog, logging.WARNING)
    assert sum(f"t:strategies was a {kind} (replaced" in m for m in warnings) == 1, "the one who repaired it says so"
    status_survives(env)


def test_a_strategy_starting_on_a_garbage_registry_asks_the_trader(env, caplog):
    """A strategy never writes the registry, garbage or not: it asks to join; the trader repairs the
    registry (once, saying so) and admits it."""
    put(env.r, env.k.strategies, "string")
    x = env.strategy("X", ["g1"])
    with caplog.at_level(logging.WARNING):
        t = env.trader()                             # running: it hears X ask
        assert x.run(max_epochs=1) == 0
        assert env.r.get(env.k.strategies) == b"garbage", "left to the trader"
        assert env.asks() == {"X"}
        x.started = False
        env.started(x)                               # (run() released the name on the way out)
        t.step(env.E)
    assert env.r.smembers(env.k.strategies) == {b"X"}
    assert sum("t:strategies was a string (replaced" in m for m in messages(caplog, logging.WARNING)) == 1


def test_garbage_doorbell_while_the_trader_waits(env, caplog):
    """Rings that are no epoch's number, or another epoch's, are junk: the trader keeps waiting (no
    early read, no anomaly) until its deadline, and the next epoch is published as always."""
    p = Pipeline(env)
    p.epoch(env.E)
    for junk in ("garbage", "", "-1", str(env.E), str(env.E + 2), "9" * 40, "1e3", f"{env.E + 1}\n"):
        env.r.publish(env.k.ready_channel, junk)
    with caplog.at_level(logging.WARNING):
        p.epoch(env.E + 1, order=[p.t, p.g1, p.g2, p.x, p.y])   # the trader waits first
    assert env.hash(env.k.trader)["state"] == "error"        # nobody had submitted by its deadline
    assert p.t.doorbell.total == 0 and not any("did not ring as it should" in m for m in messages(caplog))
    assert p.t.bell.inbox.junk >= 4
    p.epoch(env.E + 2)
    assert p.published().get(env.E + 2) == MEDIAN


def test_a_garbage_decision_key_while_the_trader_waits(env):
    """A decision key of another type reads as no report (MGET): the trader waits, and the strategy's
    next report overwrites it."""
    p = Pipeline(env)
    put(env.r, env.k.decision("X"), "hash")
    env.started(p.x)
    env.started(p.y)
    t = p.t
    env.started(t)
    orig = t.bell.wait

    def wait(epoch, timeout_s):
        if not env.r.exists(env.k.signal("g1")):
            p.epoch(env.E, order=[p.g1, p.g2, p.x, p.y])
            env.at(env.E)
        return orig(epoch, timeout_s)
    t.bell.wait = wait
    t.step(env.E)
    assert p.published() == {env.E: MEDIAN}
    assert env.r.type(env.k.decision("X")) == b"string"


# -- garbage values -------------------------------------------------------------------------------
@pytest.mark.parametrize("fields,reason", [
    ({"value": "nan", "status": "ok"}, "signal g2 is not a finite number ('nan')"),
    ({"value": "inf", "status": "ok"}, "signal g2 is not a finite number ('inf')"),
    ({"value": "1e999", "status": "ok"}, "signal g2 is not a finite number ('1e999')"),
    ({"value": "0x10", "status": "ok"}, "signal g2 is not a finite number ('0x10')"),
    ({"value": "", "status": "ok"}, "signal g2 is not a finite number ('')"),
    ({"status": "ok"}, "signal g2 is not a finite number (None)"),
    ({"value": "1", "status": "maybe"}, "signal g2 has status 'maybe'"),
    ({"value": "1"}, "signal g2 has status None"),
])
def test_garbage_signal_values_are_reported_by_the_strategy(env, fields, reason):
    env.publish(env.E, g1=1.0)
    env.r.hset(env.k.signal("g2"), mapping={"epoch": env.E, **fields})
    y = env.started(env.strategy("Y", ["g1", "g2"]))
    env.at(env.E, 0.6)
    assert y.run(max_epochs=1) == 0
    assert report(env, "Y") == Report(env.E, "error", "", reason)


@pytest.mark.parametrize("epoch,reason", [("abc", "signal g2 malformed (epoch 'abc')"),
                                          ("1.5", "signal g2 malformed (epoch '1.5')"),
                                          (None, "signal g2 malformed (epoch None)")])
def test_garbage_signal_epochs_are_reported(env, epoch, reason):
    env.publish(env.E, g1=1.0)
    env.r.hset(env.k.signal("g2"), mapping={"value": "1", "status": "ok", **({"epoch": epoch} if epoch else {})})
    y = env.started(env.strategy("Y", ["g1", "g2"]))
    env.at(env.E, 0.6)
    assert y.run(max_epochs=1) == 0
    assert report(env, "Y") == Report(env.E, "error", "", reason)


@pytest.mark.parametrize("kind", ["string", "list", "set", "zset", "stream"])
def test_a_signal_of_the_wrong_type_is_reported_by_the_strategy(env, kind):
    env.publish(env.E, g1=1.0)
    put(env.r, env.k.signal("g2"), kind)
    y = env.started(env.strategy("Y", ["g1", "g2"]))
    env.at(env.E, 0.6)
    assert y.run(max_epochs=1) == 0
    reason = report(env, "Y").reason
    assert reason.startswith("signal g2 unreadable (t:signal:g2: WRONGTYPE"), reason


def test_garbage_feed_entries_are_ignored(env):
    y = env.started(env.strategy("Y", ["g1", "g2"]))
    feed1, feed2 = env.k.signal_feed("g1"), env.k.signal_feed("g2")
    env.r.xadd(feed2, {"junk": "1"})
    env.r.xadd(feed2, {"name": "g2", "epoch": "abc", "value": "1", "status": "ok"})
    env.r.xadd(feed2, {"name": "g2", "epoch": env.E + 7, "value": "1", "status": "ok"})
    env.r.xadd(feed1, {"name": b"\xff\xfe", "epoch": env.E, "value": "1", "status": "ok"})
    env.r.xadd(feed1, {"name": "g2", "epoch": env.E, "value": "2", "status": "ok"})
    env.r.xadd(feed1, {"name": "g1", "epoch": env.E, "value": "nan", "status": "ok"})
    env.publish(env.E, g2=3.0)
    assert y.run(max_epochs=1) == 0
    assert report(env, "Y") == Report(env.E, "error", "", "signal g1 is not a finite number ('nan')")
    # the feed entry with a bad value is not overruled: the strategy never decides on it


def test_a_garbage_feed_is_reported_when_it_hides_the_signals(env):
    env.publish(env.E, g1=1.0)
    put(env.r, env.k.signal_feed("g1"), "string")
    x = env.started(env.strategy("X", ["g1"]))
    assert x.run(max_epochs=1) == 0
    # the stored signal was current: the decision is made all the same
    assert report(env).state == "ok"
    env.at(env.E + 1)
    assert x.run(max_epochs=1) == 0
    st = report(env)
    assert st.state == "error"
    assert st.reason == (f"signal g1 stale (last epoch {env.E}); signal feed t:signals:g1 unreadable: "
                            "WRONGTYPE Operation against a key holding the wrong kind of value")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "0x10", "1_000", " 5 ", "", "1e", "5\n5|1"])
def test_a_decision_outside_the_number_grammar_is_reported(env, value):
    env.r.sadd(env.k.strategies, "X", "Y", "Z")
    for name in "XYZ":   # live processes hold the names (else the reason is "not running")
        env.r.set(env.k.lease("strategy", name), f"host:1:{name}|0", px=2 * env.period_ms)
    env.decide("X", 1.0)
    env.decide("Y", value)
    env.decide("Z", 0.0)
    t = env.trader(decision_timeout_ms=0)             # judged at once, as at the deadline
    assert t.run(max_epochs=1) == 0
    h = env.hash(env.k.trader)
    assert h["state"] == "error"
    assert h["reason"].startswith(f"1 of 3 strategies missing: Y: decision {value!r:.40} in t:decision:Y")
    assert NUMBER_RULE in h["reason"]
    env.decide("X", "-inf")
    env.decide("Y", 1.0)
    t.step(env.E)
    assert env.hash(env.k.trader)["reason"].startswith("1 of 3 strategies missing: X: decision '-inf' in t:decision:X")
    assert env.medians() == []


@pytest.mark.parametrize("text,why", [
    ("{E}|!error|", "no decision (state 'error')"),
    ("{E}|!|odd", "odd"),
    ("{E2}|!error|old", "no decision (last report for epoch {E2}, 3 periods ago)"),
    ("garbage|1", "no decision (t:decision:X holds 'garbage|1', not <epoch>|<decision>)"),
    ("something", "no decision (t:decision:X holds 'something', not <epoch>|<decision>)"),
    ("{E}.5|1", "no decision (t:decision:X holds '{E}.5|1', not <epoch>|<decision>)"),
    ("9999999999999999|1", "no decision (t:decision:X holds '9999999999999999|1', not <epoch>|<decision>)"),
])
def test_garbage_in_a_decision_key_in_the_traders_reason(env, text, why):
    env.r.sadd(env.k.strategies, "X")
    env.r.set(env.k.lease("strategy", "X"), "host:1:a|0", px=2 * env.period_ms)   # a live process holds X
    env.r.set(env.k.decision("X"), text.format(E=env.E, E2=env.E - 3))
    t = env.trader(decision_timeout_ms=0)
    t.step(env.E)
    assert env.hash(env.k.trader)["reason"] == "1 of 1 strategy missing: X: " + why.format(E=env.E, E2=env.E - 3)


@pytest.mark.parametrize("kind", ["list", "set", "hash", "zset", "stream"])
def test_a_decision_key_of_the_wrong_type_in_the_traders_reason(env, kind):
    env.r.sadd(env.k.strategies, "X")
    put(env.r, env.k.decision("X"), kind)
    t = env.trader(decision_timeout_ms=0)
    assert t.run(max_epochs=1) == 0
    assert env.hash(env.k.trader)["reason"] == (
        "1 of 1 strategy missing: X: not running (no live process; no report in the last 10 periods)")
    (row,) = status_survives(env)[0]["strategies"]
    assert f"t:decision:X is a {kind}, expected a string" in row["reason"], row


@pytest.mark.parametrize("published", ["abc", "", "-1", "99999999999", "1e99", "480000.5"])
def test_garbage_published_marker_does_not_stop_publication(env, published):
    env.r.sadd(env.k.strategies, "X")
    env.decide("X", 4.0)
    env.r.hset(env.k.trader, mapping={"published": published, "state": "ok"})
    t = env.trader()
    assert t.run(max_epochs=1) == 0
    assert [m["epoch"] for m in env.medians()] == [str(env.E)]


@pytest.mark.parametrize("fence", ["abc", "", "-3", "+5", "007", " 7", "1.5", "1e3", "99999999999999999999999",
                                   "12abc"])
def test_a_garbage_fence_is_repaired_and_tokens_keep_growing(env, fence, caplog):
    env.r.sadd(env.k.strategies, "X")
    env.decide("X", 4.0)
    env.r.hset(env.k.trader, mapping={"fence": "41"})
    env.r.set(env.k.trader_fence, fence)
    t = env.trader()
    with caplog.at_level(logging.ERROR):
        assert t.run(max_epochs=1) == 0
    assert messages(caplog, logging.ERROR) == []
    assert env.medians()[0]["fence"] == "42" and t.token == "42"


def test_a_garbage_fence_without_a_trader_record_starts_again(env):
    env.r.set(env.k.trader_fence, "abc")
    t = env.trader()
    assert t.run(max_epochs=1) == 0
    assert t.token == "1" and env.hash(env.k.trader)["state"] == "idle"


@pytest.mark.parametrize("key", ["generator", "strategy", "trader"])
def test_a_lease_without_expiry_is_repaired_while_running(env, key):
    p = Pipeline(env)
    p.epoch(env.E)
    lease = {"generator": env.k.lease("generator", "g1"), "strategy": env.k.lease("strategy", "X"),
             "trader": env.k.lease("trader")}[key]
    env.r.set(lease, "somebody-forever")
    p.epoch(env.E + 1)
    assert p.published().get(env.E + 1) == MEDIAN
    assert env.r.pttl(lease) > 0


def test_a_lost_instance_id_is_recreated(env, caplog):
    p = Pipeline(env)
    p.epoch(env.E)
    env.r.hdel(env.k.meta, "instance")
    with caplog.at_level(logging.WARNING):
        p.epoch(env.E + 1)
    assert env.hash(env.k.meta)["instance"]
    assert p.published().get(env.E + 1) == MEDIAN
    assert env.r.smembers(env.k.strategies) == {b"X", b"Y"}


def test_a_garbage_feed_repaired_while_the_strategy_waits(env):
    """The strategy keeps waiting on a garbage feed: the generator's next publication repairs it."""
    put(env.r, env.k.signal_feed("g1"), "hash")
    x = env.started(env.strategy("X", ["g1"]))
    orig = env.clock.wait
    waits = []

    def wait(stop, seconds):
        waits.append(seconds)
        if len(waits) == 2:
            env.publish(env.E, g1=1.0)
        return orig(stop, seconds)
    env.clock.wait = wait
    assert x.run(max_epochs=1) == 0
    assert report(env) == Report(env.E, "ok", "1.0", "")
    assert 2 <= len(waits) <= 3
