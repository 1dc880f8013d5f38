"""Connecting to Redis: settings from a URL, bounded timeouts, and riding out outages."""
from __future__ import annotations

import enum
import inspect
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, SlaveNotFoundError

from . import cluster, sentinel
from .keys import CLUSTER_SCHEMES, is_cluster_url
from .text import LONG, shown

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix", sentinel.SCHEME) + CLUSTER_SCHEMES
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

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
# Subclasses of ConnectionError (AuthenticationError) and ResponseError that no retry fixes.
AUTH_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError)

_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***``, for every URL form we take (``redis://``,
    ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis(s)+cluster://``, several hosts or
    one): in the user part (``user:password@``; a user name alone is kept, it is no secret) and in
    a ``password=`` query.  Text only, no parser: it must work on a URL that no parser accepts,
    which is when an error message shows it."""
    scheme_end = url.find("://")
    start = 0 if scheme_end < 0 else scheme_end + 3
    # The authority ends where urlsplit and redis-py end it: at the first '/', '?' or '#'.
    end = min([i for i in (url.find(c, start) for c in "/?#") if i >= 0] or [len(url)])
    userinfo, at, hosts = url[start:end].rpartition("@")
    authority = f"{userinfo.partition(':')[0]}:***@{hosts}" if at and ":" in userinfo else url[start:end]
    return url[:start] + authority + _QUERY_PASSWORD.sub(r"\1***", url[end:])


def check_url(url: str) -> str:
    """Validate a Redis URL without connecting (ValueError with a clear message)."""
    try:
        if sentinel.is_sentinel_url(url):
            sentinel.parse(url)
            return url
        if is_cluster_url(url):
            cluster.parse(url)
            return url
    except ValueError as e:     # their parsers say what is wrong; the URL is named here, redacted
        raise ValueError(f"invalid Redis URL {redact_url(url)!r}: {e}") from None
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


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis: built once, by the command line (``cli._redis_settings``, through
    :func:`redis_settings`), and handed down to every client; tests build it directly.

    Secrets live only in fields that ``repr`` leaves out (the URL is shown redacted), never in an
    untyped dict.  A password in the URL stays in the URL (redis-py and our Sentinel and cluster
    parsers read it there); ``password`` is one from elsewhere.
    """

    url: str = DEFAULT_REDIS_URL
    # Longest wait for one reply (--socket-timeout); the connect bound follows from it (client_settings).
    socket_timeout: float = 5.0
    # The password when the URL has none: from --password-file or $REDISMEDIAN_PASSWORD (see password_source).
    password: str | None = field(default=None, repr=False)
    # Where ``password`` came from, for people: "--password-file PATH", "$REDISMEDIAN_PASSWORD" or None.
    password_source: str | None = None
    # TLS files (rediss:// and rediss+cluster:// only): CA to verify the server, client certificate, its key.
    tls_ca_cert: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # redis+sentinel:// only: --sentinel-password (the sentinels'), --master-password (beats ``password``
    # and the URL's, see sentinel.passwords).
    sentinel_password: str | None = field(default=None, repr=False)
    master_password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in (
            "socket_timeout", "password_source", "tls_ca_cert", "tls_cert", "tls_key"))
        return f"RedisSettings(url={redact_url(self.url)!r}, {shown})"

    @property
    def cluster(self) -> bool:
        """A Redis Cluster (``redis+cluster://``, ``rediss+cluster://``): one client per namespace."""
        return is_cluster_url(self.url)

    @property
    def user(self) -> str | None:
        """The ACL user named in the URL (``redis://user@host``), None for the default user."""
        try:
            name = urlsplit(self.url).username
        except ValueError:
            return None
        return unquote(name) if name else None

    def client_kwargs(self) -> dict[str, Any]:
        """The password and TLS keyword arguments of redis-py's clients (holds a secret: never log it)."""
        kw: dict[str, Any] = {}
        if self.password is not None:
            kw["password"] = self.password
        for name, value in (("ssl_ca_certs", self.tls_ca_cert), ("ssl_certfile", self.tls_cert),
                            ("ssl_keyfile", self.tls_key)):
            if value:
                kw[name] = value
        return kw


