"""Nothing stale, nothing silent: what a reader of the median sees when the trader dies, stalls, or
acts on the median (real redis-server, real processes, period 0.5 s).

- NS:trader disappears within 3 periods of its trader's death: nobody reads a dead trader's median.
- An epoch the trader stalls across is recorded (NS:trader missed / last_missed / last_missed_reason,
  a WARNING line naming it, NS:events), never silently skipped.
- ``redismedian follow --json`` prints every median as published, and the epochs that were not.
- ``--on-median`` with two traders and a kill -9 of the leader: every published epoch acted on at
  least once, none that was not published, only a takeover epoch twice, and an exception retried.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

from tests import plugins
from tests.support import ROOT, wait_until

PERIOD = 0.5
NS = "t"


def _start_pipeline(cluster, *trader_args, traders=1, trader_env=None):
    cluster.generator("g1", "tests.plugins:sig_a")
    cluster.generator("g2", "tests.plugins:sig_b")
    cluster.strategy("X", "g1")
    cluster.strategy("Y", "g2")
    return [cluster.start("trader", *trader_args, name=f"trader{i}", env=trader_env) for i in range(traders)]


def _expected(epoch: int) -> float:
    return statistics.median([plugins.sig_a(epoch), plugins.sig_b(epoch)])


def _medians(admin):
    return [f for _i, f in admin.xrange(f"{NS}:medians")]


def _full(admin):
    return [f for f in _medians(admin) if f["members"] == "X,Y"]


def _server_epoch(admin) -> int:
    sec, usec = admin.time()
    return int((sec * 1000 + usec // 1000) // (PERIOD * 1000))


def test_a_dead_traders_state_disappears_within_three_periods(cluster, redis_server):
    admin = redis_server.client(decode_responses=True)
    (trader,) = _start_pipeline(cluster)
    wait_until(lambda: len(_full(admin)) >= 2, 20, what="medians of X and Y")
    assert admin.hget(f"{NS}:trader", "state") == "ok"
    assert 0 < admin.pttl(f"{NS}:trader") <= 3 * PERIOD * 1000
    trader.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not admin.exists(f"{NS}:trader"), 3 * PERIOD + 2, interval=0.01,
               what="NS:trader gone after the trader died")
    assert time.monotonic() - killed <= 3 * PERIOD + 0.5
    r = cluster.cli("check", "trader")
    assert r.returncode == 1, r.stdout + r.stderr
    # The history stays: every entry still says its epoch, server time and fence.
    for f in _medians(admin):
        assert {"epoch", "median", "ts", "fence"} <= set(f)


def test_an_epoch_the_trader_stalls_across_is_recorded_not_skipped(cluster, redis_server):
    admin = redis_server.client(decode_responses=True)
    (trader,) = _start_pipeline(cluster)
    wait_until(lambda: len(_full(admin)) >= 2, 20, what="medians of X and Y")
    # Stop the trader just after a boundary, for longer than a period: that epoch's deadline passes.
    e = _server_epoch(admin)
    wait_until(lambda: _server_epoch(admin) > e, 2, interval=0.005, what="the next boundary")
    stalled = _server_epoch(admin)
    trader.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: _server_epoch(admin) >= stalled + 2, 3, interval=0.01, what="two boundaries")
    finally:
        trader.signal(signal.SIGCONT)
    wait_until(lambda: admin.hget(f"{NS}:trader", "last_missed") is not None, 10, what="the missed epoch recorded")
    h = admin.hgetall(f"{NS}:trader")
    assert int(h["missed"]) >= 1 and int(h["last_missed"]) >= stalled and h["last_missed_reason"], h
    published = {int(f["epoch"]) for f in _medians(admin)}
    events = [f for _i, f in admin.xrange(f"{NS}:events")]
    missed = set()
    for f in events:
        if f["status"] == "missed":
            missed |= set(range(int(f["epoch"]), int(f["last"]) + 1))
    assert stalled in missed | published, (stalled, events)
    # Every epoch from the first median of both strategies on is accounted for: published, an error,
    # or recorded missed.  (Before it, a median of X alone can be followed by the registry's
    # start-up window while Y registers: 'starting' in NS:trader, not a gap.)
    errors = {int(f["epoch"]) for f in events if f["status"] == "error"}
    first, last = min(int(f["epoch"]) for f in _full(admin)), max(published)
    assert set(range(first, last + 1)) <= published | missed | errors
    assert not (published & missed), "an epoch both published and recorded missed"
    out = trader.output()
    assert "WARNING" in out and "missed epoch" in out and str(sorted(missed)[0]) in out, out[-2000:]
    r = cluster.cli("check", "trader")
    assert r.returncode == 1 and "missed" in (r.stdout + r.stderr), r.stdout + r.stderr
    for f in _medians(admin):
        if f["members"] == "X,Y":
            assert float(f["median"]) == _expected(int(f["epoch"]))


def _follow_json(cluster, redis_server, tmp_path):
    """The pipeline running with a median in, and `follow --json` writing into a file."""
    admin = redis_server.client(decode_responses=True)
    _start_pipeline(cluster)
    wait_until(lambda: len(_full(admin)) >= 1, 20, what="a median of X and Y")
    out = tmp_path / "follow.jsonl"
    with open(out, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "redismedian", "follow", "--json"], env=cluster.env(),
                             cwd=str(ROOT), stdout=f, stderr=subprocess.PIPE, start_new_session=True)
    return admin, out, p


def test_follow_json_prints_every_median_and_every_epoch_that_was_not(cluster, redis_server, tmp_path):
    admin, out, p = _follow_json(cluster, redis_server, tmp_path)
    try:
        n = len(_medians(admin))
        wait_until(lambda: len(_medians(admin)) >= n + 3, 10, what="three more medians")
        # A strategy stops: the trader goes to error, and follow reports it.
        x = next(q for q in cluster.procs if q.name == "X")
        x.signal(signal.SIGSTOP)
        try:
            wait_until(lambda: any(json.loads(line).get("status") == "error"
                                   for line in out.read_text().splitlines()), 10, what="an error line from follow")
        finally:
            x.signal(signal.SIGCONT)
        m = len(_medians(admin))
        wait_until(lambda: len(_medians(admin)) >= m + 2, 10, what="medians again")
        wait_until(lambda: sum(1 for line in out.read_text().splitlines() if "median" in json.loads(line))
                   >= 5, 5, what="follow caught up")
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0, p.stderr.read().decode()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    medians = [o for o in lines if "median" in o]
    assert medians and all(set(o) == {"epoch", "median", "count", "members", "ts", "fence"} for o in medians)
    published = {int(f["epoch"]): f for f in _medians(admin)}
    for o in medians:
        f = published[o["epoch"]]
        assert o["median"] == float(f["median"]) and o["count"] == int(f["count"]) and o["fence"] == int(f["fence"])
        assert o["members"] == ["X", "Y"] and o["median"] == _expected(o["epoch"])
    epochs = [o["epoch"] for o in medians]
    assert epochs == sorted(set(epochs)), "in order, each once"
    # Every median published while follow ran is there: none skipped between the first and the last.
    assert [e for e in sorted(published) if epochs[0] <= e <= epochs[-1]] == epochs
    errors = [o for o in lines if o.get("status") == "error"]
    assert errors and all("X" in o["reason"] for o in errors)
    # the two forms the README documents, and nothing else on stdout
    assert all(set(o) == {"status", "epoch", "last", "reason", "ts", "fence"} for o in errors), errors
    assert all(o["last"] >= o["epoch"] and isinstance(o["fence"], int) for o in errors), errors
    assert all(("median" in o) != ("status" in o) for o in lines), lines


def test_follow_since_an_epoch_and_bad_since(cluster, redis_server):
    admin = redis_server.client(decode_responses=True)
    _start_pipeline(cluster)
    wait_until(lambda: len(_full(admin)) >= 4, 20, what="four medians")
    third = int(_full(admin)[2]["epoch"])
    p = subprocess.Popen([sys.executable, "-m", "redismedian", "follow", "--since", str(third)], env=cluster.env(),
                         cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        line = p.stdout.readline()
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(10)
    assert line.startswith(f"epoch {third} "), line
    r = cluster.cli("follow", "--since", "yesterday")
    assert r.returncode == 2 and "--since" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_on_median_acts_at_least_once_across_a_leader_crash(cluster, redis_server, tmp_path):
    admin = redis_server.client(decode_responses=True)
    log = tmp_path / "acted.log"
    fail_file = tmp_path / "fail"
    env = cluster.env(REDISMEDIAN_TEST_ACTED=str(log), REDISMEDIAN_TEST_FAIL_FILE=str(fail_file))
    traders = _start_pipeline(cluster, "--on-median", "tests.plugins:record_median", traders=2, trader_env=env)
    wait_until(lambda: len(_full(admin)) >= 3 and log.exists(), 20, what="medians acted on")

    def acted():
        return [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []
    # The action fails for a while: nothing is acted on, and it is retried once it works again.
    fail_file.write_text("1")
    wait_until(lambda: "not acted on" in "".join(t.output() for t in traders), 10, what="a failing action logged")
    assert "on-median action raised" in admin.hget(f"{NS}:trader", "action_error")
    fail_file.unlink()
    # Kill -9 the leader; the standby takes over.
    leader_owner = admin.get(f"{NS}:lease:trader").rpartition("|")[0]
    leader = next(t for t in traders if f":{t.pid}:" in leader_owner)
    n = len(_medians(admin))
    wait_until(lambda: len(_medians(admin)) >= n + 2, 10, what="medians after the action recovered")
    leader.signal(signal.SIGKILL)
    m = len(_medians(admin))
    wait_until(lambda: len(_medians(admin)) >= m + 4, 15, what="medians from the new leader")
    wait_until(lambda: int(admin.get(f"{NS}:acted") or 0) >= int(_medians(admin)[-2]["epoch"]), 5,
               what="the new leader caught up")
    published = {int(f["epoch"]): float(f["median"]) for f in _medians(admin)}
    first_acted = min(int(e) for e, _m, _f in acted())
    last_acted = int(admin.get(f"{NS}:acted"))
    # At least once for every published epoch from the first acted on to the last recorded.
    seen: dict[int, int] = {}
    for e, med, fence in acted():
        e = int(e)
        assert e in published, f"acted on epoch {e}, which was not published"
        assert float(med) == published[e]
        seen[e] = seen.get(e, 0) + 1
    for e in published:
        if first_acted <= e <= last_acted:
            assert e in seen, f"published epoch {e} never acted on"
    twice = [e for e, c in seen.items() if c > 1]
    assert len(twice) <= 1, f"acted twice on {twice}: only a takeover epoch may be"
    fences = [int(f) for _e, _m, f in acted()]
    assert fences == sorted(fences), "the fence passed to the action only grows"
    assert os.path.exists(log)


def test_follow_rides_out_a_redis_restart(cluster, redis_server, tmp_path):
    _admin, out, p = _follow_json(cluster, redis_server, tmp_path)
    try:
        def followed():
            return [json.loads(line) for line in out.read_text().splitlines() if "median" in json.loads(line)]
        wait_until(lambda: len(followed()) >= 2, 10, what="follow printing medians")
        redis_server.restart()                        # no persistence: Redis comes back empty
        before = len(followed())
        wait_until(lambda: len(followed()) >= before + 2, 30, what="follow printing medians after the restart")
        assert p.poll() is None, "follow exited"
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    epochs = [o["epoch"] for o in followed()]
    assert epochs == sorted(set(epochs))
    for o in followed():
        assert o["median"] == _expected(o["epoch"])
    assert "Traceback" not in p.stderr.read().decode()
