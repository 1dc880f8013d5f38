"""``redismedian web``: the live page.

Unit tests (no server, no browser): who may read the page, the security headers, the view (the
headline never shows a median that is not current; problems first; a bounded update at 10,000
strategies), the chart (gaps are never bridged), the reader against fakeredis, the command line.

Integration tests: a real pipeline at a 0.5 s period and the real ``redismedian web`` process, looked
at in headless Chromium (Debian's ``chromium`` driven through its ``chromedriver``; ``./dev test``
installs both): the page shows every part and the current median; a new median appears without a
reload; a killed strategy turns the trader's row to ``error`` naming it within two periods; with Redis
stopped the page says so, and it recovers by itself.
"""
from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import fakeredis
import pytest
import redis
import yaml
from click.testing import CliRunner

from redismedian import web
from redismedian.cli import cli
from redismedian.following import Event, Median
from redismedian.keys import Keys
from tests.support import ROOT, Cluster, RedisServer, wait_until

PERIOD = 0.5
DEPLOY = ROOT / "deploy"


# -- who may read the page ---------------------------------------------------------------------------
TOKEN = "t0ken-" + "x" * 26


@pytest.mark.parametrize("bind, token, no_auth, want", [
    ("127.0.0.1", None, False, web.Access(None, local_only=True)),
    ("::1", None, False, web.Access(None, local_only=True)),
    ("localhost", None, False, web.Access(None, local_only=True)),
    ("127.0.0.1", TOKEN, False, web.Access(TOKEN, local_only=False)),   # a token given is always required
    ("0.0.0.0", TOKEN, False, web.Access(TOKEN, local_only=False)),
    ("0.0.0.0", None, True, web.Access(None, local_only=False)),
    ("0.0.0.0", None, False, "needs a token"),
    ("192.0.2.7", None, False, "needs a token"),
    ("::", None, False, "needs a token"),
    ("0.0.0.0", "short", False, "at least 16"),
    ("0.0.0.0", TOKEN, True, "exclude each other"),
])
def test_access_rules_are_safe_by_default(bind, token, no_auth, want):
    if isinstance(want, web.Access):
        assert web.access_rules(bind, token, no_auth) == want
    else:
        with pytest.raises(ValueError) as e:
            web.access_rules(bind, token, no_auth)
        assert {"needs a token": "serves the page to other machines"}.get(want, want) in str(e.value)


def test_token_comes_from_a_file_or_the_environment_never_both(tmp_path):
    f = tmp_path / "token"
    f.write_text("old-token-0123456789\n\n  new-token-0123456789  \n")
    assert web.load_token(str(f), {}) == "new-token-0123456789"      # the last line, as password files
    assert web.load_token(None, {web.TOKEN_ENV: TOKEN}) == TOKEN
    assert web.load_token(None, {}) is None
    with pytest.raises(ValueError, match="keep one"):
        web.load_token(str(f), {web.TOKEN_ENV: TOKEN})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        web.load_token(str(tmp_path / "empty"), {})
    with pytest.raises(ValueError, match="cannot read token file"):
        web.load_token(str(tmp_path / "missing"), {})


def test_a_request_shows_the_token_or_the_cookie_derived_from_it():
    access = web.Access(TOKEN, local_only=False)
    session = web.session_value(TOKEN)
    assert TOKEN not in session and len(session) == 64
    assert web.authorized(access, {"authorization": f"Bearer {TOKEN}"})
    assert web.authorized(access, {"cookie": f"other=1; {web.COOKIE}={session}"})
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": f"Basic {TOKEN}"},
                    {"cookie": f"{web.COOKIE}={TOKEN}"}, {"cookie": f"{web.COOKIE}=abc"}, {"cookie": "=;;\x00"}):
        assert not web.authorized(access, headers), headers
    assert web.authorized(web.Access(None, local_only=True), {})


def test_a_server_without_a_token_answers_only_to_localhost():
    local = web.Access(None, local_only=True)
    for host in ("127.0.0.1:8080", "localhost:8080", "localhost", "[::1]:8080", "127.0.0.2", "app.localhost:9"):
        assert web.host_allowed(local, host), host
    for host in ("evil.example:8080", "evil.example", "10.0.0.1:8080", "", "[2001:db8::1]:80"):
        assert not web.host_allowed(local, host), host   # DNS rebinding: another site's name
    assert web.host_allowed(web.Access(TOKEN, local_only=False), "evil.example")


# -- a deployment in fakeredis ---------------------------------------------------------------------------
def seed(r, k: Keys, *, trader_state="ok", lead=True, strategies=("X", "Y"), down=(), period_ms=500) -> int:
    """A deployment as the components leave it at the current epoch (what gather reads)."""
    sec, usec = r.time()
    now = int(sec) * 1000 + int(usec) // 1000
    e = now // period_ms
    r.hset(k.meta, mapping={"period_ms": period_ms, "instance": "i1", "created": now - 60_000})
    fields = {"state": trader_state, "epoch": e, "ts": now, "fence": 3, "leader": "h:1:a"}
    if trader_state == "ok":
        fields.update(median="0.5", count=len(strategies))
    else:
        fields.update(reason="1 of 2 strategies missing: Y: not running (no live process; last report for epoch "
                             f"{e - 3}, 3 periods ago)")
    r.hset(k.trader, mapping=fields)
    if lead:
        r.set(k.lease("trader"), "h:1:a|3", px=750)
        r.hset(k.traders, "h:1:a", f"leader|{now}|3")
    r.hset(k.signal("g1"), mapping={"value": "0.5", "epoch": e, "ts": now, "status": "ok", "error": ""})
    r.set(k.lease("generator", "g1"), "h:2:b", px=750)
    for s in strategies:
        r.sadd(k.strategies, s)
        r.set(k.decision(s), f"{e}|0.5", px=5000)
        if s not in down:
            r.set(k.lease("strategy", s), f"h:3:{s}|{now - 10_000}", px=1000)
    return e


