"""Operator views and actions: ``status`` (one view of every part) and ``deregister``."""
from __future__ import annotations

import json
import time
from typing import Any

import redis

from .clock import epoch_of, time_reply_ms
from .common import FatalError, as_str, parse_finite, parse_int, parse_period_ms
from . import keys as K
from .keys import Keys
from .scripts import parse_report


def _hash(client: redis.Redis, key: str) -> dict[str, str] | str:
    """A hash as text, or a string saying why it cannot be read."""
    try:
        raw = client.hgetall(key)
    except redis.exceptions.ResponseError as e:
        if "WRONGTYPE" in str(e):
            return f"unreadable: {key} is a {as_str(client.type(key))}, expected a hash"
        raise
    return {as_str(k): as_str(v) for k, v in raw.items()}


def _scan_names(client: redis.Redis, pattern: str) -> list[str]:
    prefix = pattern[:-1]
    return sorted({as_str(k)[len(prefix):] for k in client.scan_iter(match=pattern, count=1000)})


def _lease(client: redis.Redis, key: str) -> str | None:
    """Who holds a lease, or None (a key of another type holds nothing)."""
    return as_str(client.get(key)) if client.type(key) == b"string" else None


def _age(now_ms: int, ts: str | None) -> float | None:
    t = parse_int(ts)
    return None if t is None else round((now_ms - t) / 1000.0, 3)


