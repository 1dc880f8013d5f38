"""What "current", "stale", "alive" and "lease holder" mean: one definition of each, used by
``status``, ``check`` and the trader's reasons, so that they agree at any moment of a period.

The rules, all on the Redis server's clock (epoch ``N`` = the server's current epoch):

- **current**: a report (a signal, a decision, the trader's evaluation) is current while its
  epoch is ``N - 1`` or later (:data:`CURRENT_LAG`).  Right after a boundary the parts have not
  written epoch ``N`` yet; their reports for ``N - 1`` are still the latest they can have.
  **Stale**: a report for an older epoch.
- **lease holder**: a lease key (``NS:lease:...``) holds a name when it is a string with a time to
  live, the same test the scripts make (``lease_peek``/``lease_get`` in scripts.py): a key of
  another type, or without a TTL, holds nothing (the next script removes it).
- **alive**: a generator or strategy is alive while a holder holds its name's lease (a live
  process renews it every period; it expires within 1.5 periods, plus the signal timeout for a
  strategy, of the process's death).  The trader is alive while it holds the trader lease; a
  trader process (leader or standby) is listed while its heartbeat in ``NS:traders`` is at most
  :data:`redismedian.keys.TRADER_HEARTBEAT_PERIODS` periods old.
- **not running**: a part that is not alive, whatever its last report says; it is reported as
  ``not running (no live process; last report for epoch E, 12 periods ago)``, never as late.

Each part's view (:func:`generator_view`, :func:`strategy_view`, :func:`trader_view`) is a pure
function of what Redis holds, and :func:`problems` turns a view into ``check``'s verdict, so
``status`` (which shows the views) and ``check`` (which reads the same keys) say the same thing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import redis

from .clock import time_reply_ms
from .common import NUMBER_RULE, as_str, parse_int, parse_number
from .keys import DECISION_TTL_PERIODS, SIGNAL_TTL_PERIODS, TRADER_HEARTBEAT_PERIODS, Keys
from .scripts import Report, parse_report
from .text import LONG, SHORT, quoted, shown

CURRENT_LAG = 1              # a report is current while its epoch >= the server's epoch - 1
DEFAULT_MISSED_WINDOW = 10   # `check trader` fails while an epoch was missed within this many periods
REASON_CUT = SHORT           # longest piece of a part's own reason quoted in another reason


# -- time ------------------------------------------------------------------------------------------
def is_current(epoch: int | None, now_epoch: int | None) -> bool:
    """Whether a report for ``epoch`` is current at the server's epoch ``now_epoch``."""
    return epoch is not None and now_epoch is not None and epoch >= now_epoch - CURRENT_LAG


def periods_ago(epoch: int | None, now_epoch: int | None) -> int | None:
    return None if epoch is None or now_epoch is None else now_epoch - epoch


def ago(epoch: int | None, now_epoch: int | None) -> str:
    """``this period``, ``1 period ago``, ``12 periods ago`` (or ahead, for a garbage epoch)."""
    n = periods_ago(epoch, now_epoch)
    if n is None:
        return "at an unknown time"
    if n == 0:
        return "this period"
    if n < 0:
        return f"{plural(-n, 'period')} ahead"
    return f"{plural(n, 'period')} ago"


def age_s(now_ms: int, ts: Any) -> float | None:
    """Seconds since server time ``ts`` (ms), never negative: a part may write a hair after the
    server time was read."""
    t = parse_int(ts) if not isinstance(ts, int) else ts
    return None if t is None else round(max(0, now_ms - t) / 1000.0, 3)


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def epochs_text(first: int | None, last: int | None, count: int | None = None) -> str:
    """``epoch 7``, or ``epochs 5 to 7`` (with ``count``: ``epochs 5 to 7 (3)``)."""
    if first is None or first == last:
        return f"epoch {last}"
    return f"epochs {first} to {last}" + (f" ({count})" if count is not None else "")


