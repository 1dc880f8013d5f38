"""Redis Sentinel: redis+sentinel:// URLs, passwords, and a real failover on loopback (a master,
a replica and three sentinels, down-after-milliseconds 1000).  After kill -9 of the master every
component follows the new master and the pipeline resumes within a few periods, with no wrong
median and no epoch published twice."""
import os
import subprocess
import time

import pytest
import redis

from redismedian.connection import check_url, describe_error, make_client, redact_url
from redismedian.sentinel import parse
from tests.faultkit import NS, Topology, assert_invariant, now_ms, report
from tests.support import NO_SERVER, REDIS_SERVER, Cluster, RedisServer, free_port, harness_client, wait_until

MASTER_PW, SENTINEL_PW, SERVICE = "m-secret", "s-secret", "mymaster"


# -- URL parsing -----------------------------------------------------------------------------

def test_sentinel_url_forms():
    u = parse("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/2")
    assert u.sentinels == (("127.0.0.1", 26379), ("127.0.0.1", 26380)) and u.service == "mymaster"
    assert u.db == 2 and u.password == "pw" and u.username is None
    u = parse("redis+sentinel://app:p%40ss@[::1]:5000,h2/svc/")
    assert u.sentinels == (("::1", 5000), ("h2", 26379)) and u.username == "app" and u.password == "p@ss"
    assert u.db == 0
    u = parse("redis+sentinel://strategy.X@h1:26379/svc")      # user only: the password comes from a file
    assert u.username == "strategy.X" and u.password is None


def test_password_file_reaches_the_master(tmp_path):
    from dataclasses import replace

    from redismedian.connection import redis_settings
    (tmp_path / "pw").write_text("from-file\n")
    url = "redis+sentinel://strategy.X@127.0.0.1:1/svc"
    settings = redis_settings(url, socket_timeout=0.5, password_file=str(tmp_path / "pw"))
    client = make_client(settings)
    kw = client.connection_pool.connection_kwargs
    assert kw["password"] == "from-file" and kw["username"] == "strategy.X"
    with_option = replace(settings, master_password="from-option")    # --master-password beats the file
    assert make_client(with_option).connection_pool.connection_kwargs["password"] == "from-option"
    sentinels = make_client(replace(settings, sentinel_password="s-pw")).connection_pool.sentinel_manager.sentinels
    assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"s-pw"}
    assert "from-file" not in repr(with_option) and "from-option" not in repr(with_option)


@pytest.mark.parametrize("url,why", [
    ("redis+sentinel://h1:26379", "service name"),
    ("redis+sentinel://h1:26379/", "service name"),
    ("redis+sentinel://h1:x/s", "bad port"),
    ("redis+sentinel://h1:70000/s", "bad port"),
    ("redis+sentinel://h1,,h2/s", "bad sentinel address"),
    ("redis+sentinel://h1/s/zero", "database must be a number"),
    ("redis+sentinel://h1/s/0/extra", "unexpected path"),
    ("redis+sentinel://:pw@h1/s?password=x", "no query"),
])
def test_bad_sentinel_urls_are_clear_errors_without_the_password(url, why):
    with pytest.raises(ValueError) as e:
        check_url(url)
    assert why in str(e.value) and "redis+sentinel://" in str(e.value)
    assert ":pw@" not in str(e.value)


def test_redaction_and_error_text_hide_passwords():
    assert redact_url("redis+sentinel://u:secret@h1:1,h2:2/s") == "redis+sentinel://u:***@h1:1,h2:2/s"
    client = make_client(f"redis+sentinel://:secret@127.0.0.1:{free_port()}/s", socket_timeout=0.5)
    with pytest.raises(redis.exceptions.ConnectionError) as e:
        client.ping()
    text = describe_error(e.value)
    assert "No master found for 's'" in text and "secret" not in text and "sentinel 127.0.0.1:" in text


def test_cli_refuses_a_bad_sentinel_url(tmp_path):
    c = Cluster("redis://127.0.0.1:1/0", tmp_path)
    out = c.cli("status", "--redis-url", "redis+sentinel://h1:1")
    assert out.returncode == 2 and "service name" in out.stderr and "Traceback" not in out.stderr


# -- a real Sentinel deployment on loopback -----------------------------------------------------

def sentinels_settled(sentinels) -> bool:
    """Every sentinel (clients) names the same master of SERVICE, sees it up, and has no failover in
    progress (a kill before that overlaps the previous failover)."""
    ports = set()
    for sentinel in sentinels:
        try:
            m = sentinel.sentinel_masters()[SERVICE]
        except (redis.exceptions.RedisError, KeyError):
            return False
        if m.get("flags") != "master":      # s_down, o_down, failover_in_progress, ...
            return False
        ports.add(int(m["port"]))
    return len(ports) == 1


class PasswordRedisServer(RedisServer):
    def client(self, **kw) -> redis.Redis:
        return harness_client(self.port, password=MASTER_PW, **kw)


