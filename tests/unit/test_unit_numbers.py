"""One number grammar for everything read from Redis: common.parse_number / parse_int in Python and
`num` / `int` in the scripts' Lua prelude accept exactly the same texts (one table of cases, and a
property test over the grammar's alphabet and its usual impostors)."""
import math

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redismedian.common import NUMBER_RULE, parse_finite, parse_int, parse_number
from redismedian.scripts import NUMBERS

# text, as a number (None: refused), as an integer (None: refused)
CASES = [
    ("0", 0.0, 0), ("12", 12.0, 12), ("-3", -3.0, -3), ("+5", 5.0, 5), ("007", 7.0, 7), ("-0", 0.0, 0),
    ("1.5", 1.5, None), ("-0.25", -0.25, None), (".5", 0.5, None), ("5.", 5.0, None), ("+.5", 0.5, None),
    ("1e3", 1000.0, None), ("1E-3", 0.001, None), ("1.5e+2", 150.0, None), ("-2.5E2", -250.0, None),
    ("999999999999999", 999999999999999.0, 999999999999999),          # 15 digits: an integer
    ("9999999999999999", 1e16, None),                                  # 16 digits: a number only
    ("-999999999999999", -999999999999999.0, -999999999999999),
    ("1e308", 1e308, None), ("1.7976931348623157e308", 1.7976931348623157e308, None),
    ("1e-400", 0.0, None), ("5e-324", 5e-324, None),
    # refused by both grammars
    ("1e400", None, None), ("-1e400", None, None), ("1" + "0" * 400, None, None),
    ("", None, None), (" 5 ", None, None), (" 5", None, None), ("5 ", None, None), ("5\n", None, None),
    ("\n5", None, None), ("\t5", None, None), ("1_000", None, None), ("0x10", None, None), ("0X1p3", None, None),
    ("nan", None, None), ("NaN", None, None), ("-nan", None, None), ("inf", None, None), ("-inf", None, None),
    ("Infinity", None, None), ("1e", None, None), ("e5", None, None), ("1e+", None, None), (".", None, None),
    ("-", None, None), ("+", None, None), ("+-5", None, None), ("--5", None, None), ("1.2.3", None, None),
    ("1e5.5", None, None), ("1e5e", None, None), ("1,5", None, None), ("5|1", None, None), ("1d5", None, None),
    ("0b101", None, None), ("\u0663", None, None), ("５", None, None), ("1\x00", None, None),
]


def lua(texts):
    """What the Lua prelude's num and int make of each text: [(number or None, integer or None)]."""
    r = fakeredis.FakeRedis()
    out = []
    for x, n in r.eval(NUMBERS, 0, *texts) if texts else []:
        out.append((None if x is None else float(x), None if n is None else int(float(n))))
    return out


@pytest.mark.parametrize("text,number,integer", CASES)
def test_python_grammar(text, number, integer):
    assert parse_number(text) == number and parse_finite(text) == number
    assert parse_number(text.encode()) == number
    assert parse_int(text) == integer and parse_int(text.encode()) == integer
    if number is not None:
        assert math.isfinite(parse_number(text))


def test_lua_grammar_is_the_same_table():
    texts = [t for t, _n, _i in CASES]
    got = lua(texts)
    expected = [(n, i) for _t, n, i in CASES]
    for text, g, e in zip(texts, got, expected):
        assert g == e, (text, g, e)


@pytest.mark.parametrize("raw", [None, 12, 1.5, b"\xff", b"1\xff", ["1"]])
def test_anything_but_text_is_refused(raw):
    assert parse_number(raw) is None and parse_int(raw) is None


def test_the_rule_names_the_grammar():
    assert NUMBER_RULE == "a decimal number such as 12, -0.5 or 1.5e-3"
    assert all(parse_number(x) is not None for x in ("12", "-0.5", "1.5e-3"))


# The grammar's own characters, plus the impostors Python's float() or Lua's tonumber() would take.
ALPHABET = "0123456789.eE+-" + "xX _\n\tnaifINF"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=ALPHABET, max_size=12), min_size=1, max_size=40))
def test_python_and_lua_agree_on_any_text(texts):
    assert lua(texts) == [(parse_number(t), parse_int(t)) for t in texts]