# -- leases ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Holder:
    """Who holds a lease: its value as stored (``owner`` or ``owner|extra``), the owner
    (``host:pid:random``), the extra part (a strategy's start ms, the trader's fencing token),
    and the time left (ms)."""

    value: str
    owner: str
    extra: str
    pttl_ms: int

    @property
    def host(self) -> str:
        return self.owner.split(":")[0] if self.owner.count(":") >= 2 else ""

    @property
    def pid(self) -> int | None:
        parts = self.owner.split(":")
        return parse_int(parts[-2]) if len(parts) >= 3 else None

    def describe(self) -> str:
        """``process 1234 on host h (owner h:1234:ab12)``, or the owner as it is."""
        owner = shown(self.owner)    # what a lease holds is data
        if self.pid is not None:
            return f"process {self.pid} on {shown(self.host, 100)} ({owner})"
        return owner


def split_lease(value: str) -> tuple[str, str]:
    """A lease value ``<owner>|<extra>`` as (owner, extra), split on the last ``|``: the extra part
    (a strategy's start in server ms, the trader's fencing token) never holds one.  Without a ``|``
    the whole value is the owner and the extra part is empty.  The scripts split it the same way
    (``lease_split`` in ``scripts.PRELUDE``)."""
    owner, sep, extra = value.rpartition("|")
    return (owner, extra) if sep else (value, "")


def lease_holder(value: Any, pttl_ms: Any) -> Holder | None:
    """The holder of a lease from its key's ``GET`` and ``PTTL`` replies, or None: a missing key,
    a key of another type (its GET failed), or one without a time to live holds nothing."""
    if not isinstance(value, (bytes, str)) or not isinstance(pttl_ms, int) or pttl_ms < 0:
        return None
    text = as_str(value)
    owner, extra = split_lease(text)
    return Holder(text, owner, extra, pttl_ms)


def queue_lease(pipe: redis.client.Pipeline, key: str) -> None:
    """Queue the two reads :func:`lease_holder` takes (``GET``, ``PTTL``) on a pipeline."""
    pipe.get(key)
    pipe.pttl(key)


MGET_PART = 1000   # leases per MGET: no single command holds Redis up for long


def read_holders(client: redis.Redis, keys: Sequence[str]) -> list[Holder | None]:
    """The holders of several leases, in one round trip: their values with ``MGET`` (nil for a
    missing key or one of another type: no holder either way) and each one's ``PTTL``."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for lo in range(0, len(keys), MGET_PART):
        pipe.mget(keys[lo:lo + MGET_PART])
    for key in keys:
        pipe.pttl(key)
    replies = pipe.execute(raise_on_error=False)
    for r in replies:
        if isinstance(r, redis.exceptions.ResponseError):   # e.g. an ACL denial (MGET and PTTL take any type)
            raise r
    parts = -(-len(keys) // MGET_PART)
    values = [v for part in replies[:parts] for v in part]
    return [lease_holder(v, t) for v, t in zip(values, replies[parts:])]


def heartbeat_fresh(ts: Any, now_ms: int, period_ms: int | None) -> bool:
    """A trader process is listed (alive) while its heartbeat is at most this many periods old."""
    t = parse_int(ts)
    return t is not None and now_ms - t <= (period_ms or 60_000) * TRADER_HEARTBEAT_PERIODS


def live_traders(heartbeats: dict[str, str], now_ms: int, period_ms: int | None) -> list[dict[str, Any]]:
    """Every trader process whose heartbeat (``NS:traders``: ``role|ts|fence`` or
    ``role|ts|leader``) is fresh: owner, role (leader / standby), age."""
    rows = []
    for owner, value in sorted(heartbeats.items()):
        role, _, rest = value.partition("|")
        ts, _, extra = rest.partition("|")
        if role not in ("leader", "standby") or not heartbeat_fresh(ts, now_ms, period_ms):
            continue
        row: dict[str, Any] = {"owner": shown(owner), "role": role, "age_s": age_s(now_ms, ts)}
        if role == "leader":
            row["fence"] = parse_int(extra)
        else:
            row["following"] = shown(extra)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["role"] != "leader", r["owner"]))


def live_parts(client: redis.Redis, keys: Keys) -> list[str]:
    """Every live part of a namespace, named with who holds it (``generator g1: process 1234 on
    h (h:1234:ab)``): its leases' holders and the trader processes with a fresh heartbeat."""
    found: list[str] = []
    owners: set[str] = set()
    pattern = keys.lease_pattern
    lease_keys = sorted({as_str(k) for k in client.scan_iter(match=pattern, count=1000)})
    for key, holder in zip(lease_keys, read_holders(client, lease_keys)):
        if holder is None:
            continue
        kind, _, name = keys.name_from(key, pattern).partition(":")
        found.append(shown(f"{kind} {name}".rstrip()) + f": {holder.describe()}")
        owners.add(shown(holder.owner))   # as live_traders shows an owner
    try:
        beats = text_hash(client.hgetall(keys.traders))
        period_ms = parse_int(client.hget(keys.meta, "period_ms"))
    except redis.exceptions.ResponseError:   # garbage there: no heartbeat to read
        beats, period_ms = {}, None
    for row in live_traders(beats, time_reply_ms(client.time()), period_ms):
        if row["owner"] not in owners:
            found.append(f"trader ({row['role']}): {Holder(row['owner'], row['owner'], '', 0).describe()}")
    return found


