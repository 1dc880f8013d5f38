"""Connecting to Redis: settings from a URL, bounded timeouts, and riding out outages."""
from __future__ import annotations

import logging
import random
import time
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix")

# Errors that mean "Redis is not reachable or not usable right now": retry with backoff.
TRANSIENT_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    ConnectionError,
    TimeoutError,
)
# Subclasses of ConnectionError that no retry fixes.
AUTH_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """Validate a Redis URL without connecting (ValueError with a clear message)."""
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a bad port
    except ValueError as e:
        raise ValueError(f"invalid Redis URL {redact_url(url)!r}: {e}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"invalid Redis URL {redact_url(url)!r}: scheme must be one of "
            + ", ".join(f"{s}://" for s in SCHEMES))
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"invalid Redis URL {redact_url(url)!r}: give the socket path, e.g. unix:///run/redis.sock")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"invalid Redis URL {redact_url(url)!r}: no host")
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError(f"invalid Redis URL {redact_url(url)!r}: database must be a number, got {db!r}")
    try:
        redis.connection.parse_url(url)
    except ValueError as e:
        raise ValueError(f"invalid Redis URL {redact_url(url)!r}: {e}") from None
    return url


def make_client(url: str, socket_timeout: float = 5.0, **kwargs) -> redis.Redis:
    """A client whose every call is bounded in time and retried at most once, at once.

    Our own loops do the real retrying (with backoff and outage logging); redis-py's
    single retry only papers over a pooled connection that went stale while idle.
    """
    check_url(url)
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 2.0),
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        health_check_interval=0,
        client_name=kwargs.pop("client_name", None),
        **kwargs,
    )


def describe_error(exc: BaseException) -> str:
    """One line describing a Redis error, without secrets."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def is_auth_error(exc: BaseException) -> bool:
    if isinstance(exc, AUTH_ERRORS):
        return True
    msg = str(exc)
    return isinstance(exc, redis.exceptions.ResponseError) and msg.startswith(("WRONGPASS", "NOAUTH", "NOPERM"))


class Backoff:
    """Capped exponential backoff with jitter: 0.1 s, 0.2 s, ... up to ``cap`` seconds."""

    def __init__(self, cap: float, base: float = 0.1, rng: random.Random | None = None):
        self.cap = max(0.01, cap)
        self.base = min(base, self.cap)
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        # Full jitter on the upper half keeps a herd of restarting processes apart.
        return delay / 2 + self._rng.random() * delay / 2

    def reset(self) -> None:
        self.attempt = 0


class Outage:
    """Logs a Redis outage once when it starts and once when it ends, not on every retry."""

    def __init__(self, url: str, logger: logging.Logger | None = None, clock=time.monotonic):
        self.url = redact_url(url)
        self.log = logger or log
        self.since: float | None = None
        self._clock = clock

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, cap: float) -> None:
        if self.since is None:
            self.since = self._clock()
            self.log.warning("Redis unavailable at %s (%s); retrying every <= %.1fs",
                             self.url, describe_error(exc), cap)

    def recovered(self) -> None:
        if self.since is not None:
            self.log.info("Redis is back at %s after %.1fs", self.url, self._clock() - self.since)
            self.since = None
