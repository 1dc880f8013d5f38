"""The original topology on a real redis-server publishes the exact median every period."""
import statistics

import pytest

from tests import plugins
from tests.support import wait_until

pytestmark = pytest.mark.integration


def test_original_topology_publishes_exact_medians(cluster, redis_server):
    for g, sig in (("g1", "sig_a"), ("g2", "sig_b"), ("g3", "sig_c")):
        cluster.generator(g, f"tests.plugins:{sig}")
    trader = cluster.trader()
    cluster.strategy("X", "g1")
    cluster.strategy("Y", "g2,g3")
    trader.wait_for_output(r"median: ", timeout=15, count=3)
    r = redis_server.client(decode_responses=True)
    entries = r.xrange("t:medians")
    assert len(entries) >= 3
    for _id, f in entries:
        e = int(f["epoch"])
        x = plugins.sig_a(e)
        y = (plugins.sig_b(e) + plugins.sig_c(e)) / 2
        assert float(f["median"]) == statistics.median([x, y])
        assert f["members"] == "X,Y" and f["count"] == "2"
    epochs = [int(f["epoch"]) for _i, f in entries]
    assert len(epochs) == len(set(epochs))
    assert wait_until(lambda: r.hget("t:trader", "state") == "ok", 5, what="trader state ok")
