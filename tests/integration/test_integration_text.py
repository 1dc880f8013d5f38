"""Text from another process is data (issue 21, item 4): the attack reproduced against the real
processes.  A strategy writes into its own decision key (its credentials allow that) a reason that
holds a newline, a fake timestamp, ``redismedian.trader: median: 9.99`` and a terminal escape; the
trader's log gains no line that reads like a median, and no ESC byte; NS:trader, NS:events, status,
check and follow show the reason on one line, escaped."""
import json
import re
import signal
import threading

from tests.integ_support import medians, server_epoch, trader_hash, wait_medians, wait_registered
from tests.support import wait_until

FORGED = "2026-12-04 05:00:01 INFO    redismedian.trader: median: 9.99"
ATTACK = f"late\n{FORGED}\x1b[31m red\u202e"
ESCAPED = f"late\\n{FORGED}\\x1b[31m red\\u202e"     # what every output shows instead
MEDIAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO +redismedian\.trader: median: (\S+)$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) +redismedian\.\w+: ")


def _inert(text: str) -> None:
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert not any(line.startswith(FORGED) for line in text.splitlines()), "a forged line"


def test_a_strategys_reason_forges_no_log_line_and_stays_one_escaped_line_everywhere(cluster, redis_server):
    p = cluster.period
    r = redis_server.client(decode_responses=True)
    cluster.generator("g1", "tests.plugins:sig_a")
    trader = cluster.trader()
    x = cluster.strategy("X", "g1")
    e0 = wait_registered(r, ["X"], p)
    wait_medians(r, 2, timeout=20 * p, after_epoch=e0)

    # X's credentials write what they like into X's own keys: the process stands still, and its
    # lease and decision key say what the attacker wants, every epoch, until the end of the test.
    x.signal(signal.SIGSTOP)
    stop = threading.Event()

    def attack():
        w = redis_server.client(decode_responses=True)
        while not stop.wait(0.01):
            w.set("t:decision:X", f"{server_epoch(w, p)}|!error|{ATTACK}", px=60_000)
    writer = threading.Thread(target=attack, daemon=True)
    try:
        r.pexpire("t:lease:strategy:X", 120_000)
        attacked = server_epoch(r, p) + 1
        writer.start()
        errors = re.compile(r"error in epoch (\d+): ")
        wait_until(lambda: len([m for m in errors.finditer(trader.output()) if int(m.group(1)) >= attacked]) >= 2,
                   30 * p, what="two epochs settled in error with the forged reason")
        follow = cluster.start("follow", "--since", str(attacked), name="follow")
        follow.wait_for_output(r"not published: trader in error", 20 * p)

        # The trader's log: the forged text only inside its own error lines, escaped; the only lines
        # that say "median:" are the medians it published; no terminal escape.
        out = trader.output()
        _inert(out)
        published = {m["median"] for m in medians(r)}
        assert published
        for line in out.splitlines():
            if "median: 9.99" in line:
                assert LOG_LINE.match(line) and "error in epoch" in line and ESCAPED in line, line
            elif "redismedian.trader: median:" in line:
                m = MEDIAN_LINE.match(line)
                assert m and m.group(1) in published, line

        # NS:trader and NS:events: what the trader writes is already escaped
        t = trader_hash(r)
        assert t["state"] == "error" and ESCAPED in t["reason"] and "\n" not in t["reason"], t
        events = [f for _id, f in r.xrange("t:events") if f.get("status") == "error"]
        assert events and all("\n" not in f["reason"] and "\x1b" not in f["reason"] for f in events)
        assert any(ESCAPED in f["reason"] for f in events)

        # status, status --json, check (one line), check strategy X, follow
        st = cluster.cli("status")
        assert st.returncode == 0, st.stderr
        _inert(st.stdout)
        assert any(ESCAPED in line for line in st.stdout.splitlines() if "reason:" in line), st.stdout
        data = json.loads(cluster.cli("status", "--json").stdout)
        assert ESCAPED in data["trader"]["reason"]
        assert [s["reason"] for s in data["strategies"] if s["name"] == "X"] == [ESCAPED]
        for args in (("check",), ("check", "trader"), ("check", "strategy", "X")):
            res = cluster.cli(*args)
            assert res.returncode == 1 and res.stdout.count("\n") == 1, (args, res.stdout, res.stderr)
            assert res.stdout.startswith("UNHEALTHY: ") and ESCAPED in res.stdout, (args, res.stdout)
            _inert(res.stdout)
        follow.stop()
        shown = follow.log_path.read_text(errors="replace")
        _inert(shown)
        assert any(ESCAPED in line for line in shown.splitlines() if "not published" in line), shown
    finally:
        stop.set()
        x.signal(signal.SIGCONT)


def test_a_hand_written_trader_state_reaches_the_page_and_healthz_escaped():
    # Without the ACL anybody may write NS:trader: every reader escapes what it shows, not only the
    # trader what it writes.
    import fakeredis

    from redismedian import web
    from redismedian.keys import Keys
    from tests.integration.test_web import asgi, seed
    r = fakeredis.FakeRedis()
    k = Keys("t")
    seed(r, k, trader_state="error", down=("Y",))
    r.hset(k.trader, mapping={"reason": ATTACK, "last_missed_reason": ATTACK, "missed": 1, "last_missed": 1})
    r.set(k.lease("trader"), f"h:1:a\n{FORGED}|3", px=750)
    state = web.WebState("redis://127.0.0.1:6379/0", "t")
    web.Reader(state, lambda: r, k, block_ms=5).step()
    app = web.build_app(state, web.Access(None, local_only=True))
    status, _, body = asgi(app, "GET", "/healthz")
    text = body.decode()
    assert status == 503 and text.count("\n") == 1 and ESCAPED in text, text
    _inert(text)
    status, _, body = asgi(app, "GET", "/api/state")
    view = json.loads(body)
    assert view["headline"]["reason"] == ESCAPED and view["trader"]["leader"] == f"h:1:a\\n{FORGED}|3"

    def strings(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)
        elif isinstance(x, str):
            yield x
    for s in strings(view):
        if s is not view["chart"]["svg"]:
            assert "\n" not in s, s
        _inert(s)
