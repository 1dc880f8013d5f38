"""Trader: the median of every registered strategy's decision, or error naming the missing ones."""
import logging
import math
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redismedian import keys as K
from redismedian.trader import REASONS_LIMIT, default_decision_timeout_ms, median
from tests.unit_support import env, messages  # noqa: F401 - fixture


def submit(env, epoch, **decisions):
    """Strategies named after the keywords register (once) and submit their value for ``epoch``
    (the clock goes to that epoch and back)."""
    now = env.clock.now_ms()
    if now // env.period_ms != epoch:
        env.at(epoch)
    for name, value in decisions.items():
        s = env._strats.get(name) if hasattr(env, "_strats") else None
        if s is None:
            env.__dict__.setdefault("_strats", {})
            s = env._strats[name] = env.started(env.strategy(name, [f"sig_{name}"]))
            env.admit(name)
        env.publish(epoch, **{f"sig_{name}": value})
        s.step(epoch)
        assert env.r.get(env.k.decision(name)).decode().startswith(f"{epoch}|")
    env.clock.set_ms(now)


def register(env, *names):
    for n in names:
        env.__dict__.setdefault("_strats", {})
        env._strats[n] = env.started(env.strategy(n, [f"sig_{n}"]))
        env.admit(n)


def test_reference_median():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert median([1.7e308, 1.5e308]) == 1.6e308
    assert median([-1.7e308, -1.5e308, 0.0]) == -1.5e308
    assert default_decision_timeout_ms(60_000) == 48_000


# -- publishing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[0.5], [0.3, 0.1], [0.9, 0.1, 0.5], [4.0, -1.0, 2.5, 100.0]])
def test_publishes_the_median_of_all_registered_strategies(env, values):
    names = [f"S{i}" for i in range(len(values))]
    submit(env, env.E, **dict(zip(names, values)))
    t = env.trader()
    t.step(env.E)
    (m,) = env.medians()
    assert float(m["median"]) == statistics.median(values)
    assert m["epoch"] == str(env.E) and m["count"] == str(len(values)) and m["members"] == ",".join(sorted(names))
    assert m["fence"] == "1"
    h = env.hash(env.k.trader)
    assert (h["state"], h["reason"], h["median"], h["count"], h["published"]) == (
        "ok", "", m["median"], str(len(values)), str(env.E))
    assert h["leader"] == t.settings.owner and h["fence"] == "1"
    assert not env.r.exists(env.k.ready(env.E)), "the doorbell is cleared"
    assert env.r.blocked == [], "everything was in: no waiting"


def test_waits_for_the_doorbell_then_publishes(env):
    register(env, "X", "Y")
    submit(env, env.E, X=1.0)
    t = env.trader()
    orig = env.r.blpop

    def blpop(keys, timeout=0):
        if not env.r.exists(env.k.ready(env.E)):
            submit(env, env.E, Y=3.0)        # Y's submission completes the set and rings
        return orig(keys, timeout)
    env.r.blpop = blpop
    t0 = env.clock.now_ms()
    t.step(env.E)
    assert float(env.medians()[0]["median"]) == 2.0
    assert env.clock.now_ms() == t0, "woken by the doorbell, not by a timeout"


def test_error_at_the_deadline_names_every_missing_strategy(env):
    register(env, "W", "X", "Y", "Z")
    submit(env, env.E - 1, W=1.0)                     # W last reported for the previous epoch
    env.publish(env.E - 1, sig_Y=1.0)                 # Y's generator stopped after E-1
    env.at(env.E, 0.6)
    env._strats["Y"].step(env.E)
    env.r.delete(env.k.strategy_status("Z"))          # Z never reported anything
    env.at(env.E)
    submit(env, env.E, X=1.0)
    t = env.trader()
    env.r.blocked.clear()
    t.step(env.E)
    deadline = env.E * env.period_ms + t.decision_timeout_ms
    assert deadline <= env.clock.now_ms() <= deadline + 5
    waits = [s for cmd, s in env.r.blocked if cmd == "blpop"]
    assert sum(waits) == pytest.approx(9.0, abs=0.01) and len(waits) <= 10, "blocked on the doorbell, not polling"
    h = env.hash(env.k.trader)
    assert h["state"] == "error" and "median" not in h and "count" not in h
    assert h["reason"] == ("3 of 4 strategies missing: "
                           f"W: no decision (last report for epoch {env.E - 1}); "
                           f"Y: signal sig_Y stale (last epoch {env.E - 1}); "
                           "Z: no decision (not running?)")
    assert env.medians() == []


