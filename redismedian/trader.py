"""Trader: each period, checks that every registered strategy submitted, and publishes the median.

The trader is also the registrar: strategies ask to be registered by publishing their name (the
``NS:joins`` channel), and the trader admits a name only when the name's own lease shows a live
process that was not deregistered.  Per epoch the leading trader

1. ticks at the boundary (one script: lease, heartbeat, registry checks), then admits the names that
   asked to join (one script),
2. waits for the epoch's doorbell (a message on the ``NS:ready`` channel, :mod:`redismedian.bell`)
   and reads every registered strategy's own decision key in one round trip (``MGET`` in parts of a
   few thousand keys, each part judged while Redis reads the next),
3. settles the epoch with one fenced script: publishes the median (computed here, from that read),
   or enters ``error`` naming the missing strategies at ``--decision-timeout``.

Several traders may run: one leads (a fenced lease), the others stand by.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import redis

from . import keys as K
from .clock import boundary_ms
from .common import NUMBER_RULE, FatalError, Settings, as_str, check_name, parse_int, parse_number, plugin_error
from .bell import Subscription
from .component import Component
from .connection import ErrorKind, classify, describe_error, server_version
from .following import Median, parse_median
from . import health as H
from .replies import xrange
from .text import LONG, SHORT, quoted, shown
from .scripts import (DECISION_MAX_BYTES, JOINS_FLOOD, Missed, MissedRecord, RegistryChanged, Report, TraderArgs,
                      TraderTicked, parse_report,
                      registry_admit, registry_restore, trader_acked, trader_acted, trader_restore, trader_settle,
                      trader_tick)

REASONS_LIMIT = 20   # name at most this many missing strategies in the reason
# The decision keys are read with one MGET per part of this many keys (from N / 8, at least
# READ_PART_MIN): the trader judges a part while Redis reads the next ones.
READ_PART_MIN, READ_PART_MAX = 1_000, 5_000
READ_WINDOW = 2      # parts sent ahead of the one being judged (the rest are sent as replies come in)
MAX_REGISTRY_CHECKS = 20  # registry re-reads within one epoch before giving the epoch up
# The doorbell is a hint that anybody with a strategy's credentials can spoil (INCR NS:count:<E>
# ahead, PUBLISH NS:ready early).  When the count read beside the decisions shows more submissions
# than registered strategies, the ring may never come: the trader then reads every POLL_MIN_MS, or
# every POLL_US_PER_STRATEGY per registered strategy when that is longer (a read costs Redis about
# 1 us per key: polling keeps it at most ~25% busy at 100k strategies, 400 ms apart); after a ring
# that came early it waits as long before the next read.  From the registry's size, not from timing
# reads: on a loaded machine a read of 3 keys can take 50 ms, and the polls would slow down with it.
POLL_MIN_MS = 20
# A trouble seen again within this many epochs of its last sighting is the same episode (said once): an
# early ring forged every period is an anomaly only in the epochs where it beats the decisions.
EPISODE_QUIET_EPOCHS = 10
POLL_US_PER_STRATEGY = 4
# --min-replicas / --wait-aof: the epoch in which a trader takes the lead is not published (docs/guarantees.md).
TAKEOVER_REASON = ("took the lead in this epoch: the previous leader may have published it on a master that failed "
                   "over; one median per epoch, so this one is not published (--min-replicas)")
# --min-replicas / --wait-aof: the medians this trader published and saw acknowledged that it keeps in
# memory, to write them back on a master that lacks them after a failover (Trader.restore_acked): the
# last RESTORE_EPOCHS, and no more than RESTORE_MAX_BYTES of fields (the newest is always kept): about
# 1000 epochs of a small deployment (16 hours at a 1-minute period), 5 or more at 100,000 strategies.
RESTORE_EPOCHS = 1000
RESTORE_MAX_BYTES = 8 * 2**20
# --wait-aof: the servers that have WAITAOF (what the refusal at start names).
WAITAOF_SERVERS = "Redis 7.2 or later, or Valkey"


class Doorbell(NamedTuple):
    """What the trader tells of epochs whose doorbell did not ring as it should."""

    total: int = 0      # such epochs since this trader started
    last: int = -1      # the last one
    kind: str = ""      # overcounted | early
    detail: str = ""


class Seen(NamedTuple):
    """One read of an epoch's decisions: the raw decision keys, and the registry's version and size
    at the same moment (None when unreadable); ``tallied``: when every decision read is a valid one
    for the epoch, their ``tally``, computed part by part while Redis read the next part (None: not
    computed, or something is missing or wrong: ``tally`` judges the whole read)."""

    decisions: list[bytes | None]
    version: int | None
    size: int | None
    tallied: "Tally | None" = None
    rang: bool = False          # the wait was ended by the doorbell (a ring of this epoch on NS:ready)
    counted: int | None = None  # NS:count:<E> as read (None: missing or not a number)


class Tally(NamedTuple):
    """One epoch's decisions, as read: the sorted values when every registered strategy submitted a
    valid one, else the problems (name, why)."""

    values: list[float]
    problems: list[tuple[str, str]]   # (name, why)


# The bytes of a read that passes the fast path: the number grammar's alphabet, and the "\n<epoch>|"
# that starts each decision.  float() takes more than the grammar (spaces, '_', 'inf', 'nan'), but on
# these bytes alone it takes exactly the grammar (and refuses the rest with ValueError).
_FAST_BYTES = b"0123456789.eE+-\n|"


INCOMPLETE = Tally([], [("", "not every decision is in yet")])


def tally(epoch: int, names: Sequence[str], raw: Sequence[bytes | None],
          decision_key: Callable[[str], str] | None = None,
          explain: bool = True) -> Tally:
    """Judge the decision keys of ``names`` (pure).  A decision counts when its key holds
    ``<epoch>|<number>`` for this very epoch, the number in the strict grammar and finite.

    The fast path checks all of them at once with a few C-level byte operations and ``float`` (100k
    decisions in tens of ms, most of it ``float`` itself); anything unusual falls back to judging
    each one, to say what is wrong with it.  Without ``explain`` (waiting, before the deadline) a key
    without this epoch's report ends it at once: the reasons are only needed at the deadline."""
    n = len(names)
    head = b"\n" + str(epoch).encode() + b"|"
    try:
        # No value longer than any report: one that is (50 MB in a strategy's own key) is never joined,
        # scanned or parsed here, only named by judge; even one the grammar takes (a million zeros).
        fits = max(map(len, raw), default=0) <= DECISION_MAX_BYTES  # type: ignore[arg-type]   # TypeError: one missing
        buf = b"\n" + b"\n".join(raw) if fits else b""  # type: ignore[arg-type]
    except TypeError:
        fits, buf = False, b""
    if not fits and not explain:
        return INCOMPLETE
    heads = buf.count(head)
    if not explain and heads != n:
        return INCOMPLETE
    # n heads and n newlines: every decision starts with this epoch's "<epoch>|" and holds no newline.
    if n and heads == n and buf.count(b"\n") == n and not buf.translate(None, _FAST_BYTES):
        try:
            xs = list(map(float, buf.split(head)[1:]))   # a '|' left in a value is a ValueError too
        except ValueError:
            xs = []
        if len(xs) == n:
            xs.sort()
            if math.isfinite(xs[0]) and math.isfinite(xs[-1]):
                return Tally(xs, [])
    values: list[float] = []
    problems: list[tuple[str, str]] = []
    for name, v in zip(names, raw):
        why = judge(epoch, v, decision_key(name) if decision_key else name)
        if isinstance(why, str):
            problems.append((name, why))
        else:
            values.append(why)
    values.sort()
    return Tally(values, problems)


