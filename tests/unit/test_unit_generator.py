"""Generator: one signal per epoch, ok or error with the reason, never a crash."""
import decimal
import fractions
import logging

import pytest

from redismedian import keys as K
from redismedian.common import EXIT_FAILURE
from redismedian.generator import compute_signal, default_signal
from tests import plugins
from tests.unit_support import messages


# -- compute_signal (pure) -----------------------------------------------------------------------
@pytest.mark.parametrize("raw,text", [(0.25, "0.25"), (3, "3.0"), (-1e-300, "-1e-300"),
                                      (fractions.Fraction(1, 4), "0.25"),
                                      (decimal.Decimal("0.5"), "0.5"), (1 / 3, repr(1 / 3))])
def test_numbers_are_signals(raw, text):
    assert compute_signal(lambda e: raw, 7) == (text, "")


def test_the_plugin_gets_the_epoch():
    seen = []
    compute_signal(lambda e: seen.append(e) or 1.0, 12345)
    assert seen == [12345] and isinstance(seen[0], int)


@pytest.mark.parametrize("raw,needle", [
    (float("nan"), "not a finite number"), (float("inf"), "not a finite number"),
    (float("-inf"), "not a finite number"), ("0.5", "str '0.5', not a number"), (None, "NoneType None, not a number"),
    (True, "bool True, not a number"), ([1.0], "not a number"), (1j, "not a number"),
    (10 ** 400, "not a finite number"), (decimal.Decimal("NaN"), "not a finite number"),
])
def test_non_numbers_are_errors(raw, needle):
    value, error = compute_signal(lambda e: raw, 1)
    assert value == "" and needle in error


def test_a_raising_plugin_is_an_error():
    def boom(epoch):
        raise RuntimeError("feed down")
    assert compute_signal(boom, 1) == ("", "signal function raised RuntimeError: feed down")


def test_a_number_whose_conversion_raises_is_an_error():
    class Weird(float):
        def __float__(self):
            raise ArithmeticError("no float for you")
    value, error = compute_signal(lambda e: Weird(1.0), 1)
    assert value == "" and "not a number" in error


def test_huge_repr_is_cut():
    value, error = compute_signal(lambda e: "x" * 10_000, 1)
    assert value == "" and len(error) < 200


def test_default_signal_is_uniform_in_unit_interval():
    xs = [default_signal(e) for e in range(200)]
    assert all(0.0 <= x < 1.0 for x in xs) and len(set(xs)) > 150


# -- publishing ----------------------------------------------------------------------------------
def test_publishes_the_signal_and_a_feed_entry(env):
    g = env.started(env.generator("g1", fn=plugins.sig_b))
    g.step(env.E)
    h = env.hash(env.k.signal("g1"))
    assert h == {"value": repr(plugins.sig_b(env.E)), "epoch": str(env.E), "ts": str(env.clock.now_ms()),
                 "status": "ok"}
    assert env.r.pttl(env.k.signal("g1")) == K.ttl_ms(env.period_ms, K.SIGNAL_TTL_PERIODS)
    (entry_id, fields), = env.r.xrange(env.k.signal_feed("g1"))
    f = {k.decode(): v.decode() for k, v in fields.items()}
    assert f == {"name": "g1", "epoch": str(env.E), "value": h["value"], "status": "ok", "error": "", "ts": h["ts"]}
    assert int(entry_id.split(b"-")[0]) == env.clock.now_ms(), "stream ids are on the server clock"


def test_plugin_error_is_published_as_error_and_it_keeps_running(env, caplog):
    calls = []

    def flaky(epoch):
        calls.append(epoch)
        if len(calls) in (2, 3):
            raise RuntimeError("upstream timeout")
        return 0.5
    g = env.generator("g1", fn=flaky)
    with caplog.at_level(logging.INFO):
        assert g.run(max_epochs=4) == 0
    assert calls == [env.E, env.E + 1, env.E + 2, env.E + 3]
    feed = [{k.decode(): v.decode() for k, v in f.items()} for _i, f in env.r.xrange(env.k.signal_feed("g1"))]
    assert [f["status"] for f in feed] == ["ok", "error", "error", "ok"]
    assert feed[1]["error"] == "signal function raised RuntimeError: upstream timeout" and feed[1]["value"] == ""
    h = env.hash(env.k.signal("g1"))
    assert h["status"] == "ok" and "error" not in h, "a recovered signal carries no stale error field"
    assert any("signal error in epoch" in m for m in messages(caplog, logging.ERROR))


