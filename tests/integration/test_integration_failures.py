"""A component killed with SIGKILL: the error propagates, names the right part, and heals by itself."""
import json
import re
import subprocess

from redismedian.keys import Keys
from redismedian.status import gather, render
from tests.integ_support import (ORIGINAL_STRATEGIES, assert_alive, assert_exact, expected_decision,
                                 medians, running_original, server_epoch, start_original, wait_medians,
                                 wait_registered, wait_trader)
from tests.support import cli_binary


def test_killed_generator_stops_its_strategy_and_the_trader_until_restarted(cluster, redis_server):
    p = cluster.period
    r, procs, e0 = running_original(cluster, redis_server, medians=2)

    procs["g1"].kill()
    m = procs["X"].wait_for_output(r"X: no decision for epoch (\d+): signal g1 stale \(last epoch (\d+)\)", 20 * p)
    last_g1 = int(m.group(2))
    h = wait_trader(r, lambda h: h.get("state") == "error" and "stale" in h.get("reason", ""), 20 * p,
                    "trader error with the stale reason")
    assert re.fullmatch(rf"1 of 2 strategies missing: X: signal g1 stale \(last epoch {last_g1}\)", h["reason"]), h
    assert "median" not in h and "count" not in h  # nothing reads a stale median
    procs["trader"].wait_for_output(r"error in epoch \d+: 1 of 2 strategies missing: X: signal g1 stale", 5)

    # status shows who is broken and why: what `status --json` and `status` print (gather, render),
    # read at once here, because g1's signal hash expires 3 periods after its last write and a CLI
    # call is an interpreter start-up (seconds on a loaded machine); the CLI itself is run below
    data = gather(redis_server.client(), Keys("t"))
    text = render(data, cluster.redis_url)
    strats = {s["name"]: s for s in data["strategies"]}
    assert strats["X"]["state"] == "error" and "signal g1 stale" in strats["X"]["reason"]
    assert strats["Y"]["state"] == "ok"
    assert data["trader"]["state"] == "error" and "X: signal g1" in data["trader"]["reason"]
    gens = {g["name"]: g for g in data["generators"]}
    assert gens["g1"]["state"] == "down", gens["g1"]
    assert re.fullmatch(r"not running \(no live process; last signal for epoch \d+, \d+ periods? ago\)",
                        gens["g1"]["reason"]), gens["g1"]
    assert re.search(r"^trader\s+error\s+epoch \d+\s+median -\s+count -", text, re.M), text
    assert re.search(r"^\s+reason: 1 of 2 strategies missing: X: signal g1 stale \(last epoch \d+\)", text, re.M), text
    assert re.search(r"^\s+g1\s+down\s+\S+\s+\d+\s+\S+\s+not running \(no live process; last signal for epoch \d+",
                     text, re.M), text
    assert re.search(r"^\s+X\s+yes\s+error\s+-\s+\d+\s+\S+\s+signal g1 stale", text, re.M), text
    assert all(e["epoch"] <= last_g1 for e in medians(r) if e["epoch"] > e0)
    res = cluster.cli("status", "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    cli = json.loads(res.stdout)
    assert cli["trader"]["state"] == "error" and "X: signal g1" in cli["trader"]["reason"], cli["trader"]
    assert {s["name"]: s["state"] for s in cli["strategies"]} == {"X": "error", "Y": "ok"}, cli["strategies"]
    assert "g1" not in {g["name"]: g for g in cli["generators"] if g["state"] != "down"}, cli["generators"]

    restarted = cluster.generator("g1", "tests.plugins:sig_a")
    first = int(restarted.wait_for_output(r"g1 signal \S+ \(epoch (\d+)\)", 25).group(1))
    wait_medians(r, 2, timeout=20 * p, after_epoch=first - 1)
    entries = [e for e in medians(r) if e["epoch"] > e0]
    assert_exact(entries)
    assert not [e["epoch"] for e in entries if last_g1 < e["epoch"] < first], "median published without g1"
    wait_trader(r, lambda h: h.get("state") == "ok", 10 * p, "trader ok again")
    assert_alive([p_ for n, p_ in procs.items() if n != "g1"] + [restarted])


def test_killed_strategy_is_named_and_a_restart_takes_over_its_name(redis_server, make_cluster):
    # Period 1 s and a trader deadline of 0.4 s: the dead holder renewed its lease (1.5 periods) when it
    # submitted at the start of epoch E, so a successor cannot submit before E+1.5, after the trader's
    # deadline for E+1: the trader must report X missing in E+1, and recover once the successor runs.
    c = make_cluster(redis_server.url, period=1.0)
    r = redis_server.client(decode_responses=True)
    procs = start_original(c, trader_args=("--decision-timeout", "0.4"))
    e0 = wait_registered(r, ORIGINAL_STRATEGIES, c.period)
    wait_medians(r, 1, timeout=20, after_epoch=e0)
    n = procs["X"].output().count("X submitted")
    procs["X"].wait_for_output(r"X submitted ", 10, count=n + 1)  # X just renewed its lease

    procs["X"].kill()
    restarted = c.strategy("X", "g1")
    restarted.wait_for_output(r"strategy name 'X' is held by \S+; waiting up to", 20)
    m = procs["trader"].wait_for_output(
        r"error in epoch (\d+): 1 of 2 strategies missing: X: no decision \(last report for epoch \d+, 1 period ago\)",
        20)   # (its lease is still live: late, not "not running")
    err_epoch = int(m.group(1))
    restarted.wait_for_output(r"took over strategy name 'X' from \S+ \(its lease expired\)", 10)
    restarted.wait_for_output(r"X submitted ", 10)
    after = wait_medians(r, 2, timeout=10, after_epoch=err_epoch)
    assert_exact([e for e in medians(r) if e["epoch"] > e0])
    assert not [e for e in medians(r) if e["epoch"] == err_epoch]
    assert after[0]["count"] == "2"
    wait_trader(r, lambda h: h.get("state") == "ok", 10, "trader ok again")
    assert_alive([restarted] + [p for n, p in procs.items() if n != "X"])
    # the trader kept its lead throughout (its lease never lapsed while it waited for X)
    assert procs["trader"].output().count("took the lead") == 1, procs["trader"].output()


def test_deregistering_dead_and_live_strategies(cluster, redis_server):
    p = cluster.period
    r, procs, e0 = running_original(cluster, redis_server, medians=1)

    procs["X"].kill()
    wait_trader(r, lambda h: h.get("state") == "error" and h.get("reason", "").startswith(
        "1 of 2 strategies missing: X: "), 20 * p, "trader error naming X")

    # a raw SREM of the dead strategy is a deregistration: the trader publishes Y's decision alone.
    # The operator's command line (README); where no CLI is installed, the same command from Python.
    cli = cli_binary()
    if cli:
        out = subprocess.run([cli, "-p", str(redis_server.port), "SREM", "t:strategies", "X"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout.strip() == "1", out
    else:
        assert r.srem("t:strategies", "X") == 1
    e1 = server_epoch(r, p)
    only_y = wait_medians(r, 2, timeout=20 * p, after_epoch=e1)
    assert_exact(only_y, strategies={"Y": ["g2", "g3"]})
    assert float(only_y[0]["median"]) == expected_decision(["g2", "g3"], only_y[0]["epoch"])
    wait_trader(r, lambda h: h.get("state") == "ok" and h.get("count") == "1", 10 * p, "trader ok with 1")

    # SREM of a live strategy: it exits 0 with a clear message and does not register again
    assert r.srem("t:strategies", "Y") == 1
    assert procs["Y"].wait(20 * p) == 0
    assert "Y was deregistered (removed from t:strategies); exiting" in procs["Y"].output()
    assert "still registered" not in procs["Y"].output()
    e2 = server_epoch(r, p)
    wait_trader(r, lambda h: h.get("state") == "idle" and int(h["epoch"]) >= e2 + 2, 20 * p, "trader idle")
    assert r.smembers("t:strategies") == set()
    assert_alive([procs[g] for g in ("g1", "g2", "g3", "trader")])

    # an unknown name is an error that lists what is registered
    res = cluster.cli("deregister", "Q")
    assert res.returncode == 1
    assert "no strategy named 'Q' is registered in namespace 't' (registered: none)" in res.stderr
    assert "Traceback" not in res.stderr
