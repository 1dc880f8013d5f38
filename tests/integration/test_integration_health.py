"""`status` and `check` agree at every moment of a period on a running pipeline; a killed strategy
is reported as not running (the trader's reason, status, check); `check trader --missed-window`."""
import json
import os
import signal
import time

from redismedian import health as H
from redismedian.clock import time_reply_ms
from redismedian.keys import Keys
from redismedian.ops import check_component, check_deployment
from redismedian.status import gather
from tests.integ_support import running_original, wait_trader

NOT_RUNNING = r"not running \(no live process; last report for epoch \d+, \d+ periods? ago\)"


def _at(client, period_ms: int, frac: float) -> None:
    """Sleep until ``frac`` of the way into the next period (server clock): a sampling moment."""
    now = time_reply_ms(client.time())
    target = (now // period_ms + 1) * period_ms + int(frac * period_ms)
    time.sleep((target - now) / 1000.0)


def _rows(data: dict) -> dict:
    rows = {("trader", None): data["trader"]}
    rows.update({("generator", g["name"]): g for g in data["generators"]})
    rows.update({("strategy", s["name"]): s for s in data["strategies"]})
    return rows


def _sample(client, keys) -> tuple[int, set]:
    """Status, then every check, then status again: each part that status showed the same way
    before and after its check must have been judged the same way by the check.  Returns how many
    parts were compared, and their states."""
    before = gather(client, keys)
    checks = {(kind, name): check_component(client, keys, kind, name) for kind, name in _rows(before)}
    deployment = check_deployment(gather(client, keys))
    after = gather(client, keys)
    if before["epoch"] != after["epoch"]:
        return 0, set()          # a boundary passed while sampling: the reasons' "N periods ago" moved
    compared, states = 0, set()
    stable = set(_rows(before)) == set(_rows(after)) and all(
        _rows(before).get(p, {}).get("state") == row.get("state")
                 and _rows(before).get(p, {}).get("reason") == row.get("reason") for p, row in _rows(after).items())
    epoch = before["epoch"]
    for part, row in _rows(before).items():
        later = _rows(after).get(part)
        if later is None or (later["state"], later["reason"]) != (row["state"], row["reason"]):
            continue             # it changed during the sample (a part just wrote): nothing to compare
        kind, name = part
        h = checks[part]
        assert h.problems == H.problems(kind, row, epoch), (part, row, h.problems)
        if kind == "trader":
            assert h.healthy is (row["state"] in ("ok", "idle") and not H.missed_recently(row, epoch)), (row, h)
        else:
            assert h.healthy is (row["state"] == "ok" and (kind == "generator" or row["registered"])), (row, h)
        compared += 1
        states.add((kind, name, row["state"]))
    if stable:   # nothing moved: the whole-deployment check agrees with every part
        want = [p for kind, row in ((k, r) for (k, _n), r in _rows(before).items())
                if kind != "strategy" or row["registered"]
                for p in H.problems(kind, row, epoch, deployment=True)]
        assert sorted(deployment.problems) == sorted(want), (deployment.problems, want)
    return compared, states


def test_status_and_check_agree_at_every_moment_of_a_period(cluster, redis_server):
    client = redis_server.client()
    keys = Keys("t")
    period_ms = int(cluster.period * 1000)
    _r, procs, _e0 = running_original(cluster, redis_server, medians=1)
    compared = {"boundary": 0, "mid": 0}
    states: set = set()
    try:
        for i in range(8):
            if i == 2:
                procs["X"].kill()                        # a strategy dies: error, then not running
            if i == 4:
                procs["g3"].signal(signal.SIGSTOP)       # a generator hangs: stale, then down
            for moment, frac in (("boundary", 0.002), ("mid", 0.5)):
                _at(client, period_ms, frac)             # right after a boundary, before the parts wrote
                n, s = _sample(client, keys)
                compared[moment] += n
                states |= s
    finally:
        procs["g3"].signal(signal.SIGCONT)
    assert compared["boundary"] >= 20 and compared["mid"] >= 30, compared
    seen = {(kind, name): set() for kind, name, _s in states}
    for kind, name, state in states:
        seen[(kind, name)].add(state)
    assert {"ok", "down"} <= seen[("strategy", "X")], seen
    assert "ok" in seen[("trader", None)] and "error" in seen[("trader", None)], seen
    assert "ok" in seen[("generator", "g3")] and seen[("generator", "g3")] & {"stale", "down"}, seen


def test_a_killed_strategy_is_reported_as_not_running(cluster, redis_server):
    r, procs, _e0 = running_original(cluster, redis_server, medians=1)
    procs["X"].kill()
    h = wait_trader(r, lambda h: h.get("state") == "error" and "X: not running" in h.get("reason", ""),
                    10, "the trader reporting X not running")
    import re
    assert re.fullmatch(rf"1 of 2 strategies missing: X: {NOT_RUNNING}", h["reason"]), h
    res = cluster.cli("status", "--json")
    assert res.returncode == 0, res.stderr
    x = {s["name"]: s for s in json.loads(res.stdout)["strategies"]}["X"]
    assert x["state"] == "down" and re.fullmatch(NOT_RUNNING, x["reason"]) and x["registered"], x
    res = cluster.cli("status")
    assert re.search(rf"^\s+X\s+yes\s+down\s+.*{NOT_RUNNING}$", res.stdout, re.M), res.stdout
    res = cluster.cli("check", "strategy", "X")
    assert res.returncode == 1 and re.fullmatch(rf"UNHEALTHY: strategy X: down: {NOT_RUNNING}\n", res.stdout), \
        res.stdout
    res = cluster.cli("check")
    assert res.returncode == 1 and "strategy X: down: not running (no live process" in res.stdout, res.stdout
    # (error; or stale, naming the same error, when a loaded machine made the trader miss epochs)
    assert "1 of 2 strategies missing: X: not running" in res.stdout, res.stdout
    res = cluster.cli("check", "trader")
    assert res.returncode == 1 and "X: not running (no live process; last report for epoch" in res.stdout


def test_check_trader_missed_window(cluster, redis_server):
    """The fields the trader writes when it missed epochs: `check trader` fails within the window."""
    client = redis_server.client()
    k = Keys("t")
    period_ms = 3_600_000                  # an hour: the test never straddles a boundary
    now = time_reply_ms(client.time())
    e = now // period_ms
    client.hset(k.meta, mapping={"period_ms": period_ms, "instance": "i", "created": now})
    client.set(k.lease("trader"), f"host:{os.getpid()}:ab|7", px=60_000)
    client.hset(k.trader, mapping={"state": "ok", "reason": "", "epoch": e, "median": "0.5", "count": 1, "ts": now,
                                   "fence": 7, "leader": f"host:{os.getpid()}:ab", "published": e, "missed": 2,
                                   "last_missed": e - 3, "last_missed_reason": "the trader stalled"})
    want = (f"UNHEALTHY: trader: missed epoch {e - 3} (3 periods ago): the trader stalled; 2 epochs missed since "
            "it started\n")
    res = cluster.cli("check", "trader")
    assert (res.returncode, res.stdout) == (1, want), (res.stdout, res.stderr)
    res = cluster.cli("check", "trader", "--missed-window", "3")
    assert (res.returncode, res.stdout) == (0, "OK: trader published 0.5 for epoch %d (1 strategy)\n" % e), res.stdout
    res = cluster.cli("check", "trader", "--missed-window", "0")
    assert res.returncode == 0, res.stdout
    res = cluster.cli("check", "trader", "--missed-window", "-1")
    assert res.returncode == 2 and "--missed-window" in res.stderr, res.stderr
    res = cluster.cli("check")
    assert res.returncode == 1 and want.split("UNHEALTHY: ")[1].strip() in res.stdout, res.stdout
    res = cluster.cli("check", "--missed-window", "3")
    assert res.returncode == 0 and res.stdout == f"OK: trader published 0.5 for epoch {e}; 0 strategies and " \
                                                  "0 generators ok\n", res.stdout
    res = cluster.cli("status")
    assert (f"missed epoch {e - 3} (3 periods ago): the trader stalled; 2 epochs missed since it started  "
            "(within the last 10 periods: `check` fails)") in res.stdout, res.stdout
    res = cluster.cli("check", "--help")
    assert "--missed-window" in res.stdout and "within the last N periods" in " ".join(res.stdout.split())
    # The trader's state key is gone (its TTL) and nobody leads: no trader running, never its median.
    client.delete(k.trader, k.lease("trader"))
    res = cluster.cli("status", "--json")
    t = json.loads(res.stdout)["trader"]
    assert (t["state"], t["reason"], t["median"]) == ("down", "no trader running (no trader holds the lead)", None)
    res = cluster.cli("check", "trader")
    assert (res.returncode, res.stdout) == (1, "UNHEALTHY: trader: down: no trader running (no trader holds the "
                                               "lead)\n"), res.stdout


def test_status_reads_every_strategy_with_one_scan_pass_and_mget(redis_server):
    """At 10,000s of strategies `status` (and the web page) must stay cheap: one SCAN pass over the
    namespace, an MGET of the decision keys and one of the leases (in parts), and a PTTL only of
    the keys that hold a string; no GET per key.  Its fast path (straight to a pooled connection)
    shows exactly what the ordinary pipeline path shows, wrong types and leases without a TTL too."""
    import redis

    class Other(redis.Redis):   # any other client class takes the pipeline path
        pass

    r = redis.Redis.from_url(redis_server.url)
    k = Keys("t")
    period = 60_000
    now = time_reply_ms(r.time())
    e = now // period
    r.hset(k.meta, "period_ms", period)
    bulk = [f"L{i:05d}" for i in range(2_100)]     # three MGET parts of each kind
    pipe = r.pipeline(transaction=False)
    for name in bulk:
        pipe.set(k.decision(name), f"{e}|0.5", px=600_000)
        pipe.set(k.lease("strategy", name), f"h:1:{name}|1", px=600_000)
    pipe.execute()
    r.sadd(k.strategies, *bulk, "A", "B", "C", "D")
    r.set(k.decision("A"), f"{e}|1.5", px=600_000)
    r.set(k.lease("strategy", "A"), "h:2:a|1", px=600_000)
    r.hset(k.decision("B"), "value", "1")                   # somebody else's hash: unreadable
    r.rpush(k.lease("strategy", "B"), "x")                  # a lease of another type holds nothing
    r.set(k.decision("C"), f"{e - 5}|!error|boom", px=600_000)
    r.set(k.lease("strategy", "C"), "h:3:c|1")              # no TTL: holds nothing
    r.set(k.lease("strategy", "E"), "h:5:e|1", px=600_000)  # a process the trader did not admit yet
    r.set(k.decision("F"), f"{e - 2}|2", px=600_000)        # an old report of a removed name

    r.config_resetstat()
    data = gather(r, k)
    stats = {name[len("cmdstat_"):]: v["calls"] for name, v in r.info("commandstats").items()}
    expected = gather(Other.from_url(redis_server.url), k)
    for d in (data, expected):
        d.pop("server_time_ms")
        for s in d["strategies"]:
            s["age_s"] = None if s["age_s"] is None else round(s["age_s"])   # the two reads are ms apart
    assert data == expected
    rows = {s["name"]: s for s in data["strategies"]}
    assert len(rows) == len(bulk) + 6
    assert {n: rows[n]["state"] for n in "ABCDEF"} == {
        "A": "ok", "B": "down", "C": "down", "D": "down", "E": "joining", "F": "down"}
    assert rows["B"]["reason"] == f"not running (no live process; unreadable: {k.decision('B')} is a hash, expected a string)"
    assert rows["C"]["reason"].startswith("not running (no live process; last report for epoch") and not rows["C"]["owner"]
    assert rows["A"]["value"] == 1.5 and rows["A"]["owner"] == "h:2:a|1" and rows["A"]["age_s"] == 0
    assert all(rows[n]["state"] == "ok" for n in bulk)

    cursor, passes = 0, 0     # the SCAN calls of one pass over the namespace
    while True:
        cursor, _ = r.scan(cursor, match=k.pattern, count=1000)
        passes += 1
        if not cursor:
            break
    assert stats.get("get", 0) == 0, stats
    assert stats["scan"] == passes, (stats, passes)
    strings = 2 * len(bulk) + 6     # decisions (A, C, F) and leases (A, C, E) holding a string
    assert stats["pttl"] == strings + 1, stats   # + the trader's lease (read_holders: a PTTL of each)
    assert stats["mget"] == 2 * 3 + 1, stats      # 3 parts of each kind + the trader's lease
    assert stats.get("type", 0) == 1, stats       # only B's decision key: nil from MGET, seen by SCAN


def test_check_wait_and_check_right_after_deregister(cluster, redis_server):
    """`check --wait S` judges again until healthy (exit 0 at once when it becomes so) or exits 1 with
    the reason at the deadline; `check` right after `deregister` of the missing strategy says OK at
    once, before the trader's next verdict (or after it, on a slow machine: OK either way)."""
    from redismedian.status import deregister
    r, procs, _e0 = running_original(cluster, redis_server, medians=1)
    procs["X"].kill()
    wait_trader(r, lambda h: h.get("state") == "error" and "X: " in h.get("reason", ""), 10,
                "the trader in error naming X")
    t0 = time.monotonic()
    res = cluster.cli("check", "--wait", "1.2")
    waited = time.monotonic() - t0
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stdout.startswith("UNHEALTHY: ") and res.stdout.endswith("; still so after waiting 1.2s\n"), res.stdout
    assert "1 of 2 strategies missing: X" in res.stdout and waited >= 1.2, (res.stdout, waited)

    # X comes back: `check --wait` returns as soon as the trader publishes over both again
    cluster.strategy("X", "g1")
    t0 = time.monotonic()
    res = cluster.cli("check", "--wait", "30")
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert res.stdout.startswith("OK: trader published ") and "2 strategies and 3 generators ok" in res.stdout
    assert time.monotonic() - t0 < 25

    # X dies again; deregistering it ends the trader's error at once
    procs = [p for p in cluster.procs if p.name == "X" and p.alive()]
    for p in procs:
        p.kill()
    h = wait_trader(r, lambda h: h.get("state") == "error" and "X: " in h.get("reason", ""), 10,
                    "the trader in error naming X again")
    client, keys = redis_server.client(), Keys("t")
    deregister(client, keys, "X")
    data = gather(client, keys)
    health = check_deployment(data)
    assert health.healthy, (health.problems, data["trader"])
    if data["trader"]["state"] == "error":     # the usual case: the trader's next verdict is still to come
        assert data["trader"]["epoch"] == int(h["epoch"]) and data["trader"]["cleared_by"] == ["X"]
        assert health.text().startswith("OK: X deregistered after the trader's error for epoch"), health.text()
    res = cluster.cli("check", "--wait", "10")
    assert res.returncode == 0 and res.stdout.startswith("OK: "), res.stdout
