"""Steady state: the original topology publishes the exact median every period; status shows it."""
import json
import re

from tests import plugins
from tests.integ_support import (ORIGINAL_GENERATORS, ORIGINAL_STRATEGIES, assert_alive, assert_exact,
                                 expected_decision, expected_median, medians, run_cli,
                                 start_module, start_original, wait_medians, wait_registered, wait_trader)


def test_original_topology_exact_medians_and_status(cluster, redis_server):
    """Half the components run as `python -m redismedian.<part>`, half as subcommands: same behaviour."""
    r = redis_server.client(decode_responses=True)
    procs = {
        "g1": start_module(cluster, "generator", "--name", "g1", "--signal", "tests.plugins:sig_a", name="g1"),
        "g2": cluster.generator("g2", "tests.plugins:sig_b"),
        "g3": cluster.generator("g3", "tests.plugins:sig_c"),
        "trader": start_module(cluster, "trader", name="trader"),
        "X": start_module(cluster, "strategy", "--name", "X", "--signals", "g1", name="X"),
        "Y": cluster.strategy("Y", "g2,g3"),
    }
    e0 = wait_registered(r, ORIGINAL_STRATEGIES, cluster.period)
    entries = wait_medians(r, 4, timeout=25, after_epoch=e0)
    assert_exact(entries)
    assert_alive(procs.values())
    # each median is logged by the trader, and each decision by its strategy
    last = entries[-1]
    procs["trader"].wait_for_output(re.escape(f"median: {float(last['median'])!r}"), timeout=5)
    procs["X"].wait_for_output(re.escape(f"X submitted {expected_decision(['g1'], last['epoch'])!r}"), timeout=5)

    wait_trader(r, lambda h: h.get("state") == "ok", 10, "trader state ok")
    # status --json: every part, with state, value, epoch, age and reason
    res = cluster.cli("status", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["namespace"] == "t" and data["period_ms"] == 500
    t = data["trader"]
    assert t["state"] == "ok" and t["reason"] == ""
    assert t["median"] == expected_median(t["epoch"]) and t["count"] == 2
    assert 0 <= t["age_s"] < 5 and t["leader"]
    assert data["epoch"] - 2 <= t["epoch"] <= data["epoch"]
    gens = {g["name"]: g for g in data["generators"]}
    assert set(gens) == set(ORIGINAL_GENERATORS)
    for name, g in gens.items():
        assert g["state"] == "ok", g
        assert g["value"] == plugins.SIGNALS[ORIGINAL_GENERATORS[name]](g["epoch"])
        assert g["owner"] and g["reason"] == "" and 0 <= g["age_s"] < 5
    strats = {s["name"]: s for s in data["strategies"]}
    assert set(strats) == set(ORIGINAL_STRATEGIES)
    for name, s in strats.items():
        assert s["state"] == "ok" and s["registered"] is True and s["reason"] == "", s
        assert s["value"] == expected_decision(ORIGINAL_STRATEGIES[name], s["epoch"])
        assert s["owner"] and 0 <= s["age_s"] < 5

    # the human view shows the same things
    res = cluster.cli("status")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "namespace t, period 0.5s" in out
    assert re.search(r"^trader\s+ok\s+epoch \d+\s+median \S+\s+count 2\s+age \S+s\s+leader \S+", out, re.M), out
    for name in ORIGINAL_GENERATORS:
        assert re.search(rf"^\s+{name}\s+ok\s+\S+\s+\d+", out, re.M), out
    for name in ORIGINAL_STRATEGIES:
        assert re.search(rf"^\s+{name}\s+yes\s+ok\s+\S+\s+\d+", out, re.M), out


def test_python_m_modules_are_the_subcommands(tmp_path):
    """`python -m redismedian.<part>` has the subcommand's help and refuses the same mistakes."""
    for part in ("generator", "strategy", "trader"):
        res = run_cli("--help", module=f"redismedian.{part}")
        assert res.returncode == 0, res.stderr
        assert f"Usage: python -m redismedian.{part} [OPTIONS]" in res.stdout
        sub = run_cli(part, "--help")
        # the same options, documented the same way
        assert res.stdout.split("Options:")[1] == sub.stdout.split("Options:")[1]
    res = run_cli("--name", "bad name", module="redismedian.generator")
    assert res.returncode == 2 and "letters, digits" in res.stderr and "Traceback" not in res.stderr


def test_period_of_0_2s_publishes_exact_medians(redis_server, make_cluster):
    c = make_cluster(redis_server.url, period=0.2)
    r = redis_server.client(decode_responses=True)
    procs = start_original(c)
    e0 = wait_registered(r, ORIGINAL_STRATEGIES, c.period)
    entries = wait_medians(r, 8, timeout=25, after_epoch=e0)
    assert_exact(entries)
    assert_alive(procs.values())
    h = wait_trader(r, lambda h: h.get("state") == "ok", 10, "trader state ok")
    assert h["count"] == "2" and float(h["median"]) == expected_median(int(h["epoch"]))
    # keeps going: more exact medians, none twice
    more = wait_medians(r, 8, timeout=20, after_epoch=entries[-1]["epoch"])
    assert_exact([e for e in medians(r) if e["epoch"] > e0])
    assert more[0]["epoch"] > entries[-1]["epoch"]
