"""Follow the medians as they are published, and every epoch that was not (``redismedian follow``).

A small API for programs that consume the median::

    from redismedian import follow
    for item in follow("redis://localhost:6379/0", "redismedian"):
        if isinstance(item, Median):       # from redismedian.following import Median
            ...   # item.epoch, item.median, item.count, item.members, item.ts, item.fence
        else:
            ...   # an Event: item.status is "error" (item.reason) or "missed" (item.epoch..item.last)

It blocks on ``NS:medians`` and ``NS:events`` with one ``XREAD`` (no polling), yields items in the
order they were written, and rides out Redis outages like the components do (capped backoff, one
log line per outage), resuming exactly where it left off.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping

import redis

from .common import as_str, parse_int, parse_number, parse_period_ms
from .connection import Backoff, ErrorKind, Outage, classify, make_client
from .keys import DEFAULT_NAMESPACE, Keys
from .replies import xread, xrevrange
from .text import LONG, shown

log = logging.getLogger("redismedian.follow")

MAX_SEQ = 18446744073709551615


@dataclass(frozen=True)
class Median:
    """One published median (an entry of ``NS:medians``)."""

    epoch: int
    median: float
    count: int
    members: list[str]
    ts: int           # server ms at which it was published
    fence: int        # the publishing trader's fencing token
    id: str

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["id"]
        return d


@dataclass(frozen=True)
class Event:
    """An epoch that was not published: ``error`` (``reason`` says why) or ``missed`` (``epoch`` to
    ``last``: nobody settled them; ``reason`` says what the trader knows)."""

    status: str
    epoch: int
    last: int
    reason: str
    ts: int
    fence: int | None
    id: str

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["id"]
        return d


def _fields(fields: Mapping[Any, Any] | None) -> dict[str, str]:
    return {as_str(k): as_str(v) for k, v in (fields or {}).items()}


def parse_median(entry_id: object, fields: Mapping[Any, Any] | None) -> Median | None:
    """A medians entry, or None when it is not one (garbage is skipped, never fatal)."""
    f = _fields(fields)
    epoch, median = parse_int(f.get("epoch")), parse_number(f.get("median"))
    if epoch is None or median is None:
        return None
    members = [shown(m, 64) for m in f.get("members", "").split(",") if m]   # names, as data: escaped
    return Median(epoch, median, parse_int(f.get("count")) or len(members), members,
                  parse_int(f.get("ts")) or parse_int(as_str(entry_id).split("-")[0]) or 0,
                  parse_int(f.get("fence")) or 0, as_str(entry_id))


def parse_event(entry_id: object, fields: Mapping[Any, Any] | None) -> Event | None:
    f = _fields(fields)
    epoch = parse_int(f.get("epoch"))
    if epoch is None or f.get("status") not in ("error", "missed", "unacknowledged"):
        return None
    last = parse_int(f.get("last"))
    # The reason is the trader's (escaped when written); read back as data all the same.
    return Event(f["status"], epoch, last if last is not None and last >= epoch else epoch,
                 shown(f.get("reason", ""), LONG),
                 parse_int(f.get("ts")) or parse_int(as_str(entry_id).split("-")[0]) or 0,
                 parse_int(f.get("fence")), as_str(entry_id))


def start_id(client: redis.Redis, keys: Keys, since: str | None) -> str:
    """Where to start reading: ``$`` (only what comes next), after a stream ID, or at an epoch."""
    if since is None or since == "$":
        return "$"
    text = since.strip()
    if "-" in text:
        ms, _, seq = text.partition("-")
        if parse_int(ms) is None or parse_int(seq) is None:
            raise ValueError(f"--since {since!r}: a stream ID is <ms>-<seq>, e.g. 1700000000000-0")
        return text
    epoch = parse_int(text)
    if epoch is None or epoch < 0:
        raise ValueError(f"--since {since!r}: give an epoch number or a stream ID (<ms>-<seq>)")
    period = parse_period_ms(client.hget(keys.meta, "period_ms"))
    if period is None:
        raise ValueError(f"--since {since}: namespace {keys.ns!r} has no deployment record (no period) yet")
    return f"{epoch * period - 1}-{MAX_SEQ}" if epoch else "0-0"


def follow(redis_url: str = "redis://localhost:6379/0", namespace: str = DEFAULT_NAMESPACE,
           since: str | None = None, *, client: redis.Redis | None = None, block_ms: int = 1000,
           stop: threading.Event | None = None) -> Iterator[Median | Event]:
    """Yield every median published (and every epoch that was not) from now on, or from ``since``
    (an epoch number or a stream ID), until ``stop`` is set.  Never ends by itself."""
    keys = Keys.for_url(namespace, redis_url)
    client = client if client is not None else make_client(redis_url, socket_timeout=max(5.0, block_ms / 500),
                                                           namespace=namespace)
    stop = stop or threading.Event()
    outage = Outage(redis_url, log)
    backoff = Backoff(5.0)
    first_epoch = parse_int(since) if since is not None and "-" not in since else None
    ids: dict[str, str] | None = None
    while not stop.is_set():
        try:
            if ids is None:
                begin = start_id(client, keys, since)
                if begin == "$":   # resolve now, so a reconnect resumes where we were
                    begin = _last_id(client, keys)
                ids = {keys.medians: begin, keys.events: begin}
            reply = xread(client, ids, block=block_ms, count=1000)
            if outage.active:
                outage.recovered()
            backoff.reset()
        except Exception as e:  # noqa: BLE001 - sorted here: waited out, or raised again
            kind = classify(e)
            # Transient, or a stream overwritten by somebody else (the trader replaces it): wait.
            # (WRONGTYPE by text: redis-py has no type for it.)
            if not (kind is ErrorKind.TRANSIENT or kind is ErrorKind.DATA and "WRONGTYPE" in str(e)):
                raise
            outage.failed(e, backoff.cap)
            stop.wait(backoff.next_delay())
            continue
        items: list[Median | Event] = []
        for stream, entries in reply or ():
            key = as_str(stream)
            for entry_id, fields in entries:
                ids[key] = as_str(entry_id)
                item = parse_median(entry_id, fields) if key == keys.medians else parse_event(entry_id, fields)
                if item is not None and (first_epoch is None or item.epoch >= first_epoch or
                                         (isinstance(item, Event) and item.last >= first_epoch)):
                    items.append(item)
        items.sort(key=lambda x: _id_order(x.id))
        yield from items


def _last_id(client: redis.Redis, keys: Keys) -> str:
    """The newest entry of either stream (so that only what comes after is followed)."""
    newest = "0-0"
    for key in (keys.medians, keys.events):
        try:
            last = xrevrange(client, key, count=1)
        except redis.exceptions.ResponseError:
            continue   # not a stream (garbage): the trader replaces it at its next write
        if last:
            eid = as_str(last[0][0])
            if _id_order(eid) > _id_order(newest):
                newest = eid
    return newest


def _id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry ID (<ms>-<seq>) as something that sorts like the stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
