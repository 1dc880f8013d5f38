"""Connecting to Redis: settings from a URL, bounded timeouts, and riding out outages."""
from __future__ import annotations

import inspect
import logging
import os
import random
import time
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, SlaveNotFoundError

from . import cluster, sentinel
from .keys import CLUSTER_SCHEMES, is_cluster_url

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix", sentinel.SCHEME) + CLUSTER_SCHEMES

# Errors that mean "Redis is not reachable or not usable right now": retry with backoff.
TRANSIENT_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,   # CLUSTERDOWN: the cluster is failing a master over
    MasterNotFoundError,   # Sentinel: no master right now (about two seconds around a failover)
    SlaveNotFoundError,
    ConnectionError,
    TimeoutError,
)
# A plain client that meets these is talking to a Redis Cluster node (see wrong_mode).
CLUSTER_REPLIES = (redis.exceptions.AskError, redis.exceptions.ClusterCrossSlotError)
# Subclasses of ConnectionError that no retry fixes.
AUTH_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError)


def redact_url(url: str) -> str:
    """The URL with any password (in the user part or a ``password=`` query) replaced by ``***``."""
    if sentinel.is_sentinel_url(url):
        return sentinel.redact(url)
    if is_cluster_url(url):
        return cluster.redact(url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    query = parts.query
    if query and "password" in query.lower():
        query = urlencode([(k, "***" if k.lower() == "password" else v)
                           for k, v in parse_qsl(query, keep_blank_values=True)], safe="*/:")
    if password is None and query == parts.query:
        return url
    netloc = parts.netloc
    if password is not None:
        user = parts.username or ""
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:***@{host}"
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def check_url(url: str) -> str:
    """Validate a Redis URL without connecting (ValueError with a clear message)."""
    if sentinel.is_sentinel_url(url):
        sentinel.parse(url)
        return url
    if is_cluster_url(url):
        cluster.parse(url)
        return url
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
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


# redis-py 8 deprecates lib_name/lib_version for driver_info, which 6.x does not know.
NO_SETINFO = ({"driver_info": None} if "driver_info" in inspect.signature(redis.Redis.__init__).parameters
              else {"lib_name": None, "lib_version": None})


def client_settings(socket_timeout: float) -> dict[str, Any]:
    """The options every client of ours is built with, each one explicit because redis-py's
    defaults differ between the versions we support (6.x to 8.x):

    - ``socket_timeout``, ``socket_connect_timeout``: every call is bounded by ours
      (``--socket-timeout``), a connect by at most 2 s (redis-py 6/7: no bound by default; 8: 5 s).
    - ``retry``: at most one retry, at once, on ConnectionError only.  Our loops do the real
      retrying (with backoff and outage logging); this one retry only papers over a pooled
      connection that went stale while idle.  redis-py's default backs off exponentially, 3 times
      (6.x, 7.x) or 10 (8.x), and from 7.x it retries connect and AUTH too: a stopped server or a
      wrong password would stall every call for seconds.  A call that timed out is not sent again
      (``retry_on_error`` and the deprecated ``retry_on_timeout`` stay unset: they add errors here).
    - ``health_check_interval=0``: no PING before a command on an idle connection (the default
      everywhere; explicit because our round trips per period are counted and promised).
    - ``protocol=2``: redis-py 8 speaks RESP3 by default (6.x, 7.x: RESP2), which adds HELLO and
      CLIENT MAINT_NOTIFICATIONS (refused by Redis and Valkey) to every new connection and has
      redis-py convert RESP3 replies back to RESP2 shapes.  We are tested on RESP2, and the
      trader reads its pipeline's replies raw, without redis-py's conversions.

    - no CLIENT SETINFO (``driver_info=None``; ``lib_name``/``lib_version=None`` before it existed):
      our per-role ACL users may not run it, and Redis 7.2+ and Valkey log the refusal in ACL LOG
      twice per new connection, which buries the denials an operator looks for there.

    Left to redis-py: ``socket_keepalive`` (on from 8.x; nothing relies on it, every call being
    bounded by ``socket_timeout``).
    """
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 2.0),
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        "health_check_interval": 0,
        "protocol": 2,
        **NO_SETINFO,
    }


def make_client(url: str, socket_timeout: float = 5.0, namespace: str | None = None,
                **kwargs: Any) -> redis.Redis:
    """A client whose every call is bounded in time and retried at most once, at once
    (:func:`client_settings`).
    On a cluster (``redis+cluster://``) the client serves one namespace: give ``namespace``.
    """
    check_url(url)
    options = {**client_settings(socket_timeout), "client_name": kwargs.pop("client_name", None), **kwargs}
    if is_cluster_url(url):
        if namespace is None:
            raise ValueError("a Redis Cluster client serves one namespace: pass namespace=")
        return cluster.make_client(url, namespace, **options)
    if sentinel.is_sentinel_url(url):
        return sentinel.make_client(url, **options)
    return redis.Redis.from_url(url, **options)


