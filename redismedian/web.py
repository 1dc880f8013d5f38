"""``redismedian web``: a live, read-only page of the deployment and its medians.

One process serves any number of browsers from **one reader loop** (:class:`Reader`, a thread):

- once per period it gathers the deployment with the code ``status`` runs
  (:func:`redismedian.status.gather`, whose states and reasons come from
  :mod:`redismedian.health`), timed right after the trader settled the epoch: a new entry in
  ``NS:medians`` or ``NS:events`` triggers it, the period boundary (plus a little) is the fallback;
- between gathers it blocks on one ``XREAD`` of ``NS:medians`` and ``NS:events`` (as
  :mod:`redismedian.following` does), so a new median, an error or a missed epoch reaches the
  page at once.

What it read goes into one :class:`WebState`; browsers get it through Server-Sent Events
(``/events``) and page through the strategy list (``/api/strategies``) from that state.  No
request handler holds a Redis client: however many pages are open, Redis sees the reader only.

The parts here that need no web framework (access rules, the view, the chart, the reader) import
nothing beyond the core package, so they are tested with fakeredis and measured by the benchmark
without the optional extra; :func:`build_app` and :func:`serve` need ``redismedian[web]``
(Starlette and uvicorn).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Iterator, Mapping, cast
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import redis

from . import health as H
from .clock import epoch_of
from .common import as_str
from .connection import Backoff, ErrorKind, classify, read_secret_file
from .connection import redis_problem as connection_problem
from .following import Event, Median, _id_order, parse_event, parse_median
from .keys import Keys
from .ops import check_deployment, watch_delay
from .replies import xread, xrevrange
from .status import gather
from .text import shown

if TYPE_CHECKING:   # the web extra: only `redismedian web` imports it
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("redismedian.web")

EXTRA_HINT = "pip install 'redismedian[web]'"
TOKEN_ENV = "REDISMEDIAN_WEB_TOKEN"
TOKEN_MIN_LENGTH = 16          # a token is a secret, not a password to remember: make-secrets.sh writes 32
COOKIE = "redismedian_web"
SESSION_CONTEXT = b"redismedian web session v1"

CHART_SECONDS = 3600           # the chart shows the last hour ...
CHART_MAX_EPOCHS = 1000        # ... or the last 1000 epochs, whichever is shorter (short periods)
RECENT = 10                    # medians and unpublished epochs listed under the chart
PROBLEMS_SHOWN = 50            # strategies with a problem sent with every update (the list pages the rest)
GENERATORS_SHOWN = 200
HEALTH_PROBLEMS_SHOWN = 20
PAGE_SIZE = 100                # strategies per page of /api/strategies
HEARTBEAT_S = 15.0             # an SSE message at least this often, so a page can tell a dead server
STALE_VIEW_PERIODS = 3         # /healthz fails when the last successful read is older than this (and 15 s)
BLOCK_MS = 1000                # longest blocking XREAD: the loop looks at its stop flag and timers this often
GATHER_DUTY = 0.25             # the reader spends at most this share of its time gathering (10,000s of strategies)

# Problems first: the order in which a list shows states (worst first, ok last; a row without a
# state, None, ranks 8).
STATE_RANK: dict[str | None, int] = {"down": 0, "error": 1, "garbage": 2, "unreadable": 3, "stale": 4,
                                     "absent": 5, "starting": 6, "joining": 7, "ok": 9}

# Strict by default: only the package's own files, no inline script or style, no framing, forms
# post only here.  ``img-src data:`` is not needed; nothing else is allowed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class MissingExtra(RuntimeError):
    """The optional web extra (Starlette, uvicorn) is not installed."""


def require_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"redismedian web needs the optional web extra ({e.name or 'starlette'} is missing): "
                           f"{EXTRA_HINT}") from None


# -- who may read the page -------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine."""
    h = host.strip().strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The access rules of one server: the token every request must show (None: none needed), and
    whether to answer only requests addressed to this machine's loopback names (a loopback server
    without a token: a web page elsewhere must not read it through DNS rebinding)."""

    token: str | None
    local_only: bool

    @property
    def session(self) -> str:
        return session_value(self.token) if self.token else ""


def access_rules(bind: str, token: str | None, no_auth: bool) -> Access:
    """The rules for serving on ``bind``; ValueError (a usage error) when they are unsafe or unclear.

    A loopback address needs nothing.  Any other address serves the page to other machines: it needs
    a token, or ``--no-auth`` said explicitly.  A token given is always required, loopback or not."""
    if token is not None and no_auth:
        raise ValueError("--no-auth and a token (--token-file or $REDISMEDIAN_WEB_TOKEN) exclude each other: keep one")
    if token is not None and len(token) < TOKEN_MIN_LENGTH:
        raise ValueError(f"the token is {len(token)} characters long; use at least {TOKEN_MIN_LENGTH} random "
                         "characters (deploy/make-secrets.sh writes 32)")
    loopback = is_loopback(bind)
    if not loopback and token is None and not no_auth:
        raise ValueError(f"--bind {bind} serves the page to other machines: give a token (--token-file PATH or "
                         f"${TOKEN_ENV}), or --no-auth to let anyone who can reach {bind} read it")
    return Access(token, local_only=loopback and token is None)


def read_token_file(path: str) -> str:
    """The token in ``path``: its last non-empty line, without surrounding blanks."""
    return read_secret_file(path, "token").strip()


def load_token(token_file: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token from ``--token-file`` or ``$REDISMEDIAN_WEB_TOKEN`` (both: refused as ambiguous)."""
    environ = os.environ if environ is None else environ
    from_env = (environ.get(TOKEN_ENV) or "").strip() or None
    if token_file and from_env:
        raise ValueError(f"a token is given both in --token-file and in ${TOKEN_ENV}: keep one")
    return read_token_file(token_file) if token_file else from_env


