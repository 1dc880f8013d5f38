"""`status` (gather / render / --json) and `deregister`: one view of every part, whatever is in Redis."""
import json
import re

import pytest

from redismedian.common import FatalError
from redismedian.ops import check_component, check_deployment
from redismedian.status import deregister, gather, render, to_json
from tests.unit.test_unit_garbage import TYPES, Pipeline, put

URL = "redis://127.0.0.1:1/0"


def view(env):
    data = gather(env.r, env.k)
    text = render(data, URL)
    assert json.loads(to_json(data)) == json.loads(json.dumps(data))
    return data, text


def test_a_healthy_pipeline(env):
    p = Pipeline(env)
    p.epoch(env.E)
    data, text = view(env)
    assert (data["namespace"], data["period_ms"], data["epoch"]) == ("t", env.period_ms, env.E)
    assert data["problems"] == []
    t = data["trader"]
    assert (t["state"], t["median"], t["count"], t["epoch"], t["published_epoch"], t["fence"]) == (
        "ok", 1.5, 2, env.E, env.E, 1)
    assert t["leader"] == f"{p.t.settings.owner}|1" and t["reason"] == ""
    gens = {g["name"]: g for g in data["generators"]}
    assert set(gens) == {"g1", "g2"} and gens["g1"]["state"] == "ok" and gens["g1"]["value"] == 1.0
    assert gens["g2"]["owner"] == p.g2.settings.owner and gens["g2"]["reason"] == ""
    strats = {s["name"]: s for s in data["strategies"]}
    assert strats["Y"]["registered"] is True and strats["Y"]["state"] == "ok" and strats["Y"]["value"] == 2.0
    assert strats["Y"]["epoch"] == env.E and strats["Y"]["owner"] == p.y.lease_owner and strats["Y"]["reason"] == ""
    assert 0 <= strats["Y"]["age_s"] <= 5, "age from the decision key's remaining time to live"
    assert "signals" not in strats["Y"], "the signals column is gone"
    assert "period 3600s" in text and f"epoch {env.E}" in text and "median 1.5" in text
    assert "generators:" in text and "strategies:" in text


def test_parts_that_stopped(env):
    p = Pipeline(env)
    p.epoch(env.E)
    env.r.delete(env.k.lease("trader"), env.k.lease("generator", "g1"), env.k.lease("strategy", "X"))
    env.r.srem(env.k.strategies, "Y")
    env.at(env.E + 1)
    data, text = view(env)
    t = data["trader"]
    assert t["state"] == "down" and t["reason"] == (
        f"no trader running (no trader holds the lead; last state 'ok' for epoch {env.E}, 1 period ago)")
    assert t["median"] is None and t["count"] is None, "never the median of a trader that is gone"
    gens = {g["name"]: g for g in data["generators"]}
    assert gens["g1"]["state"] == "down"
    assert gens["g1"]["reason"] == f"not running (no live process; last signal for epoch {env.E}, 1 period ago)"
    # g2 is alive, and its signal for the previous epoch is current (the new one is not due yet)
    assert gens["g2"]["state"] == "ok" and gens["g2"]["reason"] == ""
    strats = {s["name"]: s for s in data["strategies"]}
    assert strats["X"]["state"] == "down" and strats["X"]["registered"] is True
    assert strats["X"]["reason"] == f"not running (no live process; last report for epoch {env.E}, 1 period ago)"
    # Y's process still runs but is no longer registered: shown as waiting for the trader
    assert strats["Y"]["registered"] is False and strats["Y"]["state"] == "joining"
    assert strats["Y"]["value"] == 2.0 and strats["Y"]["epoch"] == env.E
    assert "down" in text and "no" in text
    # a period later, g2's signal is stale (it is still alive: its lease is only renewed when it writes)
    env.r.pexpire(env.k.lease("generator", "g2"), 10 * env.period_ms)
    env.at(env.E + 2)
    data, text = view(env)
    gens = {g["name"]: g for g in data["generators"]}
    assert gens["g2"]["state"] == "stale" and gens["g2"]["reason"] == f"last signal for epoch {env.E} (2 periods ago)"
    assert gens["g1"]["reason"] == f"not running (no live process; last signal for epoch {env.E}, 2 periods ago)"
    # NS:trader gone too (its TTL): still no trader running, never a median
    env.r.delete(env.k.trader)
    data, text = view(env)
    assert (data["trader"]["state"], data["trader"]["reason"]) == (
        "down", "no trader running (no trader holds the lead)")
    assert re.search(r"^trader\s+down\s+epoch -\s+median -", text, re.M), text


def test_a_stopped_trader_is_never_shown_with_its_median(env):
    """The trader's state key outlives it by up to 3 periods (its TTL): while it is there without a
    lease, and once it is gone, status and check say no trader runs, and show no median."""
    p = Pipeline(env)
    p.epoch(env.E)
    env.r.delete(env.k.lease("trader"))
    for present in (True, False):
        if not present:
            env.r.delete(env.k.trader)
        data, text = view(env)
        assert data["trader"]["state"] == "down" and "no trader running" in data["trader"]["reason"]
        assert data["trader"]["median"] is None and "median -" in text
        h = check_component(env.r, env.k, "trader")
        assert not h.healthy and h.problems == [f"trader: down: {data['trader']['reason']}"]
        d = check_deployment(gather(env.r, env.k))
        assert d.problems == [f"trader: down: {data['trader']['reason']}"], d.problems


