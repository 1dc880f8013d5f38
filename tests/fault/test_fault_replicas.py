"""--min-replicas against a real master and a real replica (period 0.5 s): medians are acted on while
the replica acknowledges them; with the replica stopped (SIGSTOP) the trader goes to error naming the
replicas, --on-median is not called for those epochs, each is recorded as an `unacknowledged` gap,
`check` exits 1; resumed, the trader is ok again.  Then `redismedian verify` holds over the whole
history (every median recomputed from the inputs recorded with it)."""
from __future__ import annotations

import time

from tests.support import Cluster, RedisServer, wait_until

NS = "t"
PERIOD = 0.5


def _entries(admin, key):
    return [f for _id, f in admin.xrange(key)]


def test_min_replicas_acts_only_on_acknowledged_medians(redis_server, tmp_path):
    replica = RedisServer(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
    cluster = Cluster(redis_server.url, tmp_path, period=PERIOD, namespace=NS)
    try:
        admin = redis_server.client(decode_responses=True)
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
                   what="the replica in sync")
        log = tmp_path / "acted.log"
        env = cluster.env(REDISMEDIAN_TEST_ACTED=str(log), REDISMEDIAN_MIN_REPLICAS="1")
        cluster.generator("g1", "tests.plugins:sig_a")
        cluster.generator("g2", "tests.plugins:sig_b")
        cluster.strategy("X", "g1")
        cluster.strategy("Y", "g2")
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
        assert "0 of 1 replica acknowledged the median of epoch" in reason and "--min-replicas 1 needs 1" in reason
        gaps = lambda: [int(e["epoch"]) for e in _entries(admin, f"{NS}:events")  # noqa: E731
                        if e.get("status") == "unacknowledged"]
        wait_until(lambda: len(gaps()) >= 3, 10, what="three unacknowledged epochs")
        r = cluster.cli("check")
        assert r.returncode == 1 and "replica" in r.stdout + r.stderr, r.stdout + r.stderr
        acted_while_stopped = [e for e in acted() if e in gaps()]
        assert acted_while_stopped == [], f"acted on unacknowledged epochs {acted_while_stopped}"

        replica.resume()
        resumed_at = time.time()
        wait_until(lambda: state()[0] == "ok", 10, what="the trader ok again")
        back_after = time.time() - resumed_at
        n = len(acted())
        wait_until(lambda: len(acted()) >= n + 2, 10, what="acting again")
        trader.stop()

        medians = {int(m["epoch"]): m for m in _entries(admin, f"{NS}:medians")}
        acks = {int(a["epoch"]) for a in _entries(admin, f"{NS}:acks")}
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
        print(f"\nreplica stopped {resumed_at - stopped_at:.1f}s: {len(unacked)} epochs unacknowledged, "
              f"ok again {back_after:.2f}s after SIGCONT")

        v = cluster.cli("verify")
        assert v.returncode == 0 and "all hold" in v.stdout, v.stdout + v.stderr
        assert f"{len(medians)} medians checked" in v.stdout
    finally:
        if replica.proc and replica.proc.poll() is None:
            replica.resume()
        cluster.stop_all()
        replica.kill()
