"""Garbage in every key the components read: wrong types, NaN and infinities, huge strings,
missing fields.  Nothing crashes, nothing wrong is ever published, and once the garbage is gone
(the components repair what they own; an operator removes garbage names from the registry, which
by the rules are registrations) the pipeline publishes again within a few periods.

Two layers: a property test of the publishing script (hypothesis draws registries and decisions,
including infinities and deregistered extras; the median must be exact or the state an error),
and live runs against real processes: every key at once, then hypothesis-drawn fault sequences.
"""
import math
import statistics
import time

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings, strategies as st

from redismedian.clock import time_reply_ms
from redismedian.common import Settings
from redismedian.keys import Keys
from redismedian.trader import Trader
from tests.faultkit import (HUGE, NOT_NUMBERS, NS, OTHER_TYPE, apply, assert_invariant, assert_recovers,  # noqa: F401
                            current_epoch, heal, is_number, keys_read, now_ms, report, status_survives, topo,
                            write_as)
from tests.support import wait_until

HOUR_MS = 3_600_000
garbage_text = st.one_of(st.sampled_from(NOT_NUMBERS), st.just(HUGE),
                         st.text(max_size=40).filter(lambda t: not is_number(t)))


# -- 1. the publishing script, property-based -------------------------------------------------

decision = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([math.inf, -math.inf]),
                     st.none())   # None: the strategy did not submit
strategy_names = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}\Z")


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    from tests.support import RedisServer
    server = RedisServer(tmp_path_factory.mktemp("redis-prop")).start()
    yield server
    server.kill()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(registered=st.dictionaries(strategy_names, decision, min_size=1, max_size=9),
       extra=st.dictionaries(strategy_names, st.floats(allow_nan=False), max_size=4))