# -- views -------------------------------------------------------------------------------------------
def not_running(last: str) -> str:
    """The reason of a part that no live process holds."""
    return f"not running (no live process; {last})"


def _quote(reason: str) -> str:
    """A part's own reason quoted in another reason: escaped, at most REASON_CUT characters."""
    return shown(reason, REASON_CUT)


def last_report(report: Report | None, key: str, now_epoch: int | None) -> str:
    """``last report for epoch E, 12 periods ago`` (with the strategy's own reason when it had no
    decision), or why there is none."""
    if report is None:
        return f"no report in the last {DECISION_TTL_PERIODS} periods"
    if report.epoch is None:
        return f"{key} {report.reason}"
    text = f"last report for epoch {report.epoch}, {ago(report.epoch, now_epoch)}"
    if report.state != "ok" and report.reason:
        text += f": {_quote(report.reason)}"
    elif report.state == "ok" and parse_number(report.value) is None:
        text += f": decision {quoted(report.value, 40)} is not a finite number"
    return text


def strategy_view(keys: Keys, name: str, registered: bool, holder: Holder | None, raw: Any, pttl_ms: int | None,
                  epoch: int | None, ttl_ms: int | None, unreadable: str = "") -> dict[str, Any]:
    """A strategy's state and reason from what Redis holds (pure): its decision key's value
    (``raw``, what :func:`redismedian.scripts.parse_report` reads) and remaining time to live,
    its lease holder and whether it is registered.  ``status``, ``status --json``, ``check``
    and ``check strategy NAME`` all show this.

    States: ``ok`` (a current decision), ``starting`` / ``error`` (the strategy's own report,
    with its reason), ``stale`` (its last decision is not current), ``joining`` (a live process
    that the trader has not admitted yet), ``down`` (not running: no live process holds the
    name), ``absent`` (no report in Redis), ``garbage`` / ``unreadable`` (somebody else wrote its
    decision key)."""
    key = keys.decision(name)
    row: dict[str, Any] = {"name": shown(name), "registered": registered,
                           "owner": shown(holder.value) if holder else None}
    value_text = ""
    report = None
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
            if state == "ok" and parse_number(value_text) is None:
                state, reason = "garbage", (f"decision {quoted(value_text, 40)} in {key} is not a finite "
                                            f"number written as {NUMBER_RULE}")
    age = None
    if pttl_ms is not None and pttl_ms >= 0 and ttl_ms:
        age = round(max(0, ttl_ms - pttl_ms) / 1000.0, 3)
    if holder is None:
        state = "down"
        reason = not_running(reason if unreadable else last_report(report, key, epoch))
    elif not registered:
        state, reason = "joining", "not registered: waiting for the trader to admit it" + (
            f" (last: {reason})" if reason else "")
        row["joining_since_ms"] = parse_int(holder.extra)     # the process's start (its lease says)
    elif state == "ok" and not is_current(e, epoch):
        state, reason = "stale", f"last decision for epoch {e} ({ago(e, epoch)})"
    # The reason quotes data (the strategy's own words, a name found in a key): escaped, bounded.
    return {**row, "state": state, "value": parse_number(value_text) if value_text else None, "epoch": e,
            "age_s": age, "reason": shown(reason, LONG)}


