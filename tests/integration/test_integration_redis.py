"""Redis goes away (killed, restarted empty, absent at start, hung): every component rides it out."""
import signal
import time

import pytest

from redismedian.common import EXIT_FAILURE
from tests.integ_support import (ORIGINAL_GENERATORS, ORIGINAL_STRATEGIES, assert_alive, assert_exact,
                                 medians, running_original, server_epoch, start_original, wait_medians,
                                 wait_registered, wait_trader)
from tests.support import RedisServer, free_port, hears, wait_until


def _restored(r, period_ms):
    meta = r.hgetall("t:meta")
    return (meta.get("period_ms") == str(period_ms) and meta.get("instance")
            and r.smembers("t:strategies") == set(ORIGINAL_STRATEGIES)
            and all(r.exists(f"t:signal:{g}") for g in ORIGINAL_GENERATORS)
            and all(r.exists(f"t:lease:generator:{g}") for g in ORIGINAL_GENERATORS)
            and all(r.exists(f"t:lease:strategy:{s}") for s in ORIGINAL_STRATEGIES)
            and r.exists("t:lease:trader"))


def test_redis_killed_and_restarted_empty(cluster, redis_server):
    p = cluster.period
    r, procs, e0 = running_original(cluster, redis_server, medians=2)
    instance = r.hget("t:meta", "instance")

    # a real outage: every component notices (and says so once) before Redis returns
    redis_server.kill()
    for proc in procs.values():
        proc.wait_for_output(r"Redis unavailable at redis://127\.0\.0\.1:\d+/0 \(", 20 * p)
    redis_server.start()
    back = time.monotonic()
    r = redis_server.client(decode_responses=True)
    e_back = server_epoch(r, p)
    first = wait_medians(r, 1, timeout=20 * p, after_epoch=e_back)[0]
    took = time.monotonic() - back
    print(f"first median {took:.2f}s ({took / p:.1f} periods) after Redis returned, epoch +{first['epoch'] - e_back}")
    # Components retry at least once a period; the trader restores every registration it remembers into
    # the new record (the strategies' requests to register again find them registered): no epoch is
    # held back for registrations.  A few epochs, plus margin.
    assert first["epoch"] <= e_back + 5, (first, e_back)
    wait_until(lambda: _restored(r, 500), 10 * p, what="registrations, signals, leases and period record restored")
    assert r.hget("t:meta", "instance") != instance
    wait_medians(r, 3, timeout=20 * p, after_epoch=e_back)
    assert_exact(medians(r))  # the new stream: none over a partly restored registry
    for name, proc in procs.items():
        proc.wait_for_output(r"Redis is back at \S+ after \d+\.\ds", 10 * p)
        out = proc.output()
        assert out.count("Redis unavailable") == 1, (name, out)
        assert out.count("Redis is back") == 1, (name, out)
        assert "Traceback" not in out, (name, out)
    # every component saw that the record is a new one; the strategies' registrations came back
    # (the trader restored every name it remembered: no strategy had to wait for its admission)
    for name, proc in procs.items():
        proc.wait_for_output(r"Redis lost its data \(deployment record re-created\)", 5)
    procs["trader"].wait_for_output(r"Redis lost its data \(new deployment record\); restored 2 registration\(s\)"
                                    r": X, Y", 5)
    assert not r.hexists("t:meta", "recreated")   # so no epoch was held back for registrations
    assert_alive(procs.values())

    # a quick restart (killed and back at once): some components may not even notice the outage,
    # but all find out that Redis lost its data and restore their state
    e1 = server_epoch(r, p)
    redis_server.restart()
    r = redis_server.client(decode_responses=True)
    wait_until(lambda: _restored(r, 500), 20 * p, what="state restored after the quick restart")
    wait_medians(r, 2, timeout=20 * p, after_epoch=e1)
    assert_exact(medians(r))
    for name, proc in procs.items():
        out = proc.output()
        assert out.count("Redis unavailable") <= 2 and "Traceback" not in out, (name, out)
    assert_alive(procs.values())


def test_components_started_before_redis_wait_for_it(tmp_path, make_cluster):
    port = free_port()
    c = make_cluster(f"redis://127.0.0.1:{port}/0")
    procs = start_original(c)
    for proc in procs.values():
        proc.wait_for_output(rf"Redis unavailable at redis://127\.0\.0\.1:{port}/0 \(", 20)
    server = RedisServer(tmp_path / "late", port=port)
    try:
        server.start()
        r = server.client(decode_responses=True)
        e0 = wait_registered(r, ORIGINAL_STRATEGIES, c.period)
        wait_medians(r, 2, timeout=20, after_epoch=e0)
        assert_exact([e for e in medians(r) if e["epoch"] > e0])
        for name, proc in procs.items():
            proc.wait_for_output(r"Redis is back at", 5)
            assert proc.output().count("Redis unavailable") == 1, (name, proc.output())
        assert_alive(procs.values())
    finally:
        c.stop_all()
        server.kill()


