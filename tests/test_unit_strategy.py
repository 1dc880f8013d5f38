"""Strategy: submits only on current, ok, finite signals; otherwise records why; registration rules."""
import logging

import pytest

from redismedian import keys as K
from redismedian.common import EXIT_FAILURE
from redismedian.strategy import Reading, assess, default_decide, default_signal_timeout_ms, run_decide
from tests import plugins
from tests.unit_support import env, messages  # noqa: F401 - fixture

E = 1000


def ok(epoch=E, value="0.5"):
    return Reading(str(epoch), value, "ok", "")


# -- assess (pure) -------------------------------------------------------------------------------
def test_all_current_signals_give_values_in_signals_order():
    values, reason = assess(["g2", "g1"], E, {"g1": ok(value="0.25"), "g2": ok(value="1e-3")}, {})
    assert reason == "" and values == {"g2": 0.001, "g1": 0.25}
    assert list(values) == ["g2", "g1"]


def test_stored_hashes_fill_in_what_the_feed_missed():
    values, reason = assess(["g1", "g2"], E, {"g1": ok()}, {"g2": ok(value="2")})
    assert values == {"g1": 0.5, "g2": 2.0} and reason == ""


@pytest.mark.parametrize("stored,reason", [
    (None, "signal g1 missing (generator not running?)"),
    (Reading(str(E - 1), "0.5", "ok", ""), f"signal g1 stale (last epoch {E - 1})"),
    (Reading(str(E - 40), "0.5", "error", "x"), f"signal g1 stale (last epoch {E - 40})"),
    (Reading(str(E + 1), "0.5", "ok", ""), f"signal g1 is for a later epoch ({E + 1})"),
    (Reading("soon", "0.5", "ok", ""), "signal g1 malformed (epoch 'soon')"),
    (Reading(None, "0.5", "ok", ""), "signal g1 malformed (epoch None)"),
    (Reading(str(E), "", "error", "signal function raised RuntimeError: boom"),
     "signal g1 error: signal function raised RuntimeError: boom"),
    (Reading(str(E), "", "error", None), "signal g1 error: no message"),
    (Reading(str(E), "0.5", "paused", ""), "signal g1 has status 'paused'"),
    (Reading(str(E), "0.5", None, ""), "signal g1 has status None"),
    (Reading(str(E), "nan", "ok", ""), "signal g1 is not a finite number ('nan')"),
    (Reading(str(E), "inf", "ok", ""), "signal g1 is not a finite number ('inf')"),
    (Reading(str(E), "abc", "ok", ""), "signal g1 is not a finite number ('abc')"),
    (Reading(str(E), None, "ok", ""), "signal g1 is not a finite number (None)"),
])
def test_anything_else_is_no_decision_with_the_reason(stored, reason):
    assert assess(["g1"], E, {}, {"g1": stored}) == (None, reason)


def test_feed_entries_are_checked_too():
    assert assess(["g1"], E, {"g1": Reading(str(E), "-inf", "ok", "")}, {}) == (
        None, "signal g1 is not a finite number ('-inf')")
    assert assess(["g1"], E, {"g1": Reading(str(E), "", "error", "bad")}, {}) == (None, "signal g1 error: bad")


def test_every_problem_is_named():
    values, reason = assess(["g1", "g2", "g3"], E, {"g2": ok()},
                            {"g1": Reading(str(E - 2), "1", "ok", ""), "g3": None})
    assert values is None
    assert reason == f"signal g1 stale (last epoch {E - 2}); signal g3 missing (generator not running?)"


def test_long_garbage_is_cut_in_reasons():
    _v, reason = assess(["g1"], E, {}, {"g1": Reading("x" * 5000, "1", "ok", "")})
    assert len(reason) < 100


def test_default_decide_is_the_mean():
    assert default_decide({"a": 1.0}) == 1.0
    assert default_decide({"a": 1.0, "b": 2.0, "c": 6.0}) == 3.0


@pytest.mark.parametrize("fn,needle", [
    (plugins.decide_raises, "decide function raised ValueError: decide broke"),
    (lambda v: "0.5", "decide function returned str '0.5', not a number"),
    (lambda v: None, "not a number"), (lambda v: float("nan"), "not a finite number"),
    (lambda v: float("inf"), "not a finite number"), (lambda v: 10 ** 400, "not a finite number"),
    (lambda v: True, "not a number"), (lambda v: [1.0], "not a number"),
])
def test_bad_decisions_are_errors(fn, needle):
    value, error = run_decide(fn, {"g1": 0.5})
    assert value == "" and needle in error


