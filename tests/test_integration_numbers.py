"""One number grammar for everything read from Redis, in Python and in the Lua, on one table.

``common.parse_number`` / ``common.parse_int`` and the Lua prelude's ``num`` / ``int`` must agree
on every case: an optional sign, digits with at most one decimal point, an optional exponent, and
a finite value; integers without fraction or exponent and at most 15 digits.  The Lua side runs in a
real redis-server (its Lua 5.1 ``tonumber`` is what the scripts use), and also through the
trader's own fast path (``trader.tally``) and the strategies' signal check.
"""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redismedian.common import parse_int, parse_number
from redismedian.scripts import NUMBERS
from redismedian.trader import tally

pytestmark = pytest.mark.integration

# (text, number or None, integer or None)
CASES = [
    ("0", 0.0, 0), ("12", 12.0, 12), ("-7", -7.0, -7), ("+5", 5.0, 5), ("007", 7.0, 7),
    ("0.5", 0.5, None), ("-0.25", -0.25, None), ("5.", 5.0, None), (".5", 0.5, None), ("-.5", -0.5, None),
    ("1e3", 1000.0, None), ("1E-3", 0.001, None), ("2.5e+2", 250.0, None), ("-0", -0.0, 0), ("-0.0", -0.0, None),
    ("1.7976931348623157e308", 1.7976931348623157e308, None), ("5e-324", 5e-324, None), ("1e-400", 0.0, None),
    ("999999999999999", 999999999999999.0, 999999999999999),
    ("1000000000000000", 1e15, None),            # 16 digits: a number, not an epoch-sized integer
    ("1_000", None, None), (" 5 ", None, None), (" 5", None, None), ("5 ", None, None), ("0x10", None, None),
    ("0X1p4", None, None), ("1e400", None, None), ("-1e400", None, None), ("nan", None, None), ("NaN", None, None),
    ("inf", None, None), ("-inf", None, None), ("Infinity", None, None), ("", None, None), (".", None, None),
    ("-", None, None), ("+", None, None), ("e5", None, None), ("1e", None, None), ("1e+", None, None),
    ("1.2.3", None, None), ("--5", None, None), ("+-5", None, None), ("1e5.5", None, None), ("5\n", None, None),
    ("\t5", None, None), ("١٢", None, None), ("1,5", None, None), ("5|6", None, None), ("1" * 400, None, None),
]


def _lua(server, texts):
    client = server.client()
    reply = client.register_script(NUMBERS)(keys=[], args=texts)
    out = []
    for x, n in reply:
        out.append((float(x) if x else None, int(n) if n else None))
    return out


def _same(a, b):
    if a is None or b is None:
        return a is b
    return a == b and math.copysign(1, a) == math.copysign(1, b)


@pytest.mark.parametrize("text,number,integer", CASES)
def test_python_grammar(text, number, integer):
    assert _same(parse_number(text), number)
    assert parse_number(text.encode()) == parse_number(text) or _same(parse_number(text.encode()), number)
    assert parse_int(text) == integer


@pytest.fixture(scope="module")
def lua_server(tmp_path_factory):
    from tests.support import RedisServer
    server = RedisServer(tmp_path_factory.mktemp("redis-numbers")).start()
    yield server
    server.kill()


def test_lua_grammar_is_the_same_table(lua_server):
    got = _lua(lua_server, [t for t, _n, _i in CASES])
    for (text, number, integer), (lx, li) in zip(CASES, got):
        assert _same(lx, number), (text, lx, number)
        assert li == integer, (text, li, integer)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.eE+- x_n", max_size=12))
def test_python_and_lua_agree_on_random_strings(lua_server, text):
    (lx, li), = _lua(lua_server, [text])
    assert _same(lx, parse_number(text)), text
    assert li == parse_int(text), text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789.eE+-", min_size=1, max_size=8), min_size=1, max_size=6))
def test_the_traders_fast_path_judges_like_the_grammar(values):
    """trader.tally reads many decisions at once (JSON for the common case): the same verdicts."""
    names = [f"s{i}" for i in range(len(values))]
    raw = [f"9|{v}".encode() for v in values]
    got = tally(9, names, raw)
    parsed = [parse_number(v) for v in values]
    if all(p is not None for p in parsed):
        assert got.problems == [] and got.values == sorted(parsed)
    else:
        assert sorted(n for n, _why in got.problems) == [n for n, p in zip(names, parsed) if p is None]