def gather(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` output)."""
    now = time_reply_ms(client.time())
    meta = _hash(client, keys.meta)
    problems: list[str] = []
    period_ms = None
    if isinstance(meta, str):
        problems.append(meta)
    elif meta.get("period_ms") is not None:
        period_ms = parse_period_ms(meta["period_ms"])
        if period_ms is None:   # the components refuse to run on it too
            problems.append(f"{keys.meta} has period_ms {meta['period_ms']!r:.40}, not a period in ms")
    epoch = epoch_of(now, period_ms) if period_ms else None
    out: dict[str, Any] = {"namespace": keys.ns, "server_time_ms": now, "period_ms": period_ms,
                           "epoch": epoch, "problems": problems}

    # trader
    trader = _hash(client, keys.trader)
    lease = _lease(client, keys.lease("trader")) or ""
    if isinstance(trader, str):
        out["trader"] = {"state": "unknown", "reason": trader}
    else:
        out["trader"] = {
            "state": trader.get("state", "absent") if (lease or trader) else "absent",
            "reason": trader.get("reason", "" if lease else "no trader running"),
            "epoch": parse_int(trader.get("epoch")), "median": parse_finite(trader.get("median")),
            "count": parse_int(trader.get("count")), "age_s": _age(now, trader.get("ts")),
            "leader": lease or None, "fence": parse_int(trader.get("fence")),
            "published_epoch": parse_int(trader.get("published")),
        }
        if not lease and trader:
            out["trader"]["state"] = "down"
            out["trader"]["reason"] = f"no trader holds the lead (last state {trader.get('state', '?')})"
        elif epoch is not None and out["trader"]["epoch"] is not None and out["trader"]["epoch"] < epoch - 1:
            out["trader"]["reason"] = (out["trader"]["reason"] + "; " if out["trader"]["reason"] else "") + \
                f"last evaluated epoch {out['trader']['epoch']} is old"

    out["traders"] = _traders(client, keys, now, period_ms)

    # generators
    gens = []
    for name in _scan_names(client, keys.signal_pattern):
        h = _hash(client, keys.signal(name))
        owner = _lease(client, keys.lease("generator", name))
        if isinstance(h, str):
            gens.append({"name": name, "state": "unreadable", "reason": h})
            continue
        e = parse_int(h.get("epoch"))
        state, reason = h.get("status", "?"), h.get("error", "")
        if state == "ok" and epoch is not None and (e is None or e < epoch):
            state, reason = "stale", f"last signal for epoch {e}"
        if owner is None:
            reason = (reason + "; " if reason else "") + "no live process holds this name"
        gens.append({"name": name, "state": state, "value": parse_finite(h.get("value")), "epoch": e,
                     "age_s": _age(now, h.get("ts")), "owner": owner or None, "reason": reason})
    out["generators"] = gens

    # strategies
    try:
        registered = sorted(as_str(m) for m in client.smembers(keys.strategies))
    except redis.exceptions.ResponseError:
        registered = []
        out["problems"].append(f"{keys.strategies} is a {as_str(client.type(keys.strategies))}, expected a set")
    names = sorted(set(registered) | set(_scan_names(client, keys.decision_pattern)))
    strats = []
    ttl_ms = K.ttl_ms(period_ms, K.DECISION_TTL_PERIODS) if period_ms else None
    for name in names:
        row = strategy_row(client, keys, name, name in registered, epoch, ttl_ms)
        strats.append(row)
    out["strategies"] = strats
    return out


def strategy_row(client: redis.Redis, keys: Keys, name: str, registered: bool, epoch: int | None,
                 ttl_ms: int | None) -> dict[str, Any]:
    """One strategy as ``status`` shows it, from its decision key and its lease."""
    key = keys.decision(name)
    owner = _lease(client, keys.lease("strategy", name))
    try:
        raw = client.get(key)
    except redis.exceptions.ResponseError:
        return strategy_view(keys, name, registered, owner, None, None, epoch, ttl_ms,
                             unreadable=f"{key} is a {as_str(client.type(key))}, expected a string")
    pttl = client.pttl(key) if raw is not None and ttl_ms else None
    return strategy_view(keys, name, registered, owner, raw, pttl, epoch, ttl_ms)


def strategy_view(keys: Keys, name: str, registered: bool, owner: str | None, raw, pttl_ms: int | None,
                  epoch: int | None, ttl_ms: int | None, unreadable: str = "") -> dict[str, Any]:
    """A strategy's state and reason from what Redis holds (pure): its decision key's value
    (``raw``, what :func:`redismedian.scripts.parse_report` reads) and remaining time to live,
    its lease holder and whether it is registered.  ``status``, ``status --json`` and
    ``check strategy NAME`` all show this, so they always agree.

    States: ``ok`` (a decision for the current or the previous epoch), ``starting`` / ``error``
    (the strategy's own report, with its reason), ``stale`` (its last decision is older),
    ``joining`` (a live process that the trader has not admitted yet), ``down`` (no live
    process holds the name), ``absent`` (no report in Redis), ``garbage`` / ``unreadable``
    (somebody else wrote its decision key)."""
    key = keys.decision(name)
    row: dict[str, Any] = {"name": name, "registered": registered, "owner": owner or None}
    value_text = ""
    if unreadable:
        state, reason, e = "unreadable", f"unreadable: {unreadable}", None
    else:
        report = parse_report(raw)
        if report is None:
            state, reason, e = "absent", "no report in Redis (never reported, or expired)", None
        elif report.state == "garbage":
            state, reason, e = "garbage", f"{key} {report.reason}", None
        else:
            state, reason, e, value_text = report.state, report.reason, report.epoch, report.value
    age = None
    if pttl_ms is not None and pttl_ms >= 0 and ttl_ms:
        age = round(max(0, ttl_ms - pttl_ms) / 1000.0, 3)
    if owner is None:
        state, reason = "down", "no live process holds this name" + (f" (last: {reason})" if reason else "")
    elif not registered:
        state, reason = "joining", "not registered: waiting for the trader to admit it" + (
            f" (last: {reason})" if reason else "")
    elif state == "ok" and epoch is not None and (e is None or e < epoch - 1):
        state, reason = "stale", f"last decision for epoch {e} (now {epoch})"
    return {**row, "state": state, "value": parse_finite(value_text) if value_text else None, "epoch": e,
            "age_s": age, "reason": reason}


def _traders(client: redis.Redis, keys: Keys, now: int, period_ms: int | None) -> list[dict[str, Any]]:
    """Every trader process that reported recently: its role (leader / standby) and age."""
    h = _hash(client, keys.traders)
    if isinstance(h, str):
        return [{"owner": "?", "role": "unknown", "reason": h}]
    fresh_ms = (period_ms or 60_000) * K.TRADER_HEARTBEAT_PERIODS
    rows = []
    for owner, value in sorted(h.items()):
        role, _, rest = value.partition("|")
        ts, _, extra = rest.partition("|")
        t = parse_int(ts)
        if t is None or role not in ("leader", "standby") or now - t > fresh_ms:
            continue
        row = {"owner": owner, "role": role, "age_s": _age(now, ts)}
        if role == "leader":
            row["fence"] = parse_int(extra)
        else:
            row["following"] = extra
        rows.append(row)
    return sorted(rows, key=lambda r: (r["role"] != "leader", r["owner"]))


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