def test_a_strategy_error_reason_reaches_the_trader(env):
    register(env, "X")
    env.publish(env.E, sig_X=float("inf"))
    env._strats["X"].step(env.E)
    t = env.trader()
    t.step(env.E)
    assert env.hash(env.k.trader)["reason"] == (
        "1 of 1 strategies missing: X: signal sig_X error: signal function returned inf, not a finite number")


def test_error_removes_the_previous_median(env):
    submit(env, env.E, X=1.0, Y=2.0)
    t = env.trader()
    t.step(env.E)
    assert env.hash(env.k.trader)["median"] == "1.5"
    env.at(env.E + 1)
    submit(env, env.E + 1, X=1.0)
    t.step(env.E + 1)
    h = env.hash(env.k.trader)
    assert h["state"] == "error" and "median" not in h and "count" not in h and h["epoch"] == str(env.E + 1)


def test_returns_to_ok_by_itself(env, caplog):
    t = env.trader()
    register(env, "X", "Y")
    states = []
    for i, e in enumerate(range(env.E, env.E + 4)):
        env.at(e)
        if i == 1:
            submit(env, e, X=1.0)
        else:
            submit(env, e, X=1.0, Y=float(i))
        t.step(e)
        states.append(env.hash(env.k.trader)["state"])
    assert states == ["ok", "error", "ok", "ok"]
    assert [m["epoch"] for m in env.medians()] == [str(e) for e in (env.E, env.E + 2, env.E + 3)]


def test_never_mixes_epochs(env):
    register(env, "X", "Y")
    submit(env, env.E - 1, X=1.0, Y=2.0)             # a complete previous epoch
    env.r.zadd(env.k.decisions(env.E + 1), {"Y": 5.0})   # and something filed under the next one
    env.at(env.E)
    submit(env, env.E, X=3.0)
    t = env.trader()
    t.step(env.E)
    h = env.hash(env.k.trader)
    assert h["state"] == "error" and h["reason"].startswith("1 of 2 strategies missing: Y:")
    assert env.medians() == []
    submit(env, env.E, Y=4.0)                        # Y late but still in the period
    t.step(env.E)
    assert [m["median"] for m in env.medians()] == ["3.5"]


def test_decisions_of_deregistered_strategies_are_excluded(env):
    submit(env, env.E, X=1.0, Y=2.0, Z=100.0)
    env.r.srem(env.k.strategies, "Z")
    t = env.trader()
    t.step(env.E)
    (m,) = env.medians()
    assert (m["median"], m["count"], m["members"]) == ("1.5", "2", "X,Y")
    assert not env.r.exists(env.k.decisions_scratch(env.E))


def test_unregistered_names_in_the_index_never_count(env):
    register(env, "X", "Y")
    submit(env, env.E, X=1.0)
    env.r.zadd(env.k.decisions(env.E), {"ghost1": 0.0, "ghost2": 50.0})
    t = env.trader()
    env.at(env.E, 0.9)
    t.step(env.E)
    assert env.hash(env.k.trader)["state"] == "error"
    submit(env, env.E, Y=2.0)
    t.step(env.E)
    assert [(m["median"], m["members"]) for m in env.medians()] == [("1.5", "X,Y")]


def test_deregistering_the_missing_strategy_completes_the_epoch(env):
    register(env, "X", "Y")
    submit(env, env.E, X=7.0)
    t = env.trader()
    orig = env.r.blpop

    def blpop(keys, timeout=0):
        env.r.srem(env.k.strategies, "Y")     # the operator gives up on Y while the trader waits
        return orig(keys, timeout)
    env.r.blpop = blpop
    t.step(env.E)
    assert [(float(m["median"]), m["members"]) for m in env.medians()] == [(7.0, "X")]


