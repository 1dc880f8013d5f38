"""Trader: the median of every registered strategy's decision, or error naming the missing ones."""
import logging
import math
import statistics

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypothesis import example

from redismedian import keys as K
from redismedian import trader as trader_mod
from redismedian.common import NUMBER_RULE
from redismedian.keys import Keys
from redismedian.scripts import registry_admit
from redismedian.trader import REASONS_LIMIT, Tally, default_decision_timeout_ms, judge, median_of_sorted, tally
from tests.unit_support import Env, messages


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


def test_the_median_that_is_published(monkeypatch):
    # The trader's own path: Trader.collect tallies the raw decision keys (trader.tally), takes the middle
    # of the sorted values (median_of_sorted) and the settle script (Lua, in fakeredis) writes it out.
    cases = [([3.0, 1.0, 2.0], 2.0), ([4.0, 1.0, 3.0, 2.0], 2.5),
             ([1.7e308, 1.5e308], 1.6e308),            # the two middle values' sum overflows: no inf
             ([-1.7e308, -1.5e308, 0.0], -1.5e308)]
    for values, expected in cases:
        env = Env(monkeypatch)
        names = [f"S{i}" for i in range(len(values))]
        got = tally(env.E, names, [f"{env.E}|{v!r}".encode() for v in values])
        assert got.problems == [] and median_of_sorted(got.values) == expected, (values, got)
        submit(env, env.E, **dict(zip(names, values)))
        env.trader().step(env.E)
        (m,) = env.medians()
        assert (float(m["median"]), m["count"]) == (expected, str(len(values))), (values, m)
        assert env.hash(env.k.trader)["median"] == m["median"]
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
    assert env.rings()[-1:] == [env.E], "the last submission rang"
    assert env.r.blocked == [], "everything was in: no waiting"


def test_waits_for_the_doorbell_then_publishes(env):
    register(env, "X", "Y")
    submit(env, env.E, X=1.0)
    t = env.trader()
    orig = t.bell.wait

    def wait(epoch, timeout_s):
        if env.E not in env.rings():
            submit(env, env.E, Y=3.0)        # Y's submission completes the set and rings
        return orig(epoch, timeout_s)
    t.bell.wait = wait
    t0 = env.clock.now_ms()
    t.step(env.E)
    assert float(env.medians()[0]["median"]) == 2.0
    assert env.clock.now_ms() == t0, "woken by the doorbell, not by a timeout"


def test_error_at_the_deadline_names_every_missing_strategy(env):
    register(env, "V", "W", "X", "Y", "Z")            # V started but never decided
    submit(env, env.E - 1, W=1.0)                     # W last reported for the previous epoch
    env.publish(env.E - 1, sig_Y=1.0)                 # Y's generator stopped after E-1
    env.at(env.E, 0.6)
    env._strats["Y"].step(env.E)
    env.r.delete(env.k.decision("Z"))                 # Z's key expired: no report for 10 periods
    env.at(env.E)
    submit(env, env.E, X=1.0)
    t = env.trader()
    env.r.blocked.clear()
    t.step(env.E)
    deadline = env.E * env.period_ms + t.decision_timeout_ms
    assert deadline <= env.clock.now_ms() <= deadline + 5
    waits = [s for cmd, s in env.r.blocked if cmd == "pubsub"]
    assert sum(waits) == pytest.approx(9.0, abs=0.01) and len(waits) <= 10, "blocked on the doorbell, not polling"
    h = env.hash(env.k.trader)
    assert h["state"] == "error" and "median" not in h and "count" not in h
    assert h["reason"] == ("4 of 5 strategies missing: "
                           "V: started, waiting for the next period; "
                           f"W: no decision (last report for epoch {env.E - 1}, 1 period ago); "
                           f"Y: signal sig_Y stale (last epoch {env.E - 1}); "
                           "Z: no decision (no report in Redis, although a live process holds its name)")
    assert env.medians() == []