@pytest.mark.parametrize("condition", ["running", "hung", "down"])
def test_sigterm_and_sigint_stop_every_component_within_2s(condition, cluster, redis_server):
    r = redis_server.client(decode_responses=True)
    procs = {
        ("gA", signal.SIGTERM): cluster.generator("gA", "tests.plugins:sig_a"),
        ("gB", signal.SIGINT): cluster.generator("gB", "tests.plugins:sig_b"),
        ("S1", signal.SIGTERM): cluster.strategy("S1", "gA"),
        ("S2", signal.SIGINT): cluster.strategy("S2", "gB"),
        ("T1", signal.SIGTERM): cluster.trader(),
        ("T2", signal.SIGINT): cluster.trader(),
    }
    e0 = wait_registered(r, ["S1", "S2"], cluster.period)
    wait_medians(r, 1, timeout=20, after_epoch=e0)
    wait_until(lambda: any("standing by" in p.output() for (n, _), p in procs.items() if n.startswith("T")), 10,
               what="one trader standing by")
    if condition == "hung":
        redis_server.pause()  # accepts connections, never answers: calls block until --socket-timeout (5 s)
        time.sleep(cluster.period)  # not a wait for success: lets every component block on the hung server
    elif condition == "down":
        redis_server.kill()
        for p in procs.values():
            p.wait_for_output("Redis unavailable", 20)
    sent = {}
    for key, p in procs.items():
        p.signal(key[1])
        sent[key] = time.monotonic()
    for key, p in procs.items():
        left = sent[key] + 2.0 - time.monotonic()
        try:
            code = p.wait(max(0.0, left))
        except Exception:
            raise AssertionError(f"{key[0]} still running 2s after {key[1].name} ({condition}):\n"
                                 f"{p.output()[-3000:]}") from None
        out = p.output()
        if condition == "hung" and code != 0:
            # Stuck in a call to the hung Redis (its reply, or the lease release on the way out): the
            # watchdog ends the process in time anyway, and reports it as a failure, not a clean stop.
            assert code == EXIT_FAILURE and "clean stop took longer than" in out, (key, code, out[-3000:])
        else:
            assert code == 0, (key, code, out[-3000:])
        assert f"received {key[1].name}, stopping" in out, out
        assert "Traceback" not in out, out
    if condition == "hung":
        redis_server.resume()
    if condition != "down":
        # a clean stop releases the names, so a successor starts at once
        r = redis_server.client(decode_responses=True)
        left = [k for k in ("t:lease:generator:gA", "t:lease:generator:gB", "t:lease:strategy:S1",
                            "t:lease:strategy:S2", "t:lease:trader") if r.exists(k)]
        if condition == "running":
            assert not left, left


def test_strategy_alone_after_data_loss_asks_again_and_a_new_trader_admits_it(cluster, redis_server):
    """A strategy never registers itself: alone it is not registered; the trader admits it.  After
    Redis lost its data with no trader running, the strategy re-creates the deployment record (and
    sees a new one: regression, the record was once re-created with the creator's own old instance
    id, so that its creator saw no data loss and exited as if deregistered), asks to be registered
    again and keeps running; a trader started after the loss (it remembers nothing) admits it, and
    publishes nothing in that epoch and the next (the strategy is older than the record)."""
    p = cluster.period
    r = redis_server.client(decode_responses=True)
    g1 = cluster.generator("g1", "tests.plugins:sig_a")
    x = cluster.strategy("X", "g1")  # alone: it creates the deployment record
    x.wait_for_output(r"started X \(signals g1, period 0\.5s\): asked the trader to register it", 20)
    x.wait_for_output(r"X decided \S+ \(not registered yet: waiting for the trader to admit it\)", 20)
    assert r.smembers("t:strategies") == set() and hears(r, "t:joins", "X", 4 * p), "it asks at every report"
    trader = cluster.trader()
    wait_registered(r, ["X"], p)
    x.wait_for_output(r"registered X \(admitted by the trader\)", 20)
    x.wait_for_output(r"X submitted ", 20)
    instance = r.hget("t:meta", "instance")
    trader.signal(signal.SIGTERM)
    assert trader.wait(5) == 0
    redis_server.kill()
    x.wait_for_output("Redis unavailable", 20)
    redis_server.start()
    r = redis_server.client(decode_responses=True)
    x.wait_for_output(r"Redis lost its data \(deployment record re-created\)", 20)
    x.wait_for_output(r"X is no longer in t:strategies and was not deregistered \(Redis lost its data, or the "
                      r"registry was deleted\); asked the trader to register it again", 20)
    assert r.hget("t:meta", "instance") != instance
    assert r.smembers("t:strategies") == set() and hears(r, "t:joins", "X", 4 * p), "it asks at every report"
    assert x.alive() and "was deregistered" not in x.output(), x.output()

    fresh = cluster.trader()
    wait_registered(r, ["X"], p)
    h = wait_trader(r, lambda h: h.get("state") == "starting" and "Redis lost its data" in h.get("reason", ""),
                    10 * p, "the trader holding off while strategies register again")
    c = int(r.hget("t:meta", "recreated")) // int(p * 1000)
    assert f"since epoch {c} " in h["reason"] and h["reason"].endswith(f"from epoch {c + 2}"), h
    first = wait_medians(r, 1, timeout=20 * p)[0]
    assert first["epoch"] >= c + 2, (first, c)
    assert_exact(medians(r), {"X": ["g1"]})
    assert_alive([x, g1, fresh])