def test_ages_are_never_negative(env):
    """A part may write a hair after the server time status read: the age is 0, not -0.004."""
    p = Pipeline(env)
    p.epoch(env.E)
    later = env.clock.now_ms() + 4
    env.r.hset(env.k.trader, "ts", later)
    env.r.hset(env.k.signal("g1"), "ts", later)
    env.r.hset(env.k.traders, p.t.settings.owner, f"leader|{later}|1")
    data, _ = view(env)
    assert data["trader"]["age_s"] == 0
    assert {g["name"]: g["age_s"] for g in data["generators"]}["g1"] == 0
    assert [t["age_s"] for t in data["traders"]] == [0]


def test_trader_in_error_shows_the_reason(env):
    p = Pipeline(env)
    p.epoch(env.E)
    env.at(env.E + 1)
    p.epoch(env.E + 1, order=[p.g1, p.x, p.t])       # g2 and Y are gone
    data, text = view(env)
    t = data["trader"]
    assert t["state"] == "error" and t["median"] is None and t["count"] is None
    assert t["reason"].startswith("1 of 2 strategies missing: Y: ")
    assert "reason: 1 of 2 strategies missing" in text


def test_an_empty_namespace(env):
    data, text = view(env)
    assert data["period_ms"] is None and data["epoch"] is None
    assert data["trader"]["state"] == "absent" and data["generators"] == [] and data["strategies"] == []
    assert "no deployment record yet" in text and "generators: none" in text


KEYS = {
    "meta": lambda k: k.meta, "trader": lambda k: k.trader, "strategies": lambda k: k.strategies,
    "signal": lambda k: k.signal("g1"), "decision": lambda k: k.decision("X"),
    "trader lease": lambda k: k.lease("trader"), "generator lease": lambda k: k.lease("generator", "g1"),
    "strategy lease": lambda k: k.lease("strategy", "X"),
}


@pytest.mark.parametrize("what", sorted(KEYS))
@pytest.mark.parametrize("kind", TYPES)
def test_keys_of_the_wrong_type_are_shown_not_fatal(env, what, kind):
    p = Pipeline(env)
    p.epoch(env.E)
    put(env.r, KEYS[what](env.k), kind)
    data, text = view(env)
    shown = json.dumps(data)
    right = {"meta": "hash", "trader": "hash", "signal": "hash", "decision": "string", "strategies": "set"}
    if what in right and kind != right[what]:
        if what in ("meta", "strategies"):
            assert any(KEYS[what](env.k) in prob for prob in data["problems"]), shown
            assert "PROBLEM" in text
        else:
            assert "unreadable" in shown and "unreadable" in text, shown
    if what == "decision":
        x = {s["name"]: s for s in data["strategies"]}["X"]
        assert x["state"] == ("garbage" if kind == "string" else "unreadable") and x["value"] is None, x


def test_garbage_values_everywhere(env):
    r, k = env.r, env.k
    r.hset(k.meta, mapping={"period_ms": "soon", "instance": "\xff"})
    r.hset(k.trader, mapping={"state": "", "epoch": "x", "median": "nan", "count": "many", "ts": "later",
                              "fence": "-", "published": "1e9"})
    r.set(k.lease("trader"), b"\xff\xfe|7", px=1000)
    r.hset(k.signal("g\xe9"), mapping={"value": "inf", "epoch": "1.5", "ts": "", "status": "ok"})
    r.hset(k.signal("g2"), mapping={"junk": "1"})
    r.set(k.decision("X"), "-1|-inf")
    r.set(k.decision("W"), "5|!error|multi\nline")
    r.set(k.decision("V"), b"\xff\xfe|1e999")
    r.hset(k.decision("U"), "value", "1")
    r.sadd(k.strategies, "X", "not a valid name", b"\xff")
    data, text = view(env)
    assert data["period_ms"] is None
    assert data["trader"]["median"] is None and data["trader"]["count"] is None
    assert any("period_ms" in p for p in data["problems"]), data["problems"]
    names = {s["name"] for s in data["strategies"]}
    assert {"X", "W", "V", "U", "not a valid name"} <= names
    assert all(s["value"] is None for s in data["strategies"])


@pytest.mark.parametrize("period", ["0", "-60000", "", "1.5", "nan", "inf", "x"])
def test_odd_periods_in_the_record(env, period):
    env.r.hset(env.k.meta, "period_ms", period)
    data, text = view(env)
    assert data["epoch"] is None and data["period_ms"] is None
    assert data["problems"] == [f"t:meta has period_ms {period!r}, not a period in ms"]
    assert "PROBLEM: t:meta has period_ms" in text


def test_a_period_written_as_a_float_is_read(env):
    env.r.hset(env.k.meta, "period_ms", f"{env.period_ms}.0")
    data, _text = view(env)
    assert data["period_ms"] == env.period_ms and data["epoch"] == env.E and data["problems"] == []


def test_deregister_is_exactly_srem(env):
    env.r.sadd(env.k.strategies, "X", "Y")
    deregister(env.r, env.k, "X")
    assert env.r.smembers(env.k.strategies) == {b"Y"}
    with pytest.raises(FatalError, match=r"no strategy named 'X'.*registered: Y"):
        deregister(env.r, env.k, "X")


def test_deregister_on_a_garbage_registry(env):
    put(env.r, env.k.strategies, "hash")
    with pytest.raises(FatalError, match=r"t:strategies was a hash \(replaced by t:strategies:backup\); no strategy named .X."):
        deregister(env.r, env.k, "X")