def describe_error(exc: BaseException) -> str:
    """One line describing a Redis error, without secrets."""
    if isinstance(exc, MasterNotFoundError):
        return sentinel.describe(exc)
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def redis_problem(url: str, exc: BaseException, acl_hint: str = "check its ACL") -> str:
    """One line saying what went wrong talking to Redis at ``url`` (redacted: never a password)."""
    mismatch = wrong_mode(exc, url)
    if mismatch:
        return mismatch
    if is_permission_error(exc):
        what = f"denied a command to this user ({acl_hint})"
    elif is_auth_error(exc):
        what = "refused our credentials"
    elif isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
        what = "is not reachable"
    else:
        what = "answered with an error"
    return f"Redis at {redact_url(url)} {what}: {describe_error(exc)}"


def wrong_mode(exc: BaseException, url: str) -> str | None:
    """Why no retry can help when a plain URL leads to a Redis Cluster node, or a cluster URL to a
    server that is not one; None for any other error."""
    if isinstance(exc, cluster.NotACluster):
        return str(exc)
    if isinstance(exc, CLUSTER_REPLIES) and not is_cluster_url(url):
        return (f"Redis at {redact_url(url)} is a Redis Cluster node ({describe_error(exc)}): use a "
                "redis+cluster://host:port[,host:port...] URL")
    return None


def is_auth_error(exc: BaseException) -> bool:
    if isinstance(exc, AUTH_ERRORS) or sentinel.is_auth_failure(exc):
        return True
    msg = str(exc)
    return isinstance(exc, redis.exceptions.ResponseError) and (
        msg.startswith(("WRONGPASS", "NOAUTH")) or is_permission_error(exc))


def is_permission_error(exc: BaseException) -> bool:
    """Redis' ACL denied a command or key to our user (directly, or inside one of our scripts)."""
    if isinstance(exc, redis.exceptions.NoPermissionError):  # redis-py strips the NOPERM prefix
        return True
    msg = str(exc)
    # Inside a script: Redis 7.0 says "The user executing the script can't ...", Redis 7.2+ and
    # Valkey "ACL failure in script: ...".
    return isinstance(exc, redis.exceptions.ResponseError) and (
        msg.startswith("NOPERM") or "The user executing the script can't" in msg
        or "ACL failure in script" in msg)


class Backoff:
    """Capped exponential backoff with jitter: 0.1 s, 0.2 s, ... up to ``cap`` seconds."""

    def __init__(self, cap: float, base: float = 0.1, rng: random.Random | None = None) -> None:
        self.cap = max(0.01, cap)
        self.base = min(base, self.cap)
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        # The exponent stops at 32, far past any cap: 2 ** 1024 does not fit a float, and the
        # 1025th retry of one outage raised OverflowError here.
        delay = min(self.cap, self.base * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        # Full jitter on the upper half keeps a herd of restarting processes apart.
        return delay / 2 + self._rng.random() * delay / 2

    def reset(self) -> None:
        self.attempt = 0


class Outage:
    """Logs a Redis outage once when it starts and once when it ends, not on every retry."""

    def __init__(self, url: str, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
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


# -- credentials and TLS: what every command takes besides the URL ----------------------
PASSWORD_ENV = "REDISMEDIAN_PASSWORD"


def read_secret_file(path: str, what: str = "password") -> str:
    """The secret in ``path``: its last non-empty line (ValueError naming ``what`` file when unreadable).

    Earlier lines are older secrets still accepted during a rotation (see deploy/redis/render-acl.sh);
    clients always use the newest one.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} file {path} is not UTF-8 text") from None
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise ValueError(f"{what} file {path} is empty")
    return lines[-1]


def read_password_file(path: str) -> str:
    """The password in ``path`` (:func:`read_secret_file`)."""
    return read_secret_file(path, "password")


def client_options(url: str, password_file: str | None = None, tls_ca_cert: str | None = None,
                   tls_cert: str | None = None, tls_key: str | None = None,
                   environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for :func:`make_client` besides the URL (ValueError on a mistake).

    The password comes from the URL, else from ``password_file``, else from
    ``$REDISMEDIAN_PASSWORD``; the user name from the URL (``redis://user@host``).
    A password in both the URL and a file is refused as ambiguous.  TLS files need a
    ``rediss://`` URL.  The result may hold a secret: never log it.
    """
    environ = os.environ if environ is None else environ
    opts: dict[str, Any] = {}
    parts = urlsplit(url)
    if password_file:
        if parts.password is not None:
            raise ValueError("a password is given both in the Redis URL and in a password file: keep one")
        opts["password"] = read_password_file(password_file)
    elif parts.password is None and environ.get(PASSWORD_ENV):
        opts["password"] = environ[PASSWORD_ENV]
    tls = {"--tls-ca-cert": tls_ca_cert, "--tls-cert": tls_cert, "--tls-key": tls_key}
    given = [k for k, v in tls.items() if v]
    if given and parts.scheme not in ("rediss", "rediss+cluster"):
        raise ValueError(f"{', '.join(given)} need a rediss:// or rediss+cluster:// URL (TLS), not {parts.scheme}://")
    if tls_key and not tls_cert:
        raise ValueError("--tls-key needs --tls-cert (the client certificate it belongs to)")
    for option, path in tls.items():
        if path and not os.access(path, os.R_OK):
            why = "does not exist" if not os.path.exists(path) else "is not readable"
            raise ValueError(f"{option} {path} {why}")
    if tls_ca_cert:
        opts["ssl_ca_certs"] = tls_ca_cert
    if tls_cert:
        opts["ssl_certfile"] = tls_cert
    if tls_key:
        opts["ssl_keyfile"] = tls_key
    return opts
