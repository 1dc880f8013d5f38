"""Operator views and actions: ``status`` (one view of every part) and ``deregister``."""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

import redis

from . import health as H
from . import keys as K
from .clock import epoch_of, time_reply_ms
from .common import FatalError, as_str, parse_int, parse_period_ms
from .health import lease_holder, read_holders, strategy_view, text_hash
from .keys import Keys
from .text import LONG, quoted, shown

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack   # C: 20,000 commands packed in ~10 ms
except ImportError:                            # pragma: no cover - redis[hiredis] is a requirement
    _pack = None

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


BATCH = 1000   # keys per MGET / HGETALLs per pipeline: no single command holds Redis up for long


def _scan(client: redis.Redis, keys: Keys) -> dict[str, set[str]]:
    """One SCAN pass over the namespace (``Keys.pattern``): the names that have a signal, a
    decision, a generator lease or a strategy lease.  One pass instead of one per kind: SCAN's cost
    inside Redis is the keys it visits, whatever the pattern.  (On a cluster the client talks to
    the master of the namespace's slot, which holds every key of the namespace.)"""
    prefixes = {"signal": keys.signal("*")[:-1], "decision": keys.decision("*")[:-1],
                "generator": keys.lease("generator", "*")[:-1], "strategy": keys.lease("strategy", "*")[:-1]}
    seen: set[bytes | str] = set()   # SCAN may return a key twice
    cursor = 0
    while True:
        cursor, batch = client.scan(cursor, match=keys.pattern, count=BATCH)
        seen.update(batch)
        if not int(cursor):
            break
    text = [k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in seen]   # as_str, inlined
    return {kind: {k[len(prefix):] for k in text if k.startswith(prefix)} for kind, prefix in prefixes.items()}


def _hashes(client: redis.Redis, keys: list[str]) -> list[dict[str, str] | str]:
    """Several hashes (as :func:`_hash` reads one), one round trip per :data:`BATCH`."""
    out: list[dict[str, str] | str] = []
    for i in range(0, len(keys), BATCH):
        batch = keys[i:i + BATCH]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.hgetall(key)
        for key, raw in zip(batch, pipe.execute(raise_on_error=False)):
            if isinstance(raw, Exception):
                if "WRONGTYPE" not in str(raw):
                    raise raw
                out.append(f"{key} is a {as_str(client.type(key))}, expected a hash")
            else:
                out.append(text_hash(raw))
    return out


