"""Text from another process is data: redismedian.text.shown, the one function every string read from
Redis goes through before a log line, NS:trader, NS:events, status, check, follow or the page."""
import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from redismedian.text import ELLIPSIS, SHORT, shown

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
