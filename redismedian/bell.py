"""The trader's doorbells: one pub/sub subscription to ``NS:ready`` and ``NS:joins``.

A strategy rings ``NS:ready`` with an epoch's number when its submission makes the epoch's count
reach the registry's size, and publishes its name on ``NS:joins`` at every report while it is not
registered.  Both are only hints, which anybody with a strategy's credentials may also publish: a
ring ends the trader's wait for the decisions early (the trader then reads them, and judges them as
always), and a join request makes the trader ask the admission script, which admits a name only when
its own lease shows a live process that was not deregistered.

Channels store nothing.  A strategy's credentials used to fill the shared list and set this replaced
(``RPUSH``/``SADD`` of 1 MB elements, as fast as Redis takes them); a flood of messages now costs Redis
at most the subscriber's output buffer (``client-output-buffer-limit pubsub``, deploy/redis/redis.conf),
after which Redis closes the subscription: the trader then reads the decisions by polling until it
has subscribed again, and says so.

:class:`Inbox` is the pure part (what the messages mean); :class:`Subscription` the thin I/O around it.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

import redis

from .common import NAME_RE
from .connection import describe_error
from .keys import JOINS_PER_TICK, Keys

RESUBSCRIBE_S = 1.0       # after a lost subscription, at most one new attempt per this many seconds
DRAIN_MAX = 10_000        # messages read at most per drain (a flood is read in bounded slices)
DRAIN_MAX_BYTES = 8 << 20  # and bytes: the rest of a flood waits in Redis, which closes the subscription
                           # past its output buffer limit (the trader then polls and subscribes again)
EPOCH_MAX_LEN = 20        # a ring's text: an epoch's number, nothing longer
SAY_AGAIN_S = 60.0        # reconnections in a row are said once (again after this long without one)


def _text(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


class Inbox:
    """What the doorbell messages said since the trader last looked (pure, bounded)."""

    def __init__(self, keys: Keys, joins_cap: int = JOINS_PER_TICK) -> None:
        self.ready_channel = keys.ready_channel.encode()
        self.joins_channel = keys.joins_channel.encode()
        self.joins_cap = joins_cap
        self.rang: set[int] = set()       # epochs rung (only the recent ones are kept)
        # Valid names asking to join, at most joins_cap: a uniform sample of those heard (reservoir
        # sampling), so that a flood of made-up names cannot keep a real one out for good: it is in
        # with probability joins_cap / (names heard) at each of its requests, one per period.
        self.joins: list[str] = []
        self._joined: set[str] = set()
        self._valid = 0
        self._rng = random.Random()
        self.asked = 0                    # messages on NS:joins since the last take_joins
        self.junk = 0                     # messages that were no ring or name
        self.bytes = 0                    # bytes of the messages taken (a drain stops after DRAIN_MAX_BYTES)

    def take(self, channel: Any, data: Any) -> None:
        ch = channel if isinstance(channel, bytes) else str(channel).encode()
        raw = data if isinstance(data, bytes) else str(data).encode()
        self.bytes += len(raw)
        if ch == self.ready_channel:
            text = raw[:EPOCH_MAX_LEN + 1]
            if len(text) <= EPOCH_MAX_LEN and text.isdigit():
                epoch = int(text)
                self.rang.add(epoch)
                if len(self.rang) > 64:     # forged rings for many epochs: keep the newest
                    self.rang = set(sorted(self.rang)[-8:])
            else:
                self.junk += 1
        elif ch == self.joins_channel:
            self.asked += 1
            name = _text(raw[:65])
            if len(raw) <= 64 and NAME_RE.fullmatch(name):
                if name not in self._joined:
                    self._valid += 1
                    if len(self.joins) < self.joins_cap:
                        self.joins.append(name)
                        self._joined.add(name)
                    elif (i := self._rng.randrange(self._valid)) < self.joins_cap:
                        self._joined.discard(self.joins[i])
                        self.joins[i] = name
                        self._joined.add(name)
            else:
                self.junk += 1

    def rung(self, epoch: int) -> bool:
        return epoch in self.rang

    def take_joins(self) -> tuple[list[str], int]:
        """The valid names asking to join (at most ``joins_cap``), and how many messages asked."""
        names, asked = self.joins, self.asked
        self.joins, self._joined, self._valid, self.asked = [], set(), 0, 0
        return names, asked


class Subscription:
    """The trader's subscription: wait for a ring with a timeout, drain join requests.  Never raises
    a Redis error: a lost subscription is said once, and the trader polls until it is back."""

    def __init__(self, client: redis.Redis, keys: Keys, log: logging.Logger,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client, self.keys, self.log, self.monotonic = client, keys, log, monotonic
        self.inbox = Inbox(keys)
        self.pubsub: Any = None
        self.lost = ""              # why the subscription is down ('' = up, or never tried)
        self.losses = 0             # subscriptions lost since the start (a metric)
        self.since = 0.0            # when it subscribed (trader clock, s): rings before were not heard
        self._next_try = 0.0
        self._said_reconnect = -SAY_AGAIN_S    # (real time) when a reconnection was last said

    @property
    def up(self) -> bool:
        return self.pubsub is not None

    def ensure(self) -> bool:
        """Subscribed (again, at most once per RESUBSCRIBE_S after a loss)."""
        if self.pubsub is not None:
            return True
        now = self.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + RESUBSCRIBE_S
        try:
            # Confirmations are read as messages too (and skipped): hidden, a drain would take one
            # for "nothing waiting" and stop before the requests behind it.
            ps = self.client.pubsub()
            ps.subscribe(self.keys.ready_channel, self.keys.joins_channel)
        except (redis.exceptions.RedisError, OSError) as e:
            self._lose(f"could not subscribe: {describe_error(e)}")
            return False
        except (AttributeError, TypeError) as e:   # a client without pub/sub (tests' stand-ins)
            self._lose(f"could not subscribe: {e!r}")
            return False
        self.pubsub = ps
        self.since = self.monotonic()
        # redis-py reconnects a subscription by itself (and subscribes again) when Redis closed it:
        # what was published meanwhile was never heard.  Know it, to read at once instead of waiting.
        conn = getattr(ps, "connection", None)
        if conn is not None and hasattr(conn, "register_connect_callback"):
            conn.register_connect_callback(self._reconnected)
        if self.lost:
            self.log.info("subscribed to the doorbells %s and %s again", self.keys.ready_channel,
                          self.keys.joins_channel)
            self.lost = ""
        return True

    def _reconnected(self, _connection: Any) -> None:
        self.since = self.monotonic()
        self.losses += 1
        now = time.monotonic()
        if now - self._said_reconnect >= SAY_AGAIN_S:
            self.log.warning("the doorbell subscription (%s, %s) was closed and taken again (Redis closes a "
                             "subscriber that falls behind a flood of messages: client-output-buffer-limit pubsub; "
                             "or it restarted or failed over): a ring sent meanwhile was not heard, so the "
                             "decisions are read at once", self.keys.ready_channel, self.keys.joins_channel)
        self._said_reconnect = now

    def _lose(self, why: str) -> None:
        if self.pubsub is not None:
            self.close()
            self.losses += 1
        if not self.lost:
            self.log.warning("the doorbell subscription (%s, %s) is down: %s; reading the decisions by "
                             "polling until it is back (Redis closes a subscriber that falls behind a flood of "
                             "messages: client-output-buffer-limit pubsub)", self.keys.ready_channel,
                             self.keys.joins_channel, why)
        self.lost = why

    def _read(self, timeout: float) -> bool:
        """One message (waiting up to ``timeout`` s): False when none came or the subscription is down.
        A subscription confirmation counts as one (it is read, and skipped)."""
        try:
            m = self.pubsub.get_message(timeout=timeout)
        except (redis.exceptions.RedisError, OSError, ValueError, AttributeError) as e:
            # AttributeError/ValueError: redis-py on a connection closed under it
            self._lose(describe_error(e) if isinstance(e, redis.exceptions.RedisError) else repr(e))
            return False
        if m is None:
            return False
        if m.get("type") == "message":
            self.inbox.take(m.get("channel"), m.get("data"))
        return True

    def heard_since(self, t: float) -> bool:
        """Subscribed since at least ``t`` (the trader's clock, s): any ring after it was heard."""
        return self.pubsub is not None and self.since <= t

    def wait(self, epoch: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a ring of ``epoch``: True when it rang.  When the subscription
        is down it returns False at once (the caller polls)."""
        if self.inbox.rung(epoch):
            return True
        if not self.ensure():
            return False
        end = self.monotonic() + max(0.0, timeout_s)
        since = self.since
        for _ in range(DRAIN_MAX):
            left = end - self.monotonic()
            self._read(max(0.0, left))
            if self.inbox.rung(epoch):
                return True
            if self.pubsub is None or left <= 0 or self.since != since:
                return False        # (subscribed again meanwhile: the caller reads at once)
            # not got, time left: fakeredis answers None at once while it consumes subscription
            # confirmations; a real connection waited (and the clock moved)
        return self.inbox.rung(epoch)

    def drain(self) -> None:
        """Read what is waiting, without blocking (at most DRAIN_MAX messages)."""
        if not self.ensure():
            return
        start = self.inbox.bytes
        for _ in range(DRAIN_MAX):
            if not self._read(0.0) or self.pubsub is None or self.inbox.bytes - start > DRAIN_MAX_BYTES:
                return

    def close(self) -> None:
        if self.pubsub is not None:
            # The connection goes back to the client's pool: take our callback off it first, or the
            # next plain command that reconnects it (the lease release at a stop, a standby's next
            # read) is taken for a lost subscription: a false warning, and a loss counted.
            conn = getattr(self.pubsub, "connection", None)
            if conn is not None:
                try:
                    conn.deregister_connect_callback(self._reconnected)
                except (ValueError, AttributeError):   # not registered; a connection without callbacks
                    pass
            try:
                self.pubsub.close()
            except Exception:  # noqa: BLE001 - closing a broken connection, or at exit: nothing more to do
                pass
            self.pubsub = None
