"""Benchmark 6: what the page server (``redismedian web``) costs Redis per period, at N registered
strategies, and that this does not grow with the number of browsers.

**A. The reader's work per period, beside a floor.**  N simulated strategies (:mod:`benchmarks.loadgen`)
report every period and the real :class:`redismedian.trader.Trader` step publishes their median, both
driven from this process as in benchmark 1, so that nothing else touches Redis afterwards.  Then the
page server's own reader (:class:`redismedian.web.Reader`, the code ``redismedian web`` runs) does what
it does once per period: one ``XREAD`` of ``NS:medians`` and ``NS:events`` (it returns the new median),
the gather (``status``'s :func:`redismedian.status.gather`: every generator, strategy and trader with
its state and reason), and the view every browser is sent, encoded once.  Timed from the client (wall
ms) and inside Redis (``usec`` of every command over that window in ``INFO commandstats``).  **The
floor**, in the same period right after: one pipeline of ``MGET`` of the N decision keys and ``MGET``
of the N lease keys, the least a reader that shows every strategy's report and whether a process holds
its name pays.

**B. One reader however many browsers.**  The real ``redismedian web`` process on the same data,
with 1 and then K browsers connected: each keeps an event stream open (``/events``) and fetches the
first page of the strategy list on every update, as the page does.  Nothing else touches Redis then
(every strategy's decision and lease are written once, with a long expiry, before), so ``INFO
commandstats`` counts the page server alone: per period, its gathers (one ``SMEMBERS`` each), its
commands and their time inside Redis, and the updates each browser got.  (A counting proxy, as in
benchmark 3, cannot carry the 40,000 commands of one gather at 10k strategies in time.)
"""
from __future__ import annotations

import http.client
import math
import re
import socket
import statistics
import threading
import time
from pathlib import Path

from redismedian import web
from redismedian.common import Settings
from redismedian.connection import RedisSettings, make_client
from redismedian.keys import DEFAULT_NAMESPACE
from redismedian.trader import Trader

from .harness import BenchClock, Topology
from .loadgen import LoadGenerator, strategy_names
from .trader_cost import PRELOADED, _summary, choose_period_ms, commandstats


def _usec(after: dict, before: dict) -> dict[str, int]:
    """Server time (µs) per command between two INFO commandstats (the INFO calls themselves left out)."""
    out = {}
    for cmd in set(after) | set(before):
        if cmd == "info":
            continue
        d = int(after.get(cmd, {}).get("usec", 0)) - int(before.get(cmd, {}).get("usec", 0))
        if d:
            out[cmd] = d
    return out


def _calls(after: dict, before: dict) -> dict[str, int]:
    out = {}
    for cmd in set(after) | set(before):
        if cmd == "info":
            continue
        d = int(after.get(cmd, {}).get("calls", 0)) - int(before.get(cmd, {}).get("calls", 0))
        if d:
            out[cmd] = d
    return out