def test_a_strategy_error_reason_reaches_the_trader(env):
    register(env, "X")
    env.publish(env.E, sig_X=float("inf"))
    env._strats["X"].step(env.E)
    t = env.trader()
    t.step(env.E)
    assert env.hash(env.k.trader)["reason"] == (
        "1 of 1 strategy missing: X: signal sig_X error: signal function returned inf, not a finite number")


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
    env.at(env.E)
    submit(env, env.E, X=3.0)
    t = env.trader()
    t.step(env.E)
    h = env.hash(env.k.trader)
    assert (h["state"], h["reason"]) == (
        "error", f"1 of 2 strategies missing: Y: no decision (last report for epoch {env.E - 1}, 1 period ago)")
    env.decide("Y", 5.0, epoch=env.E + 1)            # and something filed under the next epoch
    t.step(env.E)
    assert env.hash(env.k.trader)["reason"] == (
        f"1 of 2 strategies missing: Y: no decision (last report for epoch {env.E + 1}, 1 period ahead)")
    assert env.medians() == []
    submit(env, env.E, Y=4.0)                        # Y late but still in the period
    t.step(env.E)
    assert [m["median"] for m in env.medians()] == ["3.5"]


def test_decisions_of_deregistered_strategies_are_excluded(env):
    submit(env, env.E, X=1.0, Y=2.0, Z=100.0)
    env.r.srem(env.k.strategies, "Z")               # `redis-cli SREM`: the operator deregisters Z
    t = env.trader()
    t.step(env.E)
    (m,) = env.medians()
    assert (m["median"], m["count"], m["members"]) == ("1.5", "2", "X,Y")
    assert env.r.get(env.k.decision("Z")) == f"{env.E}|100.0".encode(), "Z's decision is there, and ignored"
    assert env.r.hexists(env.k.deregistered, "Z"), "the trader's registry guard recorded the deregistration"


def test_decisions_of_names_that_are_not_registered_never_count(env):
    register(env, "X", "Y")
    submit(env, env.E, X=1.0)
    env.decide("ghost1", 0.0)                        # decision keys of names nobody registered,
    env.decide("ghost2", 50.0)
    t = env.trader()
    env.r.publish(env.k.joins_channel, "ghost1")     # and a join without any live lease behind it
    env.at(env.E, 0.9)
    t.step(env.E)
    h = env.hash(env.k.trader)
    assert (h["state"], h["reason"]) == ("error", "1 of 2 strategies missing: Y: started, waiting for the next period")
    submit(env, env.E, Y=2.0)
    t.step(env.E)
    assert [(m["median"], m["members"]) for m in env.medians()] == [("1.5", "X,Y")]
    assert env.r.smembers(env.k.strategies) == {b"X", b"Y"}


def test_deregistering_the_missing_strategy_completes_the_epoch(env):
    register(env, "X", "Y")
    submit(env, env.E, X=7.0)
    t = env.trader()
    orig = t.bell.wait

    def wait(epoch, timeout_s):
        env.r.srem(env.k.strategies, "Y")     # the operator gives up on Y while the trader waits
        return orig(epoch, timeout_s)
    t.bell.wait = wait
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
    t.step(env.E)                                    # the same epoch again: done already
    assert t.settle(env.E, "ok", "9.0", 1, "X") == "done"
    assert t.settle(env.E, "error", "1 of 1 strategy missing: X: late") == "done"
    env.r.hdel(env.k.trader, "published")            # Redis lost the marker: the trader remembers itself
    assert t.settle(env.E, "ok", "9.0", 1, "X") == "done"
    env.r.hset(env.k.trader, "published", env.E)
    assert len(env.medians()) == 1 and env.hash(env.k.trader)["median"] == "1.0"
    t.shutdown()                                     # a successor takes over within the same epoch
    t2 = env.trader()
    t2.step(env.E)
    assert len(env.medians()) == 1
    h = env.hash(env.k.trader)
    assert h["fence"] == "2" and h["leader"] == t2.settings.owner and h["published"] == str(env.E)


