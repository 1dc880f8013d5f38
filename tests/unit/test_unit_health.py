"""One module owns health (redismedian/health.py): `status`, `check` and the trader's reasons use the
same rules for "current", "stale", "alive" and "lease holder", so they agree at every moment of a
period; a strategy that no live process holds is "not running (since when)", never "late"."""
import re

import pytest

from redismedian import health as H
from redismedian.ops import JOIN_GRACE_PERIODS, check_component, check_deployment
from redismedian.scripts import PRELUDE
from redismedian.status import gather, render
from tests.unit.test_unit_garbage import Pipeline

URL = "redis://127.0.0.1:1/0"


# -- the rules --------------------------------------------------------------------------------------
def test_a_report_is_current_for_its_epoch_and_the_next():
    assert H.is_current(10, 10) and H.is_current(9, 10) and H.is_current(11, 10)
    assert not H.is_current(8, 10) and not H.is_current(None, 10) and not H.is_current(9, None)
    assert [H.ago(e, 10) for e in (10, 9, 8, -2, 11, None)] == [
        "this period", "1 period ago", "2 periods ago", "12 periods ago", "1 period ahead", "at an unknown time"]


def test_ages_are_never_negative():
    assert H.age_s(1_000, "1004") == 0 and H.age_s(1_000, 996) == 0.004 and H.age_s(1_000, "x") is None


@pytest.mark.parametrize("n,text", [(0, "0 strategies"), (1, "1 strategy"), (2, "2 strategies")])
def test_plurals(n, text):
    assert H.plural(n, "strategy", "strategies") == text


def test_a_lease_is_held_only_by_a_string_with_a_time_to_live(env):
    """The scripts' test (lease_peek): anything else holds nothing, and the next script removes it."""
    k = env.k.lease("strategy", "X")
    env.r.set(k, "host:42:ab12|1700000000000", px=5_000)
    (h,) = H.read_holders(env.r, [k])
    assert (h.value, h.owner, h.extra, h.host, h.pid) == ("host:42:ab12|1700000000000", "host:42:ab12",
                                                           "1700000000000", "host", 42)
    assert 0 < h.pttl_ms <= 5_000 and h.describe() == "process 42 on host (host:42:ab12)"
    env.r.persist(k)
    assert H.read_holders(env.r, [k]) == [None], "no TTL: not a lease"
    env.r.delete(k)
    env.r.rpush(k, "x")
    assert H.read_holders(env.r, [k, env.k.lease("generator", "nobody")]) == [None, None]


# (value, owner, extra): one rule, the last '|', in Python and in the scripts
LEASE_VALUES = [
    ("host:42:ab12|1700000000000", "host:42:ab12", "1700000000000"),
    ("host:42:ab12", "host:42:ab12", ""),                 # no extra part
    ("host:42:ab12|", "host:42:ab12", ""),
    ("odd|host:42:ab12|7", "odd|host:42:ab12", "7"),     # an owner holding a '|': the extra part is the last
    ("a|b|c|", "a|b|c", ""),
    ("|7", "", "7"),
    ("", "", ""),
]


@pytest.mark.parametrize("value,owner,extra", LEASE_VALUES)
def test_a_lease_value_splits_on_its_last_bar_in_python_and_in_the_scripts(env, value, owner, extra):
    assert H.split_lease(value) == (owner, extra)
    env.r.set(env.k.lease("strategy", "X"), value, px=5_000)
    (h,) = H.read_holders(env.r, [env.k.lease("strategy", "X")])
    assert (h.owner, h.extra) == (owner, extra)
    lua = PRELUDE + "local o, x = lease_split(ARGV[1]) return {o, x or '(none)'}"
    got = [v.decode() for v in env.r.eval(lua, 0, value)]
    assert got == [owner, extra if "|" in value else "(none)"], got    # (nil there: no extra part)


def test_a_strategy_whose_owner_holds_a_bar_is_admitted_and_shown_whole(env):
    """The trader reads the start time after the last '|' (REGISTRY_ADMIT), status shows the owner
    before it: the same split."""
    x = env.started(env.strategy("X", settings=env.settings_for(owner="odd|host:42:ab12")))
    env.admit("X")
    (h,) = H.read_holders(env.r, [x.lease_key])
    assert (h.owner, h.extra) == ("odd|host:42:ab12", str(x.start_ms))

