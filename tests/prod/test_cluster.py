"""Redis Cluster: redis+cluster:// URLs, the {NS} hash-tag key form, and a real cluster on loopback
(3 masters, 3 replicas, cluster-node-timeout 1500): the pipeline runs on it with exact medians,
the operator commands work, a plain redis:// URL at a cluster node is a one-line error, and after
kill -9 of the master that serves the namespace its replica takes over and the pipeline resumes."""
from __future__ import annotations

import os
import re

import pytest
import redis

from redismedian.acl import render_acl
from redismedian.cluster import parse, slot_of
from redismedian.connection import RedisSettings, check_url, make_client, redact_url
from redismedian.keys import Keys
from tests import plugins
from tests.cluster_support import RedisClusterNodes
from tests.faultkit import NS, Topology, assert_invariant, expected_median, now_ms, report
from tests.support import REDIS_SERVER, Cluster, RedisServer, free_port, wait_until


# -- URLs and key names (no server) ---------------------------------------------------------------

@pytest.mark.parametrize("url,nodes,tls,user,pw", [
    ("redis+cluster://127.0.0.1:7000", (("127.0.0.1", 7000),), False, None, None),
    ("redis+cluster://:pw@h1:7000,h2:7001,h3", (("h1", 7000), ("h2", 7001), ("h3", 6379)), False, None, "pw"),
    ("rediss+cluster://strategy.X@[::1]:7000/0", (("::1", 7000),), True, "strategy.X", None),
    ("REDIS+CLUSTER://u:p%40ss@h:1/", (("h", 1),), False, "u", "p@ss"),
])
def test_cluster_url_forms(url, nodes, tls, user, pw):
    u = parse(url)
    assert (u.nodes, u.tls, u.username, u.password) == (nodes, tls, user, pw)
    assert check_url(url) == url


@pytest.mark.parametrize("url,why", [
    ("redis+cluster://", "bad node address"),
    ("redis+cluster://h1:x", "bad port"),
    ("redis+cluster://h1:70000", "bad port"),
    ("redis+cluster://h1,,h2", "bad node address"),
    ("redis+cluster://h1/3", "only database 0"),
    ("redis+cluster://:pw@h1?password=x", "no query"),
])
def test_bad_cluster_urls_are_clear_errors_without_the_password(url, why):
    with pytest.raises(ValueError) as e:
        check_url(url)
    assert why in str(e.value) and "redis+cluster://" in str(e.value) and ":pw@" not in str(e.value)