def test_an_expired_epoch_is_left_alone(env):
    submit(env, env.E, X=1.0)
    env.at(env.E + 1)
    t = env.trader()
    t.step(env.E)                                    # the server is in E+1 already
    assert env.medians() == [] and not env.r.exists(env.k.trader)


def test_an_epoch_that_ends_while_its_decisions_are_read_is_not_published(env):
    submit(env, env.E, X=1.0)
    t = env.trader()
    orig = env.r.mget

    def mget(*a, **kw):                              # the read is slow: the epoch ends meanwhile
        out = orig(*a, **kw)
        env.at(env.E + 1, 0.0)
        return out
    env.r.mget = mget
    t.step(env.E)
    assert env.medians() == [] and "published" not in env.hash(env.k.trader)


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
    """The lead passed to a newer token (even of the same owner) between the read and the settle."""
    submit(env, env.E, X=1.0)
    t = env.trader()
    orig = env.r.mget

    def mget(*a, **kw):
        env.r.set(env.k.lease("trader"), f"{t.settings.owner}|5", px=10_000_000)
        return orig(*a, **kw)
    env.r.mget = mget
    t.step(env.E)
    assert env.medians() == [] and t.token == ""
    h = env.hash(env.k.trader)
    assert h["fence"] == "1" and h["state"] == "starting", "settle wrote nothing"
    env.r.mget = orig
    t.token = "4"
    env.at(env.E + 1)
    submit(env, env.E + 1, X=2.0)
    t.step(env.E + 1)
    assert env.medians() == [] and t.token == ""


def test_a_lease_that_ran_out_during_the_read_is_taken_back_when_nobody_led_meanwhile(env, caplog):
    """A one-off stall (a 50 MB value read once, a paused process) outlasting the lease, with no
    other trader taking it: the fence counter still holds our token, so the trader settles the epoch
    and leads on with the same token, instead of losing the epoch and taking the lead anew."""
    submit(env, env.E, X=1.0)
    t = env.trader()
    orig = env.r.mget

    def mget(*a, **kw):
        env.r.delete(env.k.lease("trader"))       # the lease ran out while the reply was read
        return orig(*a, **kw)
    env.r.mget = mget
    with caplog.at_level(logging.INFO):
        t.step(env.E)
    assert [m["epoch"] for m in env.medians()] == [str(env.E)] and t.token == "1"
    assert env.r.get(env.k.lease("trader")) == f"{t.settings.owner}|1".encode()
    assert env.r.pttl(env.k.lease("trader")) > 0
    env.r.mget = orig
    # ...and at the next tick too (the lease gone between two ticks): the same token, no takeover.
    env.r.delete(env.k.lease("trader"))
    env.at(env.E + 1)
    submit(env, env.E + 1, X=2.0)
    with caplog.at_level(logging.INFO):
        t.step(env.E + 1)
    assert [m["fence"] for m in env.medians()] == ["1", "1"] and env.r.get(env.k.trader_fence) == b"1"
    said = messages(caplog)
    assert sum("took the lead" in m for m in said) == 1 and not any("lost the lead" in m for m in said), said


def test_a_lease_that_ran_out_is_not_taken_back_once_another_trader_led(env):
    """Somebody took the lead while we stalled and then let it go (the fence moved on): our token is
    old, so the settle stands by, even though the lease key is free."""
    submit(env, env.E, X=1.0)
    t = env.trader()
    orig = env.r.mget

    def mget(*a, **kw):
        env.r.delete(env.k.lease("trader"))
        env.r.incr(env.k.trader_fence)            # another trader led with token 2, then vanished
        return orig(*a, **kw)
    env.r.mget = mget
    t.step(env.E)
    assert env.medians() == [] and t.token == ""
    assert env.r.get(env.k.lease("trader")) is None


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
    env.at(env.E, 0.9)
    t.step(env.E)
    reason = env.hash(env.k.trader)["reason"]
    assert reason.startswith(f"{len(names)} of {len(names)} strategies missing: "
                             "s00: not running (no live process; no report in the last 10 periods); s01: ")
    assert reason.endswith("and 5 more") and reason.count("not running") == REASONS_LIMIT