def make_client(redis_settings: RedisSettings | str, socket_timeout: float | None = None, *,
                namespace: str | None = None, client_name: str | None = None) -> redis.Redis:
    """A client whose every call is bounded in time and retried at most once, at once
    (:func:`client_settings`).

    ``redis_settings`` is what the command line built; a bare URL (tests, benchmarks, the demo)
    stands for ``RedisSettings(url)``.  ``socket_timeout``, when given, replaces the settings' own.
    On a cluster (``redis+cluster://``) the client serves one namespace: give ``namespace``.
    """
    rs = redis_settings if isinstance(redis_settings, RedisSettings) else RedisSettings(redis_settings)
    if socket_timeout is not None:
        rs = replace(rs, socket_timeout=socket_timeout)
    url = rs.url
    check_url(url)
    options = {**client_settings(rs.socket_timeout), "client_name": client_name, **rs.client_kwargs()}
    if rs.cluster:
        if namespace is None:
            raise ValueError("a Redis Cluster client serves one namespace: pass namespace=")
        return cluster.make_client(url, namespace, **options)
    if sentinel.is_sentinel_url(url):
        return sentinel.make_client(url, master_password=rs.master_password,
                                    sentinel_password=rs.sentinel_password, **options)
    client = redis.Redis(connection_pool=ReadyPool.from_url(url, **options))
    client.auto_close_connection_pool = True    # as redis.Redis.from_url does: closing the client closes it
    return client


# What redis-py's pool says of a connection it just (re)connected that already has bytes to read: over
# TLS 1.3 the server's session tickets can arrive after the handshake, and redis-py (8.x) takes them
# for a dirty connection, reconnects once, and gives up with "Connection not ready" (a one-shot
# `status` over rediss:// failed so in CI).  Taken again from the pool, the connection is ready.
NOT_READY = ("Connection not ready", "Connection has data")


class ReadyPool(redis.ConnectionPool):
    """redis-py's pool, draining what a fresh TLS connection holds that is no reply before redis-py
    checks it (``ensure_connection``, redis-py 8), and asking twice more for a connection that it
    found "not ready" right after connecting (:data:`NOT_READY`)."""

    def ensure_connection(self, connection: Any) -> None:
        connection.connect()
        if isinstance(connection, redis.connection.SSLConnection) and connection.can_read():
            try:
                # The socket was readable: TLS records (session tickets) that carry no reply, as a short
                # read shows; anything else read here is a stale reply, drained as redis-py would discard it.
                connection.read_response(timeout=0.05, disconnect_on_error=False)
            except (redis.exceptions.TimeoutError, TypeError):   # TypeError: a redis-py without these options
                pass
            except redis.exceptions.RedisError:
                connection.disconnect()
        super().ensure_connection(connection)   # redis-py 8 (only it calls this)

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(3):
            try:
                return super().get_connection(*args, **kwargs)
            except redis.exceptions.ConnectionError as e:
                if attempt == 2 or str(e) not in NOT_READY:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")


def describe_error(exc: BaseException) -> str:
    """One line describing a Redis error, without secrets.  Its text is data (a script's error may
    quote what a key holds): escaped and bounded like any text from Redis (:mod:`redismedian.text`)."""
    if isinstance(exc, MasterNotFoundError):
        return shown(sentinel.describe(exc), LONG)
    text = str(exc).strip() or type(exc).__name__
    return shown(text.splitlines()[0])


def server_version(client: redis.Redis) -> str:
    """``Redis 7.0.15`` or ``Valkey 9.1.2``: the server's name and version from ``HELLO`` (any
    Redis user may send it, whatever its ACL), escaped and bounded like any text from Redis;
    ``the server (version unknown)`` when it does not say."""
    try:
        raw = client.execute_command("HELLO")
    except redis.exceptions.ResponseError:
        return "the server (version unknown)"
    if isinstance(raw, (list, tuple)):
        raw = dict(zip(raw[::2], raw[1::2]))
    info = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in dict(raw or {}).items()}
    name, version = info.get("server"), info.get("version")
    if not name or not version:
        return "the server (version unknown)"
    name, version = (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in (name, version))
    return shown(f"{name[:1].upper()}{name[1:]} {version}", 80)


class ErrorKind(enum.Enum):
    """What an error met talking to Redis means for the caller (:func:`classify`)."""

    TRANSIENT = "transient"    # Redis is not reachable or not usable right now: retry with backoff
    AUTH = "auth"              # Redis refused our credentials: no retry fixes it
    PERMISSION = "permission"  # Redis' ACL denied our user a command or key (the credentials were right)
    DATA = "data"              # Redis answered this one call with an error (e.g. WRONGTYPE); Redis itself is fine
    # No retry fixes it, and it is not about credentials: a URL of the wrong mode for the server
    # (wrong_mode says which, in one line), or no error of Redis' at all (a bug in us or a plug-in,
    # which callers let propagate with its traceback).
    FATAL = "fatal"