def test_idle_when_nothing_is_registered(env, caplog):
    t = env.trader()
    with caplog.at_level(logging.INFO):
        for e in range(env.E, env.E + 3):
            env.at(e)
            t.step(e)
    h = env.hash(env.k.trader)
    assert (h["state"], h["reason"]) == ("idle", "no strategies registered") and "median" not in h
    assert env.medians() == []
    assert sum("idle" in m for m in messages(caplog)) == 1, "idle is logged once, not every period"


def test_no_double_publication(env):
    submit(env, env.E, X=1.0)
    t = env.trader()
    t.step(env.E)
    assert t.collect(env.E, False)[0] == "done"
    assert t.collect(env.E, True)[0] == "done"
    t.shutdown()                                  # a successor takes over within the same epoch
    t2 = env.trader()
    t2.step(env.E)
    assert len(env.medians()) == 1
    h = env.hash(env.k.trader)
    assert h["fence"] == "2" and h["leader"] == t2.settings.owner and h["published"] == str(env.E)


def test_an_expired_epoch_is_left_alone(env):
    submit(env, env.E, X=1.0)
    env.at(env.E + 1)
    t = env.trader()
    assert t.collect(env.E, True)[0] == "expired"
    assert env.medians() == [] and not env.r.exists(env.k.trader)


# -- leadership and fencing ----------------------------------------------------------------------
def test_a_trader_without_the_current_lease_stands_by_and_writes_nothing(env, caplog):
    submit(env, env.E, X=1.0)
    env.r.set(env.k.lease("trader"), "other:1:aaaa|7", px=10_000_000)
    env.r.hset(env.k.trader, mapping={"state": "ok", "leader": "other:1:aaaa", "fence": "7"})
    before = env.hash(env.k.trader)
    t = env.trader()
    with caplog.at_level(logging.INFO):
        t.step(env.E)
    assert t.token == ""
    assert env.hash(env.k.trader) == before and env.medians() == []
    assert any("standing by (leader: other:1:aaaa|7)" in m for m in messages(caplog))
    assert env.r.blocked == [], "a standby trader does not wait on the doorbell"


def test_a_stale_leader_is_fenced_off(env, caplog):
    submit(env, env.E, X=1.0)
    t = env.trader()
    t.step(env.E)
    assert t.token == "1"
    # t stalls; its lease expires and another trader takes the lead with token 2
    env.r.set(env.k.lease("trader"), "other:2:bbbb|2", px=10_000_000)
    env.at(env.E + 1)
    submit(env, env.E + 1, X=2.0)
    with caplog.at_level(logging.WARNING):
        t.step(env.E + 1)
    assert t.token == ""
    assert [m["epoch"] for m in env.medians()] == [str(env.E)]
    assert env.hash(env.k.trader)["published"] == str(env.E)
    assert any("lost the lead to other:2:bbbb|2" in m for m in messages(caplog))


def test_same_owner_with_an_old_token_is_fenced_off(env):
    t = env.trader()
    env.r.set(env.k.lease("trader"), f"{t.settings.owner}|5", px=10_000_000)
    t.token = "4"
    assert t.collect(env.E, True)[0] == "standby"


def test_a_standby_trader_takes_over_when_the_leader_dies(env, caplog):
    submit(env, env.E, X=1.0)
    leader, standby = env.trader(), env.trader()
    leader.step(env.E)
    standby.step(env.E)
    assert standby.token == ""
    # the leader dies without releasing; its lease runs out 1.5 periods later
    for e in (env.E + 1, env.E + 2):
        env.at(e, 0.1)
        submit(env, e, X=float(e % 5))
        with caplog.at_level(logging.INFO):
            standby.step(e)
    assert standby.token == "2"
    assert [m["epoch"] for m in env.medians()] == [str(env.E), str(env.E + 2)]
    assert env.medians()[-1]["fence"] == "2"
    assert any("took the lead (fencing token 2)" in m for m in messages(caplog))


