"""Garbage in every key the components read: wrong types, NaN and infinities, huge strings,
missing fields, decision keys and doorbells (``NS:count:<slot>``, rings and join requests on ``NS:ready`` and ``NS:joins``)
holding nonsense.  Nothing crashes, nothing wrong is ever published, and once the garbage is gone
(the components repair what they own; an operator removes garbage names from the registry, which
by the rules are registrations) the pipeline publishes again within a few periods.

Two layers: a property test of the trader's real path against a real redis-server (hypothesis
draws registries and what each strategy's own decision key holds: decisions written by the
strategies' report script, infinities, stale reports, errors, garbage; plus decision keys and
registration requests of names that are not registered; the median must be exact over exactly the
registered strategies, or the state an error naming the missing ones), and live runs against real
processes: every key at once, then hypothesis-drawn fault sequences.
"""
import math
import statistics
import time

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from redismedian import keys as KEYS
from redismedian.clock import time_reply_ms
from redismedian.common import Settings, fmt_value, new_owner_id
from redismedian.connection import RedisSettings
from redismedian.keys import Keys
from redismedian.scripts import MetaArgs, meta_create, strategy_report
from redismedian.trader import Trader
from tests.faultkit import (HUGE, NOT_NUMBERS, NS, OTHER_TYPE, apply, assert_invariant, assert_recovers,
                            current_epoch, heal, is_number, keys_read, now_ms, report, status_survives, write_as)

HOUR_MS = 3_600_000
garbage_text = st.one_of(st.sampled_from(NOT_NUMBERS), st.just(HUGE),
                         st.text(max_size=40).filter(lambda t: not is_number(t)))


# -- 1. the trader's real path, property-based --------------------------------------------------

# What a registered strategy's decision key holds: a decision (written by the strategies' own
# report script), or one of the ways of having none.
NO_DECISION = ("missing", "stale", "error", "starting", "garbage", "wrongtype")
decision = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([math.inf, -math.inf]),
                     st.sampled_from(NO_DECISION))
strategy_names = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}\Z")


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    from tests.support import RedisServer
    server = RedisServer(tmp_path_factory.mktemp("redis-prop")).start()
    yield server
    server.kill()


def _report(client, k: Keys, name: str, epoch: int, value: str, state: str = "ok", reason: str = "") -> None:
    """What strategy ``name`` writes at its report (its own lease, decision key and doorbells)."""
    def run(source, keys, args):
        return client.register_script(source)(keys=keys, args=args)
    m = MetaArgs(HOUR_MS, "", "", f"{new_owner_id()}|1", 60_000)
    r = strategy_report(run, k, m, name=name, epoch=epoch, value=value, state=state, reason=reason,
                        decision_ttl_ms=KEYS.ttl_ms(HOUR_MS, KEYS.DECISION_TTL_PERIODS),
                        ready_ttl_ms=KEYS.ttl_ms(HOUR_MS, KEYS.READY_TTL_PERIODS), start_ms=1)
    assert r.status == "ok" and r.submitted == bool(value), r


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(registered=st.dictionaries(strategy_names, decision, min_size=1, max_size=9),
       extra=st.dictionaries(strategy_names, st.floats(allow_nan=False), max_size=4),
       garbage=garbage_text)