@example(registered={"a": 1.7e308, "b": 1.6e308}, extra={"c": math.inf})     # the sum overflows
@example(registered={"a": -0.0, "b": 5e-324, "c": None}, extra={})
def test_publishing_script_is_exact_or_an_error(shared_redis, registered, extra):
    client = redis.Redis(host="127.0.0.1", port=shared_redis.port)
    ns = f"p{time.monotonic_ns()}"
    k = Keys(ns)
    now = time_reply_ms(client.time())
    if now % HOUR_MS > HOUR_MS - 5000:
        time.sleep((HOUR_MS - now % HOUR_MS) / 1000 + 0.05)
    epoch = time_reply_ms(client.time()) // HOUR_MS
    client.sadd(k.strategies, *registered)
    client.sadd(k.registry_backup, *registered)
    for name, value in {**{n: v for n, v in extra.items() if n not in registered}, **registered}.items():
        if value is not None:
            client.zadd(k.decisions(epoch), {name: value})
    trader = Trader(Settings(redis_url=shared_redis.url, namespace=ns, period_ms=HOUR_MS), decision_timeout_ms=1)
    trader.clock.sync(trader.client)
    trader.step(epoch)
    h = {a.decode(): b.decode() for a, b in client.hgetall(k.trader).items()}
    entries = client.xrange(k.medians)
    values = list(registered.values())
    if any(v is None for v in values) or not all(math.isfinite(v) for v in values):
        assert h["state"] == "error", h
        assert entries == []
        missing = sorted(n for n, v in registered.items() if v is None)
        if missing:
            assert h["reason"].startswith(f"{len(missing)} of {len(registered)} strategies missing: {missing[0]}:")
    else:
        s = sorted(values)
        n = len(s)
        want = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        if not math.isfinite(want):             # two huge decisions: halves first, never inf
            want = s[n // 2 - 1] / 2 + s[n // 2] / 2
        assert h["state"] == "ok", h
        assert len(entries) == 1
        f = {a.decode(): b.decode() for a, b in entries[0][1].items()}
        assert float(f["median"]) == want
        assert math.isfinite(float(f["median"]))
        if n % 2 or math.isfinite((s[n // 2 - 1] + s[n // 2]) / 2):
            assert float(f["median"]) == statistics.median(values)
        assert int(f["count"]) == n and f["members"] == ",".join(sorted(registered))
    client.delete(*client.keys(f"{ns}:*"))


# -- 2. live: garbage in every key at once ------------------------------------------------------

@pytest.mark.integration
def test_wrong_types_in_every_key_at_once(topo):
    topo.start()
    topo.watcher.wait_for_median_after(now_ms(), 15, "first median")
    c = topo.client()
    for rnd in range(2):
        e = current_epoch(topo)
        for key, kind in keys_read(e).items():
            write_as(c, key, OTHER_TYPE[kind], HUGE if rnd else "garbage")
        topo.wait_periods(1.5)
        status_survives(topo)
        heal(topo)
        report(f"every key wrong type, round {rnd}", recovery_periods=assert_recovers(topo, "wrong types"))
    assert_invariant(topo, min_entries=3)


@pytest.mark.integration
def test_garbage_values_and_missing_fields_everywhere(topo):
    topo.start()
    topo.watcher.wait_for_median_after(now_ms(), 15, "first median")
    c = topo.client()
    for value in ("nan", "inf", HUGE, ""):
        e = current_epoch(topo)
        c.hset(f"{NS}:signal:g1", mapping={"value": value, "status": "ok", "epoch": str(e)})
        c.hdel(f"{NS}:signal:g2", "epoch")
        c.xadd(f"{NS}:signals:g3", {"name": "g3", "epoch": str(e + 1), "value": value, "status": "ok"})
        c.xadd(f"{NS}:signals:g2", {"name": "g2"})                   # missing fields
        c.zadd(f"{NS}:decisions:{e + 1}", {"X": math.inf, "junk": -math.inf})
        c.hset(f"{NS}:strategy:X", mapping={"reason": value, "epoch": value})
        c.hset(f"{NS}:trader", mapping={"published": value, "fence": value, "median": value})
        c.hset(f"{NS}:meta", "registry", value)
        c.hset(f"{NS}:traders", "junk", value)
        c.set(f"{NS}:trader:fence", value)
        c.sadd(f"{NS}:strategies", value[:100] or "x" * 100)           # a garbage registration
        c.rpush(f"{NS}:ready:{e + 1}", value)
        for lease in (f"{NS}:lease:generator:g2", f"{NS}:lease:strategy:Y"):
            c.set(lease, value)                                       # no expiry: not a live holder
        topo.wait_periods(1.5)
        status_survives(topo)
        heal(topo)
        report(f"garbage values {value[:5]!r}", recovery_periods=assert_recovers(topo, f"garbage {value[:8]!r}"))
    assert_invariant(topo, min_entries=3)


# -- 3. live: hypothesis-drawn garbage ---------------------------------------------------------

def garbage_ops():
    kinds = st.sampled_from(sorted(set(OTHER_TYPE.values()) | {"string"}))
    slot = st.sampled_from(sorted(keys_read(0)))   # epoch 0 stands for "now", 1 for "next"
    return st.one_of(
        st.tuples(st.just("type"), slot, kinds),
        st.tuples(st.just("field"), st.sampled_from([f"{NS}:meta", f"{NS}:signal:g1", f"{NS}:strategy:X",
                                                     f"{NS}:trader", f"{NS}:traders", f"{NS}:decision:X"]),
                  st.sampled_from(["period_ms", "instance", "registry", "value", "epoch", "status", "reason",
                                   "published", "fence", "state", "junk"]), garbage_text),
        st.tuples(st.just("hdel"), st.sampled_from([f"{NS}:meta", f"{NS}:signal:g1", f"{NS}:strategy:X"]),
                  st.sampled_from(["period_ms", "instance", "value", "epoch", "status"])),
        st.tuples(st.just("feed"), st.sampled_from(["g1", "g2", "g3", "junk"]), st.sampled_from(["now", "junk"]),
                  garbage_text),
        st.tuples(st.just("member"), st.sampled_from([f"{NS}:strategies", f"{NS}:strategies:backup"]),
                  garbage_text.filter(bool)),
        st.tuples(st.just("score"), st.sampled_from(["now", "next"]), st.sampled_from(["X", "Y", "junk"]),
                  st.sampled_from([math.inf, -math.inf])),
        st.tuples(st.just("string"), st.sampled_from([f"{NS}:lease:trader", f"{NS}:lease:generator:g1",
                                                      f"{NS}:lease:strategy:X", f"{NS}:trader:fence"]),
                  garbage_text),
    )


@pytest.mark.integration
def test_hypothesis_garbage_sequences(topo):
    topo.start()
    topo.watcher.wait_for_median_after(now_ms(), 15, "first median")
    c = topo.client()
    recoveries = []

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(garbage_ops(), min_size=1, max_size=5))
    def run(ops):
        e = current_epoch(topo)
        for op in ops:
            apply(c, op, e)
        topo.wait_periods(1.2)
        heal(topo)
        recoveries.append(assert_recovers(topo, f"{[o[:3] for o in ops]}"))

    run()
    status_survives(topo)
    report("hypothesis garbage", examples=len(recoveries), worst_recovery_periods=max(recoveries))
    assert_invariant(topo, min_entries=5)
