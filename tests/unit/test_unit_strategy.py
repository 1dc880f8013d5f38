"""Strategy: submits only on current, ok, finite signals; otherwise records why; registration rules."""
import logging

import pytest

from redismedian import keys as K
from redismedian.common import EXIT_FAILURE
from redismedian.component import Exit
from redismedian.scripts import Report, parse_report
from redismedian.status import deregister
from redismedian.strategy import META_CHECK_EVERY, Reading, assess, default_decide, default_signal_timeout_ms, run_decide
from tests import plugins
from tests.unit_support import messages

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
def report(env, name="X") -> Report | None:
    """The strategy's decision key as the trader and ``status`` read it."""
    return parse_report(env.r.get(env.k.decision(name)))


def counted(env, epoch=None) -> int:
    """How many registered strategies rang in a submission for the epoch (NS:count:<E>)."""
    return int(env.r.get(env.k.count(env.E if epoch is None else epoch)) or 0)


def test_startup_reports_starting_and_asks_the_trader_to_register_it(env, caplog):
    with caplog.at_level(logging.INFO):
        s = env.started(env.strategy("X", ["g1", "g2"]))
    assert not env.r.exists(env.k.strategies), "a strategy never writes the registry"
    assert env.asks() == {"X"} and s.registered is False
    assert s.start_ms == env.clock.now_ms()
    assert env.r.get(s.lease_key).decode() == f"{s.settings.owner}|{s.start_ms}" == s.lease_owner
    assert env.r.get(env.k.decision("X")).decode() == f"{env.E}|!starting|started, waiting for the next period"
    assert report(env) == Report(env.E, "starting", "", "started, waiting for the next period")
    assert env.r.pttl(env.k.decision("X")) == K.ttl_ms(env.period_ms, K.DECISION_TTL_PERIODS)
    assert counted(env) == 0 and env.E not in env.rings()
    assert "started X (signals g1,g2, period 3600s): asked the trader to register it" in messages(caplog)


def test_a_strategy_writes_only_its_own_keys_and_the_doorbells(env):
    """Every key has one writer: a strategy writes its lease and decision key, and may ring
    NS:count:<E> (and publish on the NS:ready and NS:joins channels, which store nothing); nothing
    else, registered or not."""
    env.trader().tick(env.E)                        # the deployment record exists (the trader made it)
    env.publish(env.E, g1=0.5)
    allowed = {env.k.lease("strategy", "X"), env.k.decision("X"), env.k.count(env.E)}

    def snapshot():
        return {k.decode(): (env.r.type(k), env.r.dump(k)) for k in env.r.keys("*")}

    def written_by(action):
        before = snapshot()
        action()
        after = snapshot()
        return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}

    s = env.strategy("X", ["g1"])
    assert written_by(lambda: env.started(s)) <= allowed
    assert written_by(lambda: s.step(env.E)) <= allowed          # not registered yet
    env.admit("X")
    env.r.delete(env.k.decision("X"))
    assert written_by(lambda: s.step(env.E)) <= allowed          # registered: counts and rings
    assert counted(env) == 1 and env.rings() == [env.E]


def test_the_strategy_says_when_the_trader_admitted_it(env, caplog):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    with caplog.at_level(logging.INFO):
        s.step(env.E)
        env.admit("X")
        env.forget()
        env.at(env.E + 1)
        env.publish(env.E + 1, g1=0.5)
        s.step(env.E + 1)
    msgs = messages(caplog)
    assert "X decided 0.5 (not registered yet: waiting for the trader to admit it)" in msgs
    assert msgs.index("registered X (admitted by the trader)") < msgs.index("X submitted 0.5")
    assert s.registered is True and not env.asks(), "a registered strategy does not ask again"


