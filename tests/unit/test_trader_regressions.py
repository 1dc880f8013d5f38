"""Regression tests for trader bugs found by the integration tests.

The leading trader renews its lease (1.5 periods) often enough never to lose it while waiting:
unit test with a FakeClock and stubbed Redis calls: the leader published epoch E, then nothing
arrives in E+1; the gap between two ticks (each renews the lease) must stay well under the lease's
time-to-live.  Regression: blocking on the doorbell before the first renewal of an epoch left
period + block_ms = 1.5 periods (at periods up to 2 s) between renewals.
"""
import pytest

from redismedian import keys as K
from redismedian.common import Settings
from redismedian.connection import RedisSettings
from redismedian.scripts import TraderSettled, TraderTicked
from redismedian.trader import RegistryMemory, Seen, Trader
from tests.unit_support import FakeClock


@pytest.mark.parametrize("period_ms", [200, 1000, 2000, 60000])
def test_lease_renewed_within_its_ttl_while_strategies_are_late(period_ms, monkeypatch):
    clock = FakeClock(start_ms=1_700_000_000_000 // period_ms * period_ms)
    trader = Trader(Settings(RedisSettings("redis://127.0.0.1:1/0"), namespace="t", period_ms=period_ms),
                    client=object(), clock=clock)
    first_epoch = clock.now_ms() // period_ms
    ticks, settled = [], []
    trader.memory = RegistryMemory("inst", 1, frozenset({"X", "Y"}))   # it knows the registry already

    def tick(epoch):
        ticks.append(clock.now_ms())
        return TraderTicked("lead", clock.now_ms(), "inst", "1", len(ticks) == 1, "", 1, 2, "", epoch - 1)

    def wait_for_ring(epoch, wait_ms):
        clock.advance(wait_ms / 1000.0)                # nobody rings the doorbell
        return False

    def read_decisions(epoch, keys, rang=False):
        value = f"{epoch}|0.5".encode() if epoch == first_epoch else None
        return Seen([value, value], 1, 2)

    def settle(epoch, outcome, text, count=0, members="", inputs=""):
        settled.append((epoch, outcome))
        return TraderSettled("published" if outcome == "ok" else outcome, clock.now_ms(), "inst", "", "").status

    trader.tick, trader.read_decisions, trader.settle = tick, read_decisions, settle
    trader.wait_for_ring = wait_for_ring
    trader.check_period_first = lambda: None          # no deployment record to read (no Redis)
    monkeypatch.setattr("redismedian.trader.explain_missing", lambda *args: args[-1])   # no leases to read
    assert trader.run(max_epochs=4) == 0
    assert settled[0] == (first_epoch, "ok") and [o for _e, o in settled[1:]] == ["error"] * 3
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) <= period_ms + 2, (gaps, K.lease_ttl_ms(period_ms))
    assert max(gaps) < K.lease_ttl_ms(period_ms)


def _trader_on(fake, period_ms=500):
    import time
    from redismedian.clock import ServerClock
    trader = Trader(Settings(RedisSettings("redis://127.0.0.1:1/0"), namespace="t", period_ms=period_ms),
                    client=fake, clock=ServerClock(), decision_timeout_ms=period_ms * 4 // 5)
    trader.clock.sync(fake)
    now = trader.clock.now_ms()
    # stay clear of a boundary: the scripts must run in the epoch they are asked about
    if now % period_ms > period_ms - 150:
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
    fake.sadd("t:strategies:backup", "X")
    fake.set("t:decision:X", f"{epoch}|0.25", px=5000)
    trader.step(epoch)
    h = {k.decode(): v.decode() for k, v in fake.hgetall("t:trader").items()}
    assert h["state"] == "starting" and "median" not in h, h
    assert f"publishing from epoch {epoch + 2}" in h["reason"], h
    assert fake.xlen("t:medians") == 0


def test_publishes_two_epochs_after_the_record_was_recreated(fake):
    trader, epoch = _trader_on(fake)
    t = (epoch - 2) * 500 + 499
    fake.hset("t:meta", mapping={"period_ms": 500, "instance": "i2", "created": t, "recreated": t})
    fake.sadd("t:strategies", "X", "Y")
    fake.sadd("t:strategies:backup", "X", "Y")
    fake.set("t:decision:X", f"{epoch}|0.25", px=5000)
    fake.set("t:decision:Y", f"{epoch}|0.75", px=5000)
    trader.step(epoch)
    (entry,) = [f for _i, f in fake.xrange("t:medians")]
    assert float(entry[b"median"]) == 0.5 and int(entry[b"epoch"]) == epoch
