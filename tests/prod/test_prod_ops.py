"""Operator commands: check (health), history (published medians), status --watch."""
import csv
import io
import json
import re
import time

import pytest

from redismedian.clock import time_reply_ms
from redismedian.keys import DECISION_TTL_PERIODS, Keys, ttl_ms
from redismedian.ops import (CLEAR, check_component, check_deployment, history, history_csv, parse_since, watch,
                             watch_delay)
from redismedian.status import gather, render, to_json
from tests.support import ROOT, wait_until

K = Keys("t")
PERIOD_MS = 3_600_000   # an hour: a test never straddles two boundaries
DECISION_TTL_MS = ttl_ms(PERIOD_MS, DECISION_TTL_PERIODS)
LEASE_MS = PERIOD_MS * 3 // 2


def _now_epoch(fake):
    now = time_reply_ms(fake.time())
    return now, now // PERIOD_MS


def _healthy_deployment(fake):
    now, e = _now_epoch(fake)
    fake.hset(K.meta, mapping={"period_ms": PERIOD_MS, "instance": "i"})
    fake.hset(K.signal("g1"), mapping={"value": "0.5", "epoch": e, "ts": now, "status": "ok"})
    fake.set(K.lease("generator", "g1"), "host:1:a", px=LEASE_MS)   # a lease has a TTL (else it holds nothing)
    fake.sadd(K.strategies, "X")
    fake.set(K.decision("X"), f"{e}|0.5", px=DECISION_TTL_MS)    # what STRATEGY_REPORT writes
    fake.set(K.lease("strategy", "X"), f"host:2:b|{now}", px=LEASE_MS)
    fake.hset(K.trader, mapping={"state": "ok", "reason": "", "epoch": e, "median": "0.5", "count": 1, "ts": now})
    fake.set(K.lease("trader"), "host:3:c|1", px=LEASE_MS)
    return e


def test_check_healthy_components_and_deployment(fake):
    e = _healthy_deployment(fake)
    for kind, name in (("generator", "g1"), ("strategy", "X"), ("trader", None)):
        h = check_component(fake, K, kind, name)
        assert h.healthy, h.text()
        assert h.text().startswith("OK: ")
    h = check_deployment(gather(fake, K))
    assert h.healthy, h.text()
    assert h.text() == f"OK: trader published 0.5 for epoch {e}; 1 strategy and 1 generator ok"
    assert check_component(fake, K, "trader").text() == f"OK: trader published 0.5 for epoch {e} (1 strategy)"


def test_check_names_every_problem(fake):
    e = _healthy_deployment(fake)
    fake.hset(K.signal("g1"), mapping={"status": "error", "error": "signal function raised boom"})
    fake.delete(K.lease("strategy", "X"))
    fake.srem(K.strategies, "X")
    fake.hset(K.trader, mapping={"state": "error", "reason": "1 of 1 strategy missing: X: no decision"})
    g = check_component(fake, K, "generator", "g1")
    assert not g.healthy and g.problems == ["generator g1: error: signal function raised boom"]
    s = check_component(fake, K, "strategy", "X")
    assert not s.healthy
    assert s.problems == [f"strategy X: down: not running (no live process; last report for epoch {e}, this period)",
                          "strategy X: not registered"]
    t = check_component(fake, K, "trader")
    assert t.text() == "UNHEALTHY: trader: error: 1 of 1 strategy missing: X: no decision"
    d = check_deployment(gather(fake, K))
    assert not d.healthy
    # the deployment check names each part's problem in the same words as the part's own check
    assert t.problems[0] in d.problems and g.problems[0] in d.problems, d.problems
    # stale values: older than the previous period
    fake.hset(K.signal("g1"), mapping={"status": "ok", "epoch": e - 5})
    assert check_component(fake, K, "generator", "g1").problems == [
        f"generator g1: stale: last signal for epoch {e - 5} (5 periods ago)"]
    fake.delete(K.lease("trader"))
    assert check_component(fake, K, "trader").problems == [
        f"trader: down: no trader running (no trader holds the lead; last state 'error' for epoch {e}, this period)"]


def test_check_survives_garbage_and_empty_namespace(fake):
    assert check_component(fake, K, "trader").text() == \
        "UNHEALTHY: no deployment record in namespace 't' (nothing has run here yet)"
    assert not check_deployment(gather(fake, K)).healthy
    _healthy_deployment(fake)
    fake.delete(K.signal("g1"))
    fake.set(K.signal("g1"), "garbage")
    h = check_component(fake, K, "generator", "g1")
    assert h.problems == ["generator g1: unreadable: t:signal:g1 is a string, expected a hash"]
    fake.delete(K.trader)
    fake.rpush(K.trader, "x")
    assert check_component(fake, K, "trader").text() == "UNHEALTHY: trader: unreadable: t:trader is a list, expected a hash"
    fake.delete(K.meta)
    fake.set(K.meta, "x")
    assert "is not a hash" in check_component(fake, K, "trader").text()


