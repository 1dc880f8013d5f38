"""Redis Cluster: ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS).

In cluster mode every key of namespace ``NS`` is ``{NS}:<rest>`` (see keys.py), so a whole
namespace lives in one hash slot, on one master at a time.  A component therefore talks to that
one master through an ordinary :class:`redis.Redis` whose connections find the master when they
connect: they ask the cluster's nodes (``CLUSTER SLOTS``) which master serves the namespace's slot,
as redis-py's Sentinel connections ask the sentinels.  Everything a component does (scripts, the
trader's pipeline and ``MULTI``, the pre-encoded ``MGET``, ``TIME`` from the server that holds the
keys) then works exactly as on a single server.

Why not redis-py's ``RedisCluster`` for the data path: its pipelines refuse ``EVALSHA``, ``MGET``
and ``TIME``, and its ``TIME``/``PING``/``ACL WHOAMI`` go to an arbitrary node, whose clock is not
the one the scripts read.  With one slot per namespace there is nothing to route.

Redirections and outages: a ``MOVED``/``ASK`` answer (the slot moved, e.g. a failover promoted a
replica or an operator resharded) makes the connection forget the master and fail with a
``ConnectionError``; ``CLUSTERDOWN`` and ``TRYAGAIN`` are transient too.  The components' loops
retry them with backoff and log the outage once, like any outage; the next connection asks the
cluster again.  With ``cluster-node-timeout 1500`` a killed master's replica takes over in about
2-3 s.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.crc import key_slot
from redis.retry import Retry

from .keys import CLUSTER_SCHEMES, Keys

FORM = "redis+cluster://[[user]:password@]host:port[,host:port...]"
DEFAULT_PORT = 6379


@dataclass(frozen=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]   # where to start asking
    tls: bool = False
    username: str | None = None
    password: str | None = None


class NotACluster(redis.exceptions.ConnectionError):
    """A ``redis+cluster://`` URL names a server that is not a cluster node (no retry fixes it)."""


def _bad(why: str) -> ValueError:
    # Without the URL: connection.check_url, which every client goes through first, puts it in front,
    # redacted (connection.redact_url, the one redactor).
    return ValueError(f"{why} (form: {FORM})")