class Browser(threading.Thread):
    """One open page: an event stream, and the strategy list fetched again on every update (on a
    keep-alive connection that it opens again when the server closed it, as a browser does)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.updates = 0
        self.fetched = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def fetch(self, api: http.client.HTTPConnection | None) -> http.client.HTTPConnection:
        for attempt in (1, 2):
            api = api or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                api.request("GET", "/api/strategies?filter=problems&page=0")
                resp = api.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"/api/strategies answered {resp.status}")
                self.fetched += 1
                return api
            except (http.client.HTTPException, ConnectionError):
                api.close()
                api = None
                if attempt == 2:
                    raise
        return api

    def run(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            api = None
            tail = b""
            while not self.stop.is_set():
                try:
                    data = sock.recv(1 << 16)
                except socket.timeout:
                    continue
                if not data:
                    raise ConnectionError("the page server closed the event stream")
                text = tail + data
                n = text.count(b"event: state\n")
                tail = text[-16:]
                if n:
                    self.updates += n
                    api = self.fetch(api)
            sock.close()
            if api:
                api.close()
        except BaseException as e:  # noqa: BLE001 - reported by the benchmark
            self.error = e


GATHER_MS_PER_STRATEGY = 0.2   # what status's gather costs the client per strategy here (10k: about 2 s)


def run(url: str, admin, n: int, periods: int, browsers: int, rate: float, logdir: Path, min_period_s: float = 1.0,
        log=print) -> dict:
    # Long enough for the reports, the trader and the page's reader to fit in one period, one after the other.
    period_ms = choose_period_ms(n, rate, min_period_s) + int(math.ceil(n * GATHER_MS_PER_STRATEGY / 100) * 100)
    ns = DEFAULT_NAMESPACE
    names = strategy_names(n)
    admin.flushall()
    for source in PRELOADED:
        admin.script_load(source)
    clock = BenchClock(admin)
    gen = LoadGenerator(url, ns, period_ms, names).start()
    log(f"  N={n}: period {period_ms / 1000:g}s, registering {n} strategies ...")
    gen.preregister()
    gen.submit(clock.now_ms() // period_ms, starting=True)
    trader = Trader(Settings(RedisSettings(url, socket_timeout=60.0), namespace=ns, period_ms=period_ms),
                    client=make_client(url, 60.0, client_name="redismedian-trader"))
    trader.clock.sync(trader.client)
    keys = trader.keys
    reader_client = make_client(url, 60.0, client_name="redismedian-web")
    state = web.WebState(url, ns)
    reader = web.Reader(state, lambda: reader_client, keys)
    reader.client = reader_client
    floor_client = make_client(url, 60.0, client_name="bench-floor")
    decision_keys = [keys.decision(x) for x in names]
    lease_keys = [keys.lease("strategy", x) for x in names]
    rows: dict[str, list] = {k: [] for k in ("web_ms", "web_server_ms", "xread_ms", "gather_ms", "encode_ms",
                                              "floor_ms", "floor_server_ms", "view_bytes", "entries")}
    usec_by_command: list[dict] = []
    calls_by_command: list[dict] = []
    skipped = []
    topo = None
    clients: list[Browser] = []
    browser_rows = []

    def one_period(measure: bool) -> None:
        plan = gen.plan()
        epoch = clock.next_boundary(period_ms, offset_ms=2)
        sub = gen.submit(epoch, plan=plan)
        if sub.submitted != n:
            skipped.append({"epoch": epoch, "why": f"load generator: {sub.submitted}/{n} in time {sub.refused}"})
            return
        trader.step(epoch)
        if not measure:
            return
        s0 = commandstats(admin)
        t0 = time.perf_counter()
        entries = reader.read_streams(1)
        t1 = time.perf_counter()
        reader.gather()
        t2 = time.perf_counter()
        _version, body = state.view_json()
        t3 = time.perf_counter()
        s1 = commandstats(admin)
        pipe = floor_client.pipeline(transaction=False)
        pipe.mget(decision_keys)
        pipe.mget(lease_keys)
        t4 = time.perf_counter()
        pipe.execute()
        t5 = time.perf_counter()
        s2 = commandstats(admin)
        if state.view()["headline"]["epoch"] != epoch or state.view()["headline"]["level"] != "ok":
            skipped.append({"epoch": epoch, "why": f"the page did not show the epoch's median: "
                                                   f"{state.view()['headline']}"})
            return
        web_usec = _usec(s1, s0)
        rows["web_ms"].append((t3 - t0) * 1000)
        rows["web_server_ms"].append(sum(web_usec.values()) / 1000)
        rows["xread_ms"].append((t1 - t0) * 1000)
        rows["gather_ms"].append((t2 - t1) * 1000)
        rows["encode_ms"].append((t3 - t2) * 1000)
        rows["floor_ms"].append((t5 - t4) * 1000)
        rows["floor_server_ms"].append(sum(_usec(s2, s1).values()) / 1000)
        rows["view_bytes"].append(len(body))
        rows["entries"].append(entries)
        usec_by_command.append(web_usec)
        calls_by_command.append(_calls(s1, s0))

    try:
        one_period(False)                  # warm-up: the trader takes the lead
        reader.gather()
        reader.load_history()
        for _ in range(periods):
            one_period(True)
        if not rows["web_ms"]:
            raise RuntimeError(f"N={n}: no period could be measured: {skipped}")

        # B: the real server on the same data, with 1 and then `browsers` pages open; nothing else writes
        last = clock.now_ms() // period_ms
        pipe = admin.pipeline(transaction=False)
        for _name, dk, lk in zip(names, decision_keys, lease_keys):
            pipe.set(dk, f"{last}|0.5", px=3_600_000)
            pipe.set(lk, f"bench:1:frozen|{clock.now_ms()}", px=3_600_000)
        pipe.execute()
        topo = Topology(url, ns, period_ms / 1000, Path(logdir) / f"web-{n}")
        server = topo.start("web", "web", "--port", "0", "--log-level", "INFO")
        port = _wait_port(server, 30)
        for count in (1, browsers):
            while len(clients) < count:
                clients.append(Browser(port))
                clients[-1].start()
            time.sleep(period_ms / 1000 * 1.5)   # every page connected and got its first update
            s0, t0 = commandstats(admin), time.monotonic()
            updates0 = [c.updates for c in clients]
            time.sleep(periods * period_ms / 1000)
            s1, t1 = commandstats(admin), time.monotonic()
            topo.check_alive()
            errors = [repr(c.error) for c in clients if c.error]
            if errors:
                raise RuntimeError(f"a browser failed: {errors[0]}")
            span = (t1 - t0) / (period_ms / 1000)      # periods counted
            calls, usec = _calls(s1, s0), _usec(s1, s0)
            per_client = [(c.updates - u) / span for c, u in zip(clients, updates0)]
            browser_rows.append({
                "browsers": count, "periods": span,
                "gathers_per_period": calls.get("smembers", 0) / span,
                "commands_per_period": sum(calls.values()) / span,
                "server_ms_per_period": sum(usec.values()) / 1000 / span,
                "commands_by_name_per_period": {k: v / span for k, v in sorted(calls.items())},
                "updates_per_browser_per_period": statistics.mean(per_client),
                "min_updates_per_browser_per_period": min(per_client),
            })
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(5)
        if topo:
            topo.stop()
        gen.close()
        trader.client.close()
        reader_client.close()
        floor_client.close()
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    commands = sorted({c for d in calls_by_command for c in d})
    out = {
        "n": n, "period_s": period_ms / 1000, "periods": len(rows["web_ms"]),
        **{k: _summary(rows[k]) for k in ("web_ms", "web_server_ms", "xread_ms", "gather_ms", "encode_ms",
                                          "floor_ms", "floor_server_ms")},
        "server_ratio_to_floor": med["web_server_ms"] / med["floor_server_ms"],
        "wall_ratio_to_floor": med["web_ms"] / med["floor_ms"],
        "view_bytes": int(med["view_bytes"]),
        "calls_per_period": {c: statistics.median([d.get(c, 0) for d in calls_by_command]) for c in commands},
        "server_ms_by_command": {c: statistics.median([d.get(c, 0) for d in usec_by_command]) / 1000 for c in commands},
        "browsers": browser_rows,
        "skipped": skipped,
    }
    b = browser_rows
    log(f"  N={n}: the page's reader {med['web_ms']:.1f} ms/period (inside Redis {med['web_server_ms']:.1f} ms; "
        f"gather {med['gather_ms']:.1f}, XREAD {med['xread_ms']:.2f}, encoding the view {med['encode_ms']:.2f} ms, "
        f"{out['view_bytes']:,} bytes); floor {med['floor_ms']:.1f} ms (inside Redis {med['floor_server_ms']:.1f} ms); "
        + "; ".join(f"{r['browsers']} browser(s): {r['gathers_per_period']:.2f} gathers, {r['commands_per_period']:.0f} "
                    f"commands, {r['server_ms_per_period']:.1f} ms inside Redis per period, "
                    f"{r['updates_per_browser_per_period']:.2f} updates per browser per period" for r in b))
    return out


def _wait_port(component, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"at http://127\.0\.0\.1:(\d+)/", component.tail(20_000))
        if m:
            return int(m.group(1))
        if not component.alive():
            raise RuntimeError(f"redismedian web exited:\n{component.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"redismedian web did not say where it serves:\n{component.tail()}")