def judge(epoch: int, raw: bytes | str | None, key: str, alive: bool | None = None) -> float | str:
    """One decision key's value: the decision for ``epoch``, or why there is none.

    ``alive``: whether a live process holds the strategy's name (:mod:`redismedian.health`), when
    known.  A strategy that no live process holds is reported as not running, with its last report
    and how long ago it was (the words ``status`` and ``check`` use), never as late."""
    r = parse_report(raw)
    why = _judge(epoch, r, key, alive)
    if alive is False and isinstance(why, str):
        return H.not_running(H.last_report(r, key, epoch))
    return why


def _judge(epoch: int, r: Report | None, key: str, alive: bool | None) -> float | str:
    if r is None:
        if alive:
            return "no decision (no report in Redis, although a live process holds its name)"
        return "no decision (no report for 10 periods: not running?)"
    if r.epoch is None:
        return f"no decision ({key} {r.reason})"
    if r.epoch != epoch:
        return f"no decision (last report for epoch {r.epoch}, {H.ago(r.epoch, epoch)})"
    if r.state != "ok":
        return r.reason or f"no decision (state '{r.state}')"     # parse_report escaped both
    x = parse_number(r.value)
    if x is None:
        return f"decision {quoted(r.value, 40)} in {key} refused: not a finite number written as {NUMBER_RULE}"
    return x