def test_a_strategy_not_yet_admitted_writes_its_decision_but_does_not_count(env):
    env.publish(env.E, g1=0.5)
    x = env.started(env.strategy("X", ["g1"]))
    y = env.started(env.strategy("Y", ["g1"]))
    env.admit("X")
    env.forget()
    y.step(env.E)
    assert report(env, "Y") == Report(env.E, "ok", "0.5", "")
    assert counted(env) == 0 and env.E not in env.rings(), "no count, no doorbell"
    assert env.asks() == {"Y"}, "it asks again at each report"
    x.step(env.E)
    assert counted(env) == 1 and env.rings() == [env.E], \
        "X completes the registered set alone"


def test_an_unadmitted_decision_is_left_out_of_the_epoch_it_was_made_in(env):
    """Y starts after the trader's boundary tick: its decision is read by nobody in that epoch; the next
    tick admits it, and from then on it counts."""
    env.publish(env.E, g1=1.0)
    x = env.started(env.strategy("X", ["g1"], decide=lambda v: 1.0))
    env.admit("X")
    x.step(env.E)
    y = env.strategy("Y", ["g1"], decide=lambda v: 5.0)
    t = env.trader()
    orig = env.r.mget

    def mget(*a, **kw):                              # after the tick, before the read: Y starts and decides
        if not y.started:
            env.started(y)
            y.step(env.E)
        return orig(*a, **kw)
    env.r.mget = mget
    t.step(env.E)
    assert report(env, "Y") == Report(env.E, "ok", "5.0", "")
    env.at(env.E + 1)
    env.publish(env.E + 1, g1=1.0)
    x.step(env.E + 1)
    y.step(env.E + 1)
    t.step(env.E + 1)
    assert [(m["epoch"], m["median"], m["members"]) for m in env.medians()] == [
        (str(env.E), "1.0", "X"), (str(env.E + 1), "3.0", "X,Y")]


def test_submits_when_every_signal_is_current(env):
    env.publish(env.E, g1=0.25, g2=0.75)
    seen = []

    def decide(values):
        seen.append(list(values.items()))
        return sum(values.values())
    s = env.started(env.strategy("X", ["g2", "g1"], decide=decide))
    env.admit("X")
    s.step(env.E)
    assert seen == [[("g2", 0.75), ("g1", 0.25)]], "called with {generator: value} in --signals order"
    assert env.r.get(env.k.decision("X")) == f"{env.E}|1.0".encode()
    assert report(env) == Report(env.E, "ok", "1.0", "")
    assert env.r.pttl(env.k.decision("X")) == K.ttl_ms(env.period_ms, K.DECISION_TTL_PERIODS)
    ready_ttl = K.ttl_ms(env.period_ms, K.READY_TTL_PERIODS)
    assert counted(env) == 1 and env.r.pttl(env.k.count(env.E)) == ready_ttl
    assert env.r.blocked == [], "all signals were on the feed: no waiting"


def test_default_decision_is_the_mean(env):
    env.publish(env.E, g1=0.25, g2=0.5, g3=1.5)
    s = env.started(env.strategy("Y", ["g1", "g2", "g3"]))
    s.step(env.E)
    assert report(env, "Y").value == repr((0.25 + 0.5 + 1.5) / 3)


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
    assert report(env).value == "2.0"
    assert 2 <= len(calls) <= 4 and len(env.r.blocked) <= 3


def test_the_feed_is_read_from_the_boundary_on(env):
    """Entries written before the epoch began (even for the right epoch number) are not re-read as new."""
    env.publish(env.E, g1=1.0)
    s = env.started(env.strategy("X", ["g1"], signal_timeout_ms=10_000))
    env.at(env.E, 0.2)
    s.step(env.E)
    assert report(env).state == "ok"
    # next epoch: g1 is silent, X waits until its deadline and reports g1 stale
    env.at(env.E + 1, 0.0)
    s.step(env.E + 1)
    assert report(env) == Report(env.E + 1, "error", "", f"signal g1 stale (last epoch {env.E})")
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
    env.admit("X")
    env.at(env.E, 0.6)    # past the signal deadline
    s.step(env.E)
    assert report(env) == Report(env.E, "error", "", reason.format(E1=env.E - 1))
    assert counted(env) == 0 and env.E not in env.rings()


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
    assert report(env).reason == "signal g1 error: signal function raised RuntimeError: injected failure"