# Every state a strategy can be in, as Redis shows it (its decision string, its lease, the registry):
# (what to do to the healthy deployment, state, reason) -- `reason` with {e} for the current epoch.
STRATEGY_STATES = {
    "ok": (lambda f, e: None, "ok", ""),
    "ok, previous epoch": (lambda f, e: f.set(K.decision("X"), f"{e - 1}|0.5", px=DECISION_TTL_MS), "ok", ""),
    "stale": (lambda f, e: f.set(K.decision("X"), f"{e - 2}|0.5", px=DECISION_TTL_MS), "stale",
              "last decision for epoch {e2} (2 periods ago)"),
    "error": (lambda f, e: f.set(K.decision("X"), f"{e}|!error|signal g1 missing (generator not running?)",
                                 px=DECISION_TTL_MS), "error", "signal g1 missing (generator not running?)"),
    "starting": (lambda f, e: f.set(K.decision("X"), f"{e}|!starting|started, waiting for the next period",
                                    px=DECISION_TTL_MS), "starting", "started, waiting for the next period"),
    "joining": (lambda f, e: f.srem(K.strategies, "X"), "joining",
                "not registered: waiting for the trader to admit it"),
    "joining, in error": (lambda f, e: (f.srem(K.strategies, "X"),
                                        f.set(K.decision("X"), f"{e}|!error|signal g1 stale", px=DECISION_TTL_MS)),
                          "joining", "not registered: waiting for the trader to admit it (last: signal g1 stale)"),
    "down": (lambda f, e: f.delete(K.lease("strategy", "X")), "down",
             "not running (no live process; last report for epoch {e}, this period)"),
    "down, long ago": (lambda f, e: (f.delete(K.lease("strategy", "X")),
                                     f.set(K.decision("X"), f"{e - 2}|0.5", px=DECISION_TTL_MS)), "down",
                       "not running (no live process; last report for epoch {e2}, 2 periods ago)"),
    "down, last in error": (lambda f, e: (f.delete(K.lease("strategy", "X")),
                                          f.set(K.decision("X"), f"{e}|!error|boom", px=DECISION_TTL_MS)),
                            "down", "not running (no live process; last report for epoch {e}, this period: boom)"),
    "down, no report": (lambda f, e: (f.delete(K.lease("strategy", "X")), f.delete(K.decision("X"))), "down",
                        "not running (no live process; no report in the last 10 periods)"),
    "lease without a TTL": (lambda f, e: f.persist(K.lease("strategy", "X")), "down",
                            "not running (no live process; last report for epoch {e}, this period)"),
    "absent": (lambda f, e: f.delete(K.decision("X")), "absent", "no report in Redis (never reported, or expired)"),
    "garbage": (lambda f, e: f.set(K.decision("X"), "nonsense", px=DECISION_TTL_MS), "garbage",
                "t:decision:X holds 'nonsense', not <epoch>|<decision>"),
    "unreadable": (lambda f, e: (f.delete(K.decision("X")), f.rpush(K.decision("X"), "x")), "unreadable",
                   "unreadable: t:decision:X is a list, expected a string"),
}


@pytest.mark.parametrize("case", sorted(STRATEGY_STATES))
def test_status_json_text_and_check_agree_on_a_strategy(fake, case):
    """`status --json`, the text view and `check strategy X` read the same decision string and say
    the same thing: the state and the reason, and healthy exactly when the state is ok."""
    e = _healthy_deployment(fake)
    change, state, reason = STRATEGY_STATES[case]
    change(fake, e)
    reason = reason.format(e=e, e2=e - 2)
    data = json.loads(to_json(gather(fake, K)))
    (row,) = [s for s in data["strategies"] if s["name"] == "X"]
    assert (row["state"], row["reason"]) == (state, reason), row
    registered = case not in ("joining", "joining, in error")
    assert row["registered"] is registered
    assert row["value"] == (0.5 if case in ("ok", "ok, previous epoch", "stale", "joining", "down", "down, long ago",
                                            "lease without a TTL") else None)
    if row["value"] is not None:
        assert 0 <= row["age_s"] < 5     # from the key's PTTL: written just now
    text = render(gather(fake, K), "redis://x/0")
    (line,) = [ln for ln in text.splitlines() if re.match(r"^\s+X\s", ln)]
    assert re.match(rf"^\s+X\s+{'yes' if registered else 'no'}\s+{state}\s", line), line
    assert line.rstrip().endswith(reason), (line, reason)
    h = check_component(fake, K, "strategy", "X")
    if state == "ok":
        assert h.healthy and h.text() == f"OK: strategy X submitted 0.5 for epoch {row['epoch']}", h.text()
    else:
        assert not h.healthy and h.problems[0] == f"strategy X: {state}: {reason}", h.problems
        assert h.problems[1:] == (["strategy X: not registered"] if not registered and state != "joining" else [])
    # The deployment check names a registered strategy's problem the same way; a joining one is not
    # part of the deployment yet.
    d = check_deployment(gather(fake, K))
    named = [p for p in d.problems if p.startswith("strategy X")]
    if registered and state != "ok":
        assert named == [f"strategy X: {state}: {reason}"] == h.problems[:1], d.problems
    else:
        assert named == [] and d.healthy, d.problems