def test_long_names_are_cut_in_reasons(env):
    long = "L" * 100                                  # only a hand SADD can register such a name
    env.r.sadd(env.k.strategies, long)
    t = env.trader()
    env.at(env.E, 0.9)
    t.step(env.E)
    assert env.hash(env.k.trader)["reason"] == (
        f"1 of 1 strategy missing: {'L' * 61}...: not running (no live process; no report in the last 10 periods)")


def test_members_are_listed_up_to_the_limit(env):
    t = env.trader()
    for n, e in ((K.MEDIAN_MEMBERS_LIMIT, env.E), (K.MEDIAN_MEMBERS_LIMIT + 1, env.E + 1)):
        env.at(e)
        names = [f"s{i:03d}" for i in range(n)]
        env.r.sadd(env.k.strategies, *names)
        for i, m in enumerate(names):
            env.decide(m, i, epoch=e)
        t.step(e)
    a, b = env.medians()
    assert a["members"] == ",".join(f"s{i:03d}" for i in range(K.MEDIAN_MEMBERS_LIMIT)) and b["members"] == ""
    assert (a["count"], b["count"]) == (str(K.MEDIAN_MEMBERS_LIMIT), str(K.MEDIAN_MEMBERS_LIMIT + 1))
    assert (a["median"], b["median"]) == ("31.5", "32.0")


def test_medians_stream_is_trimmed(env):
    t = env.trader(medians_maxlen=5)
    env.r.sadd(env.k.strategies, "X")
    for e in range(env.E, env.E + 300):
        env.at(e)
        env.decide("X", 1.0, epoch=e)
        t.step(e)
    assert env.hash(env.k.trader)["published"] == str(env.E + 299)
    assert env.r.xlen(env.k.medians) < 300


@pytest.mark.parametrize("a,b", [(1.5e308, 1.7e308), (-1.5e308, -1.7e308)])
def test_median_of_huge_decisions_does_not_overflow(env, a, b):
    env.r.sadd(env.k.strategies, "X", "Y")
    env.decide("X", a)
    env.decide("Y", b)
    t = env.trader()
    t.step(env.E)
    m = float(env.medians()[0]["median"])
    assert math.isfinite(m) and m == a / 2 + b / 2


# -- tally: judging the decision keys (pure) ------------------------------------------------------
E = 480_000
KEY = Keys("t").decision


def raw(*texts):
    return [None if x is None else x.encode() if isinstance(x, str) else x for x in texts]


def not_a_number(value: str, key: str = "t:decision:B") -> str:
    """The start of the reason for a decision that is not in the number grammar (the rest names it)."""
    return f"decision {value!r:.40} in {key}"


def test_tally_fast_path_takes_every_valid_decision(monkeypatch):
    def judged(*a):
        raise AssertionError("the fast path judges no key one by one")
    monkeypatch.setattr(trader_mod, "judge", judged)
    got = tally(E, ["A", "B", "C", "D"], raw(f"{E}|3.5", f"{E}|-1.0", f"{E}|1e3", f"{E}|-0.0"), KEY)
    assert got == Tally([-1.0, -0.0, 3.5, 1000.0], [])
    assert tally(E, ["A"], raw(f"{E}|1.7976931348623157e308"), KEY) == Tally([1.7976931348623157e308], [])


def test_tally_of_nothing_is_empty():
    assert tally(E, [], [], KEY) == Tally([], [])


