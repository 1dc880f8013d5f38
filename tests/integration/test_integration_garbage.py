"""Garbage written by hand into the keys the components read: nobody crashes, the problem is reported
(logs, reasons, status), and the pipeline resumes by itself once the garbage is removed or repaired.
Whatever happens, every median that is published is exact."""
import json
import signal

from tests.integ_support import (ORIGINAL_STRATEGIES, assert_alive, assert_exact, assert_exact_by_members,
                                 medians, running_original, server_epoch, trader_hash, wait_medians,
                                 wait_registered, wait_trader)
from tests.support import wait_until


def _replace(r, key, value):
    """Atomically replace ``key`` by a string (nobody re-creates it in between)."""
    pipe = r.pipeline(transaction=True)
    pipe.delete(key)
    pipe.set(key, value)
    pipe.execute()


def _status(cluster) -> dict:
    res = cluster.cli("status", "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    return json.loads(res.stdout)


def _resumes(r, p, count=2):
    return wait_medians(r, count, timeout=20 * p, after_epoch=server_epoch(r, p))


def test_garbage_in_shared_keys(cluster, redis_server):
    p = cluster.period
    r, procs, e0 = running_original(cluster, redis_server, medians=1)

    # a generator's signal feed: not a stream (its generator repairs it), then entries with garbage fields
    _replace(r, "t:signals:g1", "garbage")
    procs["g1"].wait_for_output(r"repaired t:signals:g1 was a string", 20 * p)
    r.xadd("t:signals:g1", {"junk": "1"})
    r.xadd("t:signals:g1", {"name": "g1", "epoch": "notanumber", "value": "nan", "status": "ok"})
    r.xadd("t:signals:g2", {"name": "g2", "epoch": "99999999999", "value": "nan", "status": "???"})
    _resumes(r, p)

    # the doorbells of the next epochs: counters that are not counters (no strategy can count, so
    # nobody rings), rings and join requests that are junk: the trader looks late, or early, never
    # elsewhere
    e = server_epoch(r, p)
    for k in range(1, 4):
        r.set(f"t:count:{(e + k) % 4}", "garbage")
    for junk in ("garbage", "", "X Y", "\x1b[31m", "9" * 100):
        r.publish("t:ready", junk)
        r.publish("t:joins", junk)
    wait_medians(r, 1, timeout=20 * p, after_epoch=e + 3)
    published = {m["epoch"] for m in medians(r)} & {e + 1, e + 2, e + 3}
    assert len(published) >= 2, f"epochs with garbage doorbells published: {sorted(published)} of {e + 1}..{e + 3}"
    # a doorbell rung early and a counter that already says "everyone": the trader reads at once,
    # finds decisions missing, and waits on
    e = server_epoch(r, p)
    for k in range(1, 4):
        r.set(f"t:count:{(e + k) % 4}", "1")
        r.publish("t:ready", str(e + k))
    wait_medians(r, 1, timeout=20 * p, after_epoch=e + 3)
    # a strategy's decision key holding garbage: its strategy overwrites it at its next report
    e = server_epoch(r, p)
    r.delete("t:decision:X")
    r.rpush("t:decision:X", "garbage")
    procs["X"].wait_for_output(r"X submitted ", 10 * p, count=procs["X"].output().count("X submitted ") + 1)
    assert r.type("t:decision:X") == "string"
    _resumes(r, p)
    # a registered name (SADD by hand counts as a registration) whose decisions are infinite, then
    # not numbers in the strict grammar, written for the running epoch: the trader refuses them
    r.sadd("t:strategies", "Z")
    for bad in ("inf", "1_000"):
        def forged(bad=bad):
            r.set("t:lease:strategy:Z", "host:1:z|0", px=5000)   # "alive" (else: Z not running)
            r.set("t:decision:Z", f"{server_epoch(r, p)}|{bad}", px=5000)
            h = trader_hash(r)
            return h if f"Z: decision {bad!r} in t:decision:Z" in h.get("reason", "") else None
        h = wait_until(forged, 20 * p, what=f"trader error about Z's decision {bad!r}")
        assert h["state"] == "error" and "median" not in h, h
        assert h["reason"].startswith("1 of 3 strategies missing: Z: "), h
    assert r.srem("t:strategies", "Z") == 1   # deregistered: its decision key no longer counts
    _resumes(r, p)
    wait_trader(r, lambda h: h.get("state") == "ok" and h.get("count") == "2", 20 * p, "trader ok over X, Y")
    assert r.smembers("t:strategies") == set(ORIGINAL_STRATEGIES)

    # the registry: not a set, then deleted: each time it is restored from its backup at once
    # (docs/guarantees.md, "Registrations"), nobody exits and nobody is deregistered
    _replace(r, "t:strategies", "garbage")
    wait_until(lambda: r.type("t:strategies") == "set", 20 * p, what="the registry a set again")
    wait_registered(r, ORIGINAL_STRATEGIES, p)
    wait_until(lambda: any("registry repaired: t:strategies was a string (replaced by t:strategies:backup)"
                           in proc.output() for proc in procs.values()), 20 * p, what="the repair logged")
    _resumes(r, p)
    r.delete("t:strategies")
    wait_registered(r, ORIGINAL_STRATEGIES, p)
    _resumes(r, p)

    # the trader's own hash: not a hash, then nonsense fields (a 'published' epoch far in the future)
    _replace(r, "t:trader", "garbage")
    wait_until(lambda: trader_hash(r).get("state") == "ok", 20 * p, what="trader hash repaired")
    r.hset("t:trader", mapping={"published": "99999999999", "epoch": "nan", "median": "nan", "ts": "x"})
    _status(cluster)
    _resumes(r, p)

    assert_exact([m for m in medians(r) if m["epoch"] > e0])
    assert_alive(procs.values())
    for name, proc in procs.items():
        assert "Traceback" not in proc.output(), (name, proc.output())


def test_garbage_in_the_deployment_record_and_a_signal(cluster, redis_server):
    p = cluster.period
    r, procs, e0 = running_original(cluster, redis_server, medians=1)
    meta = r.hgetall("t:meta")

    # NS:meta of the wrong type: everyone reports it (once), a strategy started meanwhile waits for it
    _replace(r, "t:meta", "garbage")
    for proc in procs.values():
        proc.wait_for_output(r"t:meta is a string, expected a hash", 20 * p)
    q = cluster.strategy("Q", "g1")
    q.wait_for_output(r"cannot start: t:meta is a string, expected a hash", 30)
    assert any("t:meta is a string, expected a hash" in prob for prob in _status(cluster)["problems"])
    e = server_epoch(r, p)
    wait_until(lambda: server_epoch(r, p) >= e + 3, 10 * p, what="three more periods")
    for name, proc in list(procs.items()) + [("Q", q)]:
        assert proc.output().count("t:meta is a string") == 1, (name, proc.output())  # once, not each period
    pipe = r.pipeline(transaction=True)
    pipe.delete("t:meta")
    pipe.hset("t:meta", mapping=meta)
    pipe.execute()
    q.wait_for_output(r"started Q \(signals g1, period 0\.5s\): asked the trader to register it", 20 * p)
    q.wait_for_output(r"registered Q \(admitted by the trader\)", 20 * p)
    strategies = dict(ORIGINAL_STRATEGIES, Q=["g1"])
    wait_registered(r, strategies, p)
    _resumes(r, p)

    # NS:meta with a period that is not a number: reported, nobody exits
    r.hset("t:meta", "period_ms", "nan")
    for proc in list(procs.values()) + [q]:
        proc.wait_for_output(r't:meta has period_ms "nan", not a period in ms', 20 * p)
    assert any("has period_ms 'nan', not a period in ms" in prob for prob in _status(cluster)["problems"])
    r.hset("t:meta", "period_ms", meta["period_ms"])
    _resumes(r, p)

    # a signal hash whose generator is gone: not a hash, then NaN fields
    g1 = procs.pop("g1")
    g1.signal(signal.SIGTERM)
    assert g1.wait(10) == 0
    _replace(r, "t:signal:g1", "garbage")
    procs["X"].wait_for_output(r"X: no decision for epoch \d+: signal g1 unreadable \(t:signal:g1: WRONGTYPE",
                               20 * p)
    wait_trader(r, lambda h: "X: signal g1 unreadable" in h.get("reason", ""), 20 * p, "trader naming X")
    data = _status(cluster)
    assert {g["name"]: g["state"] for g in data["generators"]}["g1"] == "unreadable"
    assert "signal g1 unreadable" in {s["name"]: s["reason"] for s in data["strategies"]}["X"]
    pipe = r.pipeline(transaction=True)
    pipe.delete("t:signal:g1")
    pipe.hset("t:signal:g1", mapping={"epoch": "nan", "value": "nan", "status": "ok"})
    pipe.execute()
    procs["X"].wait_for_output(r"signal g1 malformed \(epoch 'nan'\)", 20 * p)
    procs["g1"] = cluster.generator("g1", "tests.plugins:sig_a")  # repairs its hash
    procs["g1"].wait_for_output(r"g1 signal ", 30)
    wait_medians(r, 2, timeout=20 * p, after_epoch=server_epoch(r, p))

    assert_exact_by_members([m for m in medians(r) if m["epoch"] > e0], strategies)
    assert [m for m in medians(r) if m["count"] == "3"], "Q never took part"
    assert_alive(list(procs.values()) + [q])
    for name, proc in list(procs.items()) + [("Q", q)]:
        assert "Traceback" not in proc.output(), (name, proc.output())