# -- status and check agree at every moment of a period ----------------------------------------------
def agree(env) -> dict:
    """`status` (gather, render) and every `check` say the same thing about every part, now."""
    data = gather(env.r, env.k)
    epoch = data["epoch"]
    text = render(data, URL)
    parts = [("generator", g) for g in data["generators"]] + [("strategy", s) for s in data["strategies"]]
    for kind, row in parts:
        h = check_component(env.r, env.k, kind, row["name"])
        ok = row["state"] == "ok" and (kind == "generator" or row["registered"])
        assert h.healthy is ok, (kind, row, h.text())
        if row["state"] != "ok":
            assert h.problems[0] == f"{kind} {row['name']}: {row['state']}: {row['reason']}", (row, h.problems)
        (line,) = [ln for ln in text.splitlines() if re.match(rf"^\s+{row['name']}\s", ln)]
        assert f" {row['state']} " in line and line.rstrip().endswith(row["reason"]), (line, row)
    t = data["trader"]
    h = check_component(env.r, env.k, "trader")
    assert h.healthy is (t["state"] in ("ok", "idle") and not H.missed_recently(t, epoch)), (t, h.text())
    if t["state"] not in ("ok", "idle"):
        assert h.problems[0] == f"trader: {t['state']}: {t['reason']}"
    d = check_deployment(data)
    registered = [s for s in data["strategies"] if s["registered"]]
    kept_out = [s for s in data["strategies"] if s["state"] == "joining" and s.get("joining_since_ms") is not None
                and data["server_time_ms"] - s["joining_since_ms"] > JOIN_GRACE_PERIODS * data["period_ms"]
                and not (s.get("deregistered_ms") or -1) >= s["joining_since_ms"]]
    assert d.healthy is (t["state"] == "ok" and not H.missed_recently(t, epoch) and not kept_out
                         and all(s["state"] == "ok" for s in registered)
                         and all(g["state"] == "ok" for g in data["generators"])), (data, d.text())
    # the whole-deployment check names each part's problem in the words of the part's own check
    for kind, row in parts:
        if row["state"] != "ok" and (kind == "generator" or row["registered"]):
            assert f"{kind} {row['name']}: {row['state']}: {row['reason']}" in d.problems
    return data


def states(data) -> dict:
    return {"trader": data["trader"]["state"], **{g["name"]: g["state"] for g in data["generators"]},
            **{s["name"]: s["state"] for s in data["strategies"]}}


def test_status_and_check_agree_at_every_moment_of_a_period(env):
    p = Pipeline(env)
    E = env.E
    p.epoch(E)
    assert set(states(agree(env)).values()) == {"ok"}
    # Right after the boundary, before anything wrote epoch E+1: every report for E is current.
    env.at(E + 1, 0.0)
    assert set(states(agree(env)).values()) == {"ok"}
    assert check_deployment(gather(env.r, env.k)).healthy
    # ... and while the parts write the new epoch, one after the other
    for part in (p.g1, p.g2, p.x, p.y, p.t):
        env.at(E + 1)
        part.last_epoch = E
        assert part.run(max_epochs=1) == 0
        assert set(states(agree(env)).values()) == {"ok"}
    env.at(E + 1, 0.5)
    agree(env)
    # X is killed (its lease expires), g2 hangs: moments through the next periods, in each the
    # boundary (nothing written yet), after the trader's deadline, and the end of the period
    env.r.delete(env.k.lease("strategy", "X"))
    seen = []
    for e in (E + 2, E + 3):
        env.at(e, 0.0)
        seen.append(states(agree(env)))
        p.epoch(e, order=[p.g1, p.y, p.t])   # the trader waits until its deadline (80% of the period)
        seen.append(states(agree(env)))
        env.at(e, 0.95)
        seen.append(states(agree(env)))
    assert [s["X"] for s in seen] == ["down"] * 6
    assert [s["g2"] for s in seen] == ["ok", "ok", "down", "down", "down", "down"], "lease: 1.5 periods"
    assert [s["trader"] for s in seen] == ["ok", "error", "error", "error", "error", "error"]


def test_a_killed_strategy_is_not_running_for_the_trader_status_and_check(env):
    """The same words everywhere, with how long ago it last reported, never "late"."""
    p = Pipeline(env)
    E = env.E
    p.epoch(E)
    env.r.delete(env.k.lease("strategy", "X"))        # X was killed and its lease expired
    for e in (E + 1, E + 2, E + 3):
        p.epoch(e, order=[p.g1, p.g2, p.y, p.t])
    why = f"not running (no live process; last report for epoch {E}, 3 periods ago)"
    h = env.hash(env.k.trader)
    assert (h["state"], h["reason"]) == ("error", f"1 of 2 strategies missing: X: {why}")
    x = {s["name"]: s for s in gather(env.r, env.k)["strategies"]}["X"]
    assert (x["state"], x["reason"], x["registered"]) == ("down", why, True)
    assert check_component(env.r, env.k, "strategy", "X").problems == [f"strategy X: down: {why}"]
    d = check_deployment(gather(env.r, env.k))
    assert d.problems == [f"trader: error: 1 of 2 strategies missing: X: {why}", f"strategy X: down: {why}"]


def test_a_live_strategy_without_a_decision_is_late_not_down(env):
    p = Pipeline(env)
    E = env.E
    p.epoch(E)
    env.r.pexpire(env.k.lease("strategy", "X"), 10 * env.period_ms)   # alive (hung): it holds its name
    p.epoch(E + 1, order=[p.g1, p.g2, p.y, p.t])
    assert env.hash(env.k.trader)["reason"] == (
        f"1 of 2 strategies missing: X: no decision (last report for epoch {E}, 1 period ago)")
    x = {s["name"]: s for s in agree(env)["strategies"]}["X"]
    assert x["state"] == "ok", "its decision for the previous epoch is still current"
    env.at(E + 2, 0.5)
    x = {s["name"]: s for s in agree(env)["strategies"]}["X"]
    assert (x["state"], x["reason"]) == ("stale", f"last decision for epoch {E} (2 periods ago)")