def test_cluster_keys_share_one_hash_tag_and_namespaces_spread():
    k = Keys.for_url("t", "redis+cluster://h:1")
    assert k.meta == "{t}:meta" and k.strategies == "{t}:strategies" and k.decision("X") == "{t}:decision:X"
    assert k.lease("strategy", "X") == "{t}:lease:strategy:X" and k.pattern == "{t}:*"
    assert Keys.for_url("t", "redis://h:1/0").meta == "t:meta", "a single server keeps the plain form"
    every = [k.meta, k.strategies, k.registry_backup, k.deregistered, k.traders, k.trader, k.medians, k.events,
             k.settled, k.acted, k.trader_fence, k.signal("g"), k.signal_feed("g"), k.decision("X"), k.count(7),
             k.lease("trader"), k.lease("generator", "g")]
    assert k.ready_channel == "{t}:ready" and k.joins_channel == "{t}:joins"   # channels: broadcast, no slot
    assert {redis.crc.key_slot(key.encode()) for key in every} == {slot_of("t")}
    # Different namespaces land in different slots, so over the masters of a cluster.
    assert len({slot_of(f"desk{i}") * 3 // 16384 for i in range(12)}) == 3


def test_a_tls_cluster_url_makes_tls_connections_with_the_certificate_options(tmp_path):
    from redismedian.cluster import SlotSSLConnection
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    client = make_client(RedisSettings("rediss+cluster://u@h1:7000,h2:7001", 2.0, password="pw",
                                       tls_ca_cert=str(ca)), namespace="t")
    pool = client.connection_pool
    assert pool.connection_class is SlotSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca) and pool.connection_kwargs["username"] == "u"
    assert client.slot_owner._kwargs["ssl"] is True and client.slot_owner._kwargs["ssl_ca_certs"] == str(ca)
    assert client.slot_owner.seeds == [("h1", 7000), ("h2", 7001)] and client.slot_owner.slot == slot_of("t")
    with pytest.raises(ValueError, match="namespace"):
        make_client("redis+cluster://h1:7000", 2.0)


def test_redaction_hides_the_cluster_password():
    assert redact_url("redis+cluster://u:secret@h1:1,h2:2") == "redis+cluster://u:***@h1:1,h2:2"
    assert redact_url("rediss+cluster://:secret@h1:1") == "rediss+cluster://:***@h1:1"


# -- a real cluster ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    if not REDIS_SERVER:
        pytest.fail("redis-server is not installed")
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster"))
    try:
        yield nodes.start()
    finally:
        nodes.stop_all()


def test_pipeline_and_operator_commands_on_a_cluster(redis_cluster, tmp_path):
    c = Cluster(redis_cluster.url, tmp_path, period=0.5, namespace=NS)
    topo = Topology(c, 0.5)
    try:
        topo.start()
        topo.watcher.wait_for_median_after(now_ms() + 1500, 20, "medians from the cluster")
        keys = Keys.for_url(NS, redis_cluster.url)
        master = redis_cluster.master_of(keys.meta)
        raw = master.client()
        assert raw.exists(keys.meta, keys.medians, keys.strategies) == 3, "keys are in the {NS} form on one master"
        assert not [k for n in redis_cluster.alive() for k in n.client().keys(f"{NS}:*")], "no key outside the tag"
        st = c.cli("status")
        assert st.returncode == 0 and "median" in st.stdout and "X" in st.stdout, st.stdout + st.stderr
        hist = c.cli("history", "--json")
        assert hist.returncode == 0 and '"median"' in hist.stdout, hist.stdout + hist.stderr
        ok = c.cli("check", "trader")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert_invariant(topo, min_entries=3)   # exact medians over X, Y, Z so far
        # `redis-cli -c SREM {NS}:strategies Z`: a plain SREM on the slot's master deregisters.
        raw.srem(keys.strategies, "Z")
        topo.procs["Z"].stop()
        after = now_ms()
        wait_until(lambda: any(e.ts > after and e.members == ("X", "Y") for e in topo.watcher.snapshot()), 10,
                   what="a median over X and Y after SREM of Z")
        out = c.cli("deregister", "Y")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: {m.decode() for m in raw.smembers(keys.strategies)} == {"X"}, 10, what="Y deregistered")
        assert all(topo.procs[n].alive() for n in ("g1", "g2", "g3", "X")) and topo.traders[0].alive()
        two = [e for e in topo.watcher.snapshot() if e.ts > after and e.members == ("X", "Y")]
        assert two and all(float(e.median) == expected_median(e.epoch, e.members) for e in two)
    finally:
        topo.close()
        c.stop_all()


def test_plain_url_at_a_cluster_node_is_a_one_line_error(redis_cluster, tmp_path):
    plain = f"redis://127.0.0.1:{redis_cluster.servers[0].port}/0"
    c = Cluster(plain, tmp_path, period=0.5, namespace="plain")
    for args in (("status",), ("status", "--watch", "--count", "3")):   # --watch does not retry it
        out = c.cli(*args)
        assert out.returncode == 1 and "redis+cluster://" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for proc in (c.generator("g1"), c.trader()):
        assert proc.wait(30) == 1, proc.output()
        text = proc.output()
        assert "is a Redis Cluster node" in text and "redis+cluster://" in text and "Traceback" not in text, text


def test_cluster_url_at_a_single_server_is_a_one_line_error(tmp_path):
    server = RedisServer(tmp_path / "single").start()
    try:
        c = Cluster(f"redis+cluster://127.0.0.1:{server.port}", tmp_path, period=0.5, namespace="t")
        for args in (("status",), ("status", "--watch", "--count", "3")):
            out = c.cli(*args)
            assert out.returncode == 1 and "not a Redis Cluster node" in out.stderr, out.stderr
            assert "Traceback" not in out.stderr
        p = c.generator("g1")
        assert p.wait(30) == 1 and "not a Redis Cluster node" in p.output(), p.output()
    finally:
        server.kill()


def test_no_node_answers_at_start_then_the_cluster_comes(tmp_path):
    """Components started before any node answers keep retrying, and run once the cluster is up."""
    nodes = RedisClusterNodes(tmp_path / "late")
    c = Cluster(nodes.url, tmp_path, period=0.5, namespace=NS)
    try:
        g = c.generator("g1")
        g.wait_for_output("Redis unavailable", 20)
        assert g.alive()
        nodes.start()
        g.wait_for_output("generator g1 started", 30)
        assert g.alive() and g.output().count("Redis unavailable") == 1, "the outage is logged once"
    finally:
        c.stop_all()
        nodes.stop_all()