def test_shutdown_releases_only_our_lease(env):
    t = env.trader()
    t.step(env.E)
    assert t.token == "1"
    t.shutdown()
    assert not env.r.exists(env.k.lease("trader"))
    t2 = env.trader()
    t2.step(env.E)
    t.shutdown()
    assert env.r.get(env.k.lease("trader")).decode() == f"{t2.settings.owner}|2"


# -- details -------------------------------------------------------------------------------------
def test_reasons_are_limited(env):
    names = [f"s{i:02d}" for i in range(REASONS_LIMIT + 5)]
    env.r.sadd(env.k.strategies, *names)
    t = env.trader()
    assert t.collect(env.E, True)[0] == "error"
    reason = env.hash(env.k.trader)["reason"]
    assert reason.startswith(f"{len(names)} of {len(names)} strategies missing: s00: no decision (not running?)")
    assert reason.endswith("and 5 more") and reason.count("not running") == REASONS_LIMIT


def test_members_are_listed_up_to_the_limit(env):
    t = env.trader()
    for n, e in ((K.MEDIAN_MEMBERS_LIMIT, env.E), (K.MEDIAN_MEMBERS_LIMIT + 1, env.E + 1)):
        env.at(e)
        env.r.delete(env.k.strategies)
        names = [f"s{i:03d}" for i in range(n)]
        env.r.sadd(env.k.strategies, *names)
        env.r.zadd(env.k.decisions(e), {m: i for i, m in enumerate(names)})
        t.step(e)
    a, b = env.medians()
    assert a["members"] == ",".join(f"s{i:03d}" for i in range(K.MEDIAN_MEMBERS_LIMIT)) and b["members"] == ""
    assert b["count"] == str(K.MEDIAN_MEMBERS_LIMIT + 1)


def test_medians_stream_is_trimmed(env):
    t = env.trader(medians_maxlen=5)
    env.r.sadd(env.k.strategies, "X")
    for e in range(env.E, env.E + 300):
        env.at(e)
        env.r.zadd(env.k.decisions(e), {"X": 1.0})
        t.step(e)
    assert env.hash(env.k.trader)["published"] == str(env.E + 299)
    assert env.r.xlen(env.k.medians) < 300


def test_median_of_huge_decisions_does_not_overflow(env):
    env.r.sadd(env.k.strategies, "X", "Y")
    env.r.zadd(env.k.decisions(env.E), {"X": 1.5e308, "Y": 1.7e308})
    t = env.trader()
    assert t.collect(env.E, False)[0] == "published"
    m = float(env.medians()[0]["median"])
    assert math.isfinite(m) and m == 1.5e308 / 2 + 1.7e308 / 2


# -- property: the Lua median is statistics.median -----------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False)


def expected_median(values):
    m = statistics.median(values)
    if math.isfinite(m):
        return m
    s = sorted(values)                     # the two middle values overflowed when added
    assert median(values) == s[len(s) // 2 - 1] / 2 + s[len(s) // 2] / 2
    return median(values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(finite, min_size=1, max_size=40), extras=st.lists(finite, max_size=4),
       moderate=st.booleans())
def test_lua_median_equals_statistics_median(env, values, extras, moderate):
    if moderate:
        values = [v % 1e6 for v in values]
    env.r.flushall()
    names = [f"s{i}" for i in range(len(values))]
    env.r.sadd(env.k.strategies, *names)
    env.r.zadd(env.k.decisions(env.E), dict(zip(names, values)))
    if extras:   # decisions of strategies deregistered meanwhile
        env.r.zadd(env.k.decisions(env.E), {f"gone{i}": v for i, v in enumerate(extras)})
    t = env.trader()
    reply = t.collect(env.E, False)
    assert reply[0] == "published", reply
    (m,) = env.medians()
    assert float(m["median"]) == expected_median(values)
    assert float(reply[5]) == float(m["median"]) and int(m["count"]) == len(values)
    assert m["members"] == ",".join(sorted(names))