def session_value(token: str) -> str:
    """The cookie a browser gets after showing the token: derived from it, so that the cookie
    store never holds the token itself."""
    return hmac.new(token.encode(), SESSION_CONTEXT, hashlib.sha256).hexdigest()


def _bearer(headers: dict[str, str]) -> str:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _cookie(headers: dict[str, str], name: str = COOKIE) -> str:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed Cookie header is no credential
        return ""
    return jar[name].value if name in jar else ""


def authorized(access: Access, headers: dict[str, str]) -> bool:
    """Whether a request (lower-case header names) may read the page: no token needed, or
    ``Authorization: Bearer TOKEN``, or the session cookie given at login."""
    if access.token is None:
        return True
    bearer = _bearer(headers)
    if bearer and hmac.compare_digest(bearer.encode(), access.token.encode()):
        return True
    cookie = _cookie(headers)
    return bool(cookie) and hmac.compare_digest(cookie.encode(), access.session.encode())


def host_allowed(access: Access, host_header: str) -> bool:
    """A server that answers only to this machine reads the ``Host`` header: a page on another site
    that got its name resolved to 127.0.0.1 (DNS rebinding) is refused."""
    if not access.local_only:
        return True
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return bool(host) and is_loopback(host)


PUBLIC_PATHS = ("/login", "/logout", "/livez", "/favicon.ico")


def is_public(path: str) -> bool:
    """Paths anybody may fetch: the login form, the liveness probe and the static files (no data)."""
    return path in PUBLIC_PATHS or path.startswith("/static/")


# -- the view: what a page shows, from what the reader read (pure) ---------------------------------
def rank(row: dict[str, Any]) -> tuple[int, str]:
    return (STATE_RANK.get(row.get("state"), 8), row.get("name", ""))


def is_problem(row: dict[str, Any]) -> bool:
    """A strategy the trader waits for that is not ``ok`` (as ``check`` judges the deployment)."""
    return bool(row.get("registered")) and row.get("state") != "ok"


def count_states(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.get("state", "?")] = out.get(r.get("state", "?"), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (STATE_RANK.get(kv[0], 8), kv[0])))


FILTERS = ("problems", "all", "registered", "unregistered")