def fake_state(**kw) -> tuple[web.WebState, fakeredis.FakeRedis, Keys]:
    r = fakeredis.FakeRedis()
    k = Keys("t")
    seed(r, k, **kw)
    state = web.WebState("redis://127.0.0.1:6379/0", "t")
    web.Reader(state, lambda: r, k, block_ms=5).step()
    return state, r, k


def test_headline_shows_a_median_only_while_the_trader_publishes():
    state, r, k = fake_state()
    h = state.view()["headline"]
    assert (h["level"], h["median"], h["count"]) == ("ok", 0.5, 2)
    # the trader's hash still holds a median, but no trader holds the lead: dead, not a last good value
    state, r, k = fake_state(lead=False)
    h = state.view()["headline"]
    assert h["level"] == "error" and h["median"] is None and "no trader running" in h["reason"]
    state, r, k = fake_state(trader_state="error", down=("Y",))
    v = state.view()
    assert v["headline"]["level"] == "error" and v["headline"]["median"] is None
    assert "Y: not running" in v["headline"]["reason"] and not v["health"]["healthy"]
    assert [p["name"] for p in v["problems"]] == ["Y"] and v["problems"][0]["state"] == "down"
    # Redis unreachable: nothing current is shown, whatever was read before
    state, r, k = fake_state()
    state.set_redis(False, "Redis at redis://127.0.0.1:6379/0 is not reachable: Connection refused")
    v = state.view()
    assert v["headline"]["level"] == "unknown" and v["headline"]["median"] is None
    assert not v["redis_ok"] and v["health"]["text"].startswith("UNHEALTHY: Redis at") and not v["missed_text"]
    assert state.health() == (False, v["health"]["text"])


def test_an_update_stays_small_at_10000_strategies_and_lists_problems_first():
    state = web.WebState("redis://h/0", "t")
    e = 1000
    rows = [{"name": f"S{i:05d}", "registered": True, "state": "ok", "value": 0.5, "epoch": e, "age_s": 0.1,
             "reason": "", "owner": "h:1:a"} for i in range(10_000)]
    for i in range(0, 10_000, 271):   # 37 problems, of several kinds
        rows[i].update(state=("down", "error", "stale")[i % 3], reason="why " * 20)
    rows.append({"name": "old", "registered": False, "state": "down", "value": None, "epoch": None, "age_s": None,
                 "reason": "not running", "owner": None})
    data = {"namespace": "t", "server_time_ms": e * 500, "period_ms": 500, "epoch": e, "problems": [],
            "trader": {"state": "error", "reason": "37 of 10000 strategies missing", "epoch": e, "median": None,
                       "count": None, "age_s": 0.1, "leader": "h:1:a", "fence": 1, "published_epoch": e - 1,
                       "missed": 0, "last_missed": None, "last_missed_reason": "", "acted": None, "action_error": ""},
            "traders": [], "generators": [], "strategies": rows}
    t0 = time.perf_counter()
    state.set_data(data)
    version, body = state.view_json()
    took = time.perf_counter() - t0
    view = json.loads(body)
    assert len(body) < 100_000, f"an update is {len(body)} bytes"      # the list pages; updates stay small
    assert took < 2.0, f"building the view took {took:.2f}s"
    s = view["counts"]["strategies"]
    assert (s["total"], s["registered"], s["problems"], s["unregistered"]) == (10_001, 10_000, 37, 1)
    assert s["by_state"] == {"down": 13, "error": 12, "stale": 12, "ok": 9963}
    assert list(s["by_state"]) == ["down", "error", "stale", "ok"]      # worst first
    assert len(view["problems"]) == 37 and [p["state"] for p in view["problems"]][:13] == ["down"] * 13
    first = state.strategies("problems")
    assert first["total"] == 37 and first["pages"] == 1 and first["version"] == version
    everything = state.strategies("all", page=0)
    assert everything["total"] == 10_001 and everything["pages"] == 101 and len(everything["rows"]) == 100
    assert everything["rows"][0]["state"] == "down" and everything["rows"][40]["state"] == "ok"
    last = state.strategies("all", page=999)
    assert last["page"] == 100 and len(last["rows"]) == 1
    assert state.strategies("stale")["total"] == 12
    assert [r["name"] for r in state.strategies("all", q="s0999")["rows"]] == [f"S0999{i}" for i in range(10)]
    assert [r["name"] for r in state.strategies("unregistered")["rows"]] == ["old"]
    assert state.strategies("bogus")["filter"] == "problems"


# -- the chart ------------------------------------------------------------------------------------------
def _median(epoch, value):
    return Median(epoch, value, 2, ["X", "Y"], epoch * 500, 1, f"{epoch * 500}-0")


def _event(status, epoch, last=None, reason="why"):
    return Event(status, epoch, epoch if last is None else last, reason, epoch * 500, 1, f"{epoch * 500}-1")


