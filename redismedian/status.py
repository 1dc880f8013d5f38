"""Operator views and actions: ``status`` (one view of every part) and ``deregister``."""
from __future__ import annotations

import json
import time
from typing import Any

import redis

from . import health as H
from . import keys as K
from .clock import epoch_of, time_reply_ms
from .common import FatalError, as_str, parse_period_ms
from .health import lease_holder, names_of, queue_lease, read_holders, strategy_view, text_hash
from .keys import Keys

__all__ = ["gather", "render", "to_json", "deregister", "strategy_view", "strategy_row"]


def _hash(client: redis.Redis, key: str) -> dict[str, str] | str:
    """A hash as text, or a string saying why it cannot be read."""
    try:
        raw = client.hgetall(key)
    except redis.exceptions.ResponseError as e:
        if "WRONGTYPE" in str(e):
            return f"{key} is a {as_str(client.type(key))}, expected a hash"
        raise
    return text_hash(raw)


def _scan_names(client: redis.Redis, pattern: str) -> list[str]:
    return names_of(client.scan_iter(match=pattern, count=1000), pattern[:-1])


BATCH = 1000   # parts read per round trip


def gather(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` output).  Every part's state and
    reason come from :mod:`redismedian.health`, as ``check``'s do."""
    now = time_reply_ms(client.time())
    meta = _hash(client, keys.meta)
    problems: list[str] = []
    period_ms = None
    if isinstance(meta, str):
        problems.append(f"unreadable: {meta}")
    elif meta.get("period_ms") is not None:
        period_ms = parse_period_ms(meta["period_ms"])
        if period_ms is None:   # the components refuse to run on it too
            problems.append(f"{keys.meta} has period_ms {meta['period_ms']!r:.40}, not a period in ms")
    epoch = epoch_of(now, period_ms) if period_ms else None
    out: dict[str, Any] = {"namespace": keys.ns, "server_time_ms": now, "period_ms": period_ms,
                           "epoch": epoch, "problems": problems}

    # trader
    (holder,) = read_holders(client, [keys.lease("trader")])
    out["trader"] = H.trader_view(_hash(client, keys.trader), holder, epoch, now,
                                  deployed=period_ms is not None or bool(meta))
    out["traders"] = _traders(client, keys, now, period_ms)

    # generators: those with a signal in Redis, and live ones that wrote none yet
    names = sorted(set(_scan_names(client, keys.signal_pattern))
                   | set(_scan_names(client, keys.lease("generator", "*"))))
    gens = []
    for i in range(0, len(names), BATCH):
        batch = names[i:i + BATCH]
        holders = read_holders(client, [keys.lease("generator", n) for n in batch])
        for name, h in zip(batch, holders):
            gens.append(H.generator_view(keys, name, _hash(client, keys.signal(name)), h, epoch, now))
    out["generators"] = gens

    # strategies: the registered ones, and any other with a report or a live process
    try:
        registered = set(as_str(m) for m in client.smembers(keys.strategies))
    except redis.exceptions.ResponseError:
        registered = set()
        out["problems"].append(f"{keys.strategies} is a {as_str(client.type(keys.strategies))}, expected a set")
    names = sorted(registered | set(_scan_names(client, keys.decision_pattern))
                   | set(_scan_names(client, keys.lease("strategy", "*"))))
    ttl_ms = K.ttl_ms(period_ms, K.DECISION_TTL_PERIODS) if period_ms else None
    strats = []
    for i in range(0, len(names), BATCH):
        strats += strategy_rows(client, keys, names[i:i + BATCH], registered, epoch, ttl_ms)
    out["strategies"] = strats
    return out


def strategy_rows(client: redis.Redis, keys: Keys, names: list[str], registered, epoch: int | None,
                  ttl_ms: int | None) -> list[dict[str, Any]]:
    """Strategies as ``status`` shows them, from their decision keys and leases (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(keys.decision(name))
        pipe.pttl(keys.decision(name))
        queue_lease(pipe, keys.lease("strategy", name))
    replies = pipe.execute(raise_on_error=False)
    rows = []
    for i, name in enumerate(names):
        raw, pttl, lease, lease_ttl = replies[4 * i:4 * i + 4]
        for r in (raw, lease):
            if isinstance(r, Exception) and "WRONGTYPE" not in str(r):
                raise r
        key = keys.decision(name)
        unreadable = f"{key} is a {as_str(client.type(key))}, expected a string" if isinstance(raw, Exception) else ""
        rows.append(strategy_view(keys, name, name in registered, lease_holder(lease, lease_ttl),
                                  None if unreadable else raw,
                                  pttl if isinstance(pttl, int) and raw is not None and not unreadable else None,
                                  epoch, ttl_ms, unreadable=unreadable))
    return rows


def strategy_row(client: redis.Redis, keys: Keys, name: str, registered: bool, epoch: int | None,
                 ttl_ms: int | None) -> dict[str, Any]:
    """One strategy as ``status`` shows it."""
    return strategy_rows(client, keys, [name], {name} if registered else set(), epoch, ttl_ms)[0]


def _traders(client: redis.Redis, keys: Keys, now: int, period_ms: int | None) -> list[dict[str, Any]]:
    """Every trader process that reported recently: its role (leader / standby) and age."""
    h = _hash(client, keys.traders)
    if isinstance(h, str):
        return [{"owner": "?", "role": "unknown", "reason": h}]
    return H.live_traders(h, now, period_ms)


def render(data: dict[str, Any], url: str) -> str:
    """The human view of :func:`gather`'s data."""
    lines = []
    p = data["period_ms"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data["server_time_ms"] / 1000))
    lines.append(f"redismedian at {url}, namespace {data['namespace']}, "
                 f"period {p / 1000:g}s, epoch {data['epoch']}, server time {when}" if p else
                 f"redismedian at {url}, namespace {data['namespace']}: no deployment record yet "
                 f"(nothing has run here), server time {when}")
    for prob in data["problems"]:
        lines.append(f"PROBLEM: {prob}")
    t = data["trader"]
    lines.append("")
    lines.append(f"trader      {t.get('state', '?'):<9} epoch {_v(t.get('epoch'))}  median {_v(t.get('median'))}"
                 f"  count {_v(t.get('count'))}  age {_v(t.get('age_s'))}s  leader {_v(t.get('leader'))}")
    if t.get("reason"):
        lines.append(f"            reason: {t['reason']}")
    if t.get("missed") or t.get("last_missed") is not None:
        lines.append(f"            {H.missed_text(t, data['epoch'])}"
                     + (f"  (within the last {H.DEFAULT_MISSED_WINDOW} periods: `check` fails)"
                        if H.missed_recently(t, data["epoch"]) else ""))
    if t.get("action_error"):
        lines.append(f"            --on-median action failed (retried every period): {t['action_error']}")
    for tr in data.get("traders", []):
        lines.append(f"            {tr['role']:<8} {tr['owner']}  (reported {_v(tr.get('age_s'))}s ago)")
    lines.append("")
    lines.append(_table("generators", ["name", "state", "value", "epoch", "age_s", "reason"], data["generators"]))
    lines.append("")
    lines.append(_table("strategies", ["name", "registered", "state", "value", "epoch", "age_s", "reason"],
                        data["strategies"]))
    return "\n".join(lines)


def _v(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return str(x)


def _table(title: str, cols: list[str], rows: list[dict]) -> str:
    if not rows:
        return f"{title}: none"
    cells = [[_v(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = [f"{title}:", "  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    for row in cells:
        out.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(out)


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def deregister(client: redis.Redis, keys: Keys, name: str) -> None:
    """Remove ``name`` from the registry and from its backup (``SREM`` on both, atomically).

    Removing it from the backup too is what tells a deregistration apart from a registry that
    vanished by accident, even when the last strategy is deregistered (docs/guarantees.md).
    """
    from .scripts import deregister as deregister_script

    def run(source, keys_, args):
        return client.register_script(source)(keys=keys_, args=args)
    try:
        reply = deregister_script(run, keys, name=name)
    except redis.exceptions.ResponseError as e:
        if "WRONGTYPE" not in str(e):
            raise           # e.g. an ACL denial: the command line reports it
        raise FatalError(f"cannot deregister {name!r}: {e}") from None
    note = reply.note.strip("; ")
    if not reply.removed:
        known = sorted(reply.registered)
        raise FatalError((f"{note}; " if note else "")
                         + f"no strategy named {name!r} is registered in namespace {keys.ns!r} "
                         f"(registered: {', '.join(known) if known else 'none'})")
