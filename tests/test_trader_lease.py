"""The leading trader renews its lease (1.5 periods) often enough never to lose it while waiting.

Unit test with a FakeClock and a stub Redis: the leader published epoch E at its boundary, then
nothing arrives in E+1; the gap between two collects (each renews the lease) must stay well under
the lease's time-to-live.  Regression: blocking on the doorbell before the first collect of an
epoch left period + block_ms = 1.5 periods (at periods up to 2 s) between renewals.
"""
import pytest

from redismedian import keys as K
from redismedian.clock import FakeClock
from redismedian.common import Settings
from redismedian.trader import Trader


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

    def collect(epoch, final):
        calls.append(clock.now_ms())
        if epoch == first_epoch:
            return ["published", clock.now_ms(), "inst", "1", 1, "0.5", 2]
        if final:
            return ["error", clock.now_ms(), "inst", "1", 0, "1 of 2 strategies missing: X: ..."]
        return ["waiting", clock.now_ms(), "inst", "1", 0, 1, 2]

    trader.collect = collect
    assert trader.run(max_epochs=4) == 0
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert max(gaps) <= period_ms + 2, (gaps, K.lease_ttl_ms(period_ms))
    assert max(gaps) < K.lease_ttl_ms(period_ms)