def test_trader_idle_is_healthy_for_the_component_not_the_deployment(fake):
    e = _healthy_deployment(fake)
    fake.hset(K.trader, mapping={"state": "idle", "reason": "no strategies registered", "epoch": e})
    assert check_component(fake, K, "trader").text() == "OK: trader idle: no strategies registered"
    assert not check_deployment(gather(fake, K)).healthy


def test_parse_since():
    now = 1_700_000_000_000
    assert parse_since("30s", now) == now - 30_000
    assert parse_since("15m", now) == now - 900_000
    assert parse_since("2h", now) == now - 7_200_000
    assert parse_since("1.5d", now) == now - 129_600_000
    assert parse_since("1w", now) == now - 604_800_000
    assert parse_since("2023-11-14T22:13:20Z", now) == 1_700_000_000_000
    assert parse_since("2023-11-14T22:13:20", now) == 1_700_000_000_000      # no zone: UTC
    assert parse_since("2023-11-14T23:13:20+01:00", now) == 1_700_000_000_000
    assert parse_since("2023-11-14", now) == 1_699_920_000_000
    for bad in ("yesterday", "10x", "", "-5m"):
        with pytest.raises(ValueError, match="cannot read"):
            parse_since(bad, now)


def test_history_range_limit_csv_and_garbage(fake):
    base = 1_700_000_000_000
    for i in range(5):
        fake.xadd(K.medians, {"epoch": 100 + i, "median": f"0.{i}5", "count": 2, "members": "X,Y", "fence": 1,
                              "ts": base + i * 1000}, id=f"{base + i * 1000}-0")
    fake.xadd(K.medians, {"median": "garbage"}, id=f"{base + 9000}-0")
    rows = history(fake, K)
    assert [r["epoch"] for r in rows] == [100, 101, 102, 103, 104, None]
    assert rows[0]["time"] == "2023-11-14T22:13:20.000Z" and rows[0]["median"] == 0.05
    assert rows[-1]["median"] is None and rows[-1]["median_text"] == "garbage"
    assert rows[-1]["time"] == "2023-11-14T22:13:29.000Z"   # from the entry id when ts is missing
    assert [r["epoch"] for r in history(fake, K, since_ms=base + 2000, until_ms=base + 3000)] == [102, 103]
    assert [r["epoch"] for r in history(fake, K, since_ms=base + 1000, limit=2)] == [104, None]
    parsed = list(csv.DictReader(io.StringIO(history_csv(rows[:2]))))
    assert parsed[1] == {"time": "2023-11-14T22:13:21.000Z", "epoch": "101", "median": "0.15", "count": "2",
                         "members": "X,Y", "fence": "1", "id": f"{base + 1000}-0"}
    assert history(fake, Keys("empty")) == []
    fake.set(Keys("bad").medians, "x")
    with pytest.raises(ValueError, match="not a stream"):
        history(fake, Keys("bad"))


def test_watch_refreshes_just_after_each_boundary():
    assert watch_delay(10_250, 1000, None) == pytest.approx(0.85)    # next boundary 11_000 + 100 ms
    assert watch_delay(10_250, 60_000, None) == pytest.approx(50.25)  # 60_000 + 500 ms settle
    assert watch_delay(10_250, None, None) == 2.0
    assert watch_delay(10_250, 1000, 0.3) == 0.3
    frames, sleeps, shown = iter([("a", 10_250, 1000), ("b", 11_100, 1000), ("c", 12_100, 1000)]), [], []
    watch(lambda: next(frames), shown.append, sleep=sleeps.append, count=3, clear=True)
    assert shown == [CLEAR + "a", CLEAR + "b", CLEAR + "c"]
    assert sleeps == [pytest.approx(0.85), pytest.approx(1.0)]
    frames, shown = iter([("a", 0, None), ("b", 0, None)]), []
    watch(lambda: next(frames), shown.append, sleep=lambda s: None, count=2, clear=False)
    assert shown == ["a", "\nb"]