def test_the_chart_never_draws_across_a_gap():
    medians = [_median(e, 0.1 * (e - 9)) for e in [10, 11, 12, 13, 14, 17, 18, 19, 22]]
    events = [_event("error", 15), _event("missed", 16), _event("missed", 25, 27, "stalled <&>"), _event("error", 18)]
    points, gaps = web.epoch_kinds(medians, events, 10, 26)
    assert 18 in points and 18 not in gaps      # published wins over a record of the same epoch
    svg = web.chart_svg(points, gaps, 10, 26, 500)
    root = ET.fromstring(svg)                    # well-formed: DOMParser in the page reads it as XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    lines = [p.get("data-epochs") for p in root.findall("s:path", ns)]
    dots = [c.get("data-epochs") for c in root.findall("s:circle", ns) if "point" in c.get("class")]
    bands = {(b.get("class"), b.get("data-epochs")) for b in root.findall("s:rect", ns) if "gap" in b.get("class")}
    assert lines == ["10-14", "17-19"] and dots == ["22-22"]
    assert bands == {("gap gap-error", "15-15"), ("gap gap-missed", "16-16"), ("gap gap-unknown", "20-21"),
                     ("gap gap-unknown", "23-24"), ("gap gap-missed", "25-26")}
    for d in (p.get("d") for p in root.findall("s:path", ns)):
        assert d.count("M") == 1 and d.count("L") in (4, 2)   # one point per published epoch, nothing between
    titles = "".join(t.text for t in root.iter("{http://www.w3.org/2000/svg}title"))
    assert "stalled <&>" in titles                # escaped in the markup, intact once parsed
    assert web.chart_svg({}, {}, 0, -1, None).endswith("</svg>")


def test_an_unacknowledged_median_is_a_gap_not_a_point():
    # --min-replicas: the median of epoch 12 was written, but not enough replicas held it in time.
    medians = [_median(e, 0.5) for e in [10, 11, 12, 13]]
    points, gaps = web.epoch_kinds(medians, [_event("unacknowledged", 12, reason="0 of 1 replica <x>")], 10, 13)
    assert sorted(points) == [10, 11, 13] and gaps == {12: ("unacknowledged", "0 of 1 replica <x>")}
    root = ET.fromstring(web.chart_svg(points, gaps, 10, 13, 500))
    ns = {"s": "http://www.w3.org/2000/svg"}
    bands = {(b.get("class"), b.get("data-epochs")) for b in root.findall("s:rect", ns) if "gap" in b.get("class")}
    assert bands == {("gap gap-unacknowledged", "12-12")}
    titles = "".join(t.text for t in root.iter("{http://www.w3.org/2000/svg}title"))
    assert "not acknowledged by the replicas" in titles and "0 of 1 replica <x>" in titles


def test_the_chart_window_is_the_last_hour_or_the_last_1000_epochs():
    assert web.chart_span(60_000) == 60 and web.chart_span(1000) == 1000 and web.chart_span(500) == 1000
    assert web.chart_span(None) == 0


# -- the reader (fakeredis) -------------------------------------------------------------------------------
class StepClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_the_reader_gathers_once_per_period_and_follows_the_streams():
    r = fakeredis.FakeRedis()
    k = Keys("t")
    e = seed(r, k)
    r.xadd(k.medians, {"epoch": e - 1, "median": "0.25", "count": 2, "members": "X,Y", "ts": 1, "fence": 3})
    clock = StepClock()
    state = web.WebState("redis://h/0", "t", clock=clock)
    reader = web.Reader(state, lambda: r, k, block_ms=5, clock=clock)
    woken = []
    state.add_listener(lambda: woken.append(state.version))
    reader.step()
    assert state.gathers == 1 and [m.epoch for m in state.medians] == [e - 1]   # the chart's history
    reader.step()
    assert state.gathers == 1, "no second gather before the period is over"
    r.xadd(k.medians, {"epoch": e, "median": "0.5", "count": 2, "members": "X,Y", "ts": 2, "fence": 3})
    r.xadd(k.events, {"status": "missed", "epoch": e - 5, "last": e - 3, "reason": "stalled", "ts": 3, "fence": 3})
    reader.step()
    assert [m.epoch for m in state.medians] == [e - 1, e] and [(v.epoch, v.last) for v in state.events] == [(e - 5, e - 3)]
    assert reader.wanted and state.gathers == 1   # new entries: the trader settled, gather right after
    clock.t += reader.settle_s() + 0.001
    reader.step()
    assert state.gathers == 2 and not reader.wanted
    clock.t += 1.0   # a period later without any entry: the boundary gather
    reader.step()
    assert state.gathers == 3 and woken and woken == sorted(woken)
    # garbage where a stream should be: the page says so and goes on gathering
    r.delete(k.events)
    r.set(k.events, "garbage")
    clock.t += 1.0
    reader.ids = None   # (fakeredis's XREAD fails on a wrong type with its own AttributeError: read the history)
    reader.step()
    assert "is not a stream" in state.view()["stream_problem"] and state.gathers == 4
    r.delete(k.events)   # the trader replaced it: the history is read again, nothing counted twice
    clock.t += 1.0
    reader.step()
    assert not state.view()["stream_problem"] and [m.epoch for m in state.medians] == [e - 1, e]


def test_the_reader_spends_at_most_a_quarter_of_its_time_gathering(monkeypatch):
    r = fakeredis.FakeRedis()
    k = Keys("t")
    e = seed(r, k)
    clock = StepClock()
    state = web.WebState("redis://h/0", "t", clock=clock)
    reader = web.Reader(state, lambda: r, k, block_ms=5, clock=clock)
    cpu = iter(range(0, 1000, 2))     # every gather costs 2 s of CPU (as 20,000 strategies would)
    monkeypatch.setattr(web.time, "thread_time", lambda: next(cpu))
    reader.step()
    assert state.gathers == 1 and reader.next_gather - reader.last_gather == pytest.approx(6.0)
    r.xadd(k.medians, {"epoch": e, "median": "0.5", "count": 2, "members": "X,Y", "ts": 2, "fence": 3})
    clock.t += 1.0
    reader.step()
    assert state.medians[-1].epoch == e and state.gathers == 1, "the median at once, the next gather later"
    clock.t += 5.0
    reader.step()
    assert state.gathers == 2