@example(registered={"a": 1.7e308, "b": 1.6e308}, extra={"c": math.inf}, garbage="nan")   # the sum overflows
@example(registered={"a": -0.0, "b": 5e-324, "c": "missing"}, extra={}, garbage="")
@example(registered={"a": 1.0, "b": 2.0}, extra={"c": 3.0}, garbage="1_000")          # c only asks to join
@example(registered={"a": 1.0, "b": "stale"}, extra={}, garbage=" 5 ")
def test_publishing_script_is_exact_or_an_error(shared_redis, registered, extra, garbage):
    client = shared_redis.client()
    ns = f"p{time.monotonic_ns()}"
    k = Keys(ns)
    now = time_reply_ms(client.time())
    if now % HOUR_MS > HOUR_MS - 5000:
        time.sleep((HOUR_MS - now % HOUR_MS) / 1000 + 0.05)
    epoch = time_reply_ms(client.time()) // HOUR_MS
    settings_ = Settings(RedisSettings(shared_redis.url), namespace=ns, period_ms=HOUR_MS)
    trader = Trader(settings_, decision_timeout_ms=1)
    trader.clock.sync(trader.client)
    meta_create(trader.run_script, k, trader.meta_args())
    # The registry as the trader's admissions leave it (registry and backup).
    client.sadd(k.strategies, *registered)
    client.sadd(k.registry_backup, *registered)
    for name, value in registered.items():
        key = k.decision(name)
        if isinstance(value, float) and math.isfinite(value):
            _report(client, k, name, epoch, fmt_value(value))
        elif isinstance(value, float):                  # no strategy writes this: garbage
            client.set(key, f"{epoch}|{fmt_value(value)}")
        elif value == "stale":                          # a decision, but for the epoch before
            _report(client, k, name, epoch, "", "error", "started")   # (the lease and doorbells)
            client.set(key, f"{epoch - 1}|0.5", px=60_000)
        elif value in ("error", "starting"):
            _report(client, k, name, epoch, "", value, f"{value} {garbage[:50]}")
        elif value == "garbage":                        # this epoch, but not a number
            client.set(key, f"{epoch}|{garbage}")
        elif value == "wrongtype":
            client.rpush(key, f"{epoch}|1.0")
    # Names that are not registered: their decisions (finite or not) never count, and asking to
    # join is not enough to be admitted (none holds a live lease).
    for name, value in extra.items():
        if name not in registered:
            client.set(k.decision(name), f"{epoch}|{fmt_value(value)}")
            client.publish(k.joins_channel, name)
    # And the doorbells may hold anything: they only make the trader look early or late.
    client.set(k.count(epoch), garbage[:100])
    client.publish(k.ready_channel, garbage[:100] or "x")
    client.publish(k.ready_channel, str(epoch))
    trader.step(epoch)
    h = {a.decode(): b.decode() for a, b in client.hgetall(k.trader).items()}
    entries = client.xrange(k.medians)
    assert {m.decode() for m in client.smembers(k.strategies)} == set(registered)   # nobody joined
    values = list(registered.values())
    problems = sorted(n for n, v in registered.items() if not (isinstance(v, float) and math.isfinite(v)))
    if problems:
        assert h["state"] == "error", h
        assert entries == []
        of = f"{len(registered)} {'strategy' if len(registered) == 1 else 'strategies'}"
        assert h["reason"].startswith(f"{len(problems)} of {of} missing: {problems[0]}:"), h
        assert "median" not in h
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


