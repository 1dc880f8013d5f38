"""Operator commands for production: ``check`` (health), ``history`` (published medians), ``status --watch``.

``check`` of one component reads only that component's own keys (plus the deployment
record and the server clock), so a container can run it with the component's own
Redis user; ``check`` of the whole deployment reads everything, like ``status``.
"""
from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import redis

from .clock import epoch_of, time_reply_ms
from .common import as_str, check_name, parse_finite, parse_int, parse_period_ms
from .health import (DEFAULT_MISSED_WINDOW, generator_view, lease_holder, plural, problems, strategy_view,
                     text_hash, trader_view)
from .keys import DECISION_TTL_PERIODS, MEDIAN_MEMBERS_LIMIT, Keys, ttl_ms
from .replies import xrange, xrevrange
from .text import shown

COMPONENT_KINDS = ("generator", "strategy", "trader")


@dataclass
class Health:
    healthy: bool
    problems: list[str]
    summary: str

    def text(self) -> str:
        """One line, always: every problem quotes data escaped already, and the line is escaped again."""
        if self.healthy:
            return shown(f"OK: {self.summary}", None)
        return shown("UNHEALTHY: " + "; ".join(self.problems), None)


def _server_now_and_period(client: redis.Redis, keys: Keys) -> tuple[int, int | None, str]:
    """Server time (ms), the deployment's period (ms, or None) and why it is missing."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.hget(keys.meta, "period_ms")
    now, period = pipe.execute(raise_on_error=False)
    if isinstance(now, Exception):
        raise now
    if isinstance(period, redis.exceptions.ResponseError):
        if "WRONGTYPE" in str(period):
            return time_reply_ms(now), None, f"{keys.meta} is not a hash (garbage in Redis)"
        raise period
    p = parse_period_ms(period)
    if p is None:
        return time_reply_ms(now), None, f"no deployment record in namespace {keys.ns!r} (nothing has run here yet)"
    return time_reply_ms(now), p, ""


def _read(client: redis.Redis, commands: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    """Run read commands in one round trip; a wrong key type comes back as the exception."""
    pipe = client.pipeline(transaction=False)
    for name, args in commands:
        getattr(pipe, name)(*args)
    out = []
    for rep in pipe.execute(raise_on_error=False):
        if isinstance(rep, redis.exceptions.ResponseError) and "WRONGTYPE" not in str(rep):
            raise rep
        out.append(rep)
    return out


def _wrong_type(reply: object) -> bool:
    return isinstance(reply, redis.exceptions.ResponseError)


def _hash_or_why(client: redis.Redis, key: str, reply: Any) -> dict[str, str] | str:
    if _wrong_type(reply):
        return f"{key} is a {as_str(client.type(key))}, expected a hash"
    return text_hash(reply)


def check_component(client: redis.Redis, keys: Keys, kind: str, name: str | None = None,
                    missed_window: int = DEFAULT_MISSED_WINDOW) -> Health:
    """Is one component doing its job?  Reads only its own keys (works with its own ACL user).

    The verdict is :func:`redismedian.health.problems` of the part's view, the view ``status``
    shows (:mod:`redismedian.health`), so ``check`` and ``status`` always agree:

    - generator NAME: a live process holds the name, and its latest signal is ``ok`` and current
      (for the current or the previous period);
    - strategy NAME: registered, a live process holds the name, and its decision string
      (``NS:decision:NAME``) holds a current decision (state ``ok``); otherwise the state and
      reason ``status`` shows, e.g. ``joining`` until the trader admitted it, ``down`` (not
      running) when no live process holds the name;
    - trader: a trader leads and its evaluation is current: it published (``ok``), or it is
      ``idle`` because no strategy is registered; and it missed no epoch within the last
      ``missed_window`` periods (0: missed epochs are not checked).
    """
    if kind not in COMPONENT_KINDS:
        raise ValueError(f"unknown component {kind!r}: use one of {', '.join(COMPONENT_KINDS)}")
    if kind == "trader":
        name = None
    elif not name:
        raise ValueError(f"give the {kind}'s name")
    else:
        check_name(name, f"{kind} name")
    now, period, why = _server_now_and_period(client, keys)
    if period is None:
        return Health(False, [why], "")
    epoch = epoch_of(now, period)
    label = f"{kind} {name}" if name else kind
    if kind == "generator":
        assert name is not None  # checked above: a generator has a name
        h, lease, lease_ttl = _read(client, [("hgetall", (keys.signal(name),)),
                                             ("get", (keys.lease("generator", name),)),
                                             ("pttl", (keys.lease("generator", name),))])
        row = generator_view(keys, name, _hash_or_why(client, keys.signal(name), h), lease_holder(lease, lease_ttl),
                             epoch, now)
        summary = f"{label} signal {row['value']!r} for epoch {row['epoch']}"
    elif kind == "strategy":
        # The same view as `status` (health.strategy_view), from the same keys: they always agree.
        assert name is not None  # checked above: a strategy has a name
        key = keys.decision(name)
        raw, pttl, lease, lease_ttl, registered = _read(client, [
            ("get", (key,)), ("pttl", (key,)), ("get", (keys.lease("strategy", name),)),
            ("pttl", (keys.lease("strategy", name),)), ("sismember", (keys.strategies, name))])
        unreadable = ""
        if _wrong_type(raw):
            unreadable = f"{key} is a {as_str(client.type(key))}, expected a string"
            raw = None
        extra = []
        if _wrong_type(registered):
            extra.append(f"{keys.strategies} holds the wrong type (garbage in Redis)")
        row = strategy_view(keys, name, registered=not _wrong_type(registered) and bool(registered),
                            holder=lease_holder(lease, lease_ttl), raw=raw,
                            pttl_ms=pttl if isinstance(pttl, int) and raw is not None else None, epoch=epoch,
                            ttl_ms=ttl_ms(period, DECISION_TTL_PERIODS), unreadable=unreadable)
        summary = f"{label} submitted {row['value']!r} for epoch {row['epoch']}"
        found = problems("strategy", row, epoch) + extra
        return Health(not found, found, "" if found else summary)
    else:
        h, lease, lease_ttl = _read(client, [("hgetall", (keys.trader,)), ("get", (keys.lease("trader"),)),
                                            ("pttl", (keys.lease("trader"),))])
        row = trader_view(_hash_or_why(client, keys.trader, h), lease_holder(lease, lease_ttl), epoch, now)
        summary = (f"trader published {row['median']!r} for epoch {row['epoch']} "
                   f"({plural(row['count'] or 0, 'strategy', 'strategies')})" if row["state"] == "ok"
                   else f"trader idle: {row['reason'] or 'no strategies registered'}")
    found = problems(kind, row, epoch, missed_window=missed_window)
    return Health(not found, found, "" if found else summary)


JOIN_GRACE_PERIODS = 3   # a strategy is admitted at the trader's next boundary; three periods is plenty


def check_deployment(data: dict[str, Any], missed_window: int = DEFAULT_MISSED_WINDOW) -> Health:
    """Is the whole deployment healthy?  ``data`` is :func:`redismedian.status.gather`'s output:
    the views ``status`` shows, judged by :func:`redismedian.health.problems`.

    Healthy: the trader published for the current or the previous period and missed no epoch
    within the last ``missed_window`` periods, and every registered strategy and every generator
    in Redis is ``ok`` and current.
    """
    found = list(data.get("problems") or [])
    epoch = data.get("epoch")
    if data.get("period_ms") is None:
        return Health(False, found or [f"no deployment record in namespace {data.get('namespace')!r} "
                                       "(nothing has run here yet)"], "")
    t = data.get("trader") or {}
    found += problems("trader", t, epoch, missed_window=missed_window, deployment=True)
    registered = [s for s in data.get("strategies", []) if s.get("registered")]
    for s in registered:
        found += problems("strategy", s, epoch, deployment=True)
    # A live strategy the trader has not admitted within JOIN_GRACE_PERIODS of its start: something
    # keeps it out (no trader, a flood on the NS:joins channel, a deregistration it does not know of).
    now, period = data.get("server_time_ms") or 0, data["period_ms"]
    for s in data.get("strategies", []):
        since, gone = s.get("joining_since_ms"), s.get("deregistered_ms")
        leaving = gone is not None and since is not None and gone >= since   # deregistered after it started
        if s.get("state") == "joining" and since is not None and not leaving and \
                now - since > JOIN_GRACE_PERIODS * period:
            found.append(f"strategy {s['name']}: asked to join {(now - since) / 1000:.1f}s ago and was not "
                         f"admitted: {s.get('reason') or '?'}")
    for g in data.get("generators", []):
        found += problems("generator", g, epoch, deployment=True)
    if found:
        return Health(False, found, "")
    parts = (f"{plural(len(registered), 'strategy', 'strategies')} and "
             f"{plural(len(data.get('generators', [])), 'generator')} ok")
    if t.get("state") != "ok" and t.get("cleared_by"):   # an error that a deregistration ended
        return Health(True, [], f"{', '.join(t['cleared_by'])} deregistered after the trader's error for epoch "
                                f"{t.get('epoch')} (the strategies missing): the next median is due at the next "
                                f"boundary; {parts}")
    return Health(True, [], f"trader published {t.get('median')!r} for epoch {t.get('epoch')}; {parts}")


CHECK_POLL_S = 0.2   # `check --wait`: how often it judges again


def judged_until(judge: Callable[[], Health], wait_s: float | None, *, retry: Callable[[Exception], bool],
                 poll_s: float = CHECK_POLL_S, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Health:
    """``judge()`` once; with ``wait_s``, again until it is healthy or ``wait_s`` seconds have passed
    (``check --wait``).  Every ``poll_s``, or twice what one verdict took when that is more (a
    gather of 10,000s of strategies): never more than half of the time on Redis.  A Redis error
    that ``retry`` says may pass (an outage) is waited out like an unhealthy verdict; any other, or
    the last one at the deadline, is raised."""
    deadline = clock() + (wait_s or 0)
    while True:
        started = clock()
        try:
            health = judge()
        except redis.exceptions.RedisError as e:
            if not wait_s or not retry(e) or clock() >= deadline:
                raise
        else:
            if health.healthy or not wait_s:
                return health
            if clock() >= deadline:
                return Health(False, [*health.problems, f"still so after waiting {wait_s:g}s"], health.summary)
        now = clock()
        sleep(max(0.0, min(max(poll_s, 2 * (now - started)), deadline - now)))


# -- history -----------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
HISTORY_COLUMNS = ("time", "epoch", "median", "count", "members", "fence", "id")
MEMBERS_SHOWN = MEDIAN_MEMBERS_LIMIT * 65   # the longest members list a trader writes: 64 names of 64 characters


def parse_since(text: str, now_ms: int) -> int:
    """A point in time (server ms) from ``30s``/``15m``/``2h``/``7d``/``1w`` ago, or an ISO 8601 date/time.

    A date/time without a zone is UTC.  ValueError with a clear message otherwise.
    """
    m = _DURATION.match(text or "")
    if m:
        return now_ms - int(float(m.group(1)) * _UNITS[m.group(2).lower()] * 1000)
    t = (text or "").strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time: give a duration ago (30s, 15m, 2h, 7d, 1w) or an "
                         "ISO 8601 date/time (2024-05-01, 2024-05-01T12:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _iso(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def history(client: redis.Redis, keys: Keys, since_ms: int | None = None, until_ms: int | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Published medians from ``NS:medians``, oldest first: the most recent ``limit`` in the range.

    Entries somebody else wrote with garbage fields are shown as they are (numbers that do
    not parse come out as None), never an error.
    """
    lo = "-" if since_ms is None else str(max(0, since_ms))
    hi = "+" if until_ms is None else str(max(0, until_ms))
    try:
        if limit:
            raw = list(reversed(xrevrange(client, keys.medians, max=hi, min=lo, count=limit)))
        else:
            raw = xrange(client, keys.medians, min=lo, max=hi)
    except redis.exceptions.ResponseError as e:
        if "WRONGTYPE" in str(e):
            raise ValueError(f"{keys.medians} is not a stream (garbage in Redis)") from None
        raise
    rows = []
    for entry_id, fields in raw:
        f = text_hash(fields)
        eid = as_str(entry_id)
        ts = parse_int(f.get("ts")) or parse_int(eid.split("-")[0])
        # The text fields are shown as they are, escaped and bounded: anybody may have written the entry.
        rows.append({"time": _iso(ts), "epoch": parse_int(f.get("epoch")), "median": parse_finite(f.get("median")),
                     "median_text": shown(f.get("median", ""), 40), "count": parse_int(f.get("count")),
                     "members": shown(f.get("members", ""), MEMBERS_SHOWN), "fence": parse_int(f.get("fence")),
                     "id": shown(eid)})
    return rows


