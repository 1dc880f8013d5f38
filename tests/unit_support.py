"""Unit-test harness: fakeredis living on the test's clock, so periods pass without sleeping.

* :class:`FakeClock` is the server clock under the test's control: waiting advances time at once.
* :func:`patch_fakeredis_time` makes fakeredis read the time from a :class:`FakeClock`:
  the server ``TIME`` seen by the Lua scripts, key expiry (PX/PEXPIRE) and stream ids all
  follow the clock the components were given.  Moving the clock moves the whole world.
* :class:`ClockedRedis` never blocks for real: ``XREAD BLOCK`` and a subscription's
  ``get_message`` (the trader's doorbells) answer at once when there is data, and otherwise
  advance the clock by the block time and return nothing, as a real server would after the
  timeout.
* :class:`Env` builds components against one fake server with a long period, so a test
  chooses exactly where in which epoch it stands.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time as _real_time

import fakeredis
import redis

from redismedian import keys as K
from redismedian.clock import ServerClock, boundary_ms
from redismedian.common import Settings, new_owner_id
from redismedian.connection import RedisSettings
from redismedian.generator import Generator
from redismedian.strategy import Strategy
from redismedian.trader import Trader

PERIOD_MS = 3_600_000       # long: nothing a test does by accident crosses a boundary
EPOCH = 480_000             # the epoch tests start in (a date in 2024)
START_OFFSET_MS = 1_000     # where in its epoch a test starts: after the boundary, before any deadline


class FakeClock(ServerClock):
    """A server clock under the test's control: waiting advances time instantly."""

    def __init__(self, start_ms: int = 1_700_000_000_000):
        super().__init__(monotonic=self._mono)
        self._t = start_ms / 1000.0
        self._offset_ms = 0.0
        self.waits: list[float] = []

    def _mono(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds

    def set_ms(self, ms: int) -> None:
        self._t = ms / 1000.0

    def observe(self, server_ms: int, sent_at: float | None = None) -> None:
        pass  # the test owns time

    def sync(self, client) -> int:
        return self.now_ms()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        if stop.is_set():
            return True
        self._t += max(0.0, seconds)
        return stop.is_set()


class _FakeTime:
    """Stands in for the ``time`` module inside fakeredis: ``time()`` follows the fake clock."""

    def __init__(self, clock: FakeClock):
        self._clock = clock

    def time(self) -> float:
        return self._clock._t

    def __getattr__(self, name):
        return getattr(_real_time, name)


def patch_fakeredis_time(monkeypatch, clock: FakeClock) -> None:
    proxy = _FakeTime(clock)
    for name, mod in list(sys.modules.items()):
        if name.startswith("fakeredis") and getattr(mod, "time", None) is _real_time:
            monkeypatch.setattr(mod, "time", proxy)


class ClockedRedis(fakeredis.FakeRedis):
    """fakeredis whose blocking reads never sleep: a timeout advances the fake clock instead."""

    def __init__(self, *args, clock: FakeClock, **kwargs):
        super().__init__(*args, **kwargs)
        self.fake_clock = clock
        self.blocked: list[tuple[str, float]] = []   # (command, seconds) of every wait that timed out

    def pipeline(self, transaction=True, shard_hint=None):
        return _ClockedPipeline(self)

    def pubsub(self, **kwargs):
        return _ClockedPubSub(self, super().pubsub(**kwargs))

    def xread(self, streams, count=None, block=None, noack=False):
        for key in streams:   # fakeredis raises AttributeError here where Redis answers WRONGTYPE
            if self.type(key) not in (b"stream", b"none"):
                raise redis.exceptions.ResponseError(
                    "WRONGTYPE Operation against a key holding the wrong kind of value")
        reply = super().xread(streams, count=count)
        if not reply and block:
            self.blocked.append(("xread", block / 1000.0))
            self.fake_clock.advance(block / 1000.0)
        return reply


class _ClockedPubSub:
    """A subscription of a ClockedRedis: ``get_message`` answers at once with what is waiting, and
    otherwise advances the fake clock by its timeout, as a real wait would have lasted."""

    def __init__(self, client: ClockedRedis, inner):
        self._client, self._inner = client, inner

    def get_message(self, ignore_subscribe_messages=False, timeout=0.0):
        for _ in range(4):      # fakeredis answers None while it consumes subscription confirmations
            m = self._inner.get_message(ignore_subscribe_messages=ignore_subscribe_messages, timeout=0.0)
            if m is not None:
                return m
        if timeout:
            self._client.blocked.append(("pubsub", float(timeout)))
            self._client.fake_clock.advance(float(timeout))
        return None

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _ClockedPipeline:
    """A pipeline of a ClockedRedis: the commands run one after the other through the client itself,
    so that a test's patch of a client method sees pipelined calls (and a blocking command in a
    pipeline would advance the fake clock too)."""

    def __init__(self, client: ClockedRedis):
        self._client = client
        self._ops: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        def queue(*args, **kwargs):
            self._ops.append((name, args, kwargs))
            return self
        return queue

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._ops = []

    def __len__(self):
        return len(self._ops)

    def execute(self, raise_on_error=True):
        out = []
        ops, self._ops = self._ops, []
        for name, args, kwargs in ops:
            try:
                out.append(getattr(self._client, name)(*args, **kwargs))
            except redis.exceptions.ResponseError as e:
                if raise_on_error:
                    raise
                out.append(e)
        return out


class Env:
    """One fake Redis, one fake clock, and factories for components using them."""

    def __init__(self, monkeypatch, period_ms: int = PERIOD_MS, namespace: str = "t"):
        self.period_ms = period_ms
        self.E = EPOCH
        self.clock = FakeClock(boundary_ms(self.E, period_ms) + min(START_OFFSET_MS, period_ms // 10))
        patch_fakeredis_time(monkeypatch, self.clock)
        self.server = fakeredis.FakeServer()
        self.r = ClockedRedis(server=self.server, clock=self.clock)
        self.settings = Settings(RedisSettings("redis://127.0.0.1:1/0"), namespace=namespace, period_ms=period_ms)
        self.k = self.settings.keys
        self._gens: dict[str, Generator] = {}
        self._values: dict[str, float] = {}
        # What the strategies publish on the doorbell channels (NS:joins, NS:ready), heard by the test
        # itself (a subscription of its own: the trader's is not consumed).
        self._listener = fakeredis.FakeRedis.pubsub(self.r)
        self._listener.subscribe(self.k.joins_channel, self.k.ready_channel)
        self._asks: list[str] = []
        self._rings: list[int] = []

    # -- the doorbell channels -------------------------------------------------
    def _hear(self) -> None:
        for _ in range(100_000):
            m = self._listener.get_message(timeout=0.0)
            if m is None:
                m = self._listener.get_message(timeout=0.0)   # after a subscription confirmation
                if m is None:
                    return
            if m["type"] != "message":
                continue
            text = m["data"].decode()
            if m["channel"].decode() == self.k.joins_channel:
                self._asks.append(text)
            else:
                self._rings.append(int(text))

    def asks(self) -> set[str]:
        """The names published on NS:joins (asking to be registered) since the last ``forget``."""
        self._hear()
        return set(self._asks)

    def rings(self) -> list[int]:
        """The epochs rung on NS:ready since the last ``forget``, in order."""
        self._hear()
        return list(self._rings)

    def forget(self) -> None:
        """Start hearing afresh."""
        self._hear()
        self._asks, self._rings = [], []

    # -- time ----------------------------------------------------------------
    def at(self, epoch: int, frac: float | None = None) -> int:
        """Move the clock to ``frac`` of the way into ``epoch`` (default: 1 s after its boundary,
        before every deadline); returns the time in ms."""
        offset = START_OFFSET_MS if frac is None else int(frac * self.period_ms)
        ms = boundary_ms(epoch, self.period_ms) + offset
        self.clock.set_ms(ms)
        return ms

    def server_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- components ----------------------------------------------------------
    def settings_for(self, **changes) -> Settings:
        return dataclasses.replace(self.settings, owner=changes.pop("owner", None) or new_owner_id(), **changes)

    def client(self, **kw) -> ClockedRedis:
        return ClockedRedis(server=self.server, clock=self.clock, **kw)

    def generator(self, name: str = "g1", fn=lambda e: 0.5, settings: Settings | None = None, **kw) -> Generator:
        return Generator(settings or self.settings_for(), name=name, signal_fn=fn, client=kw.pop("client", self.r),
                         clock=self.clock, **kw)

    def strategy(self, name: str = "X", generators=("g1",), decide=None, settings: Settings | None = None,
                 **kw) -> Strategy:
        if decide is not None:
            kw["decide_fn"] = decide
        # Waiting is blocking reads of up to 1 s each: keep the default deadline short so that
        # tests reaching it do not make hundreds of (instant) reads.
        kw.setdefault("signal_timeout_ms", 5_000)
        return Strategy(settings or self.settings_for(), name=name, generators=list(generators),
                        client=kw.pop("client", self.r), clock=self.clock, **kw)

    def trader(self, settings: Settings | None = None, **kw) -> Trader:
        kw.setdefault("decision_timeout_ms", 10_000)
        t = Trader(settings or self.settings_for(), client=kw.pop("client", self.r), clock=self.clock, **kw)
        # A trader that is running listens to the doorbells (its start-up subscribes): what strategies
        # publish from now on waits for it, whichever component a test steps first.
        t.bell.ensure()
        return t

    # -- whole steps -----------------------------------------------------------
    def admit(self, *names: str) -> None:
        """Admit started strategies into the registry, as the trader's tick does at each boundary
        (through the same script: each needs a live lease)."""
        self.trader().admit(list(names))
        for n in names:
            assert self.r.sismember(self.k.strategies, n), f"{n} was not admitted (no live lease?)"

    def decide(self, name: str, value, epoch: int | None = None) -> None:
        """Write ``name``'s decision key the way its strategy does (``<epoch>|<value>``, PX 10 periods),
        without a strategy process: ``value`` is a number, or the exact text to write after the epoch."""
        text = value if isinstance(value, str) else repr(float(value))
        e = self.E if epoch is None else epoch
        self.r.set(self.k.decision(name), f"{e}|{text}", px=K.ttl_ms(self.period_ms, K.DECISION_TTL_PERIODS))

    def started(self, component):
        """Run ``startup`` the way ``Component.run`` does."""
        component.startup()
        component.started = True
        return component

    def publish(self, epoch: int, **signals: float) -> None:
        """Generators named after the keywords write their values for ``epoch`` (going there and back)."""
        now = self.clock.now_ms()
        if now // self.period_ms != epoch:
            self.at(epoch)
        for name, value in signals.items():
            g = self._gens.get(name)
            if g is None:
                g = self._gens[name] = self.started(self.generator(name, fn=lambda e, n=name: self._values[n]))
            self._values[name] = value
            g.step(epoch)
        self.clock.set_ms(now)

    # -- reading back -----------------------------------------------------------
    def hash(self, key: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(key).items()}

    def medians(self) -> list[dict[str, str]]:
        return [{k.decode(): v.decode() for k, v in f.items()} for _id, f in self.r.xrange(self.k.medians)]


def messages(caplog, level: int = logging.DEBUG) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]