def test_one_bad_signal_blocks_the_decision(env):
    env.publish(env.E, g1=0.5)
    env.publish(env.E - 1, g2=0.5)
    s = env.started(env.strategy("Y", ["g1", "g2"]))
    env.admit("Y")
    env.at(env.E, 0.6)
    s.step(env.E)
    assert report(env, "Y") == Report(env.E, "error", "", f"signal g2 stale (last epoch {env.E - 1})")
    assert counted(env) == 0


def test_decide_failure_is_recorded(env):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"], decide=plugins.decide_raises))
    env.admit("X")
    s.step(env.E)
    assert report(env) == Report(env.E, "error", "", "decide function raised ValueError: decide broke")
    assert counted(env) == 0


def test_keeps_running_through_errors_and_recovers(env, caplog):
    s = env.strategy("X", ["g1"])
    outcomes = []

    def step(epoch, orig=s.step):
        if epoch % 2 == 0:
            env.publish(epoch, g1=float(epoch % 7))
        else:
            env.clock.set_ms(epoch * env.period_ms + env.period_ms * 6 // 10)
        orig(epoch)
        outcomes.append(report(env).state)
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
    env.admit("X")
    s.step(env.E)
    assert report(env) == Report(env.E, "error", "", f"decision for epoch {env.E} came too late "
                                                     "(the epoch is over)")
    assert counted(env, env.E) == 0 and counted(env, env.E + 1) == 0


def test_the_last_submission_rings_the_traders_doorbell(env):
    env.publish(env.E, g1=0.5)
    x = env.started(env.strategy("X", ["g1"]))
    y = env.started(env.strategy("Y", ["g1"]))
    env.admit("X", "Y")
    x.step(env.E)
    assert counted(env) == 1 and env.E not in env.rings(), "1 of 2: not complete yet"
    y.step(env.E)
    assert counted(env) == 2 and env.rings() == [env.E]


# -- registration --------------------------------------------------------------------------------
def deregister_by(env, how):
    """``redismedian deregister X`` records the time at once; a hand ``SREM`` is recorded by the
    trader's registry guard at its next tick."""
    if how == "deregister":
        deregister(env.r, env.k, "X")
    else:
        env.r.srem(env.k.strategies, "X")


@pytest.mark.parametrize("how", ["deregister", "srem"])
def test_a_deregistered_strategy_exits_cleanly_and_stays_out(env, caplog, how):
    env.publish(env.E, g1=0.5)
    s = env.strategy("X", ["g1"])
    s.run(max_epochs=1)
    s.started = False          # run() released the name on the way out: take it again
    env.started(s)
    env.admit("X")
    t = env.trader()
    t.step(env.E)                                   # the trader runs all along
    deregister_by(env, how)
    env.at(env.E + 1)
    t.step(env.E + 1)
    assert env.r.hexists(env.k.deregistered, "X")
    env.publish(env.E + 1, g1=0.5)
    env.forget()
    with caplog.at_level(logging.INFO):
        assert s.run(max_epochs=3) == 0
    assert any("X was deregistered" in m and "exiting" in m for m in messages(caplog))
    assert not env.r.exists(s.lease_key), "the name is released"
    assert "X" not in env.asks(), "it does not ask to register again"
    assert counted(env, env.E + 1) == 0, "its last decision counts for nothing"
    env.at(env.E + 2)
    t.step(env.E + 2)
    assert not env.r.sismember(env.k.strategies, "X"), "not re-registered"


def test_deregistration_is_noticed_at_the_next_report(env):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    env.admit("X")
    deregister(env.r, env.k, "X")
    with pytest.raises(Exit) as e:
        s.step(env.E)
    assert e.value.code == 0 and "deregistered" in str(e.value)


def test_a_hand_srem_is_noticed_once_the_trader_recorded_it(env, caplog):
    """Before the trader's guard records the SREM, the strategy cannot tell it from a lost registry and
    asks to join again; the trader then refuses the join (the record is newer than the process), and
    the next report exits."""
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    env.admit("X")
    t = env.trader()
    t.step(env.E)                                   # the trader runs all along (and publishes X's epoch)
    env.at(env.E + 1)
    env.publish(env.E + 1, g1=0.5)
    s.step(env.E + 1)
    assert s.registered is True
    env.r.srem(env.k.strategies, "X")
    with caplog.at_level(logging.WARNING):
        s.step(env.E + 1)
    assert env.asks() == {"X"}
    assert any("X is no longer in t:strategies and was not deregistered" in m for m in messages(caplog))
    env.at(env.E + 2)
    t.step(env.E + 2)
    assert not env.r.sismember(env.k.strategies, "X") and env.r.hexists(env.k.deregistered, "X")
    assert t.bell.inbox.take_joins() == ([], 0), "the join was taken, and refused"
    with pytest.raises(Exit) as e:
        s.step(env.E + 2)
    assert e.value.code == 0 and "deregistered" in str(e.value)


def test_restarting_registers_again(env):
    s = env.started(env.strategy("X", ["g1"]))
    env.admit("X")
    deregister(env.r, env.k, "X")
    s.shutdown()
    env.clock.advance(0.001)                          # the new process starts after the record
    t = env.trader()
    s2 = env.started(env.strategy("X", ["g1"]))
    assert "X" in env.asks() and not env.r.sismember(env.k.strategies, "X")
    t.step(env.E)
    assert env.r.sismember(env.k.strategies, "X") and not env.r.hexists(env.k.deregistered, "X")
    env.publish(env.E, g1=0.5)
    s2.step(env.E)
    assert s2.registered is True and counted(env) == 1


def test_a_strategy_joins_again_when_its_registration_vanished_without_a_record(env, caplog):
    env.publish(env.E, g1=0.5)
    t = env.trader()
    s = env.started(env.strategy("X", ["g1"]))
    env.admit("X")
    s.step(env.E)
    assert s.registered is True
    env.r.delete(env.k.strategies, env.k.registry_backup)   # gone, and nobody deregistered X
    env.at(env.E + 1)
    env.publish(env.E + 1, g1=0.5)
    with caplog.at_level(logging.INFO):
        s.step(env.E + 1)
        assert env.asks() == {"X"} and s.registered is False
        t.step(env.E + 1)
        assert env.r.sismember(env.k.strategies, "X")
        env.at(env.E + 2)
        env.publish(env.E + 2, g1=0.5)
        s.step(env.E + 2)
    msgs = messages(caplog)
    assert any("X is no longer in t:strategies and was not deregistered (Redis lost its data, or the registry "
               "was deleted); asked the trader to register it again" in m for m in msgs)
    assert "registered X (admitted by the trader)" in msgs and s.registered is True


@pytest.mark.parametrize("how", ["flushall", "new instance"])
def test_after_redis_lost_its_data_the_strategy_registers_again(env, caplog, how):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    env.admit("X")
    s.step(env.E)
    if how == "flushall":
        env.r.flushall()
    else:
        env.r.delete(env.k.strategies, env.k.registry_backup)
        env.r.hset(env.k.meta, "instance", "restored-elsewhere")
    env.at(env.E + 1)
    env.publish(env.E + 1, g1=0.5)
    with caplog.at_level(logging.WARNING):
        s.step(env.E + 1)
    assert report(env) == Report(env.E + 1, "ok", "0.5", "")
    assert env.asks() == {"X"}, "its registration vanished: it asks again at once"
    msgs = messages(caplog)
    assert any("asked the trader to register it again" in m for m in msgs)
    # The deployment record itself is checked every META_CHECK_EVERY reports (the hot path stays
    # small): by then the strategy has seen the new one.
    for e in range(env.E + 2, env.E + 2 + META_CHECK_EVERY):
        env.at(e)
        env.publish(e, g1=0.5)
        with caplog.at_level(logging.WARNING):
            s.step(e)
    assert s.instance == env.hash(env.k.meta)["instance"]
    assert any("Redis lost its data" in m for m in messages(caplog))
    t = env.trader()                                  # a trader (re)starts: X asks again at its next report
    env.at(e + 1)
    env.publish(e + 1, g1=0.5)
    s.step(e + 1)
    t.step(e + 1)
    assert env.r.sismember(env.k.strategies, "X")


def test_a_strategy_whose_name_was_taken_over_stops(env, caplog):
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy("X", ["g1"]))
    env.admit("X")
    env.r.set(s.lease_key, "thief:9:ffff", px=10_000_000)
    with caplog.at_level(logging.ERROR):
        assert s.run(max_epochs=1) == EXIT_FAILURE
    assert "taken over by another process (thief:9:ffff)" in messages(caplog, logging.ERROR)[-1]
    assert report(env).state == "starting", "no decision written under a name it does not hold"
    assert counted(env) == 0
    assert env.r.get(s.lease_key) == b"thief:9:ffff"


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
    assert env.r.get(s.lease_key) == s.lease_owner.encode()