class SentinelDeployment:
    """A master, a replica and three sentinels, all with passwords, on free loopback ports."""

    def __init__(self, workdir):
        auth = ["--requirepass", MASTER_PW, "--masterauth", MASTER_PW, "--repl-diskless-sync-delay", "0"]
        self.master = PasswordRedisServer(workdir / "master", extra=auth)
        self.replica = PasswordRedisServer(workdir / "replica", extra=[*auth, "--replicaof", "127.0.0.1", "0"])
        self.sentinels: list[subprocess.Popen] = []
        self.ports = [free_port() for _ in range(3)]
        self.workdir = workdir

    def start(self) -> "SentinelDeployment":
        self.master.start()
        self.replica.extra[-1] = str(self.master.port)
        self.replica.start()
        for i, port in enumerate(self.ports):
            d = self.workdir / f"sentinel{i}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {d}", f"logfile {d / 'sentinel.log'}",
                f"requirepass {SENTINEL_PW}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2",
                f"sentinel auth-pass {SERVICE} {MASTER_PW}",
                f"sentinel down-after-milliseconds {SERVICE} 1000",
                f"sentinel failover-timeout {SERVICE} 4000",
                f"sentinel parallel-syncs {SERVICE} 1", ""]))
            self.sentinels.append(subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
        wait_until(self.ready, 30, interval=0.1, what="sentinels to see the master, the replica and each other")
        return self

    def sentinel(self, i: int) -> redis.Redis:
        return harness_client(self.ports[i], password=SENTINEL_PW, socket_timeout=2)

    def ready(self) -> bool:
        if self.replica.client().info("replication").get("master_link_status") != "up":
            return False
        for i in range(3):
            try:
                m = self.sentinel(i).sentinel_masters().get(SERVICE)
            except redis.exceptions.RedisError:
                return False
            if not m:
                return False
            if m.get("num-other-sentinels") != 2 or m.get("num-slaves") != 1:
                return False
        return True

    def master_port(self) -> int | None:
        try:
            return int(self.sentinel(0).sentinel_masters()[SERVICE]["port"])
        except (redis.exceptions.RedisError, KeyError):
            return None

    def settled(self) -> bool:
        """Every sentinel names the same master, sees it up, and has no failover in progress."""
        return sentinels_settled(self.sentinel(i) for i in range(3))

    def url(self, password: str = MASTER_PW) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://:{password}@{hosts}/{SERVICE}/0"

    def stop(self) -> None:
        for p in self.sentinels:   # (servers that never started are skipped by kill())
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.replica.kill()
        self.master.kill()


@pytest.fixture
def sentinel_deployment(tmp_path):
    if not REDIS_SERVER:
        pytest.fail(NO_SERVER)
    d = SentinelDeployment(tmp_path)
    try:
        d.start()
        yield d
    finally:
        d.stop()   # also when start() failed half-way: no server outlives the test


def test_wrong_sentinel_password_is_refused_at_once(sentinel_deployment, tmp_path):
    c = Cluster(sentinel_deployment.url(), tmp_path, period=0.5, namespace=NS)
    started = time.monotonic()
    out = c.cli("status", "--sentinel-password", "wrong")
    assert out.returncode == 1 and "refused our credentials" in out.stderr, out.stderr
    # At once: no retry with backoff inside redis-py (7.x and 8.x retry connect and AUTH by default,
    # which took over 10 s here); the bound leaves room for starting Python on a busy machine.
    assert time.monotonic() - started < 5, f"refused after {time.monotonic() - started:.1f}s"
    out = c.cli("status", "--sentinel-password", SENTINEL_PW, "--master-password", "wrong")
    assert out.returncode == 1 and "refused our credentials" in out.stderr, out.stderr
    assert "wrong" not in out.stderr and MASTER_PW not in out.stderr
    out = c.cli("status", "--sentinel-password", SENTINEL_PW)
    assert out.returncode == 0, out.stderr
    env = c.env(REDISMEDIAN_SENTINEL_PASSWORD="wrong")
    p = c.start("generator", "--name", "g1", env=env)
    assert p.wait(20) == 1 and "refused our credentials" in p.output()
    c.stop_all()


def test_failover_every_component_follows_the_new_master(sentinel_deployment, tmp_path):
    d = sentinel_deployment
    cluster = Cluster(d.url(), tmp_path, period=0.5, namespace=NS)
    # The sentinel password reaches every process through the environment ($REDISMEDIAN_SENTINEL_PASSWORD,
    # as a deployment would give it), and this test's own clients through faultkit.harness_settings.
    os.environ["REDISMEDIAN_SENTINEL_PASSWORD"] = SENTINEL_PW
    topo = Topology(cluster, 0.5)
    try:
        topo.start(traders=2)
        topo.watcher.wait_for_median_after(now_ms(), 20, "first median through Sentinel")
        topo.watcher.wait_for_median_after(now_ms() + 1000, 10, "a few medians")
        assert d.master_port() == d.master.port
        d.master.client().wait(1, 2000)   # the replica has what the master had (asynchronous: not a promise)
        kill_ms = now_ms()
        d.master.kill()
        wait_until(lambda: d.master_port() == d.replica.port, 30, interval=0.05, what="the sentinels' failover")
        promoted_ms = now_ms()
        e = topo.watcher.wait_for_median_after(promoted_ms, 30, "a median from the new master")
        topo.watcher.wait_for_median_after(e.ts + 1500, 10, "medians after the failover")
        failover = topo.periods(promoted_ms - kill_ms)
        resume = topo.periods(e.ts - promoted_ms)
        report("sentinel failover", failover_periods=failover, resume_after_promotion_periods=resume,
               kill_to_median_periods=topo.periods(e.ts - kill_ms))
        assert all(p.alive() for p in [*topo.procs.values(), *topo.traders]), topo.alive()
        assert_invariant(topo, min_entries=4)
        assert resume <= 4, f"resumed {resume:.2f} periods after the promotion"
        st = cluster.cli("status")
        assert st.returncode == 0 and "ok" in st.stdout, st.stdout + st.stderr
    finally:
        os.environ.pop("REDISMEDIAN_SENTINEL_PASSWORD", None)
        topo.close()
        cluster.stop_all()