@pytest.mark.parametrize("text,why", [
    (None, "no decision (no report for 10 periods: not running?)"),
    (f"{E - 1}|2.0", f"no decision (last report for epoch {E - 1}, 1 period ago)"),
    (f"{E - 12}|2.0", f"no decision (last report for epoch {E - 12}, 12 periods ago)"),
    (f"{E + 1}|2.0", f"no decision (last report for epoch {E + 1}, 1 period ahead)"),
    (f"{E}|!error|signal g1 stale (last epoch 7)", "signal g1 stale (last epoch 7)"),
    (f"{E}|!error|two|bars", "two|bars"),
    (f"{E}|!starting|started, waiting for the next period", "started, waiting for the next period"),
    (f"{E}|!error|", "no decision (state 'error')"),
    (f"{E}|!|", "no decision (state 'error')"),
    (f"{E}|!error|" + "x" * 2000, "x" * 197 + "..."),                 # text.SHORT, with the ellipsis
    (f"{E}|!error|late\nforged\x1b[31m\u202e", "late\\nforged\\x1b[31m\\u202e"),   # escaped: one inert line
    (f"{E}|!evil\nstate|", "no decision (state 'evil\\nstate')"),
    ("abc", "no decision (t:decision:B holds 'abc', not <epoch>|<decision>)"),
    ("x|5", "no decision (t:decision:B holds 'x|5', not <epoch>|<decision>)"),
    (f"{E}.0|5", f"no decision (t:decision:B holds '{E}.0|5', not <epoch>|<decision>)"),
    ("", "no decision (t:decision:B holds '', not <epoch>|<decision>)"),
])
def test_tally_slow_path_says_why(text, why):
    got = tally(E, ["A", "B"], raw(f"{E}|1.5", text), KEY)
    assert got == Tally([1.5], [("B", why)])


@pytest.mark.parametrize("value", ["1_000", " 5 ", "0x10", "1e400", "-1e400", "nan", "inf", "-inf", "Infinity", "",
                                   "1e", "+-1", "5|1", "1,5", "5\n", f"2\n{E}|1", "\n5|1"])
def test_tally_refuses_values_outside_the_number_grammar(value):
    got = tally(E, ["A", "B"], raw(f"{E}|1.5", f"{E}|{value}"), KEY)
    assert got.values == [1.5] and [n for n, _ in got.problems] == ["B"]
    assert got.problems[0][1].startswith(not_a_number(value)) and NUMBER_RULE in got.problems[0][1]


def test_a_value_hiding_a_second_decision_counts_for_nothing():
    """A newline cannot smuggle a second '<epoch>|<value>' record into the read: neither for the key
    that holds it, nor by standing in for a strategy whose key is missing or empty."""
    for others in ([None], [b""], [f"{E}|3".encode()]):
        names = ["A", "B"][:1 + len(others)]
        got = tally(E, names, [f"{E}|1\n{E}|2".encode(), *others], KEY)
        assert 1.0 not in got.values and 2.0 not in got.values
        assert got.problems[0][0] == "A" and got.problems[0][1].startswith(not_a_number(f"1\n{E}|2", "t:decision:A"))
    got = tally(E, ["A", "B"], raw(f"{E}|1\n{E}|2", f"{E}|3"), KEY)
    assert got.values == [3.0] and len(got.problems) == 1


def test_tally_without_key_names_shows_the_strategy_name():
    assert tally(E, ["S"], raw("junk"), None).problems == [("S", "no decision (S holds 'junk', not <epoch>|<decision>)")]


# Decision keys as they may be found: valid decisions, decisions of other epochs, reports, garbage.
number_text = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                        st.text(alphabet="0123456789.eE+-", min_size=0, max_size=8),
                        st.sampled_from(["1_000", " 5 ", "0x10", "1e400", "nan", "inf", "05", "+1", ".5", "1.", "1,2"]))
decision_raw = st.one_of(
    number_text.map(lambda v: f"{E}|{v}".encode()),
    number_text.map(lambda v: f"{E}|{v}".encode()),
    number_text.map(lambda v: f"{E - 1}|{v}".encode()),
    st.text(max_size=20).map(lambda r: f"{E}|!error|{r}".encode()),
    st.text(alphabet=f"{E}|\n!0123456789.e-", max_size=20).map(str.encode),
    st.none(),
)


