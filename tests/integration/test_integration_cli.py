"""Mistakes on the command line and name/period conflicts: clear messages, the right exit status."""
import re
import subprocess
import sys

import pytest

from tests.integ_support import run_cli, wait_registered
from tests.support import ROOT, Cluster, RedisServer, has_waitaof, server_version, waitaof_binary

NAME_RULE = "1 to 64 characters: letters, digits, '_', '-' or '.'"

USAGE_ERRORS = [
    (["generator", "--name", "bad name"], NAME_RULE),
    (["generator", "--name", "x" * 65], NAME_RULE),
    (["strategy", "--name", "X", "--signals", "g1,g/2"], NAME_RULE),
    (["strategy", "--name", "X", "--signals", "g1,g1"], "listed twice: g1"),
    (["deregister", "no:colons"], NAME_RULE),
    (["generator", "--name", "g1", "--signal", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
    (["generator", "--name", "g1", "--signal", "tests.plugins:nothing_here"], "has no attribute 'nothing_here'"),
    (["generator", "--name", "g1", "--signal", "tests.plugins"], "is not of the form module:function"),
    (["strategy", "--name", "X", "--signals", "g1", "--decide", "tests.plugins:SIGNALS"], "is not callable"),
    (["generator", "--name", "g1", "--redis-url", "http://127.0.0.1:1/0"], "scheme must be one of"),
    (["trader", "--redis-url", "redis://127.0.0.1:99999/0"], "invalid Redis URL"),
    (["trader", "--redis-url", "redis://127.0.0.1:1/zero"], "database must be a number"),
    (["trader", "--period", "0.01"], "must be between 0.05 and 86400 seconds"),
    (["trader", "--period", "soon"], "'soon' is not a valid float"),
    (["trader", "--period", "1", "--decision-timeout", "2"], "--decision-timeout must be shorter than the period"),
    (["status", "--namespace", "a b"], "invalid namespace 'a b'"),
]


def test_usage_errors_exit_2_and_say_what_is_allowed():
    # all at once: each is a short-lived python process that never reaches Redis
    procs = [subprocess.Popen([sys.executable, "-m", "redismedian", *args], cwd=str(ROOT), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args, _ in USAGE_ERRORS]
    for (args, message), p in zip(USAGE_ERRORS, procs):
        out, err = p.communicate(timeout=60)
        assert p.returncode == 2, (args, p.returncode, out, err)
        assert message in err, (args, err)
        assert "Traceback" not in err and err.startswith("Usage: "), (args, err)


def test_duplicate_live_names_are_refused(cluster, redis_server):
    r = redis_server.client(decode_responses=True)
    g1 = cluster.generator("g1", "tests.plugins:sig_a")
    x = cluster.strategy("X", "g1")
    cluster.trader()                      # the registrar: it admits X at its next period boundary
    wait_registered(r, ["X"], cluster.period)
    x.wait_for_output(r"X submitted ", 20)
    g1_again = cluster.generator("g1", "tests.plugins:sig_b")
    x_again = cluster.strategy("X", "g1")
    assert g1_again.wait(30) == 1
    assert x_again.wait(30) == 1
    assert re.search(r"generator name 'g1' is owned by another live process \(\S+\); stop it first, "
                     r"or pick another name", g1_again.output()), g1_again.output()
    assert re.search(r"strategy name 'X' is owned by another live process \(\S+\); stop it first, "
                     r"or pick another name", x_again.output()), x_again.output()
    # the owners never noticed: they keep their names and keep working
    n = x.output().count("X submitted")
    x.wait_for_output(r"X submitted ", 10, count=n + 2)
    assert g1.alive() and x.alive()
    assert "taken over" not in g1.output() + x.output()
    assert f":{g1.pid}:" in r.get("t:lease:generator:g1") and f":{x.pid}:" in r.get("t:lease:strategy:X")


def test_period_mismatch_is_refused(cluster, redis_server):
    r = redis_server.client(decode_responses=True)
    g1 = cluster.generator("g1", "tests.plugins:sig_a")
    g1.wait_for_output(r"g1 signal ", 20)
    assert r.hget("t:meta", "period_ms") == "500"
    env = cluster.env(REDISMEDIAN_PERIOD="1")
    others = [cluster.start("generator", "--name", "g2", name="g2-1s", env=env),
              cluster.start("strategy", "--name", "S", "--signals", "g1", name="S-1s", env=env),
              cluster.start("trader", name="trader-1s", env=env)]
    for p, kind in zip(others, ("generator", "strategy", "trader")):
        assert p.wait(30) == 1, p.output()
        assert (f"namespace 't' runs with period 0.5s, but this {kind} was started with 1s: "
                "use the same --period, or another --namespace") in p.output()
        assert "Traceback" not in p.output()
        # checked first: a component that is refused never says it started
        assert not re.search(r"INFO .*\bstarted\b", p.output()), p.output()
    assert r.hget("t:meta", "period_ms") == "500" and r.smembers("t:strategies") == set()
    assert g1.alive()


def _refused_in_one_line(p, says: str) -> None:
    assert p.wait(30) == 1, p.output()
    out = p.output()
    assert says in out, out
    assert "Traceback" not in out and not re.search(r"INFO .*\bstarted\b", out), out
    assert len([line for line in out.splitlines() if "ERROR" in line]) == 1, out


def test_wait_aof_is_refused_on_a_server_without_waitaof(cluster):
    # Redis 7.0 (what these tests run by default) has no WAITAOF: `trader --wait-aof` says so at once,
    # naming the server's version, and never starts.
    if has_waitaof():
        pytest.skip(f"{server_version()} has WAITAOF (the refusal is for Redis before 7.2)")
    p = cluster.trader("--wait-aof")
    _refused_in_one_line(p, f"--wait-aof needs WAITAOF, which {server_version()} does not have: use Redis 7.2 or "
                            "later, or Valkey, or run without --wait-aof")


def test_wait_aof_is_refused_on_a_master_without_its_append_only_file(tmp_path):
    binary, why = waitaof_binary()
    if not binary:
        pytest.skip(why)
    server = RedisServer(tmp_path / "valkey", binary=binary).start()      # appendonly no
    c = Cluster(server.url, tmp_path, period=0.5)
    try:
        _refused_in_one_line(c.trader("--wait-aof"), "--wait-aof needs the append-only file on the master "
                                                     "(appendonly yes): WAITAOF refused: ")
        assert not server.client().exists("t:medians")
    finally:
        c.stop_all()
        server.kill()


def test_deregister_and_status_need_a_reachable_redis(tmp_path):
    from tests.support import free_port
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["status", "--redis-url", url], ["deregister", "X", "--redis-url", url]):
        res = run_cli(*args)
        assert res.returncode == 1, res
        assert f"Redis at {url} is not reachable" in res.stderr and "Traceback" not in res.stderr