# -- the fast path (plain commands) ----------------------------------------------------------------
def paths_taken(s):
    """Record how a strategy reports: "fast" (plain commands) or "STRATEGY_REPORT" (the script)."""
    from redismedian import scripts
    ran = []
    run_script, fast_report = s.run_script, s.fast_report

    def run(source, keys, args):
        ran.append("STRATEGY_REPORT" if source == scripts.STRATEGY_REPORT else "other")
        return run_script(source, keys, args)

    def fast(*a, **kw):
        ran.append("fast")
        return fast_report(*a, **kw)
    s.run_script, s.fast_report = run, fast
    return ran


def registered_strategy(env, name="X", **kw):
    """A strategy that made its first report and was admitted, at epoch E (the next report is hot)."""
    env.publish(env.E, g1=0.5)
    s = env.started(env.strategy(name, ["g1"], **kw))
    env.admit(name)
    s.step(env.E)
    assert s.registered is True
    return s


def test_a_registered_strategy_reports_through_the_hot_path(env):
    x = registered_strategy(env, "X")
    y = registered_strategy(env, "Y")
    ran_x, ran_y = paths_taken(x), paths_taken(y)
    e = env.E + 1
    env.forget()
    env.at(e)
    env.publish(e, g1=0.25)
    env.r.pexpire(x.lease_key, 5)
    x.step(e)
    assert ran_x == ["fast"]
    assert report(env, "X") == Report(e, "ok", "0.25", "")
    assert env.r.pttl(env.k.decision("X")) == K.ttl_ms(env.period_ms, K.DECISION_TTL_PERIODS)
    assert env.r.pttl(x.lease_key) == x.lease_ttl_ms, "the lease is renewed"
    assert counted(env, e) == 1 and e not in env.rings()
    y.step(e)
    assert ran_y == ["fast"]
    assert counted(env, e) == 2 and env.rings() == [e], "the last one rings"
    assert 0 < env.r.pttl(env.k.count(e)) <= K.ttl_ms(env.period_ms, K.READY_TTL_PERIODS)