def test_decide_gets_a_copy():
    def mutate(v):
        v.clear()
        return 1
    values = {"g1": 0.5}
    assert run_decide(mutate, values) == ("1.0", "")
    assert values == {"g1": 0.5}


def test_default_timeouts():
    assert default_signal_timeout_ms(60_000) == 30_000


# -- submitting ----------------------------------------------------------------------------------
def test_startup_registers_and_reports_starting(env):
    s = env.started(env.strategy("X", ["g1", "g2"]))
    assert env.r.smembers(env.k.strategies) == {b"X"}
    assert env.r.get(s.lease_key).decode() == s.settings.owner
    st = env.hash(env.k.strategy_status("X"))
    assert st["state"] == "starting" and st["signals"] == "g1,g2" and st["value"] == ""
    assert "registered" in st["reason"] and st["epoch"] == str(env.E)
    assert not env.r.exists(env.k.decisions(env.E))


def test_submits_when_every_signal_is_current(env):
    env.publish(env.E, g1=0.25, g2=0.75)
    seen = []

    def decide(values):
        seen.append(list(values.items()))
        return sum(values.values())
    s = env.started(env.strategy("X", ["g2", "g1"], decide=decide))
    s.step(env.E)
    assert seen == [[("g2", 0.75), ("g1", 0.25)]], "called with {generator: value} in --signals order"
    d = env.hash(env.k.decision("X"))
    assert d["value"] == "1.0" and d["epoch"] == str(env.E)
    assert env.r.zrange(env.k.decisions(env.E), 0, -1, withscores=True) == [(b"X", 1.0)]
    st = env.hash(env.k.strategy_status("X"))
    assert (st["state"], st["reason"], st["value"], st["epoch"]) == ("ok", "", "1.0", str(env.E))
    ttl = K.ttl_ms(env.period_ms, K.DECISION_TTL_PERIODS)
    assert env.r.pttl(env.k.decision("X")) == ttl and env.r.pttl(env.k.decisions(env.E)) == ttl
    assert env.r.pttl(env.k.strategy_status("X")) == K.ttl_ms(env.period_ms, K.STATUS_TTL_PERIODS)
    assert env.r.blocked == [], "all signals were on the feed: no waiting"


def test_default_decision_is_the_mean(env):
    env.publish(env.E, g1=0.25, g2=0.5, g3=1.5)
    s = env.started(env.strategy("Y", ["g1", "g2", "g3"]))
    s.step(env.E)
    assert env.hash(env.k.decision("Y"))["value"] == repr((0.25 + 0.5 + 1.5) / 3)