def test_the_reader_rides_out_an_outage():
    server = fakeredis.FakeServer()
    r = fakeredis.FakeRedis(server=server)
    k = Keys("t")
    seed(r, k)
    state = web.WebState("redis://h/0", "t")
    reader = web.Reader(state, lambda: r, k, block_ms=5)
    reader.stop.set()   # failed() waits on it: no real backoff sleep here
    server.connected = False
    try:
        reader.step()
    except Exception as e:  # noqa: BLE001 - what run() catches
        reader.failed(e)
    assert not state.redis_ok and "is not reachable" in state.redis_problem and state.down_since_ms is None
    assert state.health()[0] is False
    server.connected = True
    reader.step()
    assert state.redis_ok and state.gathers == 1 and state.health()[0]


# -- the application: headers, authentication (no browser, no socket) -----------------------------------
def asgi(app, method: str, target: str, headers: dict | None = None, body: bytes = b"", disconnect_after: float = 0):
    """One request through the ASGI app: (status, headers as a list of (name, value), body)."""
    path, _, query = target.partition("?")

    async def run():
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in
                             {"host": "127.0.0.1:8080", **(headers or {})}.items()]}
        messages, asked = [], []

        async def receive():
            asked.append(1)
            if len(asked) == 1:
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(disconnect_after or 3600)
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)
        await asyncio.wait_for(app(scope, receive, send), 10)
        return messages
    messages = asyncio.run(run())
    start = messages[0]
    hs = [(k.decode(), v.decode()) for k, v in start["headers"]]
    return start["status"], hs, b"".join(m.get("body", b"") for m in messages[1:])


def _h(headers, name):
    return [v for k, v in headers if k == name]


def test_every_response_carries_a_strict_content_security_policy():
    state, _r, _k = fake_state()
    app = web.build_app(state, web.Access(None, local_only=True))
    for target in ("/", "/static/app.js", "/static/style.css", "/api/state", "/api/strategies?filter=all",
                   "/healthz", "/livez", "/nope", "/static/index.html"):
        status, headers, _ = asgi(app, "GET", target)
        assert _h(headers, "content-security-policy") == [web.CSP], target
        assert _h(headers, "x-content-type-options") == ["nosniff"] and _h(headers, "x-frame-options") == ["DENY"]
    csp = dict(part.strip().split(" ", 1) for part in web.CSP.split(";"))
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert "unsafe" not in web.CSP and csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    status, headers, body = asgi(app, "GET", "/api/state")
    view = json.loads(body)
    assert status == 200 and view["headline"]["median"] == 0.5 and view["redis"] == "redis://127.0.0.1:6379/0"
    status, _, body = asgi(app, "GET", "/healthz")
    assert status == 200 and body.decode().startswith("OK: trader published 0.5")
    status, _, body = asgi(app, "GET", "/", {"host": "evil.example:8080"})
    assert status == 403 and b"localhost" in body
    # the event stream: the current state at once, then it ends with the browser
    status, headers, body = asgi(app, "GET", "/events", disconnect_after=0.3)
    assert status == 200 and _h(headers, "content-type")[0].startswith("text/event-stream")
    assert b"event: clock\n" in body and b"event: state\ndata: {" in body


def test_the_page_runs_no_inline_code_and_loads_nothing_from_elsewhere():
    files = web.static_files()
    assert {"index.html", "login.html", "app.js", "style.css", "favicon.svg"} <= set(files)
    for name, (content, _ctype) in files.items():
        text = content.decode()
        for url in re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"'<>)]*", text):
            assert url.startswith("http://www.w3.org/2000/svg"), f"{name} refers to {url}"
        if name.endswith(".html"):
            assert not re.search(r"\sstyle\s*=|\son\w+\s*=|javascript:", text, re.I), name
            for attrs, inner in re.findall(r"<script([^>]*)>(.*?)</script>", text, re.S):
                assert 'src="/static/' in attrs and not inner.strip(), name
            assert "<style" not in text
    js = files["app.js"][0].decode()
    assert "innerHTML" not in js and "eval(" not in js and "new Function" not in js and "document.write" not in js


def test_a_token_protects_everything_but_the_login_form_and_liveness():
    state, _r, _k = fake_state()
    access = web.Access(TOKEN, local_only=False)
    app = web.build_app(state, access)
    status, headers, _ = asgi(app, "GET", "/")
    assert status == 303 and _h(headers, "location") == ["/login"]
    for target in ("/api/state", "/api/strategies", "/events", "/healthz"):
        status, headers, body = asgi(app, "GET", target)
        assert status == 401 and b"Bearer" in body and _h(headers, "content-security-policy") == [web.CSP], target
    for target in ("/login", "/livez", "/static/app.js", "/static/style.css"):
        assert asgi(app, "GET", target)[0] == 200, target
    assert asgi(app, "GET", "/api/state", {"authorization": f"Bearer {TOKEN}"})[0] == 200
    status, _, body = asgi(app, "POST", "/login", {"content-type": "application/x-www-form-urlencoded"},
                           b"token=wrong-token-0123456789")
    assert status == 401 and b"not the token" in body and TOKEN.encode() not in body
    status, headers, _ = asgi(app, "POST", "/login", {"content-type": "application/x-www-form-urlencoded"},
                              f"token={TOKEN}".encode())
    assert status == 303 and _h(headers, "location") == ["/"]
    (cookie,) = _h(headers, "set-cookie")
    assert TOKEN not in cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    value = cookie.split(";")[0]
    assert asgi(app, "GET", "/api/state", {"cookie": value})[0] == 200
    assert asgi(app, "GET", "/", {"cookie": value})[0] == 200
    assert TOKEN.encode() not in asgi(app, "GET", "/api/state", {"cookie": value})[2]