@pytest.mark.parametrize("fn", [plugins.sig_nan, plugins.sig_text, lambda e: float("inf"), lambda e: None])
def test_non_finite_plugins_publish_errors(env, fn):
    g = env.generator("g1", fn=fn)
    assert g.run(max_epochs=2) == 0
    h = env.hash(env.k.signal("g1"))
    assert h["status"] == "error" and h["value"] == "" and h["error"]


def test_an_epoch_that_ended_before_writing_is_skipped(env, caplog):
    g = env.started(env.generator("g1"))
    with caplog.at_level(logging.WARNING):
        g.step(env.E - 1)
    assert not env.r.exists(env.k.signal("g1")) and not env.r.exists(env.k.signal_feed("g1"))
    assert any("ended before its signal was written" in m for m in messages(caplog))


def test_a_clock_running_ahead_waits_for_the_server_boundary(env):
    """Our estimate said E+1 began, the server is still in E: wait for the server's boundary, then write."""
    g = env.started(env.generator("g1"))
    g.step(env.E + 1)
    assert env.hash(env.k.signal("g1"))["epoch"] == str(env.E + 1)
    assert env.clock.now_ms() // env.period_ms == env.E + 1


def test_lease_is_renewed_each_period_and_released_at_exit(env):
    g = env.generator("g1")
    assert g.run(max_epochs=3) == 0
    assert not env.r.exists(g.lease_key), "released on the way out"


def test_lease_renewal_keeps_the_name(env):
    g = env.started(env.generator("g1"))
    for e in range(env.E, env.E + 4):
        env.at(e, 0.01)
        g.step(e)
        assert env.r.get(g.lease_key).decode() == g.settings.owner
        assert env.r.pttl(g.lease_key) == K.lease_ttl_ms(env.period_ms)


def test_a_generator_whose_name_was_taken_over_stops(env, caplog):
    g = env.generator("g1")
    assert g.run(max_epochs=1) == 0
    g.stop.clear()
    g.started = False
    g.last_epoch = None
    env.started(g)
    env.r.set(g.lease_key, "thief:1:abcd", px=10_000_000)
    with caplog.at_level(logging.ERROR):
        assert g.run(max_epochs=1) == EXIT_FAILURE
    assert "taken over by another process (thief:1:abcd)" in messages(caplog, logging.ERROR)[-1]
    assert env.r.get(g.lease_key) == b"thief:1:abcd", "the new holder's lease is left alone"


def test_shutdown_leaves_a_lease_it_does_not_hold(env):
    g = env.started(env.generator("g1"))
    env.r.set(g.lease_key, "other", px=100_000)
    g.shutdown()
    assert env.r.get(g.lease_key) == b"other"


def test_after_redis_lost_its_data_the_generator_writes_again(env, caplog):
    g = env.started(env.generator("g1"))
    g.step(env.E)
    first = env.hash(env.k.meta)["instance"]
    env.r.flushall()
    env.at(env.E + 1, 0.01)
    with caplog.at_level(logging.WARNING):
        g.step(env.E + 1)
    assert env.hash(env.k.meta)["instance"] != first
    assert env.hash(env.k.signal("g1"))["epoch"] == str(env.E + 1)
    assert env.r.get(g.lease_key).decode() == g.settings.owner
    assert any("Redis lost its data" in m for m in messages(caplog))


def test_a_plugin_error_message_is_one_bounded_line():
    class Loud(Exception):
        pass

    def boom(epoch):
        raise Loud("line one\nline two " + "x" * 5000)
    value, error = compute_signal(boom, 1)
    assert value == "" and error.startswith("signal function raised Loud: line one line two xxx")
    assert "\n" not in error and len(error) < 600


def test_an_exception_whose_message_breaks_is_still_reported():
    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no str")

    def boom(epoch):
        raise Broken()
    assert compute_signal(boom, 1) == ("", "signal function raised Broken: <message unavailable>")
