"""Text from another process is data: redismedian.text.shown, the one function every string read from
Redis goes through before a log line, NS:trader, NS:events, status, check, follow or the page."""
import contextlib
import io
import json
import logging
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redismedian import logs
from redismedian.following import parse_event
from redismedian.ops import check_component, check_deployment
from redismedian.status import gather, render
from redismedian.text import ELLIPSIS, SHORT, shown
from redismedian.web import chart_svg

# What must never come out: C0, DEL, C1, the line and paragraph separators, bidi embeddings,
# overrides, isolates and marks, and the other format characters people meet (zero-width ones,
# soft hyphen, BOM, Arabic letter mark, tags).
FORBIDDEN = ({chr(c) for c in range(0x20)} | {"\x7f"} | {chr(c) for c in range(0x80, 0xA0)}
             | {"\u2028", "\u2029"} | {chr(c) for c in range(0x202A, 0x202F)} | {chr(c) for c in range(0x2066, 0x206A)}
             | {"\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u00ad", "\ufeff", "\u061c", "\U000e0041"})


def bad(ch: str) -> bool:
    """A character no output may hold: the list above, and every control, format, separator,
    surrogate, private-use or unassigned code point."""
    return ch in FORBIDDEN or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def test_the_forbidden_list_is_what_the_issue_names():
    assert all(bad(c) for c in FORBIDDEN)
    for ch in FORBIDDEN:
        out = shown(f"a{ch}b")
        assert ch not in out and out.startswith("a") and out.endswith("b") and "\\" in out


def test_the_forged_log_line_comes_out_on_one_line_and_inert():
    attack = "late\n2026-12-04 05:00:01 INFO    redismedian.trader: median: 9.99\x1b[31m red \u202eevil"
    out = shown(attack)
    assert out == ("late\\n2026-12-04 05:00:01 INFO    redismedian.trader: median: 9.99\\x1b[31m red "
                   "\\u202eevil")
    assert "\n" not in out and "\x1b" not in out and "\u202e" not in out


def test_escapes_look_like_pythons():
    assert shown("\t\r\n\x00\x7f\x85\u2028\U000e0041") == "\\t\\r\\n\\x00\\x7f\\x85\\u2028\\U000e0041"


def test_bounded_with_an_ellipsis_never_inside_an_escape():
    assert shown("x" * 500) == "x" * (SHORT - 3) + ELLIPSIS
    assert len(shown("x" * 10_000_000)) == SHORT
    out = shown("ab\x1bcd", limit=8)             # "ab\x1bcd" escaped is 8 characters: fits
    assert out == "ab\\x1bcd"
    out = shown("ab\x1bcde", limit=8)            # 9: cut before the escape, not through it
    assert out == "ab" + ELLIPSIS
    assert shown("abc", limit=None) == "abc" and shown("a\nb" * 10_000, limit=None).count("\\n") == 10_000


def test_bytes_none_and_objects():
    assert shown(b"ok\xff\n") == "ok\ufffd\\n"
    assert shown(None) == ""
    assert shown(12.5) == "12.5"

    class Broken:
        def __str__(self):
            raise RuntimeError("no")
    assert shown(Broken()) == "<Broken object>"


@settings(max_examples=600, deadline=None)
@given(st.text(), st.integers(min_value=3, max_value=400))
@example("\n" * 300, 200)
@example("x" * 199 + "\x1b", 200)
@example("\ud800\udfff", 200)
def test_property_no_forbidden_character_bounded_and_plain_text_unchanged(text, limit):
    out = shown(text, limit)
    assert not any(bad(ch) for ch in out)
    assert "\n" not in out and len(out) <= limit
    out.encode("utf-8")                 # no lone surrogate (it would raise): every log stream can write it
    if text.isprintable() and len(text) <= limit:
        assert out == text
    else:
        assert out != text
    if out.endswith(ELLIPSIS) and not text.endswith(ELLIPSIS):
        assert len(out) > limit - 3 - 10   # cut only when it had to be (an escape is at most 10 long)
    assert shown(out, limit) == out     # escaping again changes nothing (writer and reader both escape)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")),
               max_size=SHORT))
def test_property_printable_text_within_the_limit_is_unchanged(text):
    assert shown(text) == text


# -- the attack of issue 21, item 4, against the trader (fakeredis), in both log formats ----------------
FORGED = "2026-12-04 05:00:01 INFO    redismedian.trader: median: 9.99"
ATTACK = f"late\n{FORGED}\x1b[31m red\u202e\u2028next"
ESCAPED = f"late\\n{FORGED}\\x1b[31m red\\u202e\\u2028next"