@settings(max_examples=400, deadline=None)
@given(valid=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=12),
       odd=st.lists(st.tuples(st.integers(min_value=0), decision_raw), max_size=3))
def test_tally_is_judging_every_key_on_its_own(valid, odd):
    """The fast path never takes what judging each key alone would refuse, nor refuses what it takes
    (valid decisions, with a few odd keys among them, often within the grammar's alphabet)."""
    raws = [f"{E}|{v!r}".encode() for v in valid]
    for i, r in odd:
        raws[i % len(raws)] = r
    names = [f"s{i:02d}" for i in range(len(raws))]
    expected_values, expected_problems = [], []
    for n, r in zip(names, raws):
        why = judge(E, r, KEY(n))
        if isinstance(why, str):
            expected_problems.append((n, why))
        else:
            expected_values.append(why)
    got = tally(E, names, raws, KEY)
    assert got.problems == expected_problems
    assert got.values == sorted(expected_values)
    if not expected_problems:    # every decision counted: the median is statistics.median
        assert median_of_sorted(got.values) == expected_median(expected_values)


# -- property: the trader's median is statistics.median ----------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False)
huge = st.floats(min_value=1e307, max_value=1.7976931348623157e308)


def expected_median(values):
    m = statistics.median(values)
    if math.isfinite(m):
        return m
    s = sorted(values)                     # the two middle values overflowed when added
    return s[len(s) // 2 - 1] / 2 + s[len(s) // 2] / 2


@settings(max_examples=500, deadline=None)
@given(values=st.lists(st.one_of(finite, huge, huge.map(lambda x: -x)), min_size=1, max_size=60))
@example(values=[1.7e308, 1.5e308])
@example(values=[-1.7e308, -1.5e308])
@example(values=[1.7976931348623157e308, 1.7976931348623157e308])
def test_median_of_sorted_is_statistics_median(values):
    xs = sorted(values)
    got = tally(E, [f"s{i:02d}" for i in range(len(values))], [f"{E}|{v!r}".encode() for v in values])
    assert got.problems == [] and got.values == xs, "the trader's tally reads every value back, sorted"
    m = median_of_sorted(got.values)
    assert math.isfinite(m) and m == expected_median(values)
    if len(xs) % 2 == 0 and not math.isfinite(xs[len(xs) // 2 - 1] + xs[len(xs) // 2]):
        assert m == xs[len(xs) // 2 - 1] / 2 + xs[len(xs) // 2] / 2, "the overflow case halves first"
    else:
        assert m == statistics.median(xs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(finite, huge), min_size=1, max_size=40), extras=st.lists(finite, max_size=4),
       moderate=st.booleans())
def test_published_median_equals_statistics_median(env, values, extras, moderate):
    """End to end through the trader: MGET of every registered decision key, tally, settle."""
    if moderate:
        values = [v % 1e6 for v in values]
    env.r.flushall()
    names = [f"s{i}" for i in range(len(values))]
    env.r.sadd(env.k.strategies, *names)
    for n, v in zip(names, values):
        env.decide(n, v)
    for i, v in enumerate(extras):      # decisions of names that are not registered (deregistered meanwhile)
        env.decide(f"gone{i}", v)
    t = env.trader()
    t.step(env.E)
    (m,) = env.medians()
    assert float(m["median"]) == expected_median(values)
    assert int(m["count"]) == len(values) and m["members"] == ",".join(sorted(names))
    assert env.hash(env.k.trader)["median"] == m["median"] == repr(float(m["median"]))


# -- registrations: the trader admits them ---------------------------------------------------------
def admit(env, *names):
    t = env.trader()
    return registry_admit(t.run_script, env.k, t.meta_args(), list(names))


def registry(env):
    return ({n.decode() for n in env.r.smembers(env.k.strategies)},
            {n.decode() for n in env.r.smembers(env.k.registry_backup)},
            env.hash(env.k.deregistered), env.hash(env.k.meta).get("registry"))


def test_a_strategy_is_registered_by_the_trader_at_its_tick(env, caplog):
    t = env.trader()                                  # running: it listens on NS:joins
    env.started(env.strategy("X", ["sig_X"]))
    assert not env.r.exists(env.k.strategies) and env.asks() == {"X"}
    with caplog.at_level(logging.INFO):
        t.step(env.E)
    assert registry(env)[:3] == ({"X"}, {"X"}, {})
    assert int(env.hash(env.k.meta)["registry"]) >= 1
    assert t.bell.inbox.take_joins() == ([], 0), "the requests were taken"
    assert "registered: X" in messages(caplog) and t.memory.names == {"X"}
    # admitted at the boundary: it counts from this very epoch on (here it has not decided yet)
    assert env.hash(env.k.trader)["reason"] == "1 of 1 strategy missing: X: started, waiting for the next period"


def test_admission_needs_a_live_lease(env):
    env.started(env.strategy("X"))
    y = env.started(env.strategy("Y"))
    z = env.started(env.strategy("Z"))
    y.shutdown()                                      # Y stopped: its lease is released
    env.r.pexpire(z.lease_key, 1)                     # Z died: its lease runs out
    env.clock.advance(0.01)
    before = registry(env)
    r = admit(env, "X", "Y", "Z", "W")               # W: no process ever held the name
    assert r.status == "ok" and r.names == ("X",) and r.backup_size == 1
    after = registry(env)
    assert after[:3] == ({"X"}, {"X"}, {}) and int(after[3]) == int(before[3] or 0) + 1


@pytest.mark.parametrize("lease", ["host:1:abcd", "host:1:abcd|", "host:1:abcd|soon", "host:1:abcd|1.5e12"])
def test_a_lease_without_a_start_time_is_not_admitted(env, lease):
    env.started(env.strategy("X"))
    env.r.set(env.k.lease("strategy", "Y"), lease, px=100_000)
    assert admit(env, "Y").names == () and not env.r.sismember(env.k.strategies, "Y")


@pytest.mark.parametrize("offset,admitted", [(+1, False), (0, False), (-1, True)])
def test_a_deregistration_record_at_or_after_the_start_refuses_the_process(env, offset, admitted):
    """A record newer than the process's start was meant for this very process (it is about to exit);
    an older one was meant for a predecessor under the same name (a restart)."""
    x = env.started(env.strategy("X"))
    assert x.lease_owner == f"{x.settings.owner}|{x.start_ms}"
    env.r.hset(env.k.deregistered, "X", x.start_ms + offset)
    r = admit(env, "X")
    assert (r.names == ("X",)) is admitted
    assert bool(env.r.sismember(env.k.strategies, "X")) is admitted
    assert bool(env.r.hexists(env.k.deregistered, "X")) is not admitted, "admission clears the record"


def test_a_forged_join_does_nothing(env, caplog):
    register(env, "X")
    before = registry(env)
    t = env.trader()
    for junk in ("ghost", "X", "not a name", "a" * 65, "\x1b[31mX", "X\nY", "1" * 30):
        env.r.publish(env.k.joins_channel, junk)
        env.r.publish(env.k.ready_channel, junk)
    caplog.clear()     # (only what this step logs: another test may have left the loggers at INFO)
    with caplog.at_level(logging.INFO):
        t.step(env.E)
    assert registry(env) == before
    assert t.bell.inbox.take_joins() == ([], 0), "the requests were read and taken"
    assert t.bell.inbox.junk >= 10 and not t.bell.inbox.rang, "junk is no name and no ring"
    assert not any("registered" in m for m in messages(caplog))


def test_a_flood_of_join_requests_is_bounded_and_said(env, caplog, monkeypatch):
    """More join requests in a period than any deployment sends: the trader admits at most
    JOINS_PER_TICK valid names, and says the flood once (log, NS:events, metric)."""
    monkeypatch.setattr("redismedian.trader.JOINS_FLOOD", 50)
    register(env, "X")
    t = env.trader()
    for i in range(200):
        env.r.publish(env.k.joins_channel, f"ghost{i}")
    with caplog.at_level(logging.INFO):
        t.step(env.E)
    assert sum("messages on t:joins in one period" in m for m in messages(caplog)) == 1
    events = [f for _id, f in env.r.xrange(env.k.events)]
    assert [f[b"status"] for f in events].count(b"joins_flooded") == 1
    assert registry(env)[0] == {"X"}, "no ghost admitted (no lease behind any)"
    assert len(t.bell.inbox.joins) == 0


# -- grace after Redis lost its data ---------------------------------------------------------------------
def test_after_redis_lost_its_data_a_trader_that_remembers_nothing_waits_two_epochs(env, caplog):
    submit(env, env.E, X=1.0, Y=2.0)
    env.trader().step(env.E)
    env.r.flushall()                                  # Redis lost everything; the strategies run on
    fresh = env.trader()
    states = []
    for e in (env.E + 1, env.E + 2, env.E + 3):
        env.at(e)
        submit(env, e, X=1.0, Y=3.0)                 # each asks to join again (it is not registered)
        with caplog.at_level(logging.INFO):
            fresh.step(e)
        h = env.hash(env.k.trader)
        states.append((h["state"], h["reason"]))
    meta = env.hash(env.k.meta)
    assert (int(meta["recreated"]) // env.period_ms) == env.E + 1, "marked by the admission of an older process"
    assert [m["epoch"] for m in env.medians()] == [str(env.E + 3)]
    assert env.medians()[0]["median"] == "2.0"
    assert [s for s, _ in states] == ["starting", "starting", "ok"]
    for _state, reason in states[:2]:                # every strategy was admitted: the grace holds anyway
        assert f"since epoch {env.E + 1}" in reason and f"from epoch {env.E + 3}" in reason, reason


def test_strategies_started_after_the_record_do_not_mark_it(env):
    env.trader().tick(env.E)                          # the record exists first
    submit(env, env.E, X=1.0)
    assert "recreated" not in env.hash(env.k.meta)
    env.at(env.E + 1)
    t = env.trader(settings=env.settings_for())
    env.r.delete(env.k.lease("trader"))
    submit(env, env.E + 1, X=1.0)
    t.step(env.E + 1)
    assert "recreated" not in env.hash(env.k.meta) and [m["epoch"] for m in env.medians()] == [str(env.E + 1)]


@pytest.mark.parametrize("exc,raised", [
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), True),
    (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), True),
    (redis.exceptions.NoPermissionError("this user has no permissions to access one of the keys"), True),
    (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
])
def test_reading_the_registry_tells_an_outage_from_garbage(env, exc, raised):
    """READONLY (a demoted master) and LOADING are outages the loop rides out, a refusal is a refusal;
    only garbage in the way is a data problem, for the next script to repair."""
    t = env.trader()
    t.tick(env.E)

    class Pipe:
        def __getattr__(self, name):
            return lambda *a, **kw: self

        def execute(self):
            raise exc
    t.client.pipeline = lambda transaction=True: Pipe()
    if raised:
        with pytest.raises(type(exc)):
            t.read_registry()
    else:
        assert t.read_registry() is None


def test_a_trouble_seen_again_within_the_quiet_epochs_is_the_same_episode(env):
    """Said once per episode: an early ring forged every period beats the decisions only in some
    epochs, and must not be one WARNING every other period."""
    from redismedian.trader import EPISODE_QUIET_EPOCHS as Q
    t = env.trader()
    e = env.E
    assert t._new_episode("doorbell", e)
    assert not t._new_episode("doorbell", e + 2)            # skipped an epoch: the same episode
    assert not t._new_episode("doorbell", e + 2 + Q)        # Q quiet epochs: still the same one
    assert t._new_episode("doorbell", e + 3 + 2 * Q)        # more than Q quiet epochs: a new one
    assert t._new_episode("junk", e + 3 + 2 * Q)            # each kind on its own