def history_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for r in rows:
        w.writerow([r["time"], _blank(r["epoch"]), r["median_text"], _blank(r["count"]), r["members"],
                    _blank(r["fence"]), r["id"]])
    return out.getvalue()


def history_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no medians published in that range"
    cols = ["time", "epoch", "median", "count", "members"]
    cells = [[r["time"], _blank(r["epoch"]), r["median_text"], _blank(r["count"]), r["members"]] for r in rows]
    widths = [max(len(c), *(len(str(row[i])) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _blank(x: object) -> str:
    return "" if x is None else str(x)


# -- status --watch ------------------------------------------------------------------------
CLEAR = "\x1b[H\x1b[2J"


def watch_delay(server_ms: int, period_ms: int | None, interval: float | None) -> float:
    """Seconds until the next refresh: ``interval``, else just after the next period boundary."""
    if interval:
        return interval
    if not period_ms:
        return 2.0
    settle = min(500, max(50, period_ms // 10))  # let the trader publish first
    nxt = (epoch_of(server_ms, period_ms) + 1) * period_ms + settle
    return max(0.05, (nxt - server_ms) / 1000.0)


def watch(frame: Callable[[], tuple[str, int | None, int | None]], echo: Callable[[str], None],
          sleep: Callable[[float], None] = time.sleep, interval: float | None = None, count: int | None = None,
          clear: bool = True) -> None:
    """Show ``frame()`` (text, server ms, period ms) again every period (or ``interval``), ``count`` times."""
    shown = 0
    while count is None or shown < count:
        text, server_ms, period_ms = frame()
        echo((CLEAR if clear else ("\n" if shown else "")) + text)
        shown += 1
        if count is not None and shown >= count:
            break
        sleep(watch_delay(server_ms or int(time.time() * 1000), period_ms, interval))