def generator_view(keys: Keys, name: str, signal: dict[str, str] | str, holder: Holder | None,
                   epoch: int | None, now_ms: int) -> dict[str, Any]:
    """A generator's state and reason (pure), from its signal hash (text; ``{}`` when missing, or
    a string saying why it cannot be read) and its lease holder.

    States: ``ok`` (a current signal), ``error`` (its plug-in failed: the message), ``stale`` (its
    last signal is not current), ``starting`` (alive, no signal yet), ``down`` (not running),
    ``garbage`` / ``unreadable`` (somebody else wrote its signal)."""
    key = keys.signal(name)
    row: dict[str, Any] = {"name": shown(name), "owner": shown(holder.value) if holder else None, "value": None,
                           "epoch": None, "age_s": None}
    if isinstance(signal, str):
        return {**row, "state": "unreadable", "reason": shown(signal, LONG)}
    e = parse_int(signal.get("epoch"))
    value = parse_number(signal.get("value"))
    status = signal.get("status")
    row.update(value=value, epoch=e, age_s=age_s(now_ms, signal.get("ts")))
    if not signal:
        state, reason, last = "starting", "no signal yet (it writes one every period)", \
            f"no signal in the last {SIGNAL_TTL_PERIODS} periods"
    elif status not in ("ok", "error") or e is None:
        state = "garbage"
        reason = (f"{key} has status {quoted(status, 40)}, not ok or error" if status not in ("ok", "error")
                  else f"{key} has epoch {quoted(signal.get('epoch'), 40)}, not an epoch number")
        last = reason
    elif status == "error":
        state, reason = "error", shown(signal.get("error")) or "signal error (no message)"
        last = f"last signal for epoch {e}, {ago(e, epoch)}: error: {_quote(reason)}"
    elif value is None:
        state, reason = "garbage", f"signal {quoted(signal.get('value'), 40)} in {key} is not a finite number"
        last = reason
    elif not is_current(e, epoch):
        state, reason = "stale", f"last signal for epoch {e} ({ago(e, epoch)})"
        last = f"last signal for epoch {e}, {ago(e, epoch)}"
    else:
        state, reason = "ok", ""
        last = f"last signal for epoch {e}, {ago(e, epoch)}"
    if holder is None:
        state, reason = "down", not_running(last)
    return {**row, "state": state, "reason": shown(reason, LONG)}   # escaped: it quotes data


def _trader_fields(trader: Mapping[str, str], leader: str | None, now_ms: int) -> dict[str, Any]:
    """The fields of the trader's view read from ``NS:trader`` (``trader_view``), before its state."""
    return {
        "epoch": parse_int(trader.get("epoch")), "median": None, "count": None,
        "age_s": age_s(now_ms, trader.get("ts")), "leader": leader, "fence": parse_int(trader.get("fence")),
        "published_epoch": parse_int(trader.get("published")),
        "missed": parse_int(trader.get("missed")), "last_missed": parse_int(trader.get("last_missed")),
        # NS:trader is the trader's, which writes these escaped; read back as data all the same.
        "last_missed_reason": shown(trader.get("last_missed_reason", ""), LONG),
        "acted": parse_int(trader.get("acted")), "action_error": shown(trader.get("action_error", ""), LONG),
        # epochs whose doorbell did not ring as it should (trader.doorbell_verdict)
        "doorbell_anomalies": parse_int(trader.get("doorbell_anomalies")),
        "doorbell_last": parse_int(trader.get("doorbell_last")),
        "doorbell_kind": shown(trader.get("doorbell_kind", ""), 40),
        "doorbell_detail": shown(trader.get("doorbell_detail", ""), LONG),
        # acknowledged medians a failover lost, written back (trader.restore_acked), and a conflict found
        "restored_first": parse_int(trader.get("restored_first")),
        "restored_last": parse_int(trader.get("restored_last")),
        "restored_seen": parse_int(trader.get("restored_seen")),
        "conflict_epoch": parse_int(trader.get("conflict_epoch")),
        "conflict_reason": shown(trader.get("conflict_reason", ""), LONG),
        "conflict_seen": parse_int(trader.get("conflict_seen")),
    }


