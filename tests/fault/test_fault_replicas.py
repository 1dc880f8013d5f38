"""--min-replicas (and --wait-aof, where the server has WAITAOF) against a real master and a real
replica (period 0.5 s): medians are acted on while the replica acknowledges them; with the replica
stopped (SIGSTOP) the trader goes to error naming the replicas, --on-median is not called for those
epochs, each is recorded as an `unacknowledged` gap, `check` exits 1; resumed, the trader is ok
again.  Then `redismedian verify` holds over the whole history (every median recomputed from the
inputs recorded with it).  And a Sentinel failover under --min-replicas 1."""
from __future__ import annotations

import os
import re
import time

import pytest
import redis

from tests.fault.test_fault_sentinel import SENTINEL_PW, sentinel_deployment  # noqa: F401 - the fixture
from tests.support import Cluster, RedisServer, waitaof_binary, wait_until

NS = "t"
PERIOD = 0.5


def _entries(admin, key):
    return [f for _id, f in admin.xrange(key)]



def _start_acting_pipeline(cluster, log):
    """g1, g2, X on g1, Y on g2; the environment of a trader under --min-replicas 1 whose
    --on-median (tests.plugins:record_median) appends every call to ``log``."""
    env = cluster.env(REDISMEDIAN_TEST_ACTED=str(log), REDISMEDIAN_MIN_REPLICAS="1")
    cluster.generator("g1", "tests.plugins:sig_a")
    cluster.generator("g2", "tests.plugins:sig_b")
    cluster.strategy("X", "g1")
    cluster.strategy("Y", "g2")
    return env