def _post_streaming(app, headers: dict, chunk: bytes, most: int):
    """POST /login whose body never ends (``chunk`` after ``chunk``, up to ``most`` of them): the
    status, and how many chunks the app read before it answered."""
    async def run():
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/login", "raw_path": b"/login", "query_string": b"", "root_path": "",
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in
                             {"host": "127.0.0.1:8080", "content-type": "application/x-www-form-urlencoded",
                              **headers}.items()]}
        reads, messages = [0], []

        async def receive():
            reads[0] += 1
            if reads[0] > most:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message):
            messages.append(message)
        await asyncio.wait_for(app(scope, receive, send), 10)
        return messages[0]["status"] if messages else None, reads[0]
    return asyncio.run(run())


def test_a_login_body_is_capped_before_it_is_read():
    """POST /login is the one route that reads a body, and it may come from anybody: a body over
    4 KB is answered 413 at once from its Content-Length, or as soon as its streamed bytes pass the
    cap, never read to its end first."""
    state, _r, _k = fake_state()
    app = web.build_app(state, web.Access(TOKEN, local_only=False))
    assert web.MAX_LOGIN_BODY == 4096
    # an endless chunked body (no Content-Length): refused after the cap and one chunk more
    status, reads = _post_streaming(app, {"transfer-encoding": "chunked"}, b"token=" + b"x" * 1018, 100_000)
    assert (status, reads) == (413, 5), (status, reads)
    # a declared 400 MB: refused before a byte of it is read
    status, reads = _post_streaming(app, {"content-length": "400000000"}, b"x" * 65536, 100_000)
    assert (status, reads) == (413, 0), (status, reads)
    status, headers, body = asgi(app, "POST", "/login", {"content-type": "application/x-www-form-urlencoded"},
                                 b"token=" + b"y" * 5000)
    assert status == 413 and b"too large" in body and _h(headers, "content-security-policy") == [web.CSP]
    # a form within the cap still logs in
    status, _headers, _body = asgi(app, "POST", "/login", {"content-type": "application/x-www-form-urlencoded"},
                                   f"token={TOKEN}".encode())
    assert status == 303


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_huge_login_body_does_not_grow_the_page_server(tmp_path):
    """The real server (uvicorn): 200 MB sent at POST /login, with a Content-Length and chunked, is
    answered 413 and the server's resident memory stays within a few MB of where it was."""
    import socket
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cluster = Cluster("redis://127.0.0.1:1/0", tmp_path, period=PERIOD)   # no Redis needed to log in
    try:
        proc = cluster.start("web", "--port", "0", "--token-file", str(token_file), name="web")
        port = int(proc.wait_for_output(r"at http://127\.0\.0\.1:(\d+)/", 20).group(1))
        before = _rss_kb(proc.pid)
        for head in (b"Content-Length: 200000000\r\n", b"Transfer-Encoding: chunked\r\n"):
            chunked = b"chunked" in head
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/x-www-form-urlencoded\r\n" + head + b"\r\n")
                piece = b"x" * (1 << 20)
                if chunked:
                    piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
                sent = 0
                try:
                    for _ in range(200):           # 200 MB, unless the server stops taking them
                        sock.sendall(piece)
                        sent += 1
                except OSError:
                    pass                           # it answered and closed: what we want
                reply = b""
                try:
                    while b"\r\n\r\n" not in reply:
                        data = sock.recv(65536)
                        if not data:
                            break
                        reply += data
                except OSError:
                    pass
            assert reply.startswith(b"HTTP/1.1 413"), (head, sent, reply[:200])
        grown = _rss_kb(proc.pid) - before
        assert grown < 20_000, f"the page server grew by {grown} kB"
        assert proc.alive()
    finally:
        cluster.stop_all()