def test_the_hot_path_writes_the_text_the_full_report_writes(env):
    """report_text (Python) and STRATEGY_REPORT (Lua) build the same decision text, with a decision
    and without one (the reason, cut the same way)."""
    x = registered_strategy(env, "X")
    for value, state, reason in [("0.125", "ok", ""), ("", "error", "signal g1 stale (last epoch 3)"),
                                 ("", "error", "r" * 2500), ("-1e-07", "ok", "")]:
        x.reports_since_meta_check = 0
        hot = x.report(env.E, value, state, reason)
        hot_text = env.r.get(env.k.decision("X"))
        x.reports_since_meta_check = META_CHECK_EVERY      # the full report (it checks the record)
        full = x.report(env.E, value, state, reason)
        assert env.r.get(env.k.decision("X")) == hot_text
        assert hot._replace(now=0, instance="", changed=False) == full._replace(now=0, instance="", changed=False)


@pytest.mark.parametrize("trouble", ["deregistered", "srem", "lease taken", "lease lost", "registry garbage",
                                     "lease garbage", "lease garbage without expiry"])
def test_the_hot_path_hands_anything_unusual_to_the_full_report(env, caplog, trouble):
    """Whatever the fast path's replies show that is not as expected, the full report follows at once
    and judges it as it always did."""
    x = registered_strategy(env, "X")
    ran = paths_taken(x)
    e = env.E + 1
    env.forget()
    env.at(e)
    env.publish(e, g1=0.5)
    if trouble == "deregistered":
        deregister(env.r, env.k, "X")
    elif trouble == "srem":
        env.r.srem(env.k.strategies, "X")
    elif trouble == "lease taken":
        env.r.set(x.lease_key, "thief:9:ffff", px=10_000_000)
    elif trouble == "lease lost":
        env.r.delete(x.lease_key)
    elif trouble == "registry garbage":
        env.r.delete(env.k.strategies)
        env.r.set(env.k.strategies, "garbage")
    elif trouble == "lease garbage without expiry":
        env.r.set(x.lease_key, "nan")                   # no live holder's: the full report takes it back
    else:
        env.r.delete(x.lease_key)
        env.r.hset(x.lease_key, "f", "v")
    with caplog.at_level(logging.INFO):
        if trouble == "deregistered":
            with pytest.raises(Exit):
                x.step(e)
        elif trouble == "lease taken":
            with pytest.raises(Exception, match="taken over by another process"):
                x.step(e)
        else:
            x.step(e)
    assert ran == ["fast", "STRATEGY_REPORT"]
    # The fast path wrote before it could see the trouble: one decision for this epoch; the doorbell
    # counts only a registered name, never twice; the full report then decides.
    assert counted(env, e) == (0 if trouble in ("deregistered", "srem", "registry garbage") else 1)
    if trouble == "lease taken":
        assert env.r.get(x.lease_key) == b"thief:9:ffff", "the name stays the other process's"
        assert report(env) == Report(e, "ok", "0.5", "")
    elif trouble == "deregistered":
        assert "X" not in env.asks(), "it does not ask to be registered again"
    elif trouble.startswith(("lease lost", "lease garbage")):
        assert env.r.get(x.lease_key) == x.lease_owner.encode(), "the full report took the name back"
        assert report(env) == Report(e, "ok", "0.5", "")
    else:       # not registered as far as this report can see: asks the trader, does not count
        assert report(env) == Report(e, "ok", "0.5", "")
        assert x.registered is False and "X" in env.asks()