def strategy_page(rows: list[dict[str, Any]], flt: str = "problems", q: str = "", page: int = 0,
                  size: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of the strategy list, problems first.  ``rows`` sorted by :func:`rank` already.
    ``flt``: problems, all, registered, unregistered, or a state; ``q``: part of the name."""
    flt = flt if flt in FILTERS or flt in STATE_RANK else "problems"
    q = (q or "").strip().lower()[:64]
    if flt == "problems":
        chosen = [r for r in rows if is_problem(r)]
    elif flt == "all":
        chosen = rows
    elif flt == "registered":
        chosen = [r for r in rows if r.get("registered")]
    elif flt == "unregistered":
        chosen = [r for r in rows if not r.get("registered")]
    else:
        chosen = [r for r in rows if r.get("state") == flt]
    if q:
        chosen = [r for r in chosen if q in r.get("name", "").lower()]
    pages = max(1, math.ceil(len(chosen) / size))
    page = min(max(0, page), pages - 1)
    return {"filter": flt, "q": q, "page": page, "pages": pages, "total": len(chosen), "size": size,
            "rows": chosen[page * size:(page + 1) * size]}


def headline(data: dict[str, Any] | None, redis_ok: bool, redis_problem: str) -> dict[str, Any]:
    """The current median as the page's headline, by the health rules: a median only while the
    leading trader is ``ok`` in a current epoch; never a last good value of a trader that is gone,
    in error, or behind a Redis the page cannot read."""
    if not redis_ok:
        return {"level": "unknown", "title": "unknown: Redis unreachable", "median": None, "epoch": None,
                "count": None, "reason": redis_problem or "Redis is not reachable"}
    if data is None:
        return {"level": "unknown", "title": "waiting for the first read", "median": None, "epoch": None,
                "count": None, "reason": ""}
    if data.get("period_ms") is None:
        return {"level": "unknown", "title": "no deployment here yet", "median": None, "epoch": None, "count": None,
                "reason": f"no deployment record in namespace {data.get('namespace')!r} (nothing has run here yet)"}
    t = data.get("trader") or {}
    state = t.get("state") or "?"
    base = {"median": None, "epoch": t.get("epoch"), "count": None, "reason": t.get("reason") or "",
            "state": state, "age_s": t.get("age_s")}
    if state == "ok" and t.get("median") is not None:
        return {**base, "level": "ok", "title": "published", "median": t["median"], "count": t.get("count")}
    if state == "error":
        return {**base, "level": "error", "title": "ERROR: no median"}
    if state in ("down", "absent"):
        return {**base, "level": "error", "title": "no trader running"}
    if state in ("idle", "starting"):
        return {**base, "level": "warn", "title": state}
    return {**base, "level": "error", "title": f"{state}: no current median"}


def chart_span(period_ms: int | None) -> int:
    """Epochs the chart shows: the last hour, at most :data:`CHART_MAX_EPOCHS`."""
    if not period_ms:
        return 0
    return max(1, min(CHART_MAX_EPOCHS, math.ceil(CHART_SECONDS * 1000 / period_ms)))


def epoch_kinds(medians: Iterable[Median], events: Iterable[Event], first: int, last: int
                ) -> tuple[dict[int, float], dict[int, tuple[str, str]]]:
    """The published medians of ``first..last`` (epoch -> median) and the epochs recorded as not
    published (epoch -> (``error`` or ``missed``, reason)).  A published epoch wins (a new leader
    may publish an epoch that was recorded missed), except over an ``unacknowledged`` record: that
    median was written but not enough replicas held it in time (``--min-replicas``), so it does not
    count as published."""
    points: dict[int, float] = {}
    for m in medians:
        if first <= m.epoch <= last:
            points[m.epoch] = m.median
    gaps: dict[int, tuple[str, str]] = {}
    for ev in events:
        if ev.status == "unacknowledged" and first <= ev.epoch <= last:
            points.pop(ev.epoch, None)
    for ev in events:
        for e in range(max(first, ev.epoch), min(last, ev.last) + 1):
            if e not in points:
                gaps[e] = (ev.status, ev.reason)
    return points, gaps


def _runs(first: int, last: int, kind_of: Callable[[int], str]) -> list[tuple[str, int, int]]:
    """Consecutive epochs of the same kind, as (kind, first epoch, last epoch)."""
    runs: list[tuple[str, int, int]] = []
    for e in range(first, last + 1):
        k = kind_of(e)
        if runs and runs[-1][0] == k and runs[-1][2] == e - 1:
            runs[-1] = (k, runs[-1][1], e)
        else:
            runs.append((k, e, e))
    return runs


def _hms(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def _num(v: float) -> str:
    return f"{v:.6g}"


def chart_svg(points: dict[int, float], gaps: dict[int, tuple[str, str]], first: int, last: int,
              period_ms: int | None, width: int = 960, height: int = 240) -> str:
    """The medians of epochs ``first..last`` as an SVG line chart.  The line joins only consecutive
    published epochs: an epoch in error, missed, or with no record at all breaks it and is drawn
    as a band of its own colour (``gap-error``, ``gap-missed``, ``gap-unknown``), never bridged."""
    left, right, top, bottom = 70, 14, 12, 26
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="chart" role="img" '
           f'aria-label="medians of epochs {first} to {last}" data-first="{first}" data-last="{last}">']
    n = last - first + 1
    if n <= 0:
        out.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" class="empty">'
                   'no deployment record yet</text></svg>')
        return "".join(out)
    slot = pw / n

    def x(e: float) -> float:
        return left + (e - first + 0.5) * slot

    vals = list(points.values())
    if vals:
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.08 if hi > lo else max(abs(hi) * 0.05, 0.5)
        lo, hi = lo - pad, hi + pad
    else:
        lo, hi = 0.0, 1.0

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>')
    for v in (lo + (hi - lo) * f for f in (0.08 / 1.16, 0.5, 1.08 / 1.16)) if vals else ():
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="ylabel">{_num(v)}</text>')
    runs = _runs(first, last, lambda e: "published" if e in points else gaps.get(e, ("unknown", ""))[0])
    for kind, e0, e1 in runs:
        if kind == "published":
            continue
        x0 = left + (e0 - first) * slot
        w = max((e1 - e0 + 1) * slot, 1.5)
        what = f"epoch {e0}" if e0 == e1 else f"epochs {e0}-{e1}"
        why = gaps.get(e0, ("", ""))[1]
        label = {"error": "trader in error", "missed": "missed", "unknown": "no record (no trader? Redis?)",
                 "unacknowledged": "median not acknowledged by the replicas: not published"}.get(kind, kind)
        title = f"{what}: {label}" + (f": {shown(why)}" if why else "")   # escaped text, then XML-escaped
        out.append(f'<rect x="{x0:.1f}" y="{top}" width="{w:.1f}" height="{ph}" class="gap gap-{kind}" '
                   f'data-epochs="{e0}-{e1}"><title>{escape(title)}</title></rect>')
    for kind, e0, e1 in runs:
        if kind != "published":
            continue
        if e0 == e1:
            out.append(f'<circle cx="{x(e0):.1f}" cy="{y(points[e0]):.1f}" r="2.5" class="point" '
                       f'data-epochs="{e0}-{e1}"/>')
        else:
            d = "M" + "L".join(f"{x(e):.1f},{y(points[e]):.1f}" for e in range(e0, e1 + 1))
            out.append(f'<path d="{d}" class="line" data-epochs="{e0}-{e1}"/>')
    if points:
        e = max(points)
        out.append(f'<circle cx="{x(e):.1f}" cy="{y(points[e]):.1f}" r="4" class="last"><title>'
                   f'{escape(f"epoch {e}: {points[e]!r}")}</title></circle>')
    else:
        out.append(f'<text x="{left + pw / 2:.0f}" y="{top + ph / 2:.0f}" class="empty">'
                   'no median published in this window</text>')
    for e in sorted({first, (first + last) // 2, last}):
        label = _hms(e * period_ms) if period_ms else str(e)
        anchor = "start" if e == first and first != last else "end" if e == last and first != last else "middle"
        out.append(f'<text x="{x(e) if anchor == "middle" else left if anchor == "start" else left + pw:.1f}" '
                   f'y="{height - 8}" class="xlabel" text-anchor="{anchor}">{label}</text>')
    out.append("</svg>")
    return "".join(out)


# -- the state every page reads ----------------------------------------------------------------------
class WebState:
    """What the reader read last, for every browser.  Written by the reader thread only; read by the
    request handlers; each change bumps ``version`` and tells the listeners (the server's event loop)."""

    def __init__(self, redis_shown: str, namespace: str, clock: Callable[[], float] = time.monotonic):
        self.redis_shown = redis_shown   # the URL as shown: redacted
        self.namespace = namespace
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.version = 0
        self.data: dict[str, Any] | None = None   # status.gather's output
        self.read_at: float | None = None         # local monotonic time of that read
        self.redis_ok = True
        self.redis_problem = ""
        self.down_since_ms: int | None = None     # server-clock estimate of when the outage began
        self.stream_problem = ""
        self.medians: deque[Median] = deque(maxlen=CHART_MAX_EPOCHS * 2)
        self.events: deque[Event] = deque(maxlen=CHART_MAX_EPOCHS * 2)
        self.gathers = 0
        self._cache: dict[str, Any] = {}

    # -- written by the reader ------------------------------------------------------------------
    def add_listener(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def _changed(self) -> None:
        self.version += 1
        self._cache = {}

    def _notify(self) -> None:
        for fn in list(self._listeners):
            try:
                fn()
            except Exception:  # noqa: BLE001 - a closed event loop must not stop the reader
                log.debug("listener failed", exc_info=True)

    def set_data(self, data: dict[str, Any]) -> None:
        with self._lock:
            self.data = data
            self.read_at = self._clock()
            self.gathers += 1
            self._changed()
        self._notify()

    def add_items(self, items: Iterable[Median | Event]) -> int:
        n = 0
        with self._lock:
            for item in items:
                if isinstance(item, Median):
                    self.medians.append(item)
                else:
                    self.events.append(item)
                n += 1
            if n:
                self._changed()
        if n:
            self._notify()
        return n

    def set_history(self, items: Iterable[Median | Event]) -> None:
        """The chart's window as read from the streams (replacing what was there: read again after a
        failure, it must not count an entry twice)."""
        with self._lock:
            self.medians.clear()
            self.events.clear()
            for item in items:
                if isinstance(item, Median):
                    self.medians.append(item)
                else:
                    self.events.append(item)
            self._changed()
        self._notify()

    def set_redis(self, ok: bool, problem: str = "") -> None:
        """Redis answers again (``ok``) or not (with the one-line ``problem``)."""
        with self._lock:
            if ok == self.redis_ok and problem == self.redis_problem:
                return
            if not ok and self.redis_ok:
                self.down_since_ms = self.server_now_ms()
            if ok:
                self.down_since_ms = None
            self.redis_ok, self.redis_problem = ok, problem
            self._changed()
        self._notify()

    def set_stream_problem(self, problem: str) -> None:
        with self._lock:
            if problem == self.stream_problem:
                return
            self.stream_problem = problem
            self._changed()
        self._notify()

    # -- read by the handlers --------------------------------------------------------------------
    def server_now_ms(self) -> int | None:
        """The Redis server's time now, estimated from the last read (None before any)."""
        if self.data is None or self.read_at is None:
            return None
        return int(self.data["server_time_ms"] + (self._clock() - self.read_at) * 1000)

    def read_age_s(self) -> float | None:
        return None if self.read_at is None else self._clock() - self.read_at

    def _sorted(self, kind: str) -> list[dict[str, Any]]:
        key = f"sorted-{kind}"
        if key not in self._cache:
            self._cache[key] = sorted((self.data or {}).get(kind) or [], key=rank)
        return cast("list[dict[str, Any]]", self._cache[key])

    def view(self) -> dict[str, Any]:
        """Everything one update sends (bounded: the strategy list pages through /api/strategies)."""
        with self._lock:
            if "view" not in self._cache:
                self._cache["view"] = self._view()
            return cast("dict[str, Any]", self._cache["view"])

    def view_json(self) -> tuple[int, bytes]:
        """(version, the view as one line of JSON), encoded once per version for every browser."""
        with self._lock:
            if "json" not in self._cache:
                if "view" not in self._cache:
                    self._cache["view"] = self._view()
                self._cache["json"] = json.dumps(self._cache["view"], separators=(",", ":"),
                                                 allow_nan=False, default=str).encode()
            return self.version, self._cache["json"]

    def strategies(self, flt: str = "problems", q: str = "", page: int = 0) -> dict[str, Any]:
        with self._lock:
            out = strategy_page(self._sorted("strategies"), flt, q, page)
            out["version"] = self.version
            return out

    def health(self) -> tuple[bool, str]:
        """``check``'s verdict on the deployment from the last read, and whether the page server
        itself reads Redis: (healthy, ``OK: ...`` / ``UNHEALTHY: ...``)."""
        with self._lock:
            ok, text, _problems = self._health()
            return ok, text

    def _health(self) -> tuple[bool, str, list[str]]:
        if not self.redis_ok:
            return False, f"UNHEALTHY: {self.redis_problem}", [self.redis_problem]
        if self.data is None:
            return False, "UNHEALTHY: the page server has not read Redis yet", []
        age = self.read_age_s() or 0.0
        limit = max(15.0, STALE_VIEW_PERIODS * (self.data.get("period_ms") or 60_000) / 1000)
        if age > limit:
            why = f"the page server's last read of Redis is {age:.0f}s old"
            return False, f"UNHEALTHY: {why}", [why]
        h = check_deployment(self.data)
        return h.healthy, h.text(), h.problems

    def _view(self) -> dict[str, Any]:
        data = self.data
        period_ms = data.get("period_ms") if data else None
        epoch = data.get("epoch") if data else None
        gens = self._sorted("generators")
        strats = self._sorted("strategies")
        registered = [s for s in strats if s.get("registered")]
        problems = [s for s in strats if is_problem(s)]
        healthy, health_text, health_problems = self._health()
        current = bool(data) and self.redis_ok   # what was read is what Redis holds now
        view: dict[str, Any] = {
            "version": self.version, "namespace": self.namespace, "redis": self.redis_shown,
            "period_ms": period_ms, "epoch": epoch, "server_time_ms": data.get("server_time_ms") if data else None,
            "redis_ok": self.redis_ok, "redis_problem": self.redis_problem, "down_since_ms": self.down_since_ms,
            "stream_problem": self.stream_problem, "data_problems": (data or {}).get("problems", []),
            "headline": headline(data, self.redis_ok, self.redis_problem),
            "health": {"healthy": healthy, "text": health_text, "problems": health_problems[:HEALTH_PROBLEMS_SHOWN],
                       "more": max(0, len(health_problems) - HEALTH_PROBLEMS_SHOWN)},
            "trader": (data or {}).get("trader"), "traders": (data or {}).get("traders", []),
            "missed_text": H.missed_text(data["trader"], epoch) if current and data and (
                data["trader"].get("missed") or data["trader"].get("last_missed") is not None) else "",
            "missed_recently": bool(current and data and H.missed_recently(data["trader"], epoch)),
            "counts": {"generators": {"total": len(gens), "by_state": count_states(gens)},
                       "strategies": {"total": len(strats), "registered": len(registered),
                                      "problems": len(problems), "by_state": count_states(registered),
                                      "unregistered": len(strats) - len(registered)}},
            "generators": gens[:GENERATORS_SHOWN], "generators_more": max(0, len(gens) - GENERATORS_SHOWN),
            "problems": problems[:PROBLEMS_SHOWN], "problems_more": max(0, len(problems) - PROBLEMS_SHOWN),
            "medians": [m.as_json() for m in list(self.medians)[-RECENT:]][::-1],
            "events": [e.as_json() for e in list(self.events)[-RECENT:]][::-1],
            "gathers": self.gathers,
        }
        view["chart"] = self._chart(period_ms, epoch)
        return view

    def _chart(self, period_ms: int | None, epoch: int | None) -> dict[str, Any]:
        span = chart_span(period_ms)
        now_ms = self.server_now_ms()
        if not span or period_ms is None or epoch is None or now_ms is None:   # no span without a period
            return {"svg": chart_svg({}, {}, 0, -1, None), "span": 0, "seconds": 0}
        # The epoch now (a median may arrive before the next gather), shown once it is settled.
        now_epoch = max(epoch, epoch_of(now_ms, period_ms))
        newest = max([m.epoch for m in self.medians] + [e.last for e in self.events] + [now_epoch - 1])
        last = max(now_epoch - 1, min(newest, now_epoch))
        # From the first record on when the history is shorter than the window (a new deployment):
        # nothing is known about the epochs before it, and a chart of mostly nothing says less.
        earliest = min([m.epoch for m in self.medians] + [e.epoch for e in self.events] + [last])
        first = max(last - span + 1, earliest)
        span = last - first + 1
        points, gaps = epoch_kinds(self.medians, self.events, first, last)
        counts = {"published": len(points),
                  "error": sum(1 for k, _ in gaps.values() if k in ("error", "unacknowledged")),
                  "missed": sum(1 for k, _ in gaps.values() if k == "missed")}
        counts["unknown"] = span - sum(counts.values())
        return {"svg": chart_svg(points, gaps, first, last, period_ms), "span": span,
                "seconds": span * period_ms / 1000, "first": first, "last": last, **counts}


# -- the one reader per process -------------------------------------------------------------------
def redis_problem(redis_shown: str, e: BaseException) -> str:
    """One line saying what went wrong talking to Redis (the URL redacted, no password)."""
    return connection_problem(redis_shown, e, "check its ACL: the operator user has what the page needs")


class Reader:
    """Reads Redis for every browser: a gather per period (right after the trader settled the epoch,
    or just after the boundary when nothing came), and one blocking ``XREAD`` of the medians and
    events streams in between.  Rides out Redis outages (the state says so; capped backoff)."""

    def __init__(self, state: WebState, connect: Callable[[], redis.Redis], keys: Keys,
                 stop: threading.Event | None = None, block_ms: int = BLOCK_MS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.connect = connect
        self.keys = keys
        self.stop = stop or threading.Event()
        self.block_ms = max(1, block_ms)
        self.clock = clock
        self.client: redis.Redis | None = None
        self.ids: dict[str, str] | None = None
        self.next_gather = 0.0          # local monotonic time of the next scheduled gather
        self.last_gather = -math.inf
        self.wanted = False             # a stream entry came in: gather soon (once per burst)
        self.gather_s = 0.0             # how long the last gather took
        self.slow_logged = False
        self.backoff = Backoff(5.0)
        self.thread: threading.Thread | None = None

    # -- the loop ---------------------------------------------------------------------------------
    def start(self) -> "Reader":
        self.thread = threading.Thread(target=self.run, name="redismedian-web-reader", daemon=True)
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.step()
                self.backoff.reset()
            except Exception as e:  # noqa: BLE001 - the page reports it and the loop goes on
                self.failed(e)

    def failed(self, e: BaseException) -> None:
        # Known: an error of Redis' or of reaching it (redis_problem words it in one line); anything
        # else is a bug of ours, logged with its traceback.
        known = isinstance(e, redis.exceptions.RedisError) or classify(e) is ErrorKind.TRANSIENT
        problem = redis_problem(self.state.redis_shown, e) if known else f"the page server failed to read Redis: {e!r}"
        if self.state.redis_ok:
            log.warning("%s; retrying every <= %.1fs", problem, self.backoff.cap, exc_info=not known)
        self.state.set_redis(False, problem)
        self.ids = None if not known else self.ids   # an unexpected failure: read the history again
        self.next_gather = 0.0   # only a whole gather that succeeds says Redis is back
        self.stop.wait(self.backoff.next_delay())

    def settle_s(self) -> float:
        """How long after a gather an entry may trigger the next one: a burst of entries (e.g. after an
        outage) is one gather, and gathering never takes more than :data:`GATHER_DUTY` of the time
        (with tens of thousands of strategies a gather takes seconds; medians and events still reach
        the page at once, every part's state then less often than every period)."""
        p = self._period_ms()
        return max(min(0.5, max(0.05, (p or 1000) / 10_000)), self.gather_s * (1 / GATHER_DUTY - 1))

    def _period_ms(self) -> int | None:
        return (self.state.data or {}).get("period_ms")

    def step(self) -> None:
        """One turn: gather when due, load the chart's history once, then one blocking XREAD (at most
        until the next gather is due)."""
        if self.client is None:
            self.client = self.connect()
        now = self.clock()
        if now >= self.next_gather or (self.wanted and now - self.last_gather >= self.settle_s()):
            self.gather()
        if self.ids is None:
            self.load_history()
        if not self.state.redis_ok:
            log.info("Redis is back at %s", self.state.redis_shown)
            self.state.set_redis(True)
        wait_ms = (self.next_gather - self.clock()) * 1000
        if self.wanted:
            wait_ms = min(wait_ms, (self.last_gather + self.settle_s() - self.clock()) * 1000)
        block = int(min(self.block_ms, max(1.0, wait_ms)))
        if self.state.stream_problem:
            self.stop.wait(block / 1000)   # a stream holds garbage: gather on, try the streams each period
            self.ids = None
            return
        self.read_streams(block)

    def gather(self) -> None:
        assert self.client is not None   # step() connects first
        started, cpu = self.clock(), time.thread_time()
        data = gather(self.client, self.keys)
        self.last_gather = self.clock()
        # The guard counts this thread's CPU, not wall time: a busy machine must not make the page of a
        # small deployment slower; only a gather that is costly in itself does.
        self.gather_s = time.thread_time() - cpu
        log.debug("gathered epoch %s in %.1f ms (%.1f ms of CPU)", data.get("epoch"),
                  (self.last_gather - started) * 1000, self.gather_s * 1000)
        self.wanted = False
        delay = watch_delay(data["server_time_ms"], data.get("period_ms"), None)
        if delay < self.settle_s():
            if not self.slow_logged:
                log.warning("reading every part takes %.2fs of CPU, more than %d%% of the time between two reads: the "
                            "page shows every part's state every %.1fs instead of every period (medians and "
                            "unpublished epochs still at once)", self.gather_s, GATHER_DUTY * 100,
                            self.gather_s / GATHER_DUTY)
                self.slow_logged = True
            delay = self.settle_s()
        self.next_gather = self.last_gather + delay
        self.state.set_data(data)

    def load_history(self) -> None:
        """The chart's window from both streams, and where the XREAD goes on from."""
        now = self.state.server_now_ms()
        period = self._period_ms()
        span_ms = (chart_span(period) * period) if period else CHART_SECONDS * 1000
        lo = str(max(0, (now or 0) - span_ms - (period or 0)))
        ids: dict[str, str] = {}
        items: list[Median | Event] = []
        problems = []
        client = self.client
        assert client is not None   # step() connects first
        parsers: tuple[tuple[str, Callable[[object, Mapping[Any, Any] | None], Median | Event | None]], ...] = (
            (self.keys.medians, parse_median), (self.keys.events, parse_event))
        for key, parse in parsers:
            try:
                newest = xrevrange(client, key, count=1)
                entries = xrevrange(client, key, max="+", min=lo, count=CHART_MAX_EPOCHS * 2) if newest else []
            except redis.exceptions.ResponseError as e:
                if "WRONGTYPE" not in str(e):
                    raise
                problems.append(f"{key} is not a stream (garbage in Redis; the trader replaces it)")
                continue
            ids[key] = as_str(newest[0][0]) if newest else "0-0"
            for entry_id, fields in reversed(entries):
                item = parse(entry_id, fields)
                if item is not None:
                    items.append(item)
        self.state.set_stream_problem("; ".join(problems))
        if problems:
            return
        items.sort(key=lambda x: _id_order(x.id))
        self.ids = ids
        self.state.set_history(items)

    def read_streams(self, block_ms: int) -> int:
        """One XREAD of both streams; new medians and events go to the page at once, and the next gather
        (the trader's state, every part's) follows right after."""
        assert self.client is not None and self.ids is not None   # step() connects and loads the history first
        try:
            reply = xread(self.client, self.ids, block=block_ms, count=1000)
        except redis.exceptions.ResponseError as e:
            if "WRONGTYPE" not in str(e):
                raise
            self.state.set_stream_problem(f"{self.keys.medians} or {self.keys.events} is not a stream "
                                          "(garbage in Redis; the trader replaces it)")
            return 0
        items: list[Median | Event] = []
        for stream, entries in reply or ():
            key = as_str(stream)
            for entry_id, fields in entries:
                self.ids[key] = as_str(entry_id)
                item = parse_median(entry_id, fields) if key == self.keys.medians else parse_event(entry_id, fields)
                if item is not None:
                    items.append(item)
        items.sort(key=lambda x: _id_order(x.id))
        if items:
            self.wanted = True
            log.debug("read %d stream entries (last: %s epoch %s)", len(items), type(items[-1]).__name__,
                      items[-1].epoch)
        return self.state.add_items(items)


# -- the web application (needs the extra) --------------------------------------------------------
STATIC_DIR = Path(__file__).resolve().parent / "web_static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def static_files(folder: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """The page's own files (read once: a few kilobytes), name -> (content, content type)."""
    return {p.name: (p.read_bytes(), CONTENT_TYPES.get(p.suffix, "application/octet-stream"))
            for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in CONTENT_TYPES}


class Broadcast:
    """Wakes every open event stream when the state changed (set from the reader thread)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self.closing = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is None:
            self.loop = loop
            self.event = asyncio.Event()

    def _fire(self) -> None:
        old, self.event = self.event, asyncio.Event()
        if old is not None:
            old.set()

    def notify_threadsafe(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._fire)

    def close(self) -> None:
        self.closing = True
        self.notify_threadsafe()


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class Guard:
    """ASGI middleware in front of every route: the Host check, the token, and the security headers
    (the Content-Security-Policy above all) on every response, errors included."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.decode("latin-1").lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k not in have]
                if "cache-control" not in have:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        path = scope.get("path", "/")
        if not host_allowed(self.access, headers.get("host", "")):
            return await _plain(send_secured, 403, "this page answers only to localhost (it is served without a "
                                                   "token); open it as http://localhost:PORT/ or give it a token")
        if not is_public(path) and not authorized(self.access, headers):
            if scope.get("method") == "GET" and path in ("/", "/index.html"):
                return await _raw(send_secured, 303, b"", [(b"location", b"/login")])
            return await _plain(send_secured, 401, "authentication required: log in at /login, or send "
                                                   "Authorization: Bearer <token>",
                                [(b"www-authenticate", b'Bearer realm="redismedian"')])
        await self.app(scope, receive, send_secured)


async def _raw(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
               ctype: bytes = b"text/plain; charset=utf-8") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _raw(send, status, (text + "\n").encode(), headers)


MAX_LOGIN_BODY = 4096   # bytes: a login form is one token; a bigger body is refused (413) before it is read


async def _capped_body(request: Any, limit: int) -> bytes:
    """The request's body; an HTTP 413 as soon as it is known to exceed ``limit`` bytes: at once from
    its Content-Length, else while it streams in (chunked), so that an unauthenticated client never
    makes the server hold more than ``limit`` bytes (plus one chunk) of it."""
    from starlette.exceptions import HTTPException
    too_large = HTTPException(413, f"request body too large: at most {limit} bytes here",
                              headers={"connection": "close"})
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def build_app(state: WebState, access: Access, *, reader_alive: Callable[[], bool] = lambda: True,
              broadcast: Broadcast | None = None, files: dict[str, tuple[bytes, str]] | None = None,
              heartbeat_s: float = HEARTBEAT_S) -> Guard:
    """The ASGI application.  It reads only ``state``: it holds no Redis client, so no request, however
    many pages are open, ever reaches Redis."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    files = static_files() if files is None else files
    bc = broadcast or Broadcast()
    state.add_listener(bc.notify_threadsafe)

    def page(name: str, status: int = 200, **subst: str) -> Response:
        body, ctype = files[name]
        text = body.decode()
        for k, v in subst.items():
            text = text.replace("{{" + k + "}}", escape(v))
        return Response(text, status_code=status, media_type=ctype.split(";")[0])

    async def index(request: Request) -> Response:
        return page("index.html")

    async def static(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if not found or found[1].startswith("text/html"):
            return PlainTextResponse("not found", status_code=404)
        return Response(found[0], media_type=found[1].split(";")[0], headers={"cache-control": "no-cache"})

    async def favicon(request: Request) -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    async def login_form(request: Request) -> Response:
        if access.token is None:
            return RedirectResponse("/", status_code=303)
        return page("login.html", message="")

    async def login(request: Request) -> Response:
        if access.token is None:
            return RedirectResponse("/", status_code=303)
        body = await _capped_body(request, MAX_LOGIN_BODY)
        given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        if not given or not hmac.compare_digest(given.encode(), access.token.encode()):
            await asyncio.sleep(0.5)   # a guess costs time
            return page("login.html", 401, message="That is not the token. It is in the file given to the "
                                                   f"server's --token-file (or ${TOKEN_ENV}).")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, access.session, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
        return resp

    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/login" if access.token else "/", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def api_state(request: Request) -> Response:
        _version, body = state.view_json()
        return Response(body, media_type="application/json")

    async def api_strategies(request: Request) -> Response:
        qp = request.query_params
        try:
            pg = int(qp.get("page", "0"))
        except ValueError:
            pg = 0
        return JSONResponse(state.strategies(qp.get("filter", "problems"), qp.get("q", ""), pg))

    async def healthz(request: Request) -> Response:
        ok, text = state.health()
        return PlainTextResponse(text + "\n", status_code=200 if ok else 503)

    async def livez(request: Request) -> Response:
        ok = reader_alive()
        return PlainTextResponse("ok\n" if ok else "the reader loop is not running\n", status_code=200 if ok else 503)

    async def events(request: Request) -> Response:
        bc.attach(asyncio.get_running_loop())

        def clock() -> bytes:
            return b"event: clock\ndata: " + json.dumps({"server_ms": state.server_now_ms()}).encode() + b"\n\n"

        async def stream() -> AsyncIterator[bytes]:
            sent = -1
            yield b"retry: 2000\n\n"
            while not bc.closing:
                waiter = bc.event
                assert waiter is not None   # attach() made it
                version, body = state.view_json()
                if version != sent:
                    yield clock() + b"event: state\ndata: " + body + b"\n\n"
                    sent = version
                try:
                    await asyncio.wait_for(waiter.wait(), heartbeat_s)
                except asyncio.TimeoutError:
                    yield clock()   # a heartbeat: the page tells a live server from a dead one
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    routes = [Route("/", index), Route("/index.html", index), Route("/static/{name}", static),
              Route("/favicon.ico", favicon), Route("/login", login_form, methods=["GET"]),
              Route("/login", login, methods=["POST"]), Route("/logout", logout), Route("/events", events),
              Route("/api/state", api_state), Route("/api/strategies", api_strategies),
              Route("/healthz", healthz), Route("/livez", livez)]
    app = Starlette(routes=routes)
    return Guard(app, access)


def listen(bind: str, port: int) -> socket.socket:
    """A listening socket on ``bind:port`` (OSError with the reason: address in use, unknown host)."""
    infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(sock: socket.socket, state: WebState, reader: Reader, access: Access) -> None:
    """Run the page server on ``sock`` until SIGTERM or SIGINT, then stop the reader."""
    import uvicorn

    bc = Broadcast()
    app = build_app(state, access, reader_alive=reader.alive, broadcast=bc)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            bc.close()   # open event streams end now, so shutdown does not wait for the browsers
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own version raises SIGTERM again after its shutdown, so that the process ends by
            # the signal; like every component, this one stops cleanly and exits 0 instead.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=2, proxy_headers=False)
    try:
        Server(config).run(sockets=[sock])
    finally:
        reader.stop.set()
        if reader.thread is not None:
            reader.thread.join(2)