def test_garbage_values_and_missing_fields_everywhere(topo):
    topo.start()
    topo.watcher.wait_for_median_after(now_ms(), 15, "first median")
    c = topo.client()
    for value in ("nan", "inf", HUGE, "", "1_000", " 5 "):
        e = current_epoch(topo)
        c.hset(f"{NS}:signal:g1", mapping={"value": value, "status": "ok", "epoch": str(e)})
        c.hdel(f"{NS}:signal:g2", "epoch")
        c.xadd(f"{NS}:signals:g3", {"name": "g3", "epoch": str(e + 1), "value": value, "status": "ok"})
        c.xadd(f"{NS}:signals:g2", {"name": "g2"})                   # missing fields
        # decision keys: this epoch's and the next's holding no number, a report with a garbage
        # state, a stale decision, and a decision key of a name nobody registered
        c.set(f"{NS}:decision:X", f"{e}|{value}")
        c.set(f"{NS}:decision:Y", f"{e + 1}|{value}")
        c.set(f"{NS}:decision:Z", f"{e + 1}|!{value}")
        c.set(f"{NS}:decision:junk", f"{e + 1}|{value}")
        # the doorbells: a counter that is not one, a doorbell rung early, requests to register
        # names that no live process holds
        c.set(f"{NS}:count:{(e + 1) % 4}", value)
        c.publish(f"{NS}:ready", value)
        c.publish(f"{NS}:ready", str(e + 1))
        c.publish(f"{NS}:joins", value[:100] or "x" * 100)
        c.publish(f"{NS}:joins", "junk")
        c.hset(f"{NS}:trader", mapping={"published": value, "fence": value, "median": value})
        c.hset(f"{NS}:meta", mapping={"registry": value, "recreated": value, "created": value})
        c.hset(f"{NS}:traders", "junk", value)
        c.set(f"{NS}:trader:fence", value)
        c.sadd(f"{NS}:strategies", value[:100] or "x" * 100)           # a garbage registration
        for lease in (f"{NS}:lease:generator:g2", f"{NS}:lease:strategy:Y"):
            c.set(lease, value)                                       # no expiry: not a live holder
        topo.wait_periods(1.5)
        status_survives(topo)
        heal(topo)
        report(f"garbage values {value[:5]!r}", recovery_periods=assert_recovers(topo, f"garbage {value[:8]!r}"))
    # Nobody admitted a name just because it asked.
    assert {m.decode() for m in c.smembers(f"{NS}:strategies")} == {"X", "Y", "Z"}
    assert_invariant(topo, min_entries=3)


# -- 3. live: hypothesis-drawn garbage ---------------------------------------------------------

def garbage_ops():
    kinds = st.sampled_from(sorted(set(OTHER_TYPE.values()) | {"string"}))
    slot = st.sampled_from(sorted(keys_read(0)))   # epoch 0 stands for "now", 1 for "next"
    now_next = st.sampled_from(["now", "next"])
    return st.one_of(
        # another type than the key's own (a registry replaced by a set of other names is a hand
        # edit that deregisters everyone, which the rules obey: not garbage)
        st.tuples(st.just("type"), slot, kinds).filter(lambda op: op[2] != keys_read(0)[op[1]]),
        st.tuples(st.just("field"), st.sampled_from([f"{NS}:meta", f"{NS}:signal:g1", f"{NS}:trader",
                                                     f"{NS}:traders"]),
                  st.sampled_from(["period_ms", "instance", "registry", "created", "recreated", "value", "epoch",
                                   "status", "reason", "published", "fence", "state", "junk"]), garbage_text),
        st.tuples(st.just("hdel"), st.sampled_from([f"{NS}:meta", f"{NS}:signal:g1", f"{NS}:trader"]),
                  st.sampled_from(["period_ms", "instance", "created", "value", "epoch", "status"])),
        st.tuples(st.just("feed"), st.sampled_from(["g1", "g2", "g3", "junk"]), st.sampled_from(["now", "junk"]),
                  garbage_text),
        st.tuples(st.just("member"), st.sampled_from([f"{NS}:strategies", f"{NS}:strategies:backup",
                                                      f"{NS}:joins"]),
                  garbage_text.filter(bool)),
        # a decision key: this or the next epoch with no number, or a stale epoch with any number
        st.tuples(st.just("decision"), now_next, st.sampled_from(["X", "Y", "junk"]), garbage_text),
        st.tuples(st.just("decision"), st.just("past"), st.sampled_from(["X", "Y"]),
                  st.floats(allow_nan=False, allow_infinity=False).map(repr)),
        st.tuples(st.just("report"), now_next, st.sampled_from(["X", "Y"]), garbage_text),
        st.tuples(st.just("count"), now_next, st.one_of(garbage_text, st.integers(-5, 10).map(str))),
        st.tuples(st.just("ready"), now_next, st.one_of(st.just("epoch"), garbage_text.map(lambda t: t[:100] or "x"))),
        st.tuples(st.just("string"), st.sampled_from([f"{NS}:lease:trader", f"{NS}:lease:generator:g1",
                                                      f"{NS}:lease:strategy:X", f"{NS}:trader:fence"]),
                  garbage_text),
    )


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