def parse(url: str) -> ClusterURL:
    """Parse a cluster URL (ValueError with a clear message when it is wrong)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise _bad("scheme must be redis+cluster:// or rediss+cluster://")
    if "?" in rest or "#" in rest:
        raise _bad("no query or fragment is accepted; give the password with --password-file or "
                        "REDISMEDIAN_PASSWORD, TLS files with --tls-ca-cert / --tls-cert / --tls-key")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise _bad(f"Redis Cluster has only database 0, got path {('/' + path)!r}")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    nodes = []
    for part in netloc.split(","):
        part = part.strip()
        if part.startswith("["):            # [v6]:port
            host, _, port_text = part[1:].partition("]")
            port_text = port_text[1:] if port_text.startswith(":") else port_text
        else:
            host, _, port_text = part.partition(":")
        if not host:
            raise _bad(f"bad node address {part!r}")
        if port_text == "":
            port = DEFAULT_PORT
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise _bad(f"bad port {port_text!r} for node {host}")
        nodes.append((host, port))
    return ClusterURL(tuple(nodes), scheme.lower().startswith("rediss"), username, password)


def slot_of(namespace: str) -> int:
    """The hash slot that holds every key of ``namespace`` in cluster mode."""
    return key_slot(Keys(namespace, cluster=True).meta.encode())


class SlotOwner:
    """Finds, and remembers until told otherwise, the master that serves one hash slot."""

    def __init__(self, nodes: tuple[tuple[str, int], ...], slot: int, connection_kwargs: dict[str, Any]) -> None:
        self.slot = slot
        self.seeds = list(nodes)
        self.known: list[tuple[str, int]] = []      # every node the last CLUSTER SLOTS named
        self._kwargs = connection_kwargs
        self._address: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def address(self) -> tuple[str, int]:
        with self._lock:
            if self._address is None:
                self._address = self._discover()
            return self._address

    def forget(self, moved_to: tuple[str, int] | None = None) -> None:
        """The master we knew is gone or no longer serves the slot (``moved_to``: where MOVED said)."""
        with self._lock:
            self._address = moved_to

    def _discover(self) -> tuple[str, int]:
        errors = []
        for host, port in dict.fromkeys(self.known + self.seeds):
            client = redis.Redis(host=host, port=port, **self._kwargs)
            try:
                reply = client.execute_command("CLUSTER", "SLOTS")
            except redis.exceptions.ResponseError as e:
                if "cluster support disabled" in str(e).lower():
                    raise NotACluster(f"{host}:{port} is not a Redis Cluster node (cluster support disabled): "
                                      "use a redis:// URL for a single server") from None
                if isinstance(e, redis.exceptions.NoPermissionError):   # redis-py maps NOPERM to this type
                    raise
                errors.append(f"{host}:{port}: {e}")
                continue
            except redis.exceptions.AuthenticationError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
                errors.append(f"{host}:{port}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            finally:
                client.close()
            master = self._master_in(reply, host)
            if master is not None:
                return master
            errors.append(f"{host}:{port}: no master serves slot {self.slot}")
        raise redis.exceptions.ConnectionError(
            f"no cluster node could say which master serves slot {self.slot} ({'; '.join(errors)})")

    def _master_in(self, reply: Any, asked_host: str) -> tuple[str, int] | None:
        found = None
        known = []
        for entry in reply or []:
            start, end, nodes = int(entry[0]), int(entry[1]), entry[2:]
            for node in nodes:
                host = node[0].decode() if isinstance(node[0], bytes) else str(node[0] or "")
                # An empty or "?" host means "the node you asked" (cluster spec, CLUSTER SLOTS).
                addr = (host if host and host != "?" else asked_host, int(node[1]))
                known.append(addr)
            if start <= self.slot <= end and nodes:
                host = nodes[0][0].decode() if isinstance(nodes[0][0], bytes) else str(nodes[0][0] or "")
                found = (host if host and host != "?" else asked_host, int(nodes[0][1]))
        if known:
            self.known = list(dict.fromkeys(known))
        return found


def _moved_target(exc: redis.exceptions.AskError) -> tuple[str, int] | None:
    host, port = getattr(exc, "host", None), getattr(exc, "port", None)
    return (host, int(port)) if host and port else None


class SlotConnection(Connection):
    """A connection to whichever master serves the namespace's slot, found when it connects."""

    def __init__(self, *, slot_owner: SlotOwner, **kwargs: Any) -> None:
        self.slot_owner = slot_owner
        # redis-py's Connection is unannotated (untyped_calls_exclude does not reach super() calls)
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def _connect(self) -> Any:
        self.host, self.port = self.slot_owner.address()
        try:
            return super()._connect()  # type: ignore[no-untyped-call]  # see __init__
        except OSError:
            self.slot_owner.forget()     # the master is gone: ask the cluster again next time
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.AskError as e:   # MOVED is a subclass: the slot is served elsewhere
            self.slot_owner.forget(_moved_target(e) if isinstance(e, redis.exceptions.MovedError) else None)
            self.disconnect()  # type: ignore[no-untyped-call]  # see __init__
            raise redis.exceptions.ConnectionError(f"the namespace's hash slot moved ({e})") from None


class SlotSSLConnection(SlotConnection, SSLConnection):
    pass


def make_client(url: str, namespace: str, socket_timeout: float, **kwargs: Any) -> redis.Redis:
    """A client of the master that serves ``namespace``'s slot (no I/O until the first command)."""
    u = parse(url)
    password = kwargs.pop("password", None) or u.password
    ssl = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("ssl_")}
    # The discovery connections: the same settings as the data connections (connection.client_settings),
    # but one attempt per node: our own loops retry (with backoff, logging the outage once).
    same = ("socket_connect_timeout", "protocol", "driver_info", "lib_name", "lib_version")
    auth = {"username": u.username, "password": password, "socket_timeout": socket_timeout,
            **{k: kwargs[k] for k in same if k in kwargs}, "retry": Retry(NoBackoff(), 0)}
    if u.tls:
        auth.update(ssl=True, **ssl)
    owner = SlotOwner(u.nodes, slot_of(namespace), auth)
    pool = ConnectionPool(connection_class=SlotSSLConnection if u.tls else SlotConnection, slot_owner=owner,
                          host=u.nodes[0][0], port=u.nodes[0][1], username=u.username, password=password,
                          socket_timeout=socket_timeout, **ssl, **kwargs)
    client = redis.Redis(connection_pool=pool)
    # for tests and `status`: which master serves the namespace now (an attribute of our own on
    # redis-py's client, which mypy cannot know)
    client.slot_owner = owner  # type: ignore[attr-defined]
    return client
