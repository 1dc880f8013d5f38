"""Regression tests for trader bugs found by the integration tests.

The leading trader renews its lease (1.5 periods) often enough never to lose it while waiting:
unit test with a FakeClock and a stub Redis: the leader published epoch E at its boundary, then
nothing arrives in E+1; the gap between two collects (each renews the lease) must stay well under
the lease's time-to-live.  Regression: blocking on the doorbell before the first collect of an
epoch left period + block_ms = 1.5 periods (at periods up to 2 s) between renewals.
"""
import pytest

from redismedian import keys as K
from redismedian.clock import FakeClock
from redismedian.common import Settings
from redismedian.trader import RegistryMemory, Trader


class StubClient:
    def __init__(self, clock):
        self.clock = clock

    def blpop(self, keys, timeout):
        self.clock.advance(timeout)  # nobody rings the doorbell
        return None


@pytest.mark.parametrize("period_ms", [200, 1000, 2000, 60000])
def test_lease_renewed_within_its_ttl_while_strategies_are_late(period_ms):
    clock = FakeClock(start_ms=1_700_000_000_000 // period_ms * period_ms)
    trader = Trader(Settings(redis_url="redis://127.0.0.1:1/0", namespace="t", period_ms=period_ms),
                    client=StubClient(clock), clock=clock)
    first_epoch = clock.now_ms() // period_ms
    calls = []
    # the trader already knows the registry (else it reads it first), and every reply ends with the
    # registry's version, size and repair note (unchanged here)
    trader.memory = RegistryMemory("inst", 1, frozenset({"X", "Y"}))
    registry = [1, 2, ""]

    def collect(epoch, final):
        calls.append(clock.now_ms())
        if epoch == first_epoch:
            return ["published", clock.now_ms(), "inst", "1", 1, "0.5", 2, *registry]
        if final:
            return ["error", clock.now_ms(), "inst", "1", 0, "1 of 2 strategies missing: X: ...", *registry]
        return ["waiting", clock.now_ms(), "inst", "1", 0, 1, 2, *registry]

    trader.collect = collect
    assert trader.run(max_epochs=4) == 0
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert max(gaps) <= period_ms + 2, (gaps, K.lease_ttl_ms(period_ms))
    assert max(gaps) < K.lease_ttl_ms(period_ms)


def _trader_on(fake, period_ms=500):
    import time
    from redismedian.clock import ServerClock
    trader = Trader(Settings(redis_url="redis://127.0.0.1:1/0", namespace="t", period_ms=period_ms),
                    client=fake, clock=ServerClock())
    trader.clock.sync(fake)
    now = trader.clock.now_ms()
    # stay clear of a boundary: the script must run in the epoch it is asked about
    if now % period_ms > period_ms - 100:
        time.sleep((period_ms - now % period_ms + 5) / 1000)
        trader.clock.sync(fake)
    return trader, trader.clock.now_ms() // period_ms


def test_no_median_over_a_registry_being_rebuilt(fake):
    """Regression: right after Redis lost its data, the first strategy to register again completed the
    epoch alone and the trader published a median of that one strategy."""
    trader, epoch = _trader_on(fake)
    now = trader.clock.now_ms()
    fake.hset("t:meta", mapping={"period_ms": 500, "instance": "i2", "created": now, "recreated": now})
    fake.sadd("t:strategies", "X")                 # Y has not registered again yet
    fake.zadd(f"t:decisions:{epoch}", {"X": 0.25})
    result = trader.collect(epoch, final=True)
    assert result[0] == "starting", result
    assert "Redis lost its data" in result[5]
    h = {k.decode(): v.decode() for k, v in fake.hgetall("t:trader").items()}
    assert h["state"] == "starting" and "median" not in h
    assert fake.xlen("t:medians") == 0


def test_publishes_two_epochs_after_the_record_was_recreated(fake):
    trader, epoch = _trader_on(fake)
    t = (epoch - 2) * 500 + 499
    fake.hset("t:meta", mapping={"period_ms": 500, "instance": "i2", "created": t, "recreated": t})
    fake.sadd("t:strategies", "X", "Y")
    fake.zadd(f"t:decisions:{epoch}", {"X": 0.25, "Y": 0.75})
    result = trader.collect(epoch, final=False)
    assert result[0] == "published" and float(result[5]) == 0.5, result