# -- integration ------------------------------------------------------------------------------
def test_check_history_and_watch_on_a_live_pipeline(cluster, redis_server):
    g1 = cluster.generator("g1")
    x = cluster.strategy("X", "g1")
    # Without a trader, the strategy decides but is not registered: every view says `joining`.
    x.wait_for_output(r"X decided \S+ \(not registered yet: waiting for the trader to admit it\)", timeout=20)
    joining = "not registered: waiting for the trader to admit it"
    r = cluster.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["strategies"]
    assert (row["name"], row["registered"], row["state"], row["reason"]) == ("X", False, "joining", joining), row
    assert row["value"] is not None and row["owner"]
    r = cluster.cli("status")
    assert re.search(rf"^\s+X\s+no\s+joining\s+.*{joining}$", r.stdout, re.M), r.stdout
    r = cluster.cli("check", "strategy", "X")
    assert r.returncode == 1 and r.stdout == f"UNHEALTHY: strategy X: joining: {joining}\n", r.stdout
    trader = cluster.trader()
    x.wait_for_output(r"registered X \(admitted by the trader\)", timeout=20)
    trader.wait_for_output(r"median: ", timeout=20, count=2)
    wait_until(lambda: cluster.cli("check").returncode == 0, 10, what="deployment healthy")
    for args in (["check", "generator", "g1"], ["check", "strategy", "X"], ["check", "trader"]):
        r = cluster.cli(*args)
        assert r.returncode == 0 and r.stdout.startswith("OK: "), (args, r.stdout, r.stderr)

    # history, as CSV: every published median, in order
    r = cluster.cli("history", "--since", "10m", "--csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    stream = redis_server.client(decode_responses=True).xrange("t:medians")
    got, published = [row["median"] for row in rows], [f["median"] for _i, f in stream]
    # (the stream is read after the CLI: the trader may have published more meanwhile)
    assert len(got) >= 2 and published[:len(got)] == got, (got, published)
    r = cluster.cli("history", "--limit", "1", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 1
    r = cluster.cli("history", "--since", "last tuesday")
    assert r.returncode == 2 and "cannot read 'last tuesday' as a time" in r.stderr

    # status --watch: each frame is a fresh period
    r = cluster.cli("status", "--watch", "--count", "2")
    assert r.returncode == 0, r.stderr
    epochs = [int(x) for x in re.findall(r", epoch (\d+), server time", r.stdout)]
    assert len(epochs) == 2 and epochs[1] > epochs[0], r.stdout

    # the generator dies: every check says why
    g1.kill()
    t0 = time.monotonic()
    r = wait_until(lambda: (lambda r: r.returncode == 1 and "X: signal g1" in r.stdout and r)(
        cluster.cli("check", "trader")), 15, what="trader check failing")
    assert r.stdout.startswith("UNHEALTHY: trader: error: 1 of 1 strategy missing: X: signal g1")
    r = cluster.cli("check", "strategy", "X")
    assert r.returncode == 1 and "strategy X: error: signal g1" in r.stdout, r.stdout
    r = cluster.cli("check", "generator", "g1")
    assert r.returncode == 1 and "generator g1: down: not running (no live process; " in r.stdout, r.stdout
    r = cluster.cli("check")
    assert r.returncode == 1 and "trader: error" in r.stdout and "strategy X: error" in r.stdout, r.stdout
    assert time.monotonic() - t0 < 15
    r = cluster.cli("check", "strategy")
    assert r.returncode == 2 and "give the strategy's name" in r.stderr


def test_watch_stops_cleanly_on_ctrl_c(cluster):
    import signal
    p = cluster.start("status", "--watch", name="watch")
    p.wait_for_output(r"redismedian at ", timeout=15)
    p.signal(signal.SIGINT)
    assert p.wait(10) == 0
    assert "Traceback" not in p.output()


@pytest.mark.parametrize("args", [("status", "--watch"), ("follow",)])
def test_ctrl_c_stops_watch_and_follow_even_when_started_with_sigint_ignored(cluster, redis_server, args):
    """A background job of a shell script starts with SIGINT ignored, and Python then has no
    KeyboardInterrupt: `status --watch` and `follow` install their own, so kill -INT still stops them
    (a CI run in the background once saw four such processes never exit)."""
    import signal
    import subprocess
    import sys
    admin = redis_server.client()
    before = admin.info("clients")["connected_clients"]
    p = subprocess.Popen([sys.executable, "-m", "redismedian", *args], env=cluster.env(), cwd=str(ROOT),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        # Connected: its loop is running (the handler is installed before the first read).
        wait_until(lambda: admin.info("clients")["connected_clients"] > before, 15, what=f"{args[0]} connected")
        assert p.poll() is None
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
