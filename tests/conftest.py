import fakeredis
import pytest

from tests.support import REDIS_SERVER, Cluster, RedisServer


@pytest.fixture
def fake():
    """A fresh in-memory Redis (fakeredis, with Lua) for unit tests."""
    server = fakeredis.FakeServer()
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free loopback port, killed after the test."""
    if not REDIS_SERVER:
        pytest.fail("redis-server is not installed; run .ci/run (it installs it) or apt-get install redis-server")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def cluster(redis_server, tmp_path):
    """Component processes against the private Redis (period 0.5 s, namespace 't')."""
    c = Cluster(redis_server.url, tmp_path, period=0.5)
    yield c
    c.stop_all()