@pytest.mark.parametrize("command", ["WAIT", "WAITAOF"])
def test_min_replicas_acts_only_on_acknowledged_medians(command, tmp_path):
    """WAIT: --min-replicas 1 on the server under test.  WAITAOF: --min-replicas 1 --wait-aof on a
    server that has it (Valkey, Redis 7.2+), master and replica with `appendonly yes` and
    `appendfsync always` (with everysec a median may wait up to a second for its fsync)."""
    binary, aof = None, False
    if command == "WAITAOF":
        binary, why = waitaof_binary()
        if not binary:
            pytest.skip(why)
        aof = True
    disk = ["--appendfsync", "always"] if aof else []
    master = RedisServer(tmp_path / "master", appendonly=aof, extra=disk, binary=binary).start()
    replica = RedisServer(tmp_path / "replica", appendonly=aof, binary=binary,
                          extra=[*disk, "--replicaof", "127.0.0.1", str(master.port)]).start()
    cluster = Cluster(master.url, tmp_path, period=PERIOD, namespace=NS)
    try:
        admin = master.client(decode_responses=True)
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
                   what="the replica in sync")
        log = tmp_path / "acted.log"
        env = _start_acting_pipeline(cluster, log)
        if aof:
            env["REDISMEDIAN_WAIT_AOF"] = "1"
        trader = cluster.start("trader", "--on-median", "tests.plugins:record_median", name="trader", env=env)

        def acted() -> list[int]:
            return [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []

        def state() -> tuple[str, str]:
            h = admin.hgetall(f"{NS}:trader")
            return h.get("state", ""), h.get("reason", "")

        wait_until(lambda: len(acted()) >= 3 and state()[0] == "ok", 30, what="medians acted on with a replica")
        assert cluster.cli("check").returncode == 0

        replica.pause()
        stopped_at = time.time()
        reason = wait_until(lambda: (lambda s: s[1] if s[0] == "error" else None)(state()), 10,
                            what="the trader in error for the replicas")
        if aof:
            assert "on disk (WAITAOF)" in reason and "the master, 0 of 1 replica;" in reason, reason
            assert "--wait-aof --min-replicas 1 needs the master and 1" in reason, reason
        else:
            assert "0 of 1 replica acknowledged the median of epoch" in reason and "--min-replicas 1 needs 1" in reason
        gaps = lambda: [int(e["epoch"]) for e in _entries(admin, f"{NS}:events")  # noqa: E731
                        if e.get("status") == "unacknowledged"]
        wait_until(lambda: len(gaps()) >= 3, 10, what="three unacknowledged epochs")
        r = cluster.cli("check")
        assert r.returncode == 1 and "replica" in r.stdout + r.stderr, r.stdout + r.stderr
        acted_while_stopped = [e for e in acted() if e in gaps()]
        assert acted_while_stopped == [], f"acted on unacknowledged epochs {acted_while_stopped}"
        # follow prints the written median, then says it was not published, with the reason
        first_gap = gaps()[0]
        follower = cluster.start("follow", "--since", str(first_gap), name="follow")
        follower.wait_for_output(rf"epoch {first_gap}: median written but not published \(replicas\): "
                                 + ("the median of epoch" if aof else "0 of 1 replica acknowledged"), 15)
        follower.stop()

        replica.resume()
        resumed_at = time.time()
        wait_until(lambda: state()[0] == "ok", 10, what="the trader ok again")
        back_after = time.time() - resumed_at
        n = len(acted())
        wait_until(lambda: len(acted()) >= n + 2, 10, what="acting again")
        trader.stop()

        medians = {int(m["epoch"]): m for m in _entries(admin, f"{NS}:medians")}
        ack_entries = _entries(admin, f"{NS}:acks")
        acks = {int(a["epoch"]) for a in ack_entries}
        # Under WAITAOF every ack says the master's append-only file held the median on disk.
        assert {a.get("aof") for a in ack_entries} == ({"1"} if aof else {None}), ack_entries[:3]
        unacked = set(gaps())
        assert unacked and unacked <= set(medians), "the unacknowledged medians were written, and never acted on"
        assert not unacked & set(acted())
        assert set(acted()) <= acks, "every epoch acted on was acknowledged by the replica"
        assert not acks & unacked
        # The replica holds every acknowledged median.
        held = {int(m["epoch"]) for _id, m in replica.client(decode_responses=True).xrange(f"{NS}:medians")}
        wait_until(lambda: acks <= {int(m["epoch"]) for _id, m in
                                    replica.client(decode_responses=True).xrange(f"{NS}:medians")}, 5,
                   what=f"the replica to hold every acknowledged median (held {len(held)})")
        print(f"\n{command}: replica stopped {resumed_at - stopped_at:.1f}s: {len(unacked)} epochs unacknowledged, "
              f"ok again {back_after:.2f}s after SIGCONT")

        v = cluster.cli("verify")
        assert v.returncode == 0 and "all hold" in v.stdout, v.stdout + v.stderr
        assert f"{len(medians)} medians checked" in v.stdout
    finally:
        if replica.proc and replica.proc.poll() is None:
            replica.resume()
        cluster.stop_all()
        replica.kill()
        master.kill()


def test_sentinel_failover_with_min_replicas_keeps_every_acted_median(sentinel_deployment, tmp_path):  # noqa: F811
    """A Sentinel failover (kill -9 of the master) under --min-replicas 1 with two traders: every epoch
    acted on before is in the promoted replica's history with the median acted on; with no replica left
    the trader is in error naming the replicas and acts on nothing; once the old master is back (as a
    replica) it is ok and acts again; no epoch acted on with two medians, none published twice."""
    d = sentinel_deployment
    os.environ["REDISMEDIAN_SENTINEL_PASSWORD"] = SENTINEL_PW
    cluster = Cluster(d.url(), tmp_path, period=PERIOD, namespace=NS)
    try:
        log = tmp_path / "acted.log"
        env = _start_acting_pipeline(cluster, log)
        traders = [cluster.start("trader", "--on-median", "tests.plugins:record_median", name=f"trader{i}", env=env)
                   for i in range(2)]

        def acted() -> list[tuple[int, str]]:
            return [(int(a), m) for a, m, _f in (line.split() for line in log.read_text().splitlines())] \
                if log.exists() else []

        def state(server) -> tuple[str, str]:
            try:
                h = server.client(decode_responses=True, socket_timeout=1).hgetall(f"{NS}:trader")
            except redis.exceptions.RedisError:
                return "", ""
            return h.get("state", ""), h.get("reason", "")

        # Deadlines in periods where the pipeline sets the pace, in seconds where Sentinel does.
        wait_until(lambda: len(acted()) >= 3, 60 * PERIOD, what="medians acted on through Sentinel")
        before = len(acted())
        kill_ms = time.time() * 1000
        d.master.kill()
        wait_until(lambda: d.master_port() == d.replica.port, 30, interval=0.05, what="the sentinels' failover")
        promoted_ms = time.time() * 1000
        promoted_epoch = int(promoted_ms // (PERIOD * 1000))    # the servers' clock is this host's

        def error_after_promotion() -> str | None:
            # Judged on an epoch after the promotion: NS:trader on the promoted replica may still hold an
            # error replicated from before the kill (a WAIT that timed out on a loaded machine), which says
            # nothing about the trader finding no replica left.
            s, why = state(d.replica)
            m = re.search(r"median of epoch (\d+)", why)
            return why if s == "error" and m and int(m.group(1)) >= promoted_epoch else None
        reason = wait_until(error_after_promotion, 60 * PERIOD, what="the trader in error: no replica left")
        assert reason.startswith("0 of 1 replica acknowledged"), reason
        n_error = len(acted())
        # The old master comes back only once the failover is over (every sentinel names the new master,
        # none is still in its failover), as an operator would: restarted while a sentinel is still in it,
        # a node can be made master again with what it had (failover_torture saw a sentinel ending its
        # failover by timeout do that), which is Sentinel's overlap, not what this test is about.
        wait_until(d.settled, 30, interval=0.1, what="every sentinel naming the new master, no failover in progress")
        d.master.start()                     # back empty; the sentinels make it a replica of the new master
        wait_until(lambda: state(d.replica)[0] == "ok", 90, interval=0.1, what="ok again with the old master as replica")
        back_ms = time.time() * 1000
        wait_until(lambda: len(acted()) >= n_error + 3, 60 * PERIOD, what="acting again")
        for t in traders:
            t.stop()

        final = d.replica.client(decode_responses=True)
        history = [(int(f["epoch"]), f["median"]) for _id, f in final.xrange(f"{NS}:medians")]
        epochs = [e for e, _m in history]
        published_twice = sorted({e for e in epochs if epochs.count(e) > 1})
        median_of = dict(history)
        by_epoch: dict[int, set[str]] = {}
        for e, m in acted():
            by_epoch.setdefault(e, set()).add(m)
        two_medians = sorted(e for e, ms in by_epoch.items() if len(ms) > 1)
        missing = sorted(e for e in by_epoch if e not in median_of)
        wrong = sorted(e for e, ms in by_epoch.items() if e in median_of and {repr(float(median_of[e]))} != ms)
        unacked_acted = sorted(set(by_epoch) & {int(f["epoch"]) for _id, f in final.xrange(f"{NS}:events")
                                                 if f.get("status") == "unacknowledged"})
        period_ms = PERIOD * 1000
        print(f"\nsentinel failover with --min-replicas 1: {before} acted before the kill, promotion after "
              f"{(promoted_ms - kill_ms) / period_ms:.1f} periods, ok again {(back_ms - promoted_ms) / period_ms:.1f} "
              f"periods after the promotion (old master back as replica); acted epochs missing {missing}, "
              f"acted with two medians {two_medians}, published twice {published_twice}")
        assert missing == [] and two_medians == [] and published_twice == [] and wrong == [] and unacked_acted == []
        assert len(acted()) >= before + 3
    finally:
        os.environ.pop("REDISMEDIAN_SENTINEL_PASSWORD", None)
        cluster.stop_all()


def test_a_master_back_without_acknowledged_medians_gets_them_back(tmp_path):
    """The failure --min-replicas below the number of replicas leaves open: the node that ends up master
    lacks medians that a replica acknowledged and that were acted on.  Made real here: the master saves
    its RDB, medians go on being acknowledged and acted on, then it is killed (kill -9) and restarted from
    that older RDB, as master, and its replica resyncs from it (losing them too).  The trader, still
    running, writes back every acknowledged median the master lacks: every epoch acted on is in the
    final history with the median acted on, none is acted on twice, verify holds, and NS:events says what
    was written back."""
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    cluster = Cluster(master.url, tmp_path, period=PERIOD, namespace=NS)
    try:
        admin = lambda: master.client(decode_responses=True, socket_timeout=2)  # noqa: E731 - a fresh one each time
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
                   what="the replica in sync")
        log = tmp_path / "acted.log"
        env = _start_acting_pipeline(cluster, log)
        trader = cluster.start("trader", "--on-median", "tests.plugins:record_median", name="trader", env=env)

        def acted() -> list[tuple[int, str]]:
            return [(int(a), m) for a, m, _f in (line.split() for line in log.read_text().splitlines())] \
                if log.exists() else []

        wait_until(lambda: len(acted()) >= 2, 60 * PERIOD, what="medians acted on with a replica")
        admin().save()                                   # the older dataset the master comes back with
        saved = {int(f["epoch"]) for f in _entries(admin(), f"{NS}:medians")}
        wait_until(lambda: len([e for e, _m in acted() if e not in saved]) >= 3, 60 * PERIOD,
                   what="three more medians acted on after the save")
        master.kill()
        lost = sorted({e for e, _m in acted() if e not in saved})
        master.start()
        held = lambda: {int(f["epoch"]) for f in _entries(admin(), f"{NS}:medians")}  # noqa: E731
        assert not set(lost) <= held(), "the restarted master has the older dataset"

        def restored() -> list[dict]:
            try:
                return [e for e in _entries(admin(), f"{NS}:events") if e.get("status") == "restored"]
            except redis.exceptions.RedisError:
                return []
        wait_until(restored, 60 * PERIOD, what="the trader writing back what the master lost")
        wait_until(lambda: {e for e, _m in acted()} <= held(), 30 * PERIOD, what="every epoch acted on held")
        n = len(acted())
        wait_until(lambda: len(acted()) >= n + 2, 60 * PERIOD, what="acting on new medians")
        trader.stop()

        history = [(int(f["epoch"]), f["median"]) for f in _entries(admin(), f"{NS}:medians")]
        epochs = [e for e, _m in history]
        assert sorted({e for e in epochs if epochs.count(e) > 1}) == [], "no epoch published twice"
        median_of = dict(history)
        by_epoch: dict[int, list[str]] = {}
        for e, m in acted():
            by_epoch.setdefault(e, []).append(m)
        assert [e for e, ms in by_epoch.items() if len(ms) > 1] == [], "no epoch acted on twice"
        assert [e for e, ms in by_epoch.items() if ms != [repr(float(median_of[e]))]] == []
        acks = {int(a["epoch"]) for a in _entries(admin(), f"{NS}:acks")}
        assert set(by_epoch) <= acks, "every epoch acted on acknowledged in the final history"
        (ev,) = restored()
        assert int(ev["epoch"]) <= lost[0] and int(ev["last"]) >= lost[-1], (ev, lost)
        v = cluster.cli("verify")
        assert v.returncode == 0 and "all hold" in v.stdout, v.stdout + v.stderr
        print(f"\nmaster back from an older RDB: {len(lost)} acted epochs it lacked ({lost[0]} to {lost[-1]}), "
              f"written back as epochs {ev['epoch']} to {ev['last']}")
    finally:
        cluster.stop_all()
        replica.kill()
        master.kill()