def test_failover_of_the_namespace_master(tmp_path):
    """kill -9 of the master serving {NS}: its replica is promoted and the pipeline resumes within
    5 periods (1 s period, cluster-node-timeout 1500), exact medians, no epoch published twice."""
    nodes = RedisClusterNodes(tmp_path / "nodes").start()
    c = Cluster(nodes.url, tmp_path, period=1.0, namespace=NS)
    topo = Topology(c, 1.0)
    try:
        topo.start(traders=2)
        topo.watcher.wait_for_median_after(now_ms() + 2000, 30, "medians before the failover")
        keys = Keys.for_url(NS, nodes.url)
        master = nodes.master_of(keys.meta)
        replica = nodes.replicas_of(master)[0]
        master.client().wait(1, 2000)
        kill_ms = now_ms()
        master.kill()
        wait_until(lambda: nodes.master_of(keys.meta) is replica, 30, interval=0.05, what="the replica's promotion")
        promoted_ms = now_ms()
        e = topo.watcher.wait_for_median_after(promoted_ms, 30, "a median after the failover")
        topo.watcher.wait_for_median_after(e.ts + 2500, 15, "medians after the failover")
        resume = topo.periods(e.ts - kill_ms)
        report("cluster failover", promotion_periods=topo.periods(promoted_ms - kill_ms),
               kill_to_median_periods=resume)
        assert all(p.alive() for p in [*topo.procs.values(), *topo.traders]), topo.alive()
        assert_invariant(topo, min_entries=5)
        assert resume <= 5, f"the pipeline resumed {resume:.2f} periods after the kill"
        for name in ("g1", "X"):
            assert topo.procs[name].output().count("Redis unavailable") <= 1 + topo.procs[name].output().count(
                "Redis is back"), "an outage is logged once, not per retry"
        st = c.cli("status")
        assert st.returncode == 0, st.stdout + st.stderr
    finally:
        topo.close()
        c.stop_all()
        nodes.stop_all()


def _load_acl(nodes: RedisClusterNodes, text: str, passwords: dict[str, str]) -> None:
    """Apply the ACL file's users on every node (the default user is left on for the harness)."""
    for line in text.splitlines():
        _, user, rest = line.split(" ", 2)
        if user in ("default", "admin"):
            continue
        args = re.findall(r"\([^)]*\)|\S+", rest) + [f">{passwords[user]}"]
        for n in nodes.alive():
            n.client().execute_command("ACL", "SETUSER", user, *args)


def test_pipeline_under_the_cluster_acl(redis_cluster, tmp_path):
    """`redismedian acl --cluster` on every node: each component runs as its own user, nothing is
    denied, and a strategy still cannot write a peer's decision."""
    ns = "acl"
    text = render_acl(ns, ["g1"], ["X", "Y"], cluster=True)
    users = [line.split()[1] for line in text.splitlines()][2:]
    pw = {u: f"pw-{u}" for u in users}
    _load_acl(redis_cluster, text, pw)
    for n in redis_cluster.alive():
        n.client().execute_command("ACL", "LOG", "RESET")
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in redis_cluster.servers[:3])

    def url(user):
        return f"redis+cluster://{user}:{pw[user]}@{hosts}"
    c = Cluster(url("operator"), tmp_path, period=0.5, namespace=ns)
    try:
        keys = Keys.for_url(ns, redis_cluster.url)
        master = redis_cluster.master_of(keys.meta).client(decode_responses=True)
        # The trader first: only it may create the deployment record (a component that tries first is
        # refused once, by design; test_prod_owned_keys.py covers that order).
        c.trader(env=c.env(REDISMEDIAN_REDIS_URL=url("trader")))
        wait_until(lambda: master.exists(keys.meta), 15, what="the trader creating the deployment record")
        c.generator("g1", env=c.env(REDISMEDIAN_REDIS_URL=url("generator.g1")))
        c.strategy("X", "g1", env=c.env(REDISMEDIAN_REDIS_URL=url("strategy.X")))
        c.strategy("Y", "g1", "--decide", "tests.plugins:decide_max",
                   env=c.env(REDISMEDIAN_REDIS_URL=url("strategy.Y")))
        wait_until(lambda: [f for _i, f in master.xrange(keys.medians) if f["members"] == "X,Y"], 30,
                   what="a median of X and Y under the cluster ACL")
        st = c.cli("status")
        assert st.returncode == 0, st.stderr
        logs = [e for n in redis_cluster.alive() for e in n.client().execute_command("ACL", "LOG")]
        assert logs == [], f"a component was denied a command: {logs[:3]}"
        x = make_client(url("strategy.X"), 2.0, namespace=ns)
        with pytest.raises(redis.exceptions.NoPermissionError):
            x.set(keys.decision("Y"), "999|1e9")
    finally:
        c.stop_all()