# -- the command line -----------------------------------------------------------------------------------
def test_web_command_refuses_unsafe_or_unclear_settings_with_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["web", "--bind", "0.0.0.0"], env={web.TOKEN_ENV: ""})
    assert r.exit_code == 2 and "--no-auth" in r.output and "Traceback" not in r.output
    (tmp_path / "short").write_text("abc\n")
    r = runner.invoke(cli, ["web", "--bind", "0.0.0.0", "--token-file", str(tmp_path / "short")])
    assert r.exit_code == 2 and "at least 16" in r.output
    r = runner.invoke(cli, ["web", "--token-file", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "cannot read token file" in r.output
    r = runner.invoke(cli, ["web", "--port", "70000"])
    assert r.exit_code == 2 and "--port" in r.output


def test_web_command_without_the_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)    # `import uvicorn` now fails as if not installed
    r = CliRunner().invoke(cli, ["web"])
    assert r.exit_code == 2 and "pip install 'redismedian[web]'" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


# -- deployment files -------------------------------------------------------------------------------------
def test_compose_web_service_runs_as_operator_with_a_token_and_a_liveness_check():
    from tests.prod.test_prod_deploy import envvars, parse_cli
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    svc = doc["services"]["web"]
    env = {k: str(v) for k, v in svc["environment"].items()}
    cmd, ctx = parse_cli(svc["command"], {**env, web.TOKEN_ENV: ""})
    assert svc["command"][0] == "web" and set(env) <= envvars(cmd) | {web.TOKEN_ENV}
    url = urlsplit(env["REDISMEDIAN_REDIS_URL"])
    assert url.username == "operator" and url.password is None and url.hostname == "redis"
    assert env["REDISMEDIAN_PASSWORD_FILE"] == "/run/secrets/operator"
    assert env["REDISMEDIAN_WEB_TOKEN_FILE"] == "/run/secrets/web-token"
    assert sorted(svc["secrets"]) == ["operator", "web-token"] and doc["secrets"]["web-token"]["file"] == "./secrets/web-token"
    # binds every interface inside its container, so a token is required (checked by the real rules)
    assert not web.is_loopback(ctx.params["bind"])
    assert svc["build"]["args"]["EXTRAS"] == "web" and svc["build"]["dockerfile"] == "deploy/Dockerfile"
    (published,) = svc["ports"]
    assert published.startswith("127.0.0.1:") and published.endswith(f":{ctx.params['port']}")
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and f"127.0.0.1:{ctx.params['port']}/livez" in test[3]
    assert svc["depends_on"] == {"redis": {"condition": "service_healthy"}} and svc["restart"] == "unless-stopped"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "ARG EXTRAS" in dockerfile and "pip install .${EXTRAS:+[$EXTRAS]}" in dockerfile
    # make-secrets.sh writes the token too
    assert "web-token" in (DEPLOY / "make-secrets.sh").read_text()


def test_systemd_web_unit_runs_as_operator_with_its_token():
    from tests.prod.test_prod_deploy import _env_file, _local_env_file, _unit, _values, envvars, parse_cli
    unit = _unit(DEPLOY / "systemd" / "redismedian-web.service")
    (start,) = _values(unit, "Service", "ExecStart")
    argv = shlex.split(start)
    assert argv[:2] == ["/opt/redismedian/bin/redismedian", "web"]
    files = _values(unit, "Service", "EnvironmentFile")
    own = _env_file(_local_env_file(files[-1]))
    shared = _env_file(_local_env_file(files[0]))
    creds = dict(v.partition(":")[::2] for v in _values(unit, "Service", "LoadCredential"))
    assert creds == {"redis-password": "/etc/redismedian/secrets/operator",
                     "web-token": "/etc/redismedian/secrets/web-token"}
    assert sorted(_values(unit, "Service", "Environment")) == [
        "REDISMEDIAN_PASSWORD_FILE=%d/redis-password", "REDISMEDIAN_WEB_TOKEN_FILE=%d/web-token"]
    cmd, ctx = parse_cli(argv[1:], {**shared, **own})
    assert set(own) <= envvars(cmd) and urlsplit(own["REDISMEDIAN_REDIS_URL"]).username == "operator"
    assert web.is_loopback(ctx.params["bind"]) and _values(unit, "Service", "Restart") == ["on-failure"]


# -- in a real browser -------------------------------------------------------------------------------------
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1800")


def chrome(profile: Path):
    """Debian's chromium through its chromedriver (never a browser a tool downloads)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("chromium and chromedriver are not installed: ./dev test installs them "
                    "(apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROME_FLAGS + (f"--user-data-dir={profile}",):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


class Page:
    """The running pipeline, its page server and a browser on the page."""

    def __init__(self, tmp: Path):
        self.redis = RedisServer(tmp / "redis").start()
        self.cluster = Cluster(self.redis.url, tmp, period=PERIOD)
        for g in ("g1", "g2", "g3"):
            self.cluster.generator(g)
        self.cluster.trader()
        self.x = self.cluster.strategy("X", "g1")
        self.y = self.cluster.strategy("Y", "g2,g3")
        self.server = self.cluster.start("web", "--port", "0", name="web")
        self.url = "http://127.0.0.1:%s/" % self.server.wait_for_output(r"at http://127\.0\.0\.1:(\d+)/", 20).group(1)
        self.browser = chrome(tmp / "chrome-profile")
        self.browser.set_page_load_timeout(20)
        self.browser.get(self.url)

    def js(self, script: str, *args):
        return self.browser.execute_script(script, *args)

    def text(self, element_id: str) -> str:
        return self.js("const e = document.getElementById(arguments[0]); return e ? e.textContent : null;", element_id)

    def attr(self, selector: str, name: str):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
                       selector, name)

    def wait(self, predicate, timeout: float, what: str):
        try:
            return wait_until(predicate, timeout, interval=0.05, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\npage text: {self.js('return document.body.innerText;')[:3000]}\n"
                                 f"--- web server ---\n{self.server.output()[-3000:]}") from None

    def close(self):
        try:
            self.browser.quit()
        finally:
            self.cluster.stop_all()
            self.redis.kill()


@pytest.fixture(scope="module")
def page():
    tmp = Path(tempfile.mkdtemp(prefix="redismedian-web-"))
    p = Page(tmp)
    try:
        yield p
    finally:
        p.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_page_shows_every_part_and_the_current_median(page):
    page.wait(lambda: page.attr("#headline", "data-level") == "ok", 30, "a published median on the page")
    for g in ("g1", "g2", "g3"):
        page.wait(lambda: page.attr(f'#generators-body tr[data-name="{g}"]', "data-state") == "ok", 10, f"generator {g}")
    page.js("const s = document.getElementById('filter'); s.value = 'all'; s.dispatchEvent(new Event('change'));")
    for s in ("X", "Y"):
        page.wait(lambda: page.attr(f'#strategies-body tr[data-name="{s}"]', "data-state") == "ok", 10, f"strategy {s}")
    page.wait(lambda: page.attr("#trader-row", "data-state") == "ok", 10, "the trader's row")
    # the median shown is the one the trader published for the epoch shown
    shown = page.js("return [document.getElementById('median-value').textContent, "
                    "document.getElementById('median-detail').textContent];")
    epoch = int(re.search(r"epoch (\d+)", shown[1]).group(1))
    entries = page.redis.client().xrange("t:medians", min="-", max="+")
    published = {int(f[b"epoch"]): float(f[b"median"]) for _id, f in entries}
    assert float(shown[0]) == published[epoch], (shown, published.get(epoch))
    assert "2 strategies" in shown[1]
    assert page.attr("#health", "data-healthy") == "yes" and page.text("health").startswith("OK: trader published")
    errors = [e for e in page.browser.get_log("browser") if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert not errors, errors


def test_a_new_median_appears_without_a_reload(page):
    page.wait(lambda: page.attr("#headline", "data-level") == "ok", 30, "a published median")
    page.js("window.__loaded_once = 'yes';")      # gone if the page reloaded
    first = int(page.attr("#medians-body tr", "data-epoch"))
    page.wait(lambda: int(page.attr("#medians-body tr", "data-epoch") or 0) >= first + 2, 4 * PERIOD + 5,
              "two newer medians in the list")
    page.wait(lambda: int(re.search(r"epoch (\d+)", page.text("median-detail")).group(1)) > first, 5,
              "a newer median in the headline")
    assert page.js("return window.__loaded_once;") == "yes"
    assert page.js("return performance.getEntriesByType('navigation').length;") == 1


# Every box on the page, judged by the browser: the page never scrolls sideways, no table is wider
# than its card, no cell's content overflows the cell, and a process id in the "who" column breaks
# only after its separators (each piece between them sits on one line).
OVERFLOWS = """
const bad = [];
const W = document.documentElement.clientWidth;
const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "") +
  " '" + e.textContent.slice(0, 40) + "'";
