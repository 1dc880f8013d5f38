"""Fixtures shared by every kind of test, and the markers: each kind has its folder, whose tests get
its marker (``-m unit``, ``-m integration``, ``-m fault``, ``-m prod``); a folder's conftest.py holds the
fixtures of that kind only."""
from pathlib import Path

import fakeredis
import pytest
import redis

from tests.support import NO_SERVER, REDIS_SERVER, Cluster, RedisServer, server_version

KINDS = ("unit", "integration", "fault", "prod")
TESTS = Path(__file__).parent


def pytest_report_header(config):
    # Which server and client the integration tests ran against ($REDISMEDIAN_TEST_SERVER picks the server).
    return f"server: {server_version() if REDIS_SERVER else NO_SERVER} ({REDIS_SERVER or '-'}); redis-py {redis.__version__}"


def pytest_collection_modifyitems(items):
    # Each test gets the marker of its folder (tests/unit/... -> `unit`).  A test outside
    # tests/<kind>/ would run under no `-m <kind>` at all, so it is refused at collection.
    lost = []
    for item in items:
        parts = item.path.relative_to(TESTS).parts if TESTS in item.path.parents else ()
        if len(parts) > 1 and parts[0] in KINDS:
            item.add_marker(getattr(pytest.mark, parts[0]))
        else:
            lost.append(item.nodeid)
    if lost:
        raise pytest.UsageError(f"tests outside tests/{{{','.join(KINDS)}}}/ (put each in its kind's folder): "
                                + ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else ""))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A failed test that ran processes shows the end of each process's log (every Cluster and
    # RedisServer writes one under the test's tmp_path): a failure seen once in CI can then be read.
    outcome = yield
    rep = outcome.get_result()
    tmp = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if rep.failed and rep.when in ("setup", "call") and tmp is not None:
        for log in sorted(Path(tmp).rglob("*.log"))[:20]:
            try:
                lines = log.read_text(errors="replace").splitlines()
            except OSError:
                continue
            rep.sections.append((f"last lines of {log.relative_to(tmp)}", "\n".join(lines[-40:])))


@pytest.fixture
def fake():
    """A fresh in-memory Redis (fakeredis, with Lua) for unit tests."""
    server = fakeredis.FakeServer()
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free loopback port, killed after the test."""
    if not REDIS_SERVER:
        pytest.fail(NO_SERVER)
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def cluster(redis_server, tmp_path):
    """Component processes against the private Redis (period 0.5 s, namespace 't')."""
    c = Cluster(redis_server.url, tmp_path, period=0.5)
    yield c
    c.stop_all()
