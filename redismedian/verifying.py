"""``redismedian verify``: every published median recomputed from the inputs recorded with it.

A median's NS:medians entry holds ``inputs`` (the trader's ``--record-inputs``, the default): each
member's decision number for that epoch, comma-separated, in the order of the members' sorted names.
:func:`check_entry` recomputes the median from them with the trader's own code (the number grammar
``common.parse_number``, ``trader.median_of_sorted``, the text ``trader.verdict`` publishes) and
checks the count and the members the entry names.  An entry without recorded inputs does not hold:
nothing proves it.
"""
from __future__ import annotations

from typing import Any, Mapping

import redis

from . import keys as K
from .common import as_str, parse_int, parse_number
from .replies import xrange
from .text import SHORT, quoted
from .trader import median_of_sorted

PAGE = 1_000


def check_entry(fields: Mapping[Any, Any]) -> tuple[int | None, str]:
    """One NS:medians entry (pure): (its epoch, '' when it holds, else why it does not)."""
    f = {as_str(k): as_str(v) for k, v in fields.items()}
    epoch = parse_int(f.get("epoch"))
    if epoch is None:
        return None, f"no epoch ({quoted(f.get('epoch', ''), SHORT)})"
    if "inputs" not in f:
        return epoch, "no recorded inputs"
    texts = f["inputs"].split(",") if f["inputs"] else []
    values = []
    for i, t in enumerate(texts):
        x = parse_number(t)
        if x is None:
            return epoch, f"input {i + 1} {quoted(t, 40)} is not a finite number"
        values.append(x)
    if not values:
        return epoch, "no inputs recorded"
    count = parse_int(f.get("count"))
    if count != len(values):
        return epoch, f"{len(values)} inputs recorded for a count of {quoted(f.get('count', ''), 40)}"
    members = [m for m in f.get("members", "").split(",") if m]
    if members and (len(members) != len(values) or members != sorted(members)):
        return epoch, f"{len(members)} members named for {len(values)} inputs"
    values.sort()
    again = repr(median_of_sorted(values))
    published = f.get("median", "")
    if parse_number(published) is None or published != again:
        return epoch, f"published median {quoted(published, 40)}, its inputs give {again}"
    return epoch, ""


def verify(client: redis.Redis, keys: K.Keys, since: int | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Every NS:medians entry (of epoch ``since`` and later): (entries checked, [(epoch, why)] of
    those that do not hold, oldest first)."""
    checked = 0
    bad: list[tuple[str, str]] = []
    start = "-"
    while True:
        page = xrange(client, keys.medians, min=start, count=PAGE)
        for entry_id, fields in page:
            epoch, why = check_entry(fields or {})
            if since is not None and (epoch is None or epoch < since):
                continue
            checked += 1
            if why:
                bad.append((str(epoch) if epoch is not None else f"? (entry {as_str(entry_id)})", why))
        if len(page) < PAGE:
            return checked, bad
        start = "(" + as_str(page[-1][0])