if (document.documentElement.scrollWidth > W + 1) bad.push("the page scrolls sideways: " +
  document.documentElement.scrollWidth + " > " + W);
for (const e of document.querySelectorAll("main .card, main th, main td")) {
  if (!e.getClientRects().length) continue;                       // not displayed (a phone hides thead)
  if (e.scrollWidth > e.clientWidth + 1) bad.push(name(e) + ": content " + e.scrollWidth + " px in a box of " + e.clientWidth);
  const r = e.getBoundingClientRect();
  if (r.right > W + 1 || r.left < -1) bad.push(name(e) + ": outside the window (" + r.left + ".." + r.right + " of " + W + ")");
}
for (const t of document.querySelectorAll("main table")) {
  const card = t.closest(".card").getBoundingClientRect(), r = t.getBoundingClientRect();
  if (r.right > card.right + 1 || r.left < card.left - 1) bad.push(name(t) + ": wider than its card");
}
for (const td of document.querySelectorAll("main td.who")) {
  for (const n of td.childNodes) {
    if (n.nodeType !== Node.TEXT_NODE) continue;
    for (const m of n.textContent.matchAll(/\\S+/g)) {               // each word of each piece
      const range = document.createRange();
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      const tops = new Set(Array.from(range.getClientRects()).map((q) => Math.round(q.top)));
      if (tops.size > 1) bad.push("who '" + td.textContent + "': '" + m[0] + "' broken over " + tops.size + " lines");
    }
  }
}
return bad;
"""


@pytest.mark.parametrize("width,height", [(1280, 800), (1920, 1080), (390, 844)])
def test_no_cell_overflows_its_box_at_1280_1920_and_a_phone(page, width, height):
    page.wait(lambda: page.attr("#trader-row", "data-state") == "ok", 30, "the trader publishing")
    page.browser.set_window_size(width, height)
    try:
        page.wait(lambda: abs(page.js("return window.innerWidth;") - width) <= 20, 10, f"a {width} px window")
        page.wait(lambda: page.js("return document.querySelectorAll('#strategies-body tr[data-name]').length;") >= 2
                  and page.js("return document.querySelectorAll('#trader-body tr.process').length;") >= 1, 10,
                  "the strategies and the trader processes")
        page.wait(lambda: page.js("return document.querySelectorAll('#medians-body tr[data-epoch]').length;") >= 2,
                  10, "medians in the list")
        bad = page.js(OVERFLOWS)
        assert not bad, f"at {width}x{height}: " + "\n".join(bad)
        # the headers are all there and on the screen, "reason" last
        heads = page.js("return Array.from(document.querySelectorAll('#trader-table thead th'))"
                        ".map((th) => [th.textContent, th.getClientRects().length > 0]);")
        assert [h for h, _shown in heads][-1] == "reason"
        if width >= 1280:
            assert all(shown for _h, shown in heads), heads
        else:   # a phone: each cell says which column it is
            labels = page.js("return Array.from(document.querySelectorAll('#trader-row td'))"
                             ".map((td) => getComputedStyle(td, '::before').content);")
            assert labels[0] == '"part: "' and labels[-1] == '"reason: "', labels
    finally:
        page.browser.set_window_size(1400, 1800)


def test_killing_a_strategy_turns_the_trader_row_to_error_naming_it_within_two_periods(page):
    page.wait(lambda: page.attr("#trader-row", "data-state") == "ok", 30, "the trader publishing")
    # Y dies just before a period boundary: from the next epoch on it reports nothing.  (Killed just
    # after it reported, the trader's error would come up to 1.8 periods later: the trader waits 80% of
    # a period for every decision; the page's share of the two periods is what this test measures.)
    client = page.redis.client()
    sec, usec = client.time()
    now_ms = int(sec) * 1000 + int(usec) // 1000
    period_ms = int(PERIOD * 1000)
    to_boundary = (period_ms - now_ms % period_ms) / 1000
    time.sleep(to_boundary - 0.03 if to_boundary > 0.1 else to_boundary + PERIOD - 0.03)
    page.y.kill()
    killed = time.monotonic()

    def error_naming_y():
        row = page.js("const r = document.getElementById('trader-row'); return r && "
                      "[r.dataset.state, r.querySelector('.reason').textContent];")
        return row and row[0] == "error" and re.search(r"\bY: ", row[1])
    page.wait(error_naming_y, 10, "the trader's row in error naming Y")
    took = time.monotonic() - killed
    # Two periods, plus what looking at the browser takes (polled every 50 ms, each look a WebDriver call).
    assert took <= 2 * PERIOD + 0.15, f"the page showed the error {took:.2f}s after the kill"
    assert page.attr("#headline", "data-level") == "error" and "Y: " in page.text("median-reason")
    page.js("const s = document.getElementById('filter'); s.value = 'problems'; s.dispatchEvent(new Event('change'));")
    page.wait(lambda: page.attr('#strategies-body tr[data-name="Y"]', "data-state") in ("down", "absent"), 10,
              "Y in the problem list")


def test_a_few_strategies_are_all_listed_problems_first_without_choosing_a_filter(page):
    """With up to 50 strategies the Strategies panel lists them all, problems first (Y killed, here
    or by the test above), on a page freshly opened: never "problems (0)" over an empty table."""
    if page.y.alive():
        page.y.kill()
    page.browser.refresh()
    rows_js = ("return Array.from(document.querySelectorAll('#strategies-body tr[data-name]'))"
               ".map((tr) => [tr.dataset.name, tr.dataset.state]);")
    page.wait(lambda: [(n, s != "ok") for n, s in page.js(rows_js)] == [("Y", True), ("X", False)], 15,
              "both strategies listed, Y (a problem) first")
    assert page.js("return document.getElementById('filter').value;") == "all"
    assert page.text("page-info") == "page 1 of 1 · 2 strategies"
    # the filter still works: the problems alone
    page.js("const s = document.getElementById('filter'); s.value = 'problems'; s.dispatchEvent(new Event('change'));")
    page.wait(lambda: page.js("return Array.from(document.querySelectorAll('#strategies-body tr[data-name]'))"
                              ".map((tr) => tr.dataset.name).join(',');") == "Y", 10, "Y alone among the problems")


def test_redis_stopped_the_page_says_so_and_recovers(page):
    page.wait(lambda: page.attr("#headline", "data-level") in ("ok", "error"), 30, "a live view")
    page.redis.kill()
    page.wait(lambda: page.js("return !document.getElementById('banner-redis').hidden;"), 10, "the Redis banner")
    assert "Redis unreachable" in page.text("banner-redis") and page.attr("#headline", "data-level") == "unknown"
    assert page.text("median-value") == "unknown"
    page.redis.start()
    page.wait(lambda: page.js("return document.getElementById('banner-redis').hidden;"), 20, "the banner to go")
    page.wait(lambda: page.attr("#headline", "data-level") in ("ok", "error", "warn"), 20, "a live view again")
    status = json.loads(page.js("return JSON.stringify({v: document.getElementById('where').textContent});"))
    assert "namespace t" in status["v"]


def test_sigterm_stops_the_page_server_at_once_with_a_page_open(page):
    page.wait(lambda: page.js("return document.getElementById('banner-conn').hidden;"), 10, "a connected page")
    page.server.signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert page.server.wait(5) == 0
    assert time.monotonic() - stopped < 2.5, "open event streams must not hold the shutdown"
    page.wait(lambda: not page.js("return document.getElementById('banner-conn').hidden;"), 45,
              "the page saying it lost the page server")


def test_the_page_never_shows_a_password(tmp_path):
    import urllib.error
    import urllib.request
    secret = "s3cret-in-the-url-7731"
    server = RedisServer(tmp_path / "redis", extra=["--requirepass", secret])
    server.client = lambda **kw: redis.Redis(host="127.0.0.1", port=server.port, password=secret, **kw)
    server.start()
    cluster = Cluster(f"redis://:{secret}@127.0.0.1:{server.port}/0", tmp_path, period=PERIOD)
    try:
        proc = cluster.start("web", "--port", "0", name="web")
        port = proc.wait_for_output(r"at http://127\.0\.0\.1:(\d+)/", 20).group(1)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: json.loads(urllib.request.urlopen(base + "/api/state", timeout=5).read())["gathers"], 10,
                   what="a first read")
        seen = "".join(urllib.request.urlopen(base + path, timeout=5).read().decode()
                       for path in ("/", "/api/state", "/api/strategies?filter=all", "/static/app.js"))
        try:
            seen += urllib.request.urlopen(base + "/healthz", timeout=5).read().decode()
        except urllib.error.HTTPError as e:   # 503: nothing runs in that namespace
            seen += e.read().decode()
        assert f"redis://:***@127.0.0.1:{server.port}/0" in seen and secret not in seen
        assert secret not in proc.output()
    finally:
        cluster.stop_all()
        server.kill()


def test_the_operator_user_has_every_right_the_page_needs(tmp_path):
    """The reader's every command (gather, history, XREAD) as `operator` on the project's ACL, and as
    the stricter `web` user docs/operations.md gives: nothing denied."""
    from redismedian.connection import make_client
    from tests.prod_support import acl_server
    server, pw = acl_server(tmp_path)
    try:
        admin = server.client()
        doc = (ROOT / "docs" / "operations.md").read_text()
        rules = re.search(r"^user web on (.*)$", doc, re.M).group(1).replace("NS:", "redismedian:")
        admin.execute_command("ACL", "SETUSER", "web", "on", ">web-password-0123456789", *rules.split())
        k = Keys("redismedian")
        e = seed(admin, k)     # a live deployment: every key `status` reads exists
        for user, password in (("operator", pw["operator"]), ("web", "web-password-0123456789")):
            url = server.url_for(user, password)
            state = web.WebState(f"redis://{user}@127.0.0.1/0", "redismedian")
            reader = web.Reader(state, lambda: make_client(url, 5.0, client_name="redismedian-web"), k, block_ms=50)
            reader.step()
            admin.xadd(k.medians, {"epoch": e, "median": "0.5", "count": 2, "members": "X,Y", "ts": 1, "fence": 3})
            reader.step()
            reader.next_gather = 0
            reader.step()
            assert state.redis_ok and state.gathers >= 2 and state.medians[-1].epoch == e, user
            assert state.view()["headline"]["level"] == "ok", (user, state.view()["headline"])
            assert admin.execute_command("ACL", "LOG") == [], user
    finally:
        server.kill()