def trader_view(trader: dict[str, str] | str, holder: Holder | None, epoch: int | None, now_ms: int,
                deployed: bool = True) -> dict[str, Any]:
    """The leading trader's state and reason (pure), from ``NS:trader`` (text; ``{}`` when
    missing, or a string saying why it cannot be read) and the trader lease's holder.

    States: the trader's own (``ok``, ``error``, ``idle``, ``starting``) while a trader holds the
    lead and its evaluation is current; ``stale`` when it is not; ``down`` when no trader holds the
    lead (``NS:trader`` carries a TTL: it may be gone too); ``absent`` when nothing ever ran here.
    The median is shown only in state ``ok``: never the last median of a trader that is gone."""
    leader = shown(holder.value) if holder else None     # what a lease holds is data
    if isinstance(trader, str):
        # Every field as a missing NS:trader gives it (None, or '' for a text).
        return {"state": "unreadable", "reason": shown(trader, LONG), **_trader_fields({}, leader, now_ms)}
    row = _trader_fields(trader, leader, now_ms)
    e = row["epoch"]
    own = trader.get("state", "")
    if holder is None:
        if not trader:
            state, reason = ("down", "no trader running (no trader holds the lead)") if deployed else \
                ("absent", "no trader running")
        else:
            state = "down"
            reason = (f"no trader running (no trader holds the lead; last state {quoted(own or '?', 40)}"
                      + (f" for epoch {e}, {ago(e, epoch)})" if e is not None else ")"))
    elif not trader:
        state, reason = "starting", f"a trader leads ({shown(holder.owner)}) but has not written its state yet"
    elif own not in ("ok", "error", "idle", "starting"):
        state, reason = "garbage", f"state {quoted(own, 40)} is not one a trader writes"
    elif e is None:
        state, reason = "garbage", f"epoch {quoted(trader.get('epoch'), 40)} is not an epoch number"
    elif epoch is not None and not is_current(e, epoch):
        state = "stale"
        reason = (f"last evaluated epoch {e} ({ago(e, epoch)}; state {own}"
                  + (f": {_quote(trader['reason'])})" if trader.get("reason") else ")"))
    else:
        state, reason = own, shown(trader.get("reason", ""), LONG)
        if own == "ok":
            row["median"] = parse_number(trader.get("median"))
            row["count"] = parse_int(trader.get("count"))
    return {"state": state, "reason": reason, **row}


# -- verdicts ------------------------------------------------------------------------------------------
def missed_recently(row: dict[str, Any], epoch: int | None, window: int = DEFAULT_MISSED_WINDOW) -> bool:
    """Whether the trader missed an epoch within the last ``window`` periods (0: never counts)."""
    last = row.get("last_missed")
    return bool(window) and last is not None and epoch is not None and epoch - last < window


def missed_text(row: dict[str, Any], epoch: int | None) -> str:
    """``missed epoch E (2 periods ago): stall; 3 missed since it started``."""
    last, count = row.get("last_missed"), row.get("missed")
    since = f"{plural(count, 'epoch')} missed since it started" if count is not None else ""
    if last is None:
        return since or "missed epochs"
    text = f"missed epoch {last} ({ago(last, epoch)})"
    if row.get("last_missed_reason"):
        text += f": {_quote(row['last_missed_reason'])}"
    return text + (f"; {since}" if since else "")


def restored_text(row: dict[str, Any], epoch: int | None) -> str:
    """``acknowledged medians a failover lost, written back: epochs E to F (3 periods ago)``."""
    which = epochs_text(row.get("restored_first"), row.get("restored_last"))
    return f"acknowledged medians a failover lost, written back: {which} ({ago(row.get('restored_seen'), epoch)})"


def conflict_text(row: dict[str, Any], epoch: int | None) -> str:
    """``epoch E has two medians (found 2 periods ago): ...``: two histories met (two masters at once)."""
    seen = row.get("conflict_seen")
    return (f"epoch {row.get('conflict_epoch')} has two medians (found {ago(seen, epoch)}; two masters at once): "
            f"{_quote(row.get('conflict_reason') or '?')}; compare NS:medians with what was acted on")