def test_a_planned_failover_moves_the_slot_and_the_pipeline_follows(redis_cluster, tmp_path):
    """CLUSTER FAILOVER on the replica: the old master now answers MOVED, which every component
    treats as a short outage (logged once), then follows the slot to its new master."""
    ns = "moved"
    c = Cluster(redis_cluster.url, tmp_path, period=0.5, namespace=ns)
    keys = Keys.for_url(ns, redis_cluster.url)
    try:
        c.trader()
        c.generator("g1")
        c.strategy("X", "g1")
        old = redis_cluster.master_of(keys.meta)

        def medians_after(ts):
            return [f for _i, f in redis_cluster.master_of(keys.meta).client(decode_responses=True).xrange(
                keys.medians) if int(f["ts"]) > ts]
        wait_until(lambda: medians_after(now_ms()), 20, what="a first median")
        early = make_client(redis_cluster.url, 2.0, namespace=ns)
        assert early.exists(keys.meta) and early.slot_owner.address()[1] == old.port
        replica = redis_cluster.replicas_of(old)[0]
        replica.client().execute_command("CLUSTER", "FAILOVER")
        wait_until(lambda: redis_cluster.master_of(keys.meta) is replica, 20, what="the planned failover")
        moved_ms = now_ms()
        wait_until(lambda: len(medians_after(moved_ms)) >= 3, 20, what="medians from the new master")
        for p in c.procs:
            assert p.alive(), p.output()
            text = p.output()
            assert text.count("Redis unavailable") <= 1 and "Traceback" not in text, text[-3000:]
        # A connection made before the failover still points at the old master, which now answers
        # MOVED: the client follows it at once (one retry), without an error reaching the caller.
        assert early.hget(keys.meta, "period_ms") == b"500"
        assert early.slot_owner.address()[1] == replica.port
        entries = medians_after(0)
        epochs = [int(f["epoch"]) for f in entries]
        assert len(epochs) == len(set(epochs)), "an epoch was published twice"
        assert all(float(f["median"]) == plugins.sig_a(int(f["epoch"])) for f in entries)
    finally:
        c.stop_all()


def _free_run(n: int) -> int:
    """A first port such that it, the next n-1 ports and their cluster bus ports (+10000) are free."""
    import random
    import socket
    for _ in range(200):
        first = random.randint(20000, 40000)
        try:
            for port in [*range(first, first + n), *range(first + 10000, first + 10000 + n)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError("no run of free ports")


def test_the_deploy_cluster_script_builds_a_cluster_the_components_use(tmp_path):
    import shutil
    import subprocess
    from tests.support import ROOT
    first = _free_run(6)
    env = {**os.environ, "REDIS_SERVER": REDIS_SERVER, "REDIS_CLI": shutil.which("redis-cli") or "redis-cli"}
    out = subprocess.run(["bash", str(ROOT / "deploy/cluster/start-cluster.sh"), str(tmp_path / "data"), str(first)],
                         env=env, capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        url = out.stdout.strip().splitlines()[-2].split()[-1]
        assert url == f"redis+cluster://127.0.0.1:{first},127.0.0.1:{first + 1},127.0.0.1:{first + 2}"
        c = Cluster(url, tmp_path, period=0.5, namespace="deploy")
        g = c.generator("g1")
        g.wait_for_output(r"g1 signal \S+ \(epoch", 20)
        st = c.cli("status")
        assert st.returncode == 0 and "g1" in st.stdout, st.stdout + st.stderr
        c.stop_all()
    finally:
        for pid in (tmp_path / "data").glob("*/redis.pid"):
            try:
                os.kill(int(pid.read_text()), 9)
            except (OSError, ValueError):
                pass


def test_the_web_page_serves_a_cluster_deployment(redis_cluster, tmp_path):
    """`redismedian web` with a redis+cluster:// URL: its health endpoint says what `check` says."""
    import urllib.error
    import urllib.request
    pytest.importorskip("starlette")
    ns = "webc"
    c = Cluster(redis_cluster.url, tmp_path, period=0.5, namespace=ns)
    try:
        c.trader()
        c.generator("g1")
        c.strategy("X", "g1")
        port = free_port()
        web = c.start("web", "--port", str(port), name="web")

        def health():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return r.status == 200 and r.read().decode()
            except (urllib.error.URLError, OSError):
                return None
        text = wait_until(health, 30, what="the page's health endpoint saying OK")
        assert text.startswith("OK: trader published"), text
        assert web.alive() and "Traceback" not in web.output()
    finally:
        c.stop_all()
