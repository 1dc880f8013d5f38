"""Fault tests (``-m fault``): every part killed, paused or corrupted, and the invariant of
tests/faultkit.py checked over every run."""

import pytest

from tests.faultkit import NS, PERIOD, Topology
from tests.support import Cluster


@pytest.fixture
def topo(redis_server, tmp_path):
    """The fault topology against a private redis-server, period 0.5 s, one trader."""
    cluster = Cluster(redis_server.url, tmp_path, period=PERIOD, namespace=NS)
    t = Topology(cluster, PERIOD)
    yield t
    t.close()
    cluster.stop_all()