def conflict_recently(row: dict[str, Any], epoch: int | None, window: int = DEFAULT_MISSED_WINDOW) -> bool:
    """Whether a conflict was found within the last ``window`` periods (as missed epochs; 0: never)."""
    seen = row.get("conflict_seen")
    return bool(window) and seen is not None and epoch is not None and epoch - seen < window


def problems(kind: str, row: dict[str, Any], epoch: int | None, *, missed_window: int = DEFAULT_MISSED_WINDOW,
             deployment: bool = False) -> list[str]:
    """What ``check`` says is wrong with one part's view (empty: healthy).  ``deployment``: as
    part of the whole deployment (the trader must publish: ``idle`` is not healthy there)."""
    if kind == "trader":
        healthy = ("ok",) if deployment else ("ok", "idle")
        out = [] if row.get("state") in healthy or row.get("cleared_by") else [
            f"trader: {row.get('state')}: {row.get('reason') or '?'}"]
        if missed_recently(row, epoch, missed_window):
            out.append(f"trader: {missed_text(row, epoch)}")
        if conflict_recently(row, epoch, missed_window) and row.get("state") not in ("down", "absent"):
            out.append(f"trader: {conflict_text(row, epoch)}")
        if row.get("action_error") and row.get("state") not in ("down", "absent"):
            out.append(f"trader: --on-median action failed (retried every period): {_quote(row['action_error'])}")
        return out
    label = f"{kind} {row['name']}"
    out = [] if row.get("state") == "ok" else [f"{label}: {row.get('state')}: {row.get('reason') or '?'}"]
    if kind == "strategy" and not deployment and not row.get("registered") and row.get("state") != "joining":
        out.append(f"{label}: not registered")
    return out


# "1 of 2 strategies missing: X: why; Y: why" (trader.missing_reason): how many, and the names it shows
_MISSING = re.compile(r"^(\d+) of \d+ strateg(?:y|ies) missing: ")
_MISSING_NAME = re.compile(r"(?:missing: |; )([A-Za-z0-9_.-]{1,64}): ")


def names_in_reason(reason: str) -> list[str]:
    """The strategy names a trader's ``N of M strategies missing: X: ...; Y: ...`` reason may name
    (candidates only: a name-like word inside a strategy's own quoted reason may come along)."""
    if not _MISSING.match(reason or ""):
        return []
    return sorted(set(_MISSING_NAME.findall(reason)))


def cleared_by_deregistration(row: dict[str, Any], trader_ts: int | None, deregistered: dict[str, int | None],
                              strategies: Sequence[dict[str, Any]]) -> list[str]:
    """The strategies whose deregistration, since the trader's last evaluation, explains its
    ``error`` away (empty: it does not).

    The trader settles an epoch in ``error`` when registered strategies are missing, and writes
    its next verdict only at the next boundary; a deregistration is known the moment it is written.
    So the error is over when the evaluation (``row``, written at server ms ``trader_ts``) is
    ``N of M strategies missing``, at least N strategies were deregistered at or after
    ``trader_ts`` (``deregistered``: name -> server ms of its record in ``NS:deregistered``), and
    every strategy still registered (``strategies``: the views ``status`` shows) is ``ok``: the
    trader publishes over them from the next boundary.  Pure, like the views."""
    if row.get("state") != "error" or trader_ts is None:
        return []
    m = _MISSING.match(row.get("reason") or "")
    if not m:
        return []
    since = sorted(n for n, ms in deregistered.items() if ms is not None and ms >= trader_ts)
    if len(since) < int(m.group(1)):
        return []
    if any(s.get("registered") and s.get("state") != "ok" for s in strategies):
        return []
    return since


def cleared_text(row: dict[str, Any]) -> str:
    """``resolved since: X deregistered after this evaluation; ...``, for a trader row whose
    error :func:`cleared_by_deregistration` explained away."""
    names = row.get("cleared_by") or []
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return (f"resolved since: {shown} deregistered after this evaluation; the trader publishes over "
            "the other strategies from the next boundary")


def text_hash(raw: Any) -> dict[str, str]:
    return {as_str(k): as_str(v) for k, v in (raw or {}).items()}


def names_of(keys: Iterable[Any], prefix: str) -> list[str]:
    return sorted({as_str(k)[len(prefix):] for k in keys})