@contextlib.contextmanager
def log_lines(fmt: str):
    """The lines the ``redismedian`` loggers write through logs.py's formatter of ``fmt``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter({"component": "trader"}) if fmt == "json" else logs.TextFormatter())
    logger = logging.getLogger("redismedian")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    lines: list[str] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines.extend(stream.getvalue().splitlines())


def inert(text: str) -> None:
    assert not any(bad(ch) for ch in text.replace("\n", "")), repr(text)
    assert not any(line.startswith(FORGED) for line in text.splitlines())


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_strategys_reason_forges_no_trader_log_line(env, caplog, fmt):
    caplog.set_level(logging.DEBUG)
    env.r.sadd(env.k.strategies, "X", "Y")
    env.r.set(env.k.lease("strategy", "X"), "host:1:ab|1", px=100 * env.period_ms)   # alive: its own words are its reason
    t = env.trader()
    with log_lines(fmt) as lines:
        env.decide("X", 1.5)
        env.decide("Y", 2.5)
        t.step(env.E)                                 # a real median first
        env.at(env.E + 1, 0.9)
        env.decide("X", f"!error|{ATTACK}", epoch=env.E + 1)
        env.decide("Y", 2.5, epoch=env.E + 1)
        t.step(env.E + 1)
    assert [m["median"] for m in env.medians()] == ["2.0"]
    assert lines
    for line in lines:
        inert(line)
        message = json.loads(line)["message"] if fmt == "json" else line.split(": ", 1)[1]
        if "median" in message and "error in epoch" not in message:
            assert message == "median: 2.0", line
    (error,) = [line for line in lines if "error in epoch" in line]
    assert ESCAPED in (json.loads(error)["message"] if fmt == "json" else error)
    # caplog sees the records themselves: the message is escaped before it is logged
    records = [r.getMessage() for r in caplog.records if r.name == "redismedian.trader"]
    assert [m for m in records if m.startswith("median:")] == ["median: 2.0"]
    assert all("\n" not in m and "\x1b" not in m for m in records)

    # what the trader wrote, and every reader of it
    reason = env.hash(env.k.trader)["reason"]
    assert reason == f"1 of 2 strategies missing: X: {ESCAPED}"
    (event,) = [f for _id, f in env.r.xrange(env.k.events)]
    assert event[b"reason"].decode() == reason
    data = gather(env.r, env.k)
    assert data["trader"]["reason"] == reason
    assert [s["reason"] for s in data["strategies"] if s["name"] == "X"] == [ESCAPED]
    view = render(data, "redis://x")
    inert(view)
    assert f"reason: {reason}" in view.splitlines()[3]
    health = check_deployment(data).text()
    inert(health)
    assert "\n" not in health and ESCAPED in health
    for kind, name in (("trader", None), ("strategy", "X")):
        text = check_component(env.r, env.k, kind, name).text()
        assert "\n" not in text and ESCAPED in text
        inert(text)
    (_id, fields), = env.r.xrange(env.k.events)
    ev = parse_event(_id, fields)
    assert ev.reason == reason
    # the page: its chart's gap band says why in a <title> (the page's JSON carries the views above)
    svg = chart_svg({env.E: 2.0}, {env.E + 1: ("error", ATTACK)}, env.E, env.E + 1, env.period_ms)
    inert(svg)
    assert "late\\n2026-12-04" in svg


def test_the_log_formatters_escape_what_a_caller_did_not(caplog):
    for fmt in ("text", "json"):
        with log_lines(fmt) as lines:
            logging.getLogger("redismedian.test").warning("got %s", ATTACK + "x" * 20_000)
        (line,) = lines
        inert(line)
        message = json.loads(line)["message"] if fmt == "json" else line
        assert len(line) < 16_500 and f"got {ESCAPED}xxx" in message and message.endswith("x...")
    # the record others see is the caller's (caplog, another handler): only the formatters escape
    assert any(ATTACK in r.getMessage() for r in caplog.records)


def test_a_traceback_keeps_its_lines():
    with log_lines("text") as lines:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("redismedian.test").exception("failed: %s", "a\nb")
    assert lines[0].endswith("failed: a\\nb") and lines[1] == "Traceback (most recent call last):"


def test_the_trader_reason_stays_within_its_bound_and_counts_what_it_leaves_out():
    from redismedian.text import LONG
    from redismedian.trader import REASONS_LIMIT, missing_reason
    problems = [(f"S{i:02d}\n", f"reason {i}\x1b" + "x" * 5000) for i in range(30)]
    text = missing_reason(problems, 40)
    inert(text)
    assert len(text) <= LONG and text.startswith("30 of 40 strategies missing: S00\\n: reason 0\\x1bxxx")
    named = text.count("; S") + 1
    assert named <= REASONS_LIMIT and text.endswith(f"; and {30 - named} more")
    assert missing_reason([("X", "late")], 1) == "1 of 1 strategy missing: X: late"


def test_names_found_in_garbage_holders_and_a_generators_error_are_shown_escaped(env):
    from redismedian.strategy import Reading, assess
    e = env.E
    env.r.hset(env.k.meta, mapping={"period_ms": env.period_ms, "instance": "i1"})
    env.r.set(env.k.decision(f"evil\n{FORGED}"), f"{e}|1.5", px=env.period_ms)           # a name in a key
    env.r.set(env.k.lease("strategy", "Z"), f"h:1:x\x1b[2J|{e}", px=env.period_ms)      # a lease holder
    env.r.hset(env.k.signal("g1"), mapping={"epoch": e, "status": "error", "error": ATTACK, "value": ""})
    env.r.hset(env.k.signal("g2"), mapping={"epoch": e, "status": "ok\n", "value": "1\x1b"})
    data = gather(env.r, env.k)
    view = render(data, "redis://x")
    inert(view)
    # header, blank, trader, its reason; blank, generators (title, columns, g1, g2); blank, strategies (the same)
    assert len(view.splitlines()) == 4 + 1 + 4 + 1 + 4
    names = sorted(s["name"] for s in data["strategies"])
    assert names == ["Z", f"evil\\n{FORGED}"]
    assert [s["owner"] for s in data["strategies"] if s["name"] == "Z"] == [f"h:1:x\\x1b[2J|{e}"]
    gens = {g["name"]: g for g in data["generators"]}
    assert gens["g1"]["reason"].startswith("not running (no live process; last signal for epoch")
    assert ESCAPED in gens["g1"]["reason"]
    assert gens["g2"]["reason"].startswith("not running") and "'ok\\n'" in gens["g2"]["reason"]
    # a strategy quotes its generator's message in its own reason: escaped, bounded
    values, reason = assess(["g1"], e, {}, {"g1": Reading(str(e), "", "error", ATTACK + "y" * 500)})
    assert values is None and reason.startswith(f"signal g1 error: {ESCAPED}") and len(reason) < 250
    inert(reason)
