"""One clock for the whole deployment: the Redis server's ``TIME``.

Components never trust their local wall clock.  They learn the offset between the
server's clock and the local *monotonic* clock from every reply that carries the
server time, and use the monotonic clock only to sleep until the next period
boundary.  Tests inject a fake clock (tests/unit_support.py) to move through periods without sleeping.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import redis


def epoch_of(now_ms: int, period_ms: int) -> int:
    """Epoch E = floor(server time / period)."""
    return int(now_ms) // int(period_ms)


def boundary_ms(epoch: int, period_ms: int) -> int:
    """Server time (ms) at which ``epoch`` begins."""
    return int(epoch) * int(period_ms)


def time_reply_ms(reply: Sequence[Any]) -> int:
    """Milliseconds from a ``TIME`` reply ``[seconds, microseconds]``."""
    sec, usec = reply
    return int(sec) * 1000 + int(usec) // 1000


class ServerClock:
    """Estimates the Redis server's time from the local monotonic clock plus a learnt offset."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._offset_ms: float | None = None

    @property
    def synced(self) -> bool:
        return self._offset_ms is not None

    def observe(self, server_ms: int, sent_at: float | None = None) -> None:
        """Learn from a reply carrying the server time; ``sent_at`` is the monotonic send time."""
        now = self._monotonic()
        mid = now if sent_at is None else (sent_at + now) / 2.0
        self._offset_ms = float(server_ms) - mid * 1000.0

    def sync(self, client: redis.Redis) -> int:
        sent = self._monotonic()
        server_ms = time_reply_ms(client.time())
        self.observe(server_ms, sent)
        return server_ms

    def now_ms(self) -> int:
        if self._offset_ms is None:
            raise RuntimeError("clock used before it was synchronised with the Redis server")
        return int(self._monotonic() * 1000.0 + self._offset_ms)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until ``stop`` is set; True when stopped."""
        return stop.wait(max(0.0, seconds))