# -- missed epochs ----------------------------------------------------------------------------------------
def test_check_trader_fails_while_an_epoch_was_missed_within_the_window(env):
    p = Pipeline(env)
    E = env.E
    p.epoch(E)
    # what the trader writes after missing epoch E-2 (two more before, since it started)
    env.r.hset(env.k.trader, mapping={"missed": 3, "last_missed": E - 2, "last_missed_reason": "the trader stalled"})
    text = f"trader: missed epoch {E - 2} (2 periods ago): the trader stalled; 3 epochs missed since it started"
    assert check_component(env.r, env.k, "trader").problems == [text]
    assert check_deployment(gather(env.r, env.k)).problems == [text]
    assert check_component(env.r, env.k, "trader", missed_window=3).problems == [text]
    assert check_component(env.r, env.k, "trader", missed_window=2).healthy
    assert check_component(env.r, env.k, "trader", missed_window=0).healthy, "0: missed epochs not checked"
    assert check_deployment(gather(env.r, env.k), missed_window=2).healthy
    data = gather(env.r, env.k)
    assert (data["trader"]["missed"], data["trader"]["last_missed"], data["trader"]["last_missed_reason"]) == (
        3, E - 2, "the trader stalled")
    assert data["trader"]["state"] == "ok" and data["trader"]["median"] == 1.5
    out = render(data, URL)
    assert (f"            missed epoch {E - 2} (2 periods ago): the trader stalled; 3 epochs missed since it "
            "started  (within the last 10 periods: `check` fails)") in out.splitlines(), out
    agree(env)
    # ten periods after the missed epoch, the check passes again; status still shows it
    p.epoch(E + 8)
    env.r.hset(env.k.trader, mapping={"missed": 3, "last_missed": E - 2, "last_missed_reason": "the trader stalled"})
    assert check_component(env.r, env.k, "trader").healthy
    assert not check_component(env.r, env.k, "trader", missed_window=11).healthy
    out = render(gather(env.r, env.k), URL)
    assert f"missed epoch {E - 2} (10 periods ago): the trader stalled" in out and "`check` fails" not in out, out
    agree(env)


def test_a_failing_action_is_shown_by_status_and_check(env):
    p = Pipeline(env)
    p.epoch(env.E)
    env.r.hset(env.k.trader, mapping={"action_error": f"epoch {env.E}: on-median action raised ValueError: no"})
    h = check_component(env.r, env.k, "trader")
    assert h.problems == [f"trader: --on-median action failed (retried every period): epoch {env.E}: on-median "
                          "action raised ValueError: no"]
    assert "--on-median action failed" in render(gather(env.r, env.k), URL)
    env.r.hset(env.k.trader, "action_error", "")
    assert check_component(env.r, env.k, "trader").healthy


def test_live_parts_name_who_holds_a_namespace(env):
    """What the demo refuses to start over: live leases, and fresh trader heartbeats."""
    p = Pipeline(env)
    p.epoch(env.E)
    live = H.live_parts(env.r, env.k)
    owner = p.t.settings.owner
    assert [x.split(":")[0] for x in live] == ["generator g1", "generator g2", "strategy X", "strategy Y", "trader"]
    assert live[-1] == f"trader: process {owner.split(':')[1]} on {owner.split(':')[0]} ({owner})"
    for k in env.r.scan_iter(match="t:lease:*"):
        env.r.delete(k)
    assert H.live_parts(env.r, env.k) == [f"trader (leader): process {owner.split(':')[1]} on "
                                          f"{owner.split(':')[0]} ({owner})"], "its heartbeat is fresh"
    env.at(env.E + 4)
    assert H.live_parts(env.r, env.k) == [], "heartbeats older than 3 periods are not alive"


def test_check_names_a_live_strategy_kept_out_of_the_registry():
    """A live strategy that asked to join and was not admitted within JOIN_GRACE_PERIODS of its start
    (no trader, a flooded NS:joins) makes the deployment unhealthy, naming it; a newcomer does not."""
    period, now = 1000, 1_000_000
    trader = {"state": "ok", "reason": "", "epoch": 999, "median": 0.5, "missed": None, "last_missed": None}

    def data(since):
        return {"problems": [], "epoch": 1000, "period_ms": period, "namespace": "t", "server_time_ms": now,
                "trader": trader, "generators": [],
                "strategies": [{"name": "X", "registered": False, "state": "joining", "joining_since_ms": since,
                                "reason": "not registered: waiting for the trader to admit it"}]}
    assert check_deployment(data(now - 2 * period)).healthy
    d = check_deployment(data(now - 10 * period))
    assert not d.healthy and d.problems == [
        "strategy X: asked to join 10.0s ago and was not admitted: not registered: waiting for the trader to admit it"]
    assert "\n" not in d.text()
    # deregistered after it started: on its way out (it exits at its next report), not kept out
    leaving = data(now - 10 * period)
    leaving["strategies"][0]["deregistered_ms"] = now - period
    assert check_deployment(leaving).healthy
