"""Text from another process is data: :func:`shown` is the one way such text reaches a person.

Whatever another process wrote into Redis (a strategy's reason, a generator's error message, a
lease holder, a name found in a key, a value that is not a number, an error reply) may hold a
newline that starts a forged log line, a terminal escape (``ESC [31m``), a bidi override that
reorders what a reader sees, or megabytes.  Before any of it reaches a log line, ``NS:trader``,
``NS:events``, ``status``, ``check``, ``follow`` or the page, it goes through :func:`shown`:

* every character that is not printable (``str.isprintable``: C0 and C1 controls, DEL, the line
  and paragraph separators U+2028/U+2029, bidi embeddings, overrides and isolates U+202A-U+202E,
  U+2066-U+2069 and every other format character, surrogates, private-use and unassigned code
  points, every space but the plain one) is written as a Python escape: ``\\n``, ``\\x1b``,
  ``\\u202e``;
* the result is at most ``limit`` characters: a longer one is cut (never inside an escape) and
  ends with ``...``.

Printable text within the limit comes out unchanged, and ``shown(shown(x, n), n) == shown(x, n)``:
text escaped by the process that wrote it is not mangled when a reader escapes it again.  A
backslash is left as it is: an escape in the output says nothing about what the input held, it
only keeps the output on one line and inert.
"""
from __future__ import annotations

SHORT = 200        # one string another process wrote (a reason, an error message, a value, a name)
LONG = 4_000       # text composed of several such strings, e.g. the trader's reason naming 20 strategies
LINE = 16_000      # the message of one log line
ELLIPSIS = "..."

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch.isprintable():
        return ch
    named = _NAMED.get(ch)
    if named is not None:
        return named
    o = ord(ch)
    if o <= 0xFF:
        return f"\\x{o:02x}"
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def shown(text: object, limit: int | None = SHORT) -> str:
    """``text`` made safe to show: one line, no control or format characters (escaped), at most
    ``limit`` characters (cut with ``...``; None: not cut).  ``bytes`` are decoded as UTF-8 with
    replacement characters, None is ``""``, anything else is ``str(text)``.  Never raises."""
    if isinstance(text, str):
        s = text
    elif isinstance(text, (bytes, bytearray)):
        s = bytes(text).decode("utf-8", errors="replace")
    elif text is None:
        s = ""
    else:
        try:
            s = str(text)
        except Exception:  # noqa: BLE001 - an object whose __str__ fails is still shown
            s = f"<{type(text).__name__} object>"
    if s.isprintable() and (limit is None or len(s) <= limit):
        return s
    # Each character becomes at least one: limit + 1 of them are enough to know the result is too long.
    head = s if limit is None else s[:limit + 1]
    pieces = [_escape(ch) for ch in head]
    out = "".join(pieces)
    if limit is None or len(out) <= limit:
        return out
    room, used, keep = max(0, limit - len(ELLIPSIS)), 0, []
    for p in pieces:
        if used + len(p) > room:
            break
        keep.append(p)
        used += len(p)
    return "".join(keep) + ELLIPSIS


def quoted(value: object, limit: int = 40) -> str:
    """A value that should have been something else, quoted in a reason: ``'abc'`` (through
    :func:`shown`), or ``None`` when there is none."""
    return "None" if value is None else f"'{shown(value, limit)}'"
