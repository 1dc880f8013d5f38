"""The trader's read of the decision keys against a real redis-server: MGET in parts, each part
tallied while Redis reads the next ones (``Trader._send``; unit tests use fakeredis, which takes
the plain pipeline instead)."""
import redis

from redismedian.common import Settings
from redismedian.connection import RedisSettings
from redismedian.trader import READ_PART_MIN, Trader, tally

E = 480_000


def _trader(server) -> Trader:
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10)
    return Trader(Settings(RedisSettings(server.url), namespace="t", period_ms=1000), client=client)


def _write(server, values: dict) -> None:
    admin = server.client()
    admin.mset(values)


def test_a_read_in_parts_is_the_whole_read_and_its_tally(redis_server):
    t = _trader(redis_server)
    n = 2 * READ_PART_MIN + 37                      # three parts, the last one short
    names = [f"s{i:05d}" for i in range(n)]
    keys = [t.keys.decision(x) for x in names]
    _write(redis_server, {k: f"{E}|{(i * 7919) % 1000 / 8 - 50!r}" for i, k in enumerate(keys)})
    for rang in (False, True):
        seen = t.read_decisions(E, keys, rang)
        assert seen.decisions == redis_server.client().mget(keys)
        whole = tally(E, names, seen.decisions, t.keys.decision)
        assert not whole.problems and seen.tallied == whole, "the parts' tally is the whole read's"
        assert seen.size == 0 and seen.version == 0    # no registry in this test: read in the same round trip


def test_a_part_with_anything_unusual_leaves_the_judging_to_the_whole_read(redis_server):
    t = _trader(redis_server)
    n = 2 * READ_PART_MIN + 1
    names = [f"s{i:05d}" for i in range(n)]
    keys = [t.keys.decision(x) for x in names]
    for odd in (f"{E - 1}|1.5", f"{E}|1e400", f"{E}|1_0", f"{E}| 5", f"{E}|+1", f"{E}|!error|signal g1 stale", None):
        values = {k: f"{E}|{i}" for i, k in enumerate(keys)}
        _write(redis_server, values)
        if odd is None:
            redis_server.client().delete(keys[-1])
        else:
            redis_server.client().set(keys[-1], odd)
        seen = t.read_decisions(E, keys, 0)
        assert seen.decisions == redis_server.client().mget(keys), "every part read, in order"
        whole = tally(E, names, seen.decisions, t.keys.decision)
        if odd == f"{E}|+1":                       # in the grammar (and float's): taken on the way
            assert not whole.problems and seen.tallied == whole and whole.values.count(1.0) == 2
        else:
            assert seen.tallied is None and [x for x, _ in whole.problems] == [names[-1]]
    # The connection is still in step: the next read sees what is there now.
    redis_server.client().set(keys[-1], f"{E}|0.5")
    assert t.read_decisions(E, keys, 0).tallied == tally(E, names, redis_server.client().mget(keys))