@pytest.mark.parametrize("change", ["none", "instance", "period"])
def test_the_fast_path_checks_the_deployment_record_every_few_reports(env, caplog, change):
    from redismedian.component import DataProblem
    x = registered_strategy(env, "X")
    ran = paths_taken(x)
    e = env.E + 1
    env.at(e)
    env.publish(e, g1=0.5)
    x.reports_since_meta_check = META_CHECK_EVERY
    if change == "instance":
        env.r.hset(env.k.meta, "instance", "someone-else")
    elif change == "period":
        env.r.hset(env.k.meta, "period_ms", env.period_ms * 2)
    with caplog.at_level(logging.WARNING):
        if change == "period":
            with pytest.raises(DataProblem, match="runs with period"):
                x.step(e)
        else:
            x.step(e)
    assert ran == (["fast"] if change == "none" else ["fast", "STRATEGY_REPORT"])
    if change == "instance":
        assert x.instance == "someone-else" and any("Redis lost its data" in m for m in messages(caplog))
    assert x.reports_since_meta_check == (0 if change != "period" else META_CHECK_EVERY)


@pytest.mark.parametrize("replies,expected", [
    # GET lease, PEXPIRE, SET, EVALSHA of the doorbell
    ([b"me", 1, True, 2], (True, "", True, False)),
    ([b"me", 1, True, 1], (True, "", False, False)),
    ([b"thief", 1, True, 2], (False, "the lease is not ours", True, False)),
    ([None, 0, True, 2], (False, "the lease is not ours", True, False)),
    ([b"me", 1, True, 0], (False, "not in the registry", False, False)),
    ([b"me", 1, ValueError("WRONGTYPE"), 2], (False, "a command was refused", True, False)),
    ([b"me", 1, True, ValueError("NOSCRIPT No matching script")], (False, "the doorbell script is not loaded", False,
                                                                    True)),
    ([ValueError("WRONGTYPE"), 1, True, 2], (False, "the lease is not ours", True, False)),
])
def test_the_fast_paths_replies_are_judged(replies, expected):
    from redismedian.keys import Keys
    from redismedian.scripts import MetaArgs, strategy_tick_request, strategy_ticked
    m = MetaArgs(1000, "inst", "", "me", 1500)
    req = strategy_tick_request(Keys("t"), m, name="X", epoch=7, value="0.5", state="ok", reason="",
                                decision_ttl_ms=10_000, ready_ttl_ms=2000, check_meta=False)
    assert [c[0] for c in req.commands] == ["GET", "PEXPIRE", "SET", "EVALSHA"]
    t = strategy_ticked(req, replies, m)
    assert (t.ok, t.why, t.counted, t.noscript) == expected
    meta = strategy_tick_request(Keys("t"), m, name="X", epoch=7, value="", state="error", reason="r",
                                 decision_ttl_ms=10_000, ready_ttl_ms=2000, check_meta=True)
    assert [c[0] for c in meta.commands] == ["TIME", "HMGET", "GET", "PEXPIRE", "SET", "EVALSHA"]
    ok = strategy_ticked(meta, [[b"12", b"345000"], [b"1000", b"inst"], b"me", 1, True, 1], m)
    assert ok == (True, "", 12345, False, False)
    moved = strategy_ticked(meta, [[b"12", b"0"], [b"1000", b"other"], b"me", 1, True, 1], m)
    assert not moved.ok and "deployment record" in moved.why


