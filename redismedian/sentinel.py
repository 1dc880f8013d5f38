"""Redis Sentinel: ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``.

redis-py has no URL form for Sentinel, so the URL is parsed here and the client comes from
:class:`redis.sentinel.Sentinel`: every new connection asks the sentinels where the master of
``service`` is, so after a failover the components follow the new master by themselves (our
loops retry with backoff; for about two seconds after the master dies redis-py raises
``ConnectionError`` / ``MasterNotFoundError``, which are transient like any outage).

Credentials: ``user:password@`` in the URL (or ``--master-password``, environment
``REDISMEDIAN_MASTER_PASSWORD``) are the master's; ``--sentinel-password``
(``REDISMEDIAN_SENTINEL_PASSWORD``) authenticates to the sentinels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

SCHEME = "redis+sentinel"
PREFIX = SCHEME + "://"
DEFAULT_SENTINEL_PORT = 26379
ENV_SENTINEL_PASSWORD = "REDISMEDIAN_SENTINEL_PASSWORD"
ENV_MASTER_PASSWORD = "REDISMEDIAN_MASTER_PASSWORD"
FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]"
# A sentinel that does not answer is skipped quickly: discovery then asks the next one.
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return isinstance(url, str) and url.lower().startswith(PREFIX)


def _bad(why: str) -> ValueError:
    # Without the URL: connection.check_url, which every client goes through first, puts it in front,
    # redacted (connection.redact_url, the one redactor).
    return ValueError(f"{why} (form: {FORM})")


_HOST_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[^:]*))?$")


def parse(url: str) -> SentinelURL:
    """Parse a Sentinel URL (ValueError with a clear message when it is wrong)."""
    if not is_sentinel_url(url):
        raise _bad(f"scheme must be {SCHEME}://")
    rest = url[len(PREFIX):]
    if "?" in rest or "#" in rest:
        raise _bad("no query or fragment is accepted; give passwords with --master-password / "
                        "--sentinel-password")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None        # user@host: a user name (the password from elsewhere)
        password = unquote(pw) if colon else None
    else:
        username = password = None
    hosts = []
    for part in netloc.split(","):
        m = _HOST_RE.match(part.strip())
        if not part.strip() or not m:
            raise _bad(f"bad sentinel address {part!r}")
        host = m.group("v6") or m.group("host")
        port_text = m.group("port")
        if port_text is None or port_text == "":
            port = DEFAULT_SENTINEL_PORT
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise _bad(f"bad port {port_text!r} for sentinel {host}")
        hosts.append((host, port))
    segments = [s for s in path.split("/")] if slash else []
    if segments and segments[-1] == "":
        segments = segments[:-1]
    if not segments or not segments[0]:
        raise _bad("give the master's service name after the sentinel addresses")
    if len(segments) > 2:
        raise _bad(f"unexpected path {('/' + path)!r}")
    service = unquote(segments[0])
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise _bad(f"database must be a number, got {segments[1]!r}")
        db = int(segments[1])
    return SentinelURL(tuple(hosts), service, db, username, password)


def passwords(u: SentinelURL, given: str | None = None, master: str | None = None,
              sentinel: str | None = None) -> tuple[str | None, str | None]:
    """(master password, sentinel password).  The master's: ``master`` (--master-password), else
    ``given`` (--password-file or $REDISMEDIAN_PASSWORD, see connection.redis_settings), else the
    URL's; the sentinels': ``sentinel`` (--sentinel-password), else none."""
    return master or given or u.password, sentinel or None


def make_client(url: str, socket_timeout: float, master_password: str | None = None,
                sentinel_password: str | None = None, **connection_kwargs: Any) -> redis.Redis:
    """A client of the current master of the URL's service (found through the sentinels).

    ``connection_kwargs`` (connection.make_client's explicit options) go to the master's
    connections; the clients that ask the sentinels get their own, below."""
    u = parse(url)
    master_pw, sentinel_pw = passwords(u, connection_kwargs.pop("password", None), master_password,
                                       sentinel_password)
    t = min(socket_timeout, SENTINEL_TIMEOUT_S)
    sentinel_kwargs = {
        "socket_timeout": t, "socket_connect_timeout": t,
        # No retry inside redis-py: discovery already moves on to the next sentinel when one fails,
        # and our loops retry with backoff.  redis-py 7 and 8 would otherwise retry each sentinel
        # (connect and AUTH included) with exponential backoff, 3 times (7.x) or 10 (8.x): a wrong
        # --sentinel-password took 11 s (8.x, three sentinels) to be reported instead of 10 ms.
        "retry": Retry(NoBackoff(), 0),
        # RESP2, as for the master (see connection.client_settings): the replies of SENTINEL commands
        # that redis-py 6 and 7 parse, and no HELLO / CLIENT MAINT_NOTIFICATIONS round trips.
        "protocol": 2,
    }
    if sentinel_pw:
        sentinel_kwargs["password"] = sentinel_pw
    sentinel = Sentinel(list(u.sentinels), sentinel_kwargs=sentinel_kwargs, socket_timeout=socket_timeout,
                        db=u.db, username=u.username, password=master_pw, **connection_kwargs)
    return cast(redis.Redis, sentinel.master_for(u.service))


def is_auth_failure(exc: BaseException) -> bool:
    """True when no master was found only because every sentinel refused our credentials."""
    if not isinstance(exc, MasterNotFoundError):
        return False
    # By text: redis-py keeps no exception objects here, only each sentinel's error folded into the
    # message ("sentinel h:p - AuthenticationError('...')", or a WRONGPASS / NOAUTH reply's words).
    _, _, errors = describe(exc).partition(" : ")
    parts = [p for p in re.split(r", (?=sentinel )", errors) if p.strip()]
    return bool(parts) and all(("AuthenticationError" in p or "WRONGPASS" in p or "NOAUTH" in p) for p in parts)


_SENTINEL_REPR = re.compile(r"<redis\.client\.Redis\(.*?,host=([^,]+),port=(\d+),.*?\)>\)>\)>")


def describe(exc: BaseException) -> str:
    """One line for a MasterNotFoundError: the sentinels' addresses, never their settings (which
    redis-py puts in the message, passwords included)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _SENTINEL_REPR.sub(lambda m: f"sentinel {m.group(1)}:{m.group(2)}", text)
    return re.sub(r"password=[^,)>]*", "password=***", text)