def classify(exc: BaseException) -> ErrorKind:
    """The one place that sorts errors: every loop and command decides what to do from this.

    The order matters: AuthenticationError is a ConnectionError, NOPERM and WRONGPASS replies are
    ResponseErrors, and a Sentinel refusing our password arrives as MasterNotFoundError.  No URL
    is needed: the wrong-mode errors are told apart by their type (a plain client meets MOVED/ASK
    only at a cluster node; a cluster client's connections turn them into a reconnect, so one
    that reaches a caller is a bug either way); :func:`wrong_mode` words them with the URL.
    """
    if isinstance(exc, (cluster.NotACluster, *CLUSTER_REPLIES)):
        return ErrorKind.FATAL
    if _denied_by_acl(exc):
        return ErrorKind.PERMISSION
    if _refused_credentials(exc):
        return ErrorKind.AUTH
    if isinstance(exc, TRANSIENT_ERRORS):
        return ErrorKind.TRANSIENT
    if isinstance(exc, redis.exceptions.ResponseError):
        return ErrorKind.DATA
    return ErrorKind.FATAL


# Recognising auth and permission failures: by exception type wherever redis-py gives one (its
# parsers, 6.x to 8.x, turn the WRONGPASS and NOAUTH replies into AuthenticationError, NOPERM into
# NoPermissionError), by text only where it cannot: an ACL refusal inside a Lua script is a plain
# ResponseError (words below), and a Sentinel's refusal is folded into MasterNotFoundError's message
# (sentinel.is_auth_failure).  The reply codes are also read from a plain ResponseError's text, as a
# fallback for an error built without redis-py's parser (a test double, another client class).
def _refused_credentials(exc: BaseException) -> bool:
    if isinstance(exc, AUTH_ERRORS):
        return True
    if isinstance(exc, MasterNotFoundError):
        return sentinel.is_auth_failure(exc)    # text: every sentinel refused us
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH"))


def _denied_by_acl(exc: BaseException) -> bool:
    """Redis' ACL denied a command or key to our user (directly, or inside one of our scripts)."""
    if isinstance(exc, redis.exceptions.NoPermissionError):  # redis-py strips the NOPERM prefix
        return True
    if not isinstance(exc, redis.exceptions.ResponseError):
        return False
    msg = str(exc)
    # Text: inside a script Redis 7.0 says "The user executing the script can't ...", Redis 7.2+
    # and Valkey "ACL failure in script: ...", both as a plain ResponseError.
    return (msg.startswith("NOPERM") or "The user executing the script can't" in msg
            or "ACL failure in script" in msg)


def redis_problem(url: str, exc: BaseException, acl_hint: str = "check its ACL", user: str = "this user") -> str:
    """One line saying what went wrong talking to Redis at ``url`` (redacted: never a password).
    ``user`` names the Redis user in an ACL denial ("our user" in a component's own words)."""
    mismatch = wrong_mode(exc, url)
    if mismatch:
        return mismatch
    kind = classify(exc)
    if kind is ErrorKind.PERMISSION:
        what = f"denied a command to {user} ({acl_hint})"
    elif kind is ErrorKind.AUTH:
        what = "refused our credentials"
    elif isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
        what = "is not reachable"
    else:
        what = "answered with an error"
    return f"Redis at {redact_url(url)} {what}: {describe_error(exc)}"


def wrong_mode(exc: BaseException, url: str) -> str | None:
    """Why no retry can help when a plain URL leads to a Redis Cluster node, or a cluster URL to a
    server that is not one; None for any other error (classify calls both FATAL)."""
    if isinstance(exc, cluster.NotACluster):
        return str(exc)
    if isinstance(exc, CLUSTER_REPLIES) and not is_cluster_url(url):
        return (f"Redis at {redact_url(url)} is a Redis Cluster node ({describe_error(exc)}): use a "
                "redis+cluster://host:port[,host:port...] URL")
    return None


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


def redis_settings(url: str, socket_timeout: float = 5.0, password_file: str | None = None,
                   env_password: str | None = None, tls_ca_cert: str | None = None, tls_cert: str | None = None,
                   tls_key: str | None = None, sentinel_password: str | None = None,
                   master_password: str | None = None) -> RedisSettings:
    """The :class:`RedisSettings` of the command line's options (ValueError on a mistake).

    The password comes from the URL, else from ``password_file``, else from ``env_password``
    (``$REDISMEDIAN_PASSWORD``, which the caller reads); the user name from the URL
    (``redis://user@host``).  A password in both the URL and a file is refused as ambiguous.
    TLS files need a ``rediss://`` URL.  The result may hold a secret: never log it.
    """
    parts = urlsplit(url)
    password = source = None
    if password_file:
        if parts.password is not None:
            raise ValueError("a password is given both in the Redis URL and in a password file: keep one")
        password, source = read_password_file(password_file), f"--password-file {password_file}"
    elif parts.password is None and env_password:
        password, source = env_password, f"${PASSWORD_ENV}"
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
    return RedisSettings(url=url, socket_timeout=socket_timeout, password=password, password_source=source,
                         tls_ca_cert=tls_ca_cert or None, tls_cert=tls_cert or None, tls_key=tls_key or None,
                         sentinel_password=sentinel_password or None, master_password=master_password or None)