def test_the_fast_path_survives_a_script_cache_flush(env):
    """After SCRIPT FLUSH (or a Redis restart) the strategy, whose user may load scripts here, loads
    them all again; that report goes through the full script, and the next one is fast again."""
    x = registered_strategy(env, "X")
    ran = paths_taken(x)
    for e in (env.E + 1, env.E + 2):
        env.at(e)
        env.publish(e, g1=0.5)
        if e == env.E + 1:
            env.r.script_flush()    # after the generator's publication: the strategy meets NOSCRIPT first
        x.step(e)
        assert report(env) == Report(e, "ok", "0.5", "") and counted(env, e) == 1
    assert ran == ["fast", "STRATEGY_REPORT", "fast"]


def test_a_strategy_that_may_not_load_scripts_waits_for_the_trader_then_goes_on(env, monkeypatch):
    """Under a named ACL user a strategy may not load scripts: at NOSCRIPT it polls on its (fake) clock
    for at most a quarter of the period, says once that it waits for the trader, and goes on once the
    scripts are loaded; it never asks to load (nothing for Redis' ACL LOG)."""
    from redismedian import scripts
    from redismedian.component import Waiting
    x = registered_strategy(env, "X")
    x._may_load = False                    # as under a named ACL user (component: `restricted`)
    asked = []
    real_load = scripts.load_scripts
    monkeypatch.setattr("redismedian.component.load_scripts", lambda *a: asked.append(a))
    e = env.E + 1
    env.at(e)
    env.publish(e, g1=0.5)
    env.r.script_flush()                   # after the generator's publication, which loaded them again
    t0 = env.clock.now_ms()
    with pytest.raises(Waiting, match="waiting for the trader to load this strategy's scripts"):
        x.report(e, "0.5", "ok", "")
    waited = env.clock.now_ms() - t0
    assert 0 < waited <= env.period_ms // 4 + 200 and asked == []
    real_load(env.r)                       # the trader loads them
    x.step(e)
    assert report(env) == Report(e, "ok", "0.5", "") and counted(env, e) == 1