def gather(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` output).  Every part's state and
    reason come from :mod:`redismedian.health`, as ``check``'s do.

    Cheap at 10,000s of strategies: one SCAN pass finds every part, then each strategy costs one
    key in an ``MGET`` of the decision keys and one in an ``MGET`` of the leases, and a ``PTTL``
    of each key that holds a string (:func:`strategy_rows`)."""
    now = time_reply_ms(client.time())
    meta = _hash(client, keys.meta)
    problems: list[str] = []
    period_ms = None
    if isinstance(meta, str):
        problems.append(f"unreadable: {meta}")
    elif meta.get("period_ms") is not None:
        period_ms = parse_period_ms(meta["period_ms"])
        if period_ms is None:   # the components refuse to run on it too
            problems.append(f"{keys.meta} has period_ms {quoted(meta['period_ms'], 40)}, not a period in ms")
    epoch = epoch_of(now, period_ms) if period_ms else None
    out: dict[str, Any] = {"namespace": keys.ns, "server_time_ms": now, "period_ms": period_ms,
                           "epoch": epoch, "problems": problems}

    # trader
    (holder,) = read_holders(client, [keys.lease("trader")])
    trader = _hash(client, keys.trader)
    out["trader"] = H.trader_view(trader, holder, epoch, now, deployed=period_ms is not None or bool(meta))
    out["traders"] = _traders(client, keys, now, period_ms)

    found = _scan(client, keys)
    # generators: those with a signal in Redis, and live ones that wrote none yet
    names = sorted(found["signal"] | found["generator"])
    holders = read_holders(client, [keys.lease("generator", n) for n in names])
    signals = _hashes(client, [keys.signal(n) for n in names])
    out["generators"] = [H.generator_view(keys, name, sig, h, epoch, now)
                         for name, sig, h in zip(names, signals, holders)]

    # strategies: the registered ones, and any other with a report or a live process
    try:
        registered = set(as_str(m) for m in client.smembers(keys.strategies))
    except redis.exceptions.ResponseError:
        registered = set()
        out["problems"].append(f"{keys.strategies} is a {as_str(client.type(keys.strategies))}, expected a set")
    names = sorted(registered | found["decision"] | found["strategy"])
    ttl_ms = K.ttl_ms(period_ms, K.DECISION_TTL_PERIODS) if period_ms else None
    out["strategies"] = strategy_rows(client, keys, names, registered, epoch, ttl_ms, decisions=found["decision"])
    _mark_deregistered(client, keys, out["strategies"])
    out["trader"]["cleared_by"] = _cleared_by(client, keys, out["trader"], trader, out["strategies"])
    return out


def _mark_deregistered(client: redis.Redis, keys: Keys, strategies: list[dict[str, Any]]) -> None:
    """A live strategy that is not registered (``joining``) gets ``deregistered_ms``: the time of its
    name's deregistration record, if any (one HMGET, only when there is such a strategy).  A process
    deregistered after it started is on its way out, not asking to join."""
    joining = [s for s in strategies if s.get("state") == "joining"]
    if not joining:
        return
    try:
        records = client.hmget(keys.deregistered, [s["name"] for s in joining])
    except redis.exceptions.ResponseError:   # garbage there: no record to read
        records = [None] * len(joining)
    for s, r in zip(joining, records):
        s["deregistered_ms"] = parse_int(r)


def _cleared_by(client: redis.Redis, keys: Keys, row: dict[str, Any], trader: dict[str, str] | str,
                strategies: list[dict[str, Any]]) -> list[str]:
    """The strategies deregistered since the trader's evaluation in ``error`` that explain it away
    (:func:`redismedian.health.cleared_by_deregistration`): ``check`` is right at once after a
    ``deregister``, not only after the next boundary.  Reads the deregistration records of the
    names that may matter (those the reason names, and those not registered) with one ``HMGET``."""
    if row.get("state") != "error" or isinstance(trader, str):
        return []
    names = sorted(set(H.names_in_reason(row.get("reason") or ""))
                   | {s["name"] for s in strategies if not s.get("registered")})
    if not names:
        return []
    try:
        records = client.hmget(keys.deregistered, names)
    except redis.exceptions.ResponseError:   # garbage there: no record to read
        return []
    return H.cleared_by_deregistration(row, parse_int(trader.get("ts")),
                                       {n: parse_int(r) for n, r in zip(names, records)}, strategies)


def _round_trip(client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The replies to ``commands``, sent at once (one round trip); an error reply is returned, not
    raised, as ``pipeline().execute(raise_on_error=False)`` does.

    On a plain client the commands go straight to one pooled connection (as the trader's read of
    the decisions does): a redis-py pipeline spends ~12 us of CPU per command, 4 times this, which
    at 10,000s of strategies was most of the cost of ``status``.  Replies are the raw ones (no
    response callbacks): ints, lists, bytes."""
    if not commands:
        return []
    if type(client) not in (redis.Redis, redis.StrictRedis):   # fakeredis in the tests, other classes
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)
    pool = client.connection_pool
    try:
        conn = pool.get_connection()
    except TypeError:               # redis-py 5 wants a command name
        conn = pool.get_connection(commands[0][0])
    try:
        if _pack is not None:
            conn.send_packed_command([b"".join(_pack(c) for c in commands)])
        else:
            conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.exceptions.ResponseError as e:
                replies.append(e)
        return replies
    except BaseException:
        conn.disconnect()           # a half-read reply must never reach the next caller
        raise
    finally:
        pool.release(conn)


def strategy_rows(client: redis.Redis, keys: Keys, names: list[str], registered: set[str], epoch: int | None,
                  ttl_ms: int | None, decisions: set[str] | None = None) -> list[dict[str, Any]]:
    """Strategies as ``status`` shows them, from their decision keys and leases: two round trips.

    First an ``MGET`` of the decision keys and one of the leases (in parts of :data:`BATCH`);
    then a ``PTTL`` of each key that held a string (a decision's age; whether a lease has the
    time to live that makes it one, :func:`redismedian.health.lease_holder`), and a ``TYPE`` of
    each decision key that ``MGET`` read as nil but that exists (``decisions``: the names a SCAN
    found with one; None: any of them may): ``MGET`` answers nil for a key of another type, which
    ``status`` shows as unreadable."""
    dkeys = [keys.decision(n) for n in names]
    lkeys = [keys.lease("strategy", n) for n in names]
    raws: list[Any] = []
    leases: list[Any] = []
    commands = [("MGET", *part[i:i + BATCH]) for i in range(0, len(names), BATCH) for part in (dkeys, lkeys)]
    for j, part in enumerate(_round_trip(client, commands)):
        if isinstance(part, Exception):   # e.g. an ACL denial: MGET answers nil for any other type
            raise part
        (leases if j % 2 else raws).extend(part)
    commands, asked = [], []
    for i, name in enumerate(names):
        if raws[i] is not None:
            commands.append(("PTTL", dkeys[i]))
            asked.append(("pttl", i))
        elif decisions is None or name in decisions:
            commands.append(("TYPE", dkeys[i]))
            asked.append(("type", i))
        if leases[i] is not None:
            commands.append(("PTTL", lkeys[i]))
            asked.append(("lease", i))
    pttls: list[Any] = [None] * len(names)
    lease_ttls: list[Any] = [None] * len(names)
    unreadable = [""] * len(names)
    for (what, i), reply in zip(asked, _round_trip(client, commands)):
        if what == "pttl":
            pttls[i] = reply
        elif what == "lease":
            lease_ttls[i] = reply
        else:
            if isinstance(reply, Exception):
                raise reply
            kind = as_str(reply)
            if kind not in ("none", "string"):   # "string": written since the MGET, absent then
                unreadable[i] = f"{dkeys[i]} is a {kind}, expected a string"
    return [strategy_view(keys, name, name in registered, lease_holder(leases[i], lease_ttls[i]),
                          raws[i], pttls[i] if isinstance(pttls[i], int) else None, epoch, ttl_ms,
                          unreadable=unreadable[i])
            for i, name in enumerate(names)]


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
    if t.get("cleared_by"):
        lines.append(f"            {H.cleared_text(t)}")
    if t.get("missed") or t.get("last_missed") is not None:
        lines.append(f"            {H.missed_text(t, data['epoch'])}"
                     + (f"  (within the last {H.DEFAULT_MISSED_WINDOW} periods: `check` fails)"
                        if H.missed_recently(t, data["epoch"]) else ""))
    if t.get("action_error"):
        lines.append(f"            --on-median action failed (retried every period): {t['action_error']}")
    if t.get("restored_last") is not None:
        lines.append(f"            {H.restored_text(t, data['epoch'])}")
    if t.get("conflict_epoch") is not None:
        lines.append(f"            CONFLICT: {H.conflict_text(t, data['epoch'])}"
                     + (f"  (within the last {H.DEFAULT_MISSED_WINDOW} periods: `check` fails)"
                        if H.conflict_recently(t, data["epoch"]) else ""))
    if t.get("doorbell_anomalies"):
        lines.append(f"            doorbell: {t['doorbell_anomalies']} epoch(s) did not ring as they should; last "
                     f"epoch {_v(t.get('doorbell_last'))} ({t.get('doorbell_kind') or '?'}): "
                     f"{t.get('doorbell_detail', '')}")
    for tr in data.get("traders", []):
        lines.append(f"            {tr['role']:<8} {tr['owner']}  (reported {_v(tr.get('age_s'))}s ago)")
    lines.append("")
    lines.append(_table("generators", ["name", "state", "value", "epoch", "age_s", "reason"], data["generators"]))
    lines.append("")
    lines.append(_table("strategies", ["name", "registered", "state", "value", "epoch", "age_s", "reason"],
                        data["strategies"]))
    return "\n".join(lines)


def _v(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return str(x)


def _table(title: str, cols: list[str], rows: list[dict[str, Any]]) -> str:
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

    def run(source: str, keys_: Sequence[Any], args: Sequence[Any]) -> Any:
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
                         f"(registered: {shown(', '.join(known), LONG) if known else 'none'})")