def median_of_sorted(xs: Sequence[float]) -> float:
    """The middle value, or the mean of the two middle values (statistics.median), except that two
    finite middle values whose sum overflows give their halves' sum instead of inf."""
    n = len(xs)
    if n % 2:
        return xs[n // 2]
    a, b = xs[n // 2 - 1], xs[n // 2]
    m = (a + b) / 2
    return m if math.isfinite(m) else a / 2 + b / 2


def inputs_text(raw: Sequence[bytes | str | None], epoch: int | None = None) -> str | None:
    """The inputs record of a published median (pure): each member's decision number, in the members'
    (sorted names') order, comma-separated, exactly as the strategy wrote it after ``<epoch>|``.  None
    when a value is not a report (never for a read that published: every value was a valid decision)."""
    if epoch is not None:
        # Fast path (a published read: every value is "<epoch>|<number>", no ',' or '|' in a number):
        # one join and one replace instead of a split per decision.
        try:
            joined = b"," + b",".join(raw)  # type: ignore[arg-type]   # TypeError: one missing or str
        except TypeError:
            joined = b""
        head = b"," + str(epoch).encode() + b"|"
        if joined and joined.count(head) == len(raw) and joined.count(b"|") == len(raw) \
                and joined.count(b",") == len(raw):
            return joined.replace(head, b",")[1:].decode("ascii", "replace")
    out = []
    for v in raw:
        if v is None:
            return None
        b = v.encode() if isinstance(v, str) else v
        _, sep, number = b.partition(b"|")
        if not sep or b"," in number:
            return None
        out.append(number)
    return b",".join(out).decode("ascii", "replace")


def replicas_verdict(epoch: int, acked: int, needed: int, waited_ms: int, error: str = "",
                     local: int | None = None) -> str:
    """Whether ``epoch``'s median counts as published (pure): '' when ``needed`` replicas acknowledged
    it, else the reason (the trader's state reason and the epoch's gap in NS:events).  ``local``:
    None under WAIT (--min-replicas); under WAITAOF (--wait-aof) whether the master's append-only
    file holds it on disk (1) or not (0), ``acked`` then counts the replicas whose AOF holds it."""
    if local is None:
        if acked >= needed and not error:
            return ""
        why = (f"{acked} of {H.plural(needed, 'replica', 'replicas')} acknowledged the median of epoch {epoch} "
               f"within {waited_ms} ms; --min-replicas {needed} needs {needed}")
        command = "WAIT"
    else:
        if local >= 1 and acked >= needed and not error:
            return ""
        where = "the master" if local >= 1 else "not the master"
        if needed:
            why = (f"the median of epoch {epoch} on disk (WAITAOF) within {waited_ms} ms: {where}, {acked} of "
                   f"{H.plural(needed, 'replica', 'replicas')}; --wait-aof --min-replicas {needed} needs the master "
                   f"and {needed}")
        else:
            why = (f"the median of epoch {epoch} on disk (WAITAOF) within {waited_ms} ms: {where}; --wait-aof "
                   "needs the master")
        command = "WAITAOF"
    if error:
        why += f" ({command} failed: {error})"
    return why + "; not acted on"


def missing_reason(problems: list[tuple[str, str]], nreg: int) -> str:
    """``1 of 2 strategies missing: X: why`` (at most REASONS_LIMIT named, within text.LONG
    characters).  Names and reasons are escaped and bounded (a name in the registry, a strategy's
    own reason, are data): what this returns goes into the log, NS:trader and NS:events as it is."""
    head = f"{len(problems)} of {H.plural(nreg, 'strategy', 'strategies')} missing: "
    parts: list[str] = []
    used = len(head) + 40     # room for "; and N more"
    for name, why in sorted(problems)[:REASONS_LIMIT]:
        part = f"{shown(name, 64)}: {shown(why, 2 * SHORT)}"
        if used + len(part) + 2 > LONG:
            break
        parts.append(part)
        used += len(part) + 2
    if len(problems) > len(parts):
        parts.append(f"and {len(problems) - len(parts)} more")
    return head + "; ".join(parts)


def verdict(got: Tally, nreg: int) -> tuple[str, str]:
    """How an epoch is settled, from its tally at the deadline (pure): ("ok", the median's text as
    published in NS:medians), or ("error", the reason naming every strategy without a decision).
    The trader settles with it, and ``redismedian replay`` computes the same from recorded signals."""
    if got.problems:
        return "error", missing_reason(got.problems, nreg)
    return "ok", repr(median_of_sorted(got.values))


def explain_missing(client: redis.Redis, keys: K.Keys, epoch: int, names: Sequence[str],
                    decisions: Sequence[bytes | None], problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The problems, with those that the reason shows (at most REASONS_LIMIT) judged again knowing
    whether a live process holds each name: one pipelined read of their leases.  ``names`` are the
    registered names in sorted order and ``decisions`` their decision keys' values, as read."""
    ordered = sorted(problems)
    shown = ordered[:REASONS_LIMIT]
    try:
        holders = H.read_holders(client, [keys.lease("strategy", n) for n, _ in shown])
    except redis.exceptions.RedisError:
        return problems         # the reasons without liveness; settling the epoch matters more
    out = []
    for (name, why), holder in zip(shown, holders):
        i = bisect.bisect_left(names, name)
        if i < len(names) and names[i] == name:
            again = judge(epoch, decisions[i], keys.decision(name), alive=holder is not None)
            if isinstance(again, str):   # always: the same value was a problem as read
                why = again
        out.append((name, why))
    return out + ordered[REASONS_LIMIT:]


def default_decision_timeout_ms(period_ms: int) -> int:
    """The trader gives up on an epoch at 80% of the period (strategies give up on signals at 50%)."""
    return period_ms * 4 // 5


class Acked(NamedTuple):
    """A median this trader published and saw acknowledged, as written: what it writes back on a master
    that lacks it (Trader.restore_acked)."""

    epoch: int
    median: tuple[str, ...]     # the fields of its NS:medians entry
    ack: tuple[str, ...]        # the fields of its NS:acks entry
    size: int                   # their characters, counted once (against RESTORE_MAX_BYTES)


@dataclass
class RegistryMemory:
    """The registry as this trader last saw it: what it restores when Redis loses names."""

    instance: str
    version: int
    names: frozenset[str]


class Trader(Component):
    kind = "trader"

    def __init__(self, settings: Settings, decision_timeout_ms: int | None = None,
                 medians_maxlen: int = K.DEFAULT_MEDIANS_MAXLEN,
                 on_median: Callable[[int, float, int], object] | None = None, min_replicas: int = 0,
                 record_inputs: bool = True, wait_aof: bool = False, **kw: Any) -> None:
        super().__init__(settings, name=None, **kw)
        self.min_replicas = min_replicas     # --min-replicas: WAIT for this many after each median (0: never)
        self.wait_aof = wait_aof             # --wait-aof: WAITAOF 1 N instead (the master's AOF on disk too)
        self.record_inputs = record_inputs   # --record-inputs: each median keeps its members' decisions
        self._inputs_history_warned = False  # said once: the inputs history outgrows INPUTS_HISTORY_WARN_BYTES
        self.replicas_reason = ""            # while medians are not acknowledged: why (the state reason)
        self.acked_memory: list[Acked] = []  # the last medians published and acknowledged (restore_acked)
        self._published_fields: tuple[int, tuple[str, ...]] | None = None   # the last NS:medians entry written
        self.acted_last: int | None = None   # the last epoch this trader acted on (--on-median)
        self._inputs_warned = False
        self.decision_timeout_ms = (decision_timeout_ms if decision_timeout_ms is not None
                                    else default_decision_timeout_ms(self.period_ms))
        self.medians_maxlen = medians_maxlen
        self.token = ""          # fencing token while we lead, "" while standing by
        self.leader_seen: str | None = None  # who leads while we stand by (logged when it changes)
        self.state: str | None = None  # last state we logged: ok / error / idle
        self.memory: RegistryMemory | None = None
        self.fence_floor = 0     # highest fencing token seen: a new token is always above it
        self.last_published = -1
        self.restored_instance = ""  # deployment record into which we restored every registration we knew
        # (names, sorted names, their decision keys)
        self._read_plan: tuple[frozenset[str] | None, list[str], list[str]] = (None, [], [])
        # (decision keys, their MGET commands as sent, one per part)
        self._packed_mget: tuple[list[str] | None, list[bytes]] = (None, [])
        # Decision keys found holding more than any report: read with GETRANGE (bounded), never whole.
        self._oversized: frozenset[str] = frozenset()
        # (all keys, oversized) -> (the keys read with MGET, [(position, key)] read with GETRANGE)
        self._split: tuple[Any, Any, list[str], list[tuple[int, str]]] = (None, None, [], [])
        self.on_median = on_median   # the action plug-in: FUNC(epoch, median, fence), or None
        self.accounted: int | None = None  # the last epoch we settled or recorded as missed
        self.missed = MissedRecord()
        self.doorbell = Doorbell()
        # (kind -> the last epoch it was seen in): what is said once per episode (epochs in a row)
        self._episodes: dict[str, int] = {}
        self._junk_seen = 0        # junk messages on the doorbell channels already said
        # The doorbells (NS:ready, NS:joins): pub/sub, on a connection of its own, on the trader's clock.
        self.bell = Subscription(self.client, self.keys, self.log, monotonic=lambda: self.clock.now_ms() / 1000.0)

    @property
    def acknowledging(self) -> bool:
        """Whether a median counts only once acknowledged (--min-replicas above 0, or --wait-aof)."""
        return bool(self.min_replicas or self.wait_aof)

    def startup(self) -> None:
        self.check_period_first()
        if self.wait_aof:
            self.check_wait_aof()
        self.bell.ensure()       # from now on, join requests and rings wait for us in the subscription
        self.log.info("trader started (period %gs, decision timeout %gs)", self.settings.period,
                      self.decision_timeout_ms / 1000)

    def trader_args(self) -> TraderArgs:
        m = self.memory
        return TraderArgs(self.token, m.instance if m else "", m.version if m else 0, len(m.names) if m else 0,
                          self.fence_floor, self.last_published, self.restored_instance)

    # -- one period ----------------------------------------------------------------------------
    def step(self, epoch: int) -> None:
        deadline = boundary_ms(epoch, self.period_ms) + self.decision_timeout_ms
        checks = 0
        while not self.stop.is_set():
            t = self.tick(epoch)
            if t.lost_acked:
                self.restore_acked(epoch)
            if t.status == "registry":
                checks += 1
                if checks > MAX_REGISTRY_CHECKS:
                    self.registry_churn(epoch)
                    return
                self.sync_registry(t.instance)
                continue
            if self.memory is None:
                self.sync_registry(t.instance)
            if t.status == "standby":
                self.bell.close()    # only the leader listens: a standby's subscription would only fill up
                if self.stand_by(t, deadline):
                    return
                continue
            was_leading = bool(self.token)
            self.lead(t)
            self.account(epoch, t, was_leading)
            self.take_joins(epoch)
            if t.status == "lead" and t.took and self.acknowledging and t.prev is not None and t.prev >= epoch - 1:
                # A leader settled the epoch before: it may have published this very epoch too, on a
                # master that failed over since (its publication and its lease lost with it).  One
                # median per epoch: not again.
                self.miss(epoch, epoch, TAKEOVER_REASON)
                self.act()
                return
            if t.status == "lead":
                break
            if t.status == "starting":
                if self.state != "starting":
                    self.log.info("not publishing in epoch %d: %s", epoch, t.detail)
                self.state = "starting"
                self.metrics.state("starting")
                self.accounted = epoch
            elif t.status == "expired":
                self.metrics.error("late")
                self.miss(epoch, epoch, "the epoch ended before the trader could settle it (stalled or overloaded)")
            elif t.status == "done":
                self.accounted = epoch
            else:
                raise FatalError(f"unexpected reply from Redis: {t!r}")
            self.act()
            return
        if self.stop.is_set():
            return
        self.collect(epoch, deadline)
        self.act()

    @property
    def state_ttl_ms(self) -> int:
        return K.ttl_ms(self.period_ms, K.TRADER_STATE_TTL_PERIODS)

    def tick(self, epoch: int) -> TraderTicked:
        last = self.acked_memory[-1].epoch if self.acked_memory else None
        t = trader_tick(self.run_script, self.keys, self.meta_args(), self.trader_args(), epoch=epoch,
                        heartbeat_ttl_ms=K.ttl_ms(self.period_ms, K.TRADER_HEARTBEAT_PERIODS),
                        state_ttl_ms=self.state_ttl_ms,
                        acked=None if last is None else (last, boundary_ms(last, self.period_ms)))
        if t.note:
            self.log.warning("registry repaired: %s", t.note)
        return t

    def lead(self, t: TraderTicked) -> None:
        if t.took:
            self.log.info("took the lead (fencing token %s)", t.token)
        self.token = t.token
        self.fence_floor = max(self.fence_floor, parse_int(t.token) or 0)

    # -- missed epochs: never silent ---------------------------------------------------------------
    def account(self, epoch: int, t: TraderTicked, was_leading: bool) -> None:
        """Leading at ``epoch``: record the epochs before it that nobody settled."""
        if t.took or self.accounted is None:
            base = t.prev      # the last epoch any leader settled
            if t.took and was_leading:
                why = self.interrupted or "this trader stalled, and its lead expired"
            elif t.took:
                why = "no trader was leading (the leader stopped, hung or lost Redis)"
            else:
                why = "the trader was not running"
        else:
            base = self.accounted
            why = self.interrupted or "the trader stalled (it did not run in time)"
        self.interrupted = ""
        if base is not None and base < epoch - 1:
            self.miss(base + 1, epoch - 1, why)

    def miss(self, first: int, last: int, reason: str) -> None:
        n = last - first + 1
        self.log.warning("missed %s: %s", H.epochs_text(first, last, n), reason)
        self.metrics.missed(n)
        m = self.missed
        self.missed = MissedRecord(m.total + n, last, reason, (m.pending + (Missed(first, last, reason),))[-20:])
        self.accounted = max(last, self.accounted if self.accounted is not None else last)

    def registry_churn(self, epoch: int) -> None:
        """The registry kept changing under us during ``epoch``: give it up, and say so."""
        self.problem(f"the registry kept changing during epoch {epoch}; not publishing it")
        self.miss(epoch, epoch, "the registry kept changing")

    def collect(self, epoch: int, deadline: int) -> None:
        """Wait for the decisions (doorbell) and settle the epoch: publish, or error at the deadline."""
        checks = 0
        first = True
        bell = _BellWatch()
        # A doorbell spoiled in the epoch before is likely spoiled again: poll from the start.
        bell.spoiled = self.doorbell.last == epoch - 1 and self.doorbell.kind == "overcounted"
        while not self.stop.is_set():
            names, keys = self.read_plan()
            if not names:
                self.settle(epoch, "idle", "no strategies registered")
                return
            now = self.clock.now_ms()
            final = now >= deadline
            if not final and now < bell.hold_until:     # the doorbell rang early: pace the reads
                self.clock.wait(self.stop, (min(bell.hold_until, deadline) - now) / 1000.0)
                continue
            # Block on the doorbell (it stays rung until we pop it), for a short step at most so
            # that stop requests stay fast; at the deadline, read at once.  While the count shows the
            # doorbell was spoiled, poll.
            step = self.settings.block_ms if not bell.spoiled else self.poll_ms()
            wait_ms = 0 if final else max(1, min(step, deadline - now))
            # Wait for the ring, unless it may have rung before we listened (the first read of an epoch
            # in which the subscription began: a trader that just started or subscribed again).
            unheard = first and not self.bell.heard_since(boundary_ms(epoch, self.period_ms) / 1000.0)
            rang = self.wait_for_ring(epoch, wait_ms) if wait_ms and not unheard else False
            first = False
            seen = self.read_decisions(epoch, keys, rang)
            final = final or self.clock.now_ms() >= deadline
            if self.registry_moved(seen):
                # An operator deregistered (or somebody edited the registry) while we wait: adopt it
                # now, so that deregistering the missing strategy completes the epoch at once.
                self.refresh_registry()
                checks += 1
                if checks <= MAX_REGISTRY_CHECKS:
                    continue
            got = seen.tallied or tally(epoch, names, seen.decisions, self.keys.decision, explain=final)
            bell.saw(seen, len(names), complete=not got.problems)
            if got.problems and not final:
                if bell.early_now:
                    bell.hold_until = self.clock.now_ms() + self.poll_ms()
                continue
            if got.problems:
                got = got._replace(problems=explain_missing(self.client, self.keys, epoch, names, seen.decisions,
                                                            got.problems))
            outcome, text = verdict(got, len(names))
            count = len(names) if outcome == "ok" else 0
            members = ",".join(names) if outcome == "ok" and count <= K.MEDIAN_MEMBERS_LIMIT else ""
            inputs = self.inputs_record(epoch, seen.decisions) if outcome == "ok" else ""
            settled = self.settle(epoch, outcome, text, count, members, inputs)
            if settled != "registry":
                if settled == "published":
                    self.doorbell_verdict(epoch, bell, len(names))
                    if self.acknowledging:
                        self.await_replicas(epoch)
                return
            checks += 1
            if checks > MAX_REGISTRY_CHECKS:
                self.registry_churn(epoch)
                return
            self.sync_registry(self.instance)

    def read_plan(self) -> tuple[list[str], list[str]]:
        """The registered names in a fixed order and their decision keys (rebuilt when they change)."""
        names = self.memory.names if self.memory else frozenset()
        if self._read_plan[0] is not names:
            ordered = sorted(names)
            self._read_plan = (names, ordered, [self.keys.decision(n) for n in ordered])
        return self._read_plan[1], self._read_plan[2]

    def split_reads(self, keys: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
        """The decision keys read with MGET, and those read with GETRANGE (oversized), by position."""
        if self._split[0] is not keys and self._oversized:
            self._oversized = self._oversized & frozenset(keys)   # forget the names that left
        if self._split[0] is not keys or self._split[1] is not self._oversized:
            big = [(i, k) for i, k in enumerate(keys) if k in self._oversized] if self._oversized else []
            whole = [k for k in keys if k not in self._oversized] if big else keys
            self._split = (keys, self._oversized, whole, big)
        return self._split[2], self._split[3]

    def wait_for_ring(self, epoch: int, wait_ms: int) -> bool:
        """Wait up to ``wait_ms`` for the epoch's doorbell (NS:ready): True when it rang.  While the
        subscription is down, wait as long as a poll (the reads then find the decisions by polling)."""
        since = self.bell.since
        if self.bell.wait(epoch, wait_ms / 1000.0):
            return True
        if self.bell.since != since:
            return False        # subscribed again: a ring sent meanwhile was lost, read now
        if not self.bell.up:
            self.clock.wait(self.stop, min(wait_ms, self.poll_ms()) / 1000.0)
        return False

    def read_decisions(self, epoch: int, keys: list[str], rang: bool = False) -> "Seen":
        """Read every decision key, the epoch's count and the registry's version and size: one round
        trip (``rang``: the doorbell woke us, for the Seen).  A key once found holding more than any
        report is read with GETRANGE (at most DECISION_MAX_BYTES + 1 bytes) from then on: one
        strategy's 50 MB value costs one read, not every read of every period."""
        whole, big = self.split_reads(keys)
        commands: list[tuple[Any, ...]] = [("GET", self.keys.count(epoch)), ("HGET", self.keys.meta, "registry"),
                                           ("SCARD", self.keys.strategies)]
        commands += [("GETRANGE", k, 0, DECISION_MAX_BYTES) for _i, k in big]
        tallied = None
        if type(self.client) in (redis.Redis, redis.StrictRedis):
            replies, tallied = self._send(commands, whole, epoch)
        else:   # another client class (tests' fakeredis, a cluster client): its own pipeline
            pipe = self.client.pipeline(transaction=False)
            for c in commands:
                pipe.execute_command(*c)
            pipe.mget(whole)
            replies = pipe.execute(raise_on_error=False)
        self._watch_sizes(replies[-1], whole, tallied)
        if big:
            tallied = None
            replies = self._merge_bounded(replies, big)
        count, version, size = replies[0:3]
        decisions = replies[-1]
        for reply in replies:
            if isinstance(reply, Exception) and (reply is decisions or classify(reply) is not ErrorKind.DATA):
                raise reply
        return Seen(decisions, None if isinstance(version, Exception) else _version(version),
                    size if isinstance(size, int) else None, tallied, rang,
                    None if isinstance(count, Exception) else parse_int(count))

    @staticmethod
    def _merge_bounded(replies: list[Any], big: list[tuple[int, str]]) -> list[Any]:
        """The replies with the GETRANGE reads put back in their keys' places among the decisions."""
        got, bounded = replies[-1], replies[-1 - len(big):-1]
        if isinstance(got, Exception):
            return replies
        merged: list[bytes | None] = list(got)
        for (i, _k), v in zip(big, bounded):
            merged.insert(i, None if isinstance(v, Exception) or not v else v)
        return [*replies[:-1 - len(big)], merged]

    def _watch_sizes(self, decisions: Any, whole: list[str], tallied: "Tally | None") -> None:
        """Keys holding more than any report (only looked for when the read did not tally as it is):
        read bounded from now on, and said once."""
        if tallied is not None or isinstance(decisions, Exception) or not whole:
            return
        got = decisions[:len(whole)] if len(decisions) == len(whole) else None
        if got is None or max(map(len, filter(None, got)), default=0) <= DECISION_MAX_BYTES:
            return
        found = [(k, len(v)) for k, v in zip(whole, got) if v is not None and len(v) > DECISION_MAX_BYTES]
        for k, n in found[:REASONS_LIMIT]:
            self.log.warning("%s holds %d bytes, more than any report (%d): not a decision; reading at most "
                             "%d bytes of it from now on", k, n, DECISION_MAX_BYTES, DECISION_MAX_BYTES + 1)
        self._oversized = self._oversized | {k for k, _n in found}

    def poll_ms(self) -> int:
        """How long to wait between two reads when the doorbell cannot be trusted."""
        n = len(self.memory.names) if self.memory else 0
        return int(min(self.settings.block_ms, max(POLL_MIN_MS, n * POLL_US_PER_STRATEGY // 1000)))

    def doorbell_verdict(self, epoch: int, bell: "_BellWatch", nreg: int) -> None:
        """After a publication: count and show an epoch whose doorbell did not ring as it should
        (WARNING once per episode, the metric, and NS:trader's ``doorbell_*`` fields for status)."""
        if bell.kind:
            detail = (f"{self.keys.count(epoch)} counted {bell.max_count} submissions for {nreg} registered "
                      "strategies (a submission counted twice, or a strategy's credentials INCRed it): "
                      "the trader polled for the decisions" if bell.kind == "overcounted" else
                      f"{self.keys.ready_channel} rang for this epoch before every decision was in (a strategy's "
                      "credentials published it): the trader paced its reads")
            d = self.doorbell
            if self._new_episode("doorbell", epoch):
                self.log.warning("the doorbell did not ring as it should in epoch %d: %s", epoch, detail)
            self.doorbell = Doorbell(d.total + 1, epoch, bell.kind, detail)
            self.metrics.error(f"doorbell_{bell.kind}")
            try:
                self.client.hset(self.keys.trader, mapping={
                    "doorbell_anomalies": self.doorbell.total, "doorbell_last": epoch,
                    "doorbell_kind": bell.kind, "doorbell_detail": detail})
            except redis.exceptions.RedisError as e:
                self.log.debug("could not record the doorbell anomaly: %s", describe_error(e))
        elif self.doorbell.last == epoch - 1 - EPISODE_QUIET_EPOCHS:
            self.log.info("the doorbell rang as it should in the %d epochs to %d", EPISODE_QUIET_EPOCHS, epoch)

    def _send(self, commands: list[tuple[Any, ...]], keys: list[str], epoch: int) -> tuple[list[Any], "Tally | None"]:
        """One round trip: ``commands``, then ``MGET`` of ``keys`` in parts, whose encoding is kept
        between periods (packing 100k key names costs more than Redis' own work on them).  Replies in
        order, the parts' joined into one list; an error reply is returned, not raised, as a pipeline
        does.  Each part is tallied (fast path only) as soon as it arrives, while Redis reads the next
        ones: the tally of the whole read when every decision is a valid one for ``epoch``, else None.
        The parts are not one atomic read, and need not be: each key is read once, and a decision
        counts only for the epoch it names."""
        if self._packed_mget[0] is not keys:
            self._packed_mget = (keys, [])
        pool = self.client.connection_pool
        try:
            conn = pool.get_connection()
        except TypeError:               # redis-py 5 wants a command name
            conn = pool.get_connection("MGET")
        try:
            parts = self._packed_mget[1]
            if not parts and keys:
                size = min(READ_PART_MAX, max(READ_PART_MIN, -(-len(keys) // 8)))
                parts = [b"".join(conn.pack_command("MGET", *keys[lo:lo + size])) for lo in range(0, len(keys), size)]
                self._packed_mget = (keys, parts)
            # Only READ_WINDOW parts in flight: had the whole read been sent at once, Redis would have
            # read most of it by the time the last byte was sent, and the judging would start after
            # Redis' work instead of beside it.
            conn.send_packed_command([*conn.pack_commands(commands), *parts[:READ_WINDOW]])
            replies = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as e:
                    replies.append(e)
            decisions: list[bytes | None] = []
            error = None
            values: list[float] | None = []    # the parts' sorted values, one after the other
            for i in range(len(parts)):
                if i + READ_WINDOW < len(parts):
                    conn.send_packed_command([parts[i + READ_WINDOW]], check_health=False)
                try:
                    got = conn.read_response()
                except redis.exceptions.ResponseError as e:
                    error = error or e
                    continue
                if values is not None:
                    # The key names stand in for the strategies' names: a part's reasons are not kept.
                    t = tally(epoch, keys[len(decisions):len(decisions) + len(got)], got, explain=False)
                    if t.problems:
                        values = None
                    else:
                        values.extend(t.values)
                decisions.extend(got)
            replies.append(error or decisions)
            tallied = None
            if error is None and values is not None and keys:
                values.sort()           # sorted runs: merged, not sorted again from scratch
                tallied = Tally(values, [])
            return replies, tallied
        except BaseException:
            conn.disconnect()           # a half-read reply must never reach the next caller
            raise
        finally:
            pool.release(conn)

    def registry_moved(self, seen: "Seen") -> bool:
        m = self.memory
        return m is not None and (seen.version != m.version or seen.size != len(m.names))

    def refresh_registry(self) -> None:
        """Let the registry guard record what changed (an SREM is a deregistration), then adopt it."""
        r = registry_admit(self.run_script, self.keys, self.meta_args(), [])
        if r.note:
            self.log.warning("registry repaired: %s", r.note)
        self.sync_registry(r.instance)

    def inputs_record(self, epoch: int, decisions: Sequence[bytes | None]) -> str:
        """The inputs field of the median's NS:medians entry ('' when not recorded: --no-record-inputs,
        or larger than one Redis argument may be)."""
        if not self.record_inputs:
            return ""
        text = inputs_text(decisions, epoch)
        if text is None or len(text) > K.INPUTS_MAX_BYTES:
            if not self._inputs_warned:
                self._inputs_warned = True
                self.log.warning("not recording the inputs of the medians: %s (redismedian verify names "
                                 "these epochs; run with --no-record-inputs at this size)",
                                 "a decision read is not a report" if text is None else
                                 f"{len(text)} bytes, more than {K.INPUTS_MAX_BYTES}")
            return ""
        projected = len(text) * self.medians_maxlen
        if projected > K.INPUTS_HISTORY_WARN_BYTES and not self._inputs_history_warned:
            self._inputs_history_warned = True
            self.log.warning("the medians history will hold about %d MB of recorded inputs (%d bytes an epoch, "
                             "--medians-maxlen %d): more than %d MB of Redis memory (the shipped maxmemory is "
                             "1 GB); lower --medians-maxlen, or run with --no-record-inputs", projected // 2**20,
                             len(text), self.medians_maxlen, K.INPUTS_HISTORY_WARN_BYTES // 2**20)
        return text

    # -- --min-replicas: a median counts once N replicas hold it ---------------------------------------
    def wait_replicas(self, n: int, timeout_ms: int) -> int:
        """Redis WAIT: how many replicas acknowledged every write of this connection so far (the thin
        I/O boundary: unit tests replace it)."""
        return int(self.client.execute_command("WAIT", n, timeout_ms))

    def wait_fsynced(self, n: int, timeout_ms: int) -> tuple[int, int]:
        """WAITAOF 1 n: (1 when the master's append-only file holds every write of this connection
        on disk, else 0; how many replicas' do).  The thin I/O boundary, as ``wait_replicas``."""
        local, replicas = self.client.execute_command("WAITAOF", 1, n, timeout_ms)
        return int(local), int(replicas)

    def check_wait_aof(self) -> None:
        """--wait-aof, at start: refuse in one line (FatalError) a server without WAITAOF (naming its
        version), a Redis user that may not send it, and a master without its append-only file.
        ``WAITAOF 1 0 1`` waits at most 1 ms and writes nothing."""
        try:
            self.client.execute_command("WAITAOF", 1, 0, 1)
        except redis.exceptions.ResponseError as e:
            text = str(e)
            if classify(e) is ErrorKind.PERMISSION:
                raise FatalError("--wait-aof: this trader's Redis user may not send WAITAOF; give it +waitaof "
                                 "(`redismedian acl --wait-aof` renders the trader user with it), or run without "
                                 "--wait-aof") from None
            if "unknown command" in text.lower():
                raise FatalError(f"--wait-aof needs WAITAOF, which {server_version(self.client)} does not have: "
                                 f"use {WAITAOF_SERVERS}, or run without --wait-aof") from None
            if "appendonly" in text.lower():
                raise FatalError("--wait-aof needs the append-only file on the master (appendonly yes): "
                                 f"WAITAOF refused: {shown(text, SHORT)}") from None
            raise

    def await_replicas(self, epoch: int) -> None:
        """After publishing ``epoch``: WAIT for --min-replicas replicas (WAITAOF for the master's
        append-only file and theirs, with --wait-aof), at most until the period ends (and within the
        socket timeout), and record the verdict (NS:acks, or a gap in NS:events and the state error
        naming the replicas)."""
        start = self.clock.now_ms()
        left = boundary_ms(epoch + 1, self.period_ms) - start
        timeout = max(1, min(left, int(self.settings.socket_timeout * 1000) - 100))
        error = ""
        acked = 0
        local: int | None = 0 if self.wait_aof else None
        try:
            if self.wait_aof:
                local, acked = self.wait_fsynced(self.min_replicas, timeout)
            else:
                acked = self.wait_replicas(self.min_replicas, timeout)
        except redis.exceptions.ResponseError as e:
            error = describe_error(e)
        waited = max(0, self.clock.now_ms() - start)
        reason = replicas_verdict(epoch, acked, self.min_replicas, waited, error, local)
        leading = trader_acked(self.run_script, self.keys, lease_value=f"{self.settings.owner}|{self.token}",
                               token=self.token, epoch=epoch, replicas=acked, reason=reason,
                               maxlen=self.medians_maxlen, state_ttl_ms=self.state_ttl_ms, aof=local)
        if leading and not reason:
            self.remember_acked(epoch, acked, local, leading)
        if not leading:
            self.log.warning("lost the lead before recording the replicas of epoch %d; standing by", epoch)
            self.token = ""
            return
        if reason:
            self.log.warning("epoch %d not published: %s", epoch, reason)
            self.replicas_reason = reason
            self.state = "error"
            self.metrics.state("error")
            self.metrics.error("replicas")
        elif self.replicas_reason:
            self.log.info("replicas acknowledge the medians again (epoch %d: %d)", epoch, acked)
            self.replicas_reason = ""
            self.state = "ok"
            self.metrics.state("ok")

    # -- acknowledged medians a failover lost: written back ---------------------------------------------
    def remember_acked(self, epoch: int, replicas: int, aof: int | None, ts: int) -> None:
        """``epoch``'s median is acknowledged: keep it, as written, to write it back on a master that lacks
        it (the last RESTORE_EPOCHS, within RESTORE_MAX_BYTES)."""
        published, self._published_fields = self._published_fields, None
        if published is None or published[0] != epoch:
            return
        ack = tuple(str(x) for x in ["epoch", epoch, "replicas", replicas] + ([] if aof is None else ["aof", aof])
                    + ["fence", self.token, "ts", ts])
        fields = published[1]
        entry = Acked(epoch, fields, ack, sum(map(len, fields)) + sum(map(len, ack)))
        # No more than the streams keep (--medians-maxlen): an older one is not lost but trimmed.
        keep = max(1, min(RESTORE_EPOCHS, self.medians_maxlen))
        memory = [*self.acked_memory, entry][-keep:]
        while len(memory) > 1 and sum(a.size for a in memory) > RESTORE_MAX_BYTES:
            memory.pop(0)
        self.acked_memory = memory

    def restore_acked(self, epoch: int) -> None:
        """The master no longer holds the acknowledgement of the last median this trader saw
        acknowledged: a failover promoted a replica that did not have it (with --min-replicas below the
        number of replicas, or a second failover to a node that was behind).  Write back every median
        remembered that this master lacks, with its acknowledgement; what was acted on stays acted on."""
        memory = self.acked_memory
        r = trader_restore(self.run_script, self.keys, entries=[(a.epoch, a.median, a.ack) for a in memory],
                           acted=self.acted_last, from_ms=boundary_ms(memory[0].epoch, self.period_ms),
                           maxlen=self.medians_maxlen, epoch=epoch)
        if r.restored:
            self.log.warning("the master lacked the acknowledged median of %s (a failover to a replica that did "
                             "not hold it): written back", H.epochs_text(r.restored[0], r.restored[-1],
                                                                         len(r.restored)))
            self.metrics.error("restored")
        for e in r.conflicts:
            self.log.error("epoch %d was acknowledged with another median than the one this master holds for it: "
                           "left as it is, recorded in the events (conflict)", e)
            self.metrics.error("conflict")

    def settle(self, epoch: int, outcome: str, text: str, count: int = 0, members: str = "",
               inputs: str = "") -> str:
        if outcome != "ok":
            text = shown(text, LONG)   # as trader_settle writes it: the log line says what NS:trader says
        r = trader_settle(self.run_script, self.keys, self.meta_args(), self.trader_args(), epoch=epoch,
                          outcome=outcome, text=text, count=count, members=members,
                          medians_maxlen=self.medians_maxlen, state_ttl_ms=self.state_ttl_ms, missed=self.missed,
                          replicas_reason=self.replicas_reason if self.acknowledging else "", inputs=inputs)
        if r.note:
            self.log.warning("registry repaired: %s", r.note)
        if r.status in ("published", "error", "starting", "idle"):
            self.accounted = epoch
            self.missed = self.missed._replace(pending=())   # written to NS:events
        if r.status == "published":
            self.last_published = epoch
            if self.acknowledging:   # kept until the replicas' verdict (remember_acked)
                fields = ["epoch", epoch, "median", text, "count", count, "members", members, "fence", self.token,
                          "ts", r.now] + (["inputs", inputs] if inputs else [])
                self._published_fields = (epoch, tuple(str(x) for x in fields))
            self.log.info("median: %s", text)
            if not (self.acknowledging and self.replicas_reason):   # else: ok once the replicas acknowledge
                self.state = "ok"
                self.metrics.state("ok")
            self.metrics.median(float(text))
            self.metrics.submitted(r.now)
        elif r.status == "error":
            self.log.warning("error in epoch %d: %s", epoch, text)
            self.state = "error"
            self.metrics.state("error")   # before the counter: a scrape never sees the count without the state
            # The only error the trader settles: registered strategies without a valid decision.
            self.metrics.error("missing_decisions")
        elif r.status == "starting":
            if self.state != "starting":
                self.log.info("not publishing in epoch %d: %s", epoch, r.reason)
            self.state = "starting"
            self.metrics.state("starting")
        elif r.status == "idle":
            if self.state != "idle":
                self.log.info("idle: no strategies registered")
            self.state = "idle"
            self.metrics.state("idle")
        elif r.status == "standby":
            self.log.warning("lost the lead before settling epoch %d; standing by", epoch)
            self.token = ""
        elif r.status == "expired":
            self.metrics.error("late")
            self.miss(epoch, epoch, "the epoch ended before the trader could settle it (stalled or overloaded)")
        elif r.status == "done":
            self.accounted = epoch
        elif r.status != "registry":
            raise FatalError(f"unexpected reply from Redis: {r!r}")
        return r.status

    # -- acting on the median (--on-median) -----------------------------------------------------------
    def act(self) -> None:
        """Run the action for every published epoch not yet acted on, oldest first, while we lead.

        At least once per published epoch, also across a leader crash (a new leader finds the
        epochs nobody recorded as acted on); never for an epoch that was not published; never by a
        leader fenced out (the lead is checked before each call, and ``fence`` lets the downstream
        system refuse a stale leader).  An exception leaves the epoch not acted on: it is logged,
        shown by status, and retried at the next period; the publication stands."""
        if self.on_median is None or not self.token:
            return
        lease_value = f"{self.settings.owner}|{self.token}"
        check = trader_acted(self.run_script, self.keys, lease_value=lease_value, epoch=None, error="",
                             state_ttl_ms=self.state_ttl_ms)
        if not check.leading:
            return
        acted = check.acted
        if acted is None:
            # Nothing acted on yet in this deployment: start with what is published from now on.
            acted = (self.last_published - 1) if self.last_published >= 0 else None
            if acted is None:
                return
        for entry in self.published_since(acted):
            if self.stop.is_set():
                return
            try:
                self.on_median(entry.epoch, entry.median, int(self.token))
            except Exception as e:  # noqa: BLE001 - a failing action is reported and retried, not fatal
                why = plugin_error("on-median action", e)
                self.log.error("epoch %d published but not acted on: %s (retried next period)", entry.epoch, why)
                self.metrics.error("on_median")
                trader_acted(self.run_script, self.keys, lease_value=lease_value, epoch=None,
                             error=f"epoch {entry.epoch}: {why}", state_ttl_ms=self.state_ttl_ms)
                return
            done = trader_acted(self.run_script, self.keys, lease_value=lease_value, epoch=entry.epoch, error="",
                                state_ttl_ms=self.state_ttl_ms)
            self.acted_last = max(entry.epoch, self.acted_last if self.acted_last is not None else entry.epoch)
            if not done.leading:
                self.log.warning("lost the lead after acting on epoch %d; the new leader goes on", entry.epoch)
                return
            self.log.info("acted on epoch %d (median %s)", entry.epoch, repr(entry.median))

    def published_since(self, acted: int) -> list[Median]:
        """The published epochs after ``acted`` (from NS:medians), oldest first, at most a backlog."""
        start = boundary_ms(acted + 1, self.period_ms)
        out = []
        for entry_id, fields in xrange(self.client, self.keys.medians, min=f"{start}-0", count=K.ACTION_BACKLOG):
            m = parse_median(entry_id, fields)
            if m is not None and m.epoch > acted:
                out.append(m)
        if self.acknowledging and out:
            # Only the medians that --min-replicas replicas acknowledged count as published.
            acked = set()
            for _id, fields in xrange(self.client, self.keys.acks, min=f"{start}-0", count=K.ACTION_BACKLOG):
                f = fields or {}
                e = parse_int(f.get(b"epoch", f.get("epoch")))
                if e is not None:
                    acked.add(e)
            out = [m for m in out if m.epoch in acked]
        return sorted(out, key=lambda m: m.epoch)

    # -- registrations ----------------------------------------------------------------------------
    def _new_episode(self, kind: str, epoch: int) -> bool:
        """``kind`` is seen in ``epoch``: True when it was not seen in the EPISODE_QUIET_EPOCHS epochs
        before (a new episode, to say)."""
        last = self._episodes.get(kind)
        self._episodes[kind] = epoch
        return last is None or not 0 <= epoch - last <= EPISODE_QUIET_EPOCHS

    def take_joins(self, epoch: int) -> None:
        """Read the subscription (without waiting) and admit the names that asked to join: at most
        JOINS_PER_TICK valid names a period; the others ask again at their next report."""
        self.bell.drain()
        names, asked = self.bell.inbox.take_joins()
        nreg = len(self.memory.names) if self.memory else 0
        if asked > max(JOINS_FLOOD, 2 * nreg):
            self.joins_flooded(epoch, asked)
        junk, self._junk_seen = self.bell.inbox.junk - self._junk_seen, self.bell.inbox.junk
        if junk:
            self.metrics.error("doorbell_junk")
            if self._new_episode("junk", epoch):
                self.log.warning("%d messages on %s or %s since the last period were no ring and no name "
                                 "(a strategy's credentials publish junk): ignored", junk,
                                 self.keys.ready_channel, self.keys.joins_channel)
        if names:
            self.admit(names)

    def joins_flooded(self, epoch: int, size: int) -> None:
        """Far more join requests in one period than any deployment asks with (a strategy's credentials
        published junk).  Said once per episode (epochs in a row), and recorded in NS:events."""
        why = (f"{size} messages on {self.keys.joins_channel} in one period, more than any deployment asks to join "
               f"with (a strategy's credentials flooded it): at most {K.JOINS_PER_TICK} valid names are admitted a "
               "period; strategies waiting to join ask again at their next report")
        self.metrics.error("joins_flooded")
        if not self._new_episode("joins_flooded", epoch):   # once per episode: the log, and NS:events
            return
        self.log.warning("%s", why)
        try:
            self.client.xadd(self.keys.events, {"status": "joins_flooded", "epoch": epoch, "reason": why,
                                                "ts": self.clock.now_ms()},
                             maxlen=self.medians_maxlen, approximate=True)
        except redis.exceptions.RedisError as e:
            self.log.debug("could not record the flood: %s", describe_error(e))

    def admit(self, names: list[str]) -> None:
        """Registration requests (anybody may ring the doorbell): the script admits a name only when
        its lease shows a live process that was not deregistered."""
        valid = [n for n in names if _valid_name(n)]
        if not valid:
            return
        r = registry_admit(self.run_script, self.keys, self.meta_args(), valid)
        if r.note:
            self.log.warning("registry repaired: %s", r.note)
        if r.status != "ok" or not r.names:
            return
        self.log.info("registered: %s", _names(sorted(r.names)))
        m = self.memory
        if m is not None and m.instance == r.instance and r.backup_size == len(m.names) + len(r.names):
            self.memory = RegistryMemory(m.instance, r.version, m.names | frozenset(r.names))
        else:
            self.memory = self.read_registry()

    def sync_registry(self, instance: str) -> None:
        """The registry moved since we last looked (a script refused to go on): adopt it, after
        putting back every name we knew that left it without a deregistration record."""
        m = self.memory
        if m is not None and m.instance != instance:
            self.restore(sorted(m.names), "Redis lost its data (new deployment record)")
            return
        fetched = self.read_registry()
        if fetched is None:
            return
        if m is not None:
            removed = sorted(m.names - fetched.names)
            if removed:
                records = self.client.hmget(self.keys.deregistered, removed)
                lost = [n for n, r in zip(removed, records) if r is None]
                if lost:
                    self.restore(lost, "registrations left the registry without being deregistered "
                                       "(registry deleted, or writes lost at a failover)")
                    return
                self.log.info("deregistered: %s", _names(removed))
            added = sorted(fetched.names - m.names)
            if added:
                self.log.info("registered: %s", _names(added))
        self.memory = fetched

    def read_registry(self) -> RegistryMemory | None:
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(k.meta, "instance")
        pipe.hget(k.meta, "registry")
        pipe.smembers(k.registry_backup)
        try:
            inst, version, names = pipe.execute()
        except redis.exceptions.ResponseError as e:   # garbage in the way: the next script repairs it
            if classify(e) is not ErrorKind.DATA:     # a refusal, or an outage (READONLY, LOADING)
                raise
            self.problem(f"cannot read the registry backup {k.registry_backup}: {describe_error(e)}")
            return None
        if inst is None:
            return None
        return RegistryMemory(as_str(inst), _version(version), frozenset(as_str(n) for n in names))

    def restore(self, names: list[str], why: str) -> None:
        """Put back registrations that Redis lost (never a silent smaller population)."""
        m = self.memory
        r: RegistryChanged = registry_restore(self.run_script, self.keys, self.meta_args(),
                                              version=m.version if m else 0, names=names)
        if r.status == "changed":
            return          # another data loss in between: the next tick says so again
        if r.names:
            self.log.warning("%s; restored %d registration(s): %s", why, len(r.names), _names(list(r.names), 20))
        if m is None or m.instance != r.instance:
            # A new deployment record: remember the registry as it is there now (what we restored,
            # and whoever registered meanwhile).  It is complete: no need to wait for strategies
            # to register again before publishing.
            self.restored_instance = r.instance
        self.memory = self.read_registry()

    # -- standing by ----------------------------------------------------------------------------
    def stand_by(self, t: TraderTicked, deadline: int) -> bool:
        """Another trader leads.  Check again the moment its lease would expire if that is still
        before this epoch's deadline (a dead leader is replaced within its lease time); True when
        the epoch is settled."""
        self.metrics.state("standby")
        holder, _, pttl_text = t.detail.rpartition("|")
        pttl = parse_int(pttl_text)
        pttl = -1 if pttl is None else pttl
        _owner, tok = H.split_lease(holder)
        self.fence_floor = max(self.fence_floor, parse_int(tok) or 0)
        if self.token:
            self.log.warning("lost the lead to %s; standing by", shown(holder))
        elif self.leader_seen != holder:
            self.log.info("standing by (leader: %s)", shown(holder))
        self.token, self.leader_seen = "", holder
        if pttl < 0:
            return False                       # the lease just expired: look again now
        wake = self.clock.now_ms() + pttl + 1
        if wake >= deadline:
            return True
        return self.clock.wait(self.stop, (wake - self.clock.now_ms()) / 1000.0)

    def shutdown(self) -> None:
        self.bell.close()
        if self.token:
            self.release_lease(self.keys.lease("trader"), f"{self.settings.owner}|{self.token}")
        self.client.hdel(self.keys.traders, self.settings.owner)
        self.log.info("trader stopped")


class _BellWatch:
    """How one epoch's doorbell behaved, as the trader's reads saw it."""

    def __init__(self) -> None:
        self.spoiled = False     # the count went past the registry's size: the ring may never come
        self.early_now = False   # the last read was woken by a ring, yet not every decision was in
        self.kind = ""           # overcounted | early ('' = as it should)
        self.max_count = 0
        self.hold_until = 0      # server ms: no read before this (after an early ring)

    def saw(self, seen: Seen, nreg: int, complete: bool) -> None:
        self.early_now = seen.rang and not complete
        if seen.counted is not None and seen.counted > nreg:
            self.spoiled = True
            self.max_count = max(self.max_count, seen.counted)
            self.kind = "overcounted"
        elif self.early_now and not self.kind:
            self.kind = "early"


def _version(raw: object) -> int:
    """The registry version in NS:meta: missing or garbage is 0 (as the scripts read it)."""
    v = parse_int(raw)
    return v if v is not None and v >= 0 else 0


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except ValueError:
        return False
    return True


def _names(names: list[str], limit: int = 10) -> str:
    """Names as a log line shows them (those of the registry are data: escaped, bounded)."""
    text = ", ".join(shown(n, 64) for n in names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


if __name__ == "__main__":
    # `python -m redismedian.trader`: the `trader` command on its own.  The command line is
    # imported here only: cli.py imports this module, never the other way round.
    from .cli import run_alone
    run_alone("trader")