def test_waits_on_the_feed_until_the_signals_arrive(env):
    """Signals written after the strategy began waiting are picked up from the feed."""
    s = env.started(env.strategy("X", ["g1", "g2"], signal_timeout_ms=10_000))
    env.publish(env.E, g1=1.0)
    orig = env.r.xread
    calls = []

    def xread(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            env.publish(env.E, g2=3.0)   # g2 arrives while X is blocked
        return orig(*a, **kw)
    env.r.xread = xread
    env.at(env.E, 0.0)
    s.step(env.E)
    assert env.hash(env.k.decision("X"))["value"] == "2.0"
    assert 2 <= len(calls) <= 4 and len(env.r.blocked) <= 3


def test_the_feed_is_read_from_the_boundary_on(env):
    """Entries written before the epoch began (even for the right epoch number) are not re-read as new."""
    env.publish(env.E, g1=1.0)
    s = env.started(env.strategy("X", ["g1"], signal_timeout_ms=10_000))
    env.at(env.E, 0.2)
    s.step(env.E)
    assert env.hash(env.k.strategy_status("X"))["state"] == "ok"
    # next epoch: g1 is silent, X waits until its deadline and reports g1 stale
    env.at(env.E + 1, 0.0)
    s.step(env.E + 1)
    st = env.hash(env.k.strategy_status("X"))
    assert st["state"] == "error" and st["reason"] == f"signal g1 stale (last epoch {env.E})"
    assert env.clock.now_ms() >= (env.E + 1) * env.period_ms + 10_000


def test_waiting_is_blocking_not_polling(env):
    s = env.started(env.strategy("X", ["g1"], signal_timeout_ms=5_000))
    env.at(env.E, 0.0)
    s.step(env.E)
    waits = [t for cmd, t in env.r.blocked if cmd == "xread"]
    assert sum(waits) == pytest.approx(5.0, abs=0.01)
    assert len(waits) <= 6, "each read blocks up to a second: a handful of calls, not a busy loop"


@pytest.mark.parametrize("setup,reason", [
    (lambda env: None, "signal g1 missing (generator not running?)"),
    (lambda env: env.publish(env.E - 1, g1=0.5), "signal g1 stale (last epoch {E1})"),
    (lambda env: env.publish(env.E, g1=float("nan")),
     "signal g1 error: signal function returned nan, not a finite number"),
])
def test_no_submission_without_a_good_signal(env, setup, reason):
    setup(env)
    s = env.started(env.strategy("X", ["g1"]))
    env.at(env.E, 0.6)    # past the signal deadline
    s.step(env.E)
    st = env.hash(env.k.strategy_status("X"))
    assert st["state"] == "error" and st["reason"] == reason.format(E1=env.E - 1) and st["value"] == ""
    assert not env.r.exists(env.k.decisions(env.E)) and not env.r.exists(env.k.decision("X"))


def test_error_signal_from_a_raising_generator(env):
    g = env.started(env.generator("g1", fn=plugins.sig_a_unless_file))
    env.at(env.E, 0.0)
    import os
    os.environ["REDISMEDIAN_TEST_FAIL_FILE"] = __file__
    try:
        g.step(env.E)
    finally:
        del os.environ["REDISMEDIAN_TEST_FAIL_FILE"]
    s = env.started(env.strategy("X", ["g1"]))
    s.step(env.E)
    assert env.hash(env.k.strategy_status("X"))["reason"] == \
        "signal g1 error: signal function raised RuntimeError: injected failure"


def test_one_bad_signal_blocks_the_decision(env):
    env.publish(env.E, g1=0.5)
    env.publish(env.E - 1, g2=0.5)
    s = env.started(env.strategy("Y", ["g1", "g2"]))
    env.at(env.E, 0.6)
    s.step(env.E)
    assert env.hash(env.k.strategy_status("Y"))["reason"] == f"signal g2 stale (last epoch {env.E - 1})"
    assert not env.r.exists(env.k.decisions(env.E))


def test_decide_failure_is_recorded(env):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"], decide=plugins.decide_raises))
    s.step(env.E)
    st = env.hash(env.k.strategy_status("X"))
    assert st["state"] == "error" and st["reason"] == "decide function raised ValueError: decide broke"
    assert not env.r.exists(env.k.decisions(env.E))


def test_keeps_running_through_errors_and_recovers(env, caplog):
    s = env.strategy("X", ["g1"])
    outcomes = []

    def step(epoch, orig=s.step):
        if epoch % 2 == 0:
            env.publish(epoch, g1=float(epoch % 7))
        else:
            env.clock.set_ms(epoch * env.period_ms + env.period_ms * 6 // 10)
        orig(epoch)
        outcomes.append(env.hash(env.k.strategy_status("X"))["state"])
    s.step = step
    with caplog.at_level(logging.INFO):
        assert s.run(max_epochs=4) == 0
    assert outcomes == ["ok", "error", "ok", "error"]   # E is even


def test_a_decision_too_late_for_its_epoch_is_not_submitted(env):
    env.publish(env.E, g1=0.5)

    def slow(values):
        env.at(env.E + 1, 0.01)       # the decision took longer than the period
        return 1.0
    s = env.started(env.strategy("X", ["g1"], decide=slow))
    s.step(env.E)
    st = env.hash(env.k.strategy_status("X"))
    assert st["state"] == "error" and "came too late" in st["reason"] and st["value"] == ""
    assert not env.r.exists(env.k.decisions(env.E)) and not env.r.exists(env.k.decisions(env.E + 1))


def test_the_last_submission_rings_the_traders_doorbell(env):
    env.publish(env.E, g1=0.5)
    x = env.started(env.strategy("X", ["g1"]))
    y = env.started(env.strategy("Y", ["g1"]))
    x.step(env.E)
    assert not env.r.exists(env.k.ready(env.E)), "1 of 2: not complete yet"
    y.step(env.E)
    assert env.r.lrange(env.k.ready(env.E), 0, -1) == [b"Y"]
    assert 0 < env.r.pttl(env.k.ready(env.E)) <= K.ttl_ms(env.period_ms, K.READY_TTL_PERIODS)


# -- registration --------------------------------------------------------------------------------
def test_a_deregistered_strategy_exits_cleanly_and_stays_out(env, caplog):
    env.publish(env.E, g1=0.5)
    s = env.strategy("X", ["g1"])
    s.run(max_epochs=1)
    s.started = False          # run() released the name on the way out: take it again
    env.started(s)
    assert env.r.sismember(env.k.strategies, "X")
    env.r.srem(env.k.strategies, "X")             # `redismedian deregister X`
    env.publish(env.E + 1, g1=0.5)
    with caplog.at_level(logging.INFO):
        assert s.run(max_epochs=3) == 0
    assert not env.r.sismember(env.k.strategies, "X"), "not re-registered"
    assert not env.r.exists(env.k.decisions(env.E + 1)), "no decision after deregistration"
    assert any("X was deregistered" in m and "exiting" in m for m in messages(caplog))
    assert not env.r.exists(s.lease_key), "the name is released"


def test_deregistration_is_noticed_within_one_period(env):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    env.r.srem(env.k.strategies, "X")
    from redismedian.component import Exit
    with pytest.raises(Exit) as e:
        s.step(env.E)
    assert e.value.code == 0 and "deregistered" in str(e.value)


def test_restarting_registers_again(env):
    s = env.started(env.strategy("X", ["g1"]))
    env.r.srem(env.k.strategies, "X")
    s.shutdown()
    env.started(env.strategy("X", ["g1"]))
    assert env.r.sismember(env.k.strategies, "X")


@pytest.mark.parametrize("how", ["flushall", "new instance"])
def test_after_redis_lost_its_data_the_strategy_registers_again(env, caplog, how):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    s.step(env.E)
    if how == "flushall":
        env.r.flushall()
    else:
        env.r.delete(env.k.strategies)
        env.r.hset(env.k.meta, "instance", "restored-elsewhere")
    env.at(env.E + 1)
    env.publish(env.E + 1, g1=0.5)
    with caplog.at_level(logging.WARNING):
        s.step(env.E + 1)
    assert env.r.sismember(env.k.strategies, "X")
    assert env.hash(env.k.decision("X"))["epoch"] == str(env.E + 1)
    assert any("re-registered X after Redis lost its data" in m for m in messages(caplog))


def test_a_strategy_whose_name_was_taken_over_stops(env, caplog):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    env.r.set(s.lease_key, "thief:9:ffff", px=10_000_000)
    with caplog.at_level(logging.ERROR):
        assert s.run(max_epochs=1) == EXIT_FAILURE
    assert "taken over by another process (thief:9:ffff)" in messages(caplog, logging.ERROR)[-1]
    assert not env.r.exists(env.k.decisions(env.E))


def test_a_strategy_waiting_out_its_signal_timeout_keeps_its_name(env):
    """Two reports can be a period plus the signal timeout apart: the name lease outlives that gap, so
    a second process started under the same name in between is refused, not handed the name."""
    from redismedian.scripts import LEASE_ACQUIRE
    s = env.started(env.strategy("X", ["g1"], signal_timeout_ms=env.period_ms // 2))
    env.publish(env.E, g1=1.0)
    env.at(env.E, 0.0)
    s.step(env.E)                          # reported right at the boundary
    rival = []
    orig = s.report

    def report(*a, **kw):                  # just before X's next report, a rival tries the name
        env.clock.advance(0.005)
        rival.append(env.r.eval(LEASE_ACQUIRE, 1, s.lease_key, "rival:1:0", 1000)[0])
        return orig(*a, **kw)
    s.report = report
    env.at(env.E + 1, 0.0)
    s.step(env.E + 1)                      # g1 is silent: X waits out its whole signal timeout
    assert env.clock.now_ms() >= (env.E + 1) * env.period_ms + env.period_ms // 2
    assert rival == [0], "the rival must find the name held"
    assert env.r.get(s.lease_key) == s.settings.owner.encode()
