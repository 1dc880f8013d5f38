"""One number grammar for everything read from Redis: the Lua on a real redis-server.

``common.parse_number`` / ``common.parse_int`` and the Lua prelude's ``num`` / ``int`` must agree
on every case: an optional sign, digits with at most one decimal point, an optional exponent, and
a finite value; integers without fraction or exponent and at most 15 digits.  tests/unit/test_unit_numbers.py
holds the table and runs the Lua through fakeredis; here it runs in a real redis-server, whose Lua
5.1 ``tonumber`` is what the scripts really use, and through the trader's fast path (``trader.tally``).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redismedian.common import parse_int, parse_number
from redismedian.scripts import NUMBERS
from redismedian.trader import tally
from tests.unit.test_unit_numbers import CASES

# The one table of cases lives with the unit tests (which run the Lua through fakeredis).


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
    return a == b


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
