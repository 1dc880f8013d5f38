"""Trader: each period, checks that every registered strategy submitted, and publishes the median.

The trader is also the registrar: strategies ask to be registered by ringing a doorbell
(``NS:joins``), and the trader admits a name only when the name's own lease shows a live process
that was not deregistered.  Per epoch the leading trader

1. ticks at the boundary (one script: lease, heartbeat, registry checks, registration requests),
2. blocks on the epoch's doorbell (``NS:ready:<E>``) and reads every registered strategy's own
   decision key in the same round trip (``MGET`` in parts of a few thousand keys, each part judged
   while Redis reads the next),
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
from .component import Component
from .connection import ErrorKind, classify, describe_error
from .following import Median, parse_median
from . import health as H
from .replies import xrange
from .scripts import (Missed, MissedRecord, RegistryChanged, Report, TraderArgs, TraderTicked, parse_report,
                      registry_admit, registry_restore, trader_acted, trader_settle, trader_tick)

REASONS_LIMIT = 20   # name at most this many missing strategies in the reason
# The decision keys are read with one MGET per part of this many keys (from N / 8, at least
# READ_PART_MIN): the trader judges a part while Redis reads the next ones.
READ_PART_MIN, READ_PART_MAX = 1_000, 5_000
READ_WINDOW = 2      # parts sent ahead of the one being judged (the rest are sent as replies come in)
MAX_REGISTRY_CHECKS = 20  # registry re-reads within one epoch before giving the epoch up


class Seen(NamedTuple):
    """One read of an epoch's decisions: the raw decision keys, and the registry's version and size
    at the same moment (None when unreadable); ``tallied``: when every decision read is a valid one
    for the epoch, their ``tally``, computed part by part while Redis read the next part (None: not
    computed, or something is missing or wrong: ``tally`` judges the whole read)."""

    decisions: list[bytes | None]
    version: int | None
    size: int | None
    tallied: "Tally | None" = None


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
        buf = b"\n" + b"\n".join(raw)  # type: ignore[arg-type]   # TypeError when one is missing
    except TypeError:
        if not explain:
            return INCOMPLETE
        buf = b""
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
        return r.reason[:500] or f"no decision (state {r.state!r:.40})"
    x = parse_number(r.value)
    if x is None:
        return f"decision {r.value!r:.40} in {key} refused: not a finite number written as {NUMBER_RULE}"
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


def missing_reason(problems: list[tuple[str, str]], nreg: int) -> str:
    """``1 of 2 strategies missing: X: why`` (at most REASONS_LIMIT named)."""
    parts = []
    for name, why in sorted(problems)[:REASONS_LIMIT]:
        shown = name if len(name) <= 64 else name[:64] + "..."
        parts.append(f"{shown}: {why}")
    if len(problems) > REASONS_LIMIT:
        parts.append(f"and {len(problems) - REASONS_LIMIT} more")
    return f"{len(problems)} of {H.plural(nreg, 'strategy', 'strategies')} missing: " + "; ".join(parts)


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
                 on_median: Callable[[int, float, int], object] | None = None, **kw: Any) -> None:
        super().__init__(settings, name=None, **kw)
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
        self.on_median = on_median   # the action plug-in: FUNC(epoch, median, fence), or None
        self.accounted: int | None = None  # the last epoch we settled or recorded as missed
        self.missed = MissedRecord()

    def startup(self) -> None:
        self.check_period_first()
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
                if self.stand_by(t, deadline):
                    return
                continue
            was_leading = bool(self.token)
            self.lead(t)
            self.account(epoch, t, was_leading)
            if t.joins:
                self.admit(list(t.joins))
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
        t = trader_tick(self.run_script, self.keys, self.meta_args(), self.trader_args(), epoch=epoch,
                        heartbeat_ttl_ms=K.ttl_ms(self.period_ms, K.TRADER_HEARTBEAT_PERIODS),
                        joins_per_tick=K.JOINS_PER_TICK, state_ttl_ms=self.state_ttl_ms)
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
        which = f"epoch {first}" if n == 1 else f"epochs {first} to {last} ({n})"
        self.log.warning("missed %s: %s", which, reason)
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
        while not self.stop.is_set():
            names, keys = self.read_plan()
            if not names:
                self.settle(epoch, "idle", "no strategies registered")
                return
            now = self.clock.now_ms()
            final = now >= deadline
            # Block on the doorbell (it stays rung until we pop it), for a short step at most so
            # that stop requests stay fast; at the deadline, read at once.
            wait_ms = 0 if final else max(1, min(self.settings.block_ms, deadline - now))
            seen = self.read_decisions(epoch, keys, wait_ms)
            final = final or self.clock.now_ms() >= deadline
            if self.registry_moved(seen):
                # An operator deregistered (or somebody edited the registry) while we wait: adopt it
                # now, so that deregistering the missing strategy completes the epoch at once.
                self.refresh_registry()
                checks += 1
                if checks <= MAX_REGISTRY_CHECKS:
                    continue
            got = seen.tallied or tally(epoch, names, seen.decisions, self.keys.decision, explain=final)
            if got.problems and not final:
                continue
            if got.problems:
                problems = explain_missing(self.client, self.keys, epoch, names, seen.decisions, got.problems)
                outcome, text, count, members = "error", missing_reason(problems, len(names)), 0, ""
            else:
                outcome, count = "ok", len(names)
                text = repr(median_of_sorted(got.values))
                members = ",".join(names) if count <= K.MEDIAN_MEMBERS_LIMIT else ""
            settled = self.settle(epoch, outcome, text, count, members)
            if settled != "registry":
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

    def read_decisions(self, epoch: int, keys: list[str], wait_ms: int) -> "Seen":
        """Block on the epoch's doorbell (when ``wait_ms``), then read every decision key and the
        registry's version and size: one round trip."""
        ready_key = self.keys.ready(epoch)
        commands: list[tuple[Any, ...]] = [("BLPOP", ready_key, f"{wait_ms / 1000.0:.3f}")] if wait_ms else []
        commands += [("HGET", self.keys.meta, "registry"), ("SCARD", self.keys.strategies)]
        tallied = None
        if type(self.client) in (redis.Redis, redis.StrictRedis):
            replies, tallied = self._send(commands, keys, epoch)
        else:   # another client class (tests' fakeredis, a cluster client): its own pipeline
            pipe = self.client.pipeline(transaction=False)
            if wait_ms:
                pipe.blpop([ready_key], timeout=wait_ms / 1000.0)
            pipe.hget(self.keys.meta, "registry")
            pipe.scard(self.keys.strategies)
            pipe.mget(keys)
            replies = pipe.execute(raise_on_error=False)
        if wait_ms and isinstance(replies[0], Exception) and classify(replies[0]) is ErrorKind.DATA:
            # Not a list: somebody else wrote it.  The doorbell is ours to clear.
            self.log.warning("removed %s (%s); waiting for the epoch's decisions goes on",
                             ready_key, describe_error(replies[0]))
            self.client.delete(ready_key)
            replies[0] = None
        version, size, decisions = replies[-3:]
        for reply in replies:
            if isinstance(reply, Exception) and (reply is decisions or classify(reply) is not ErrorKind.DATA):
                raise reply
        return Seen(decisions, None if isinstance(version, Exception) else _version(version),
                    size if isinstance(size, int) else None, tallied)

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

    def settle(self, epoch: int, outcome: str, text: str, count: int = 0, members: str = "") -> str:
        r = trader_settle(self.run_script, self.keys, self.meta_args(), self.trader_args(), epoch=epoch,
                          outcome=outcome, text=text, count=count, members=members,
                          medians_maxlen=self.medians_maxlen, state_ttl_ms=self.state_ttl_ms, missed=self.missed)
        if r.note:
            self.log.warning("registry repaired: %s", r.note)
        if r.status in ("published", "error", "starting", "idle"):
            self.accounted = epoch
            self.missed = self.missed._replace(pending=())   # written to NS:events
        if r.status == "published":
            self.last_published = epoch
            self.log.info("median: %s", text)
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
        return sorted(out, key=lambda m: m.epoch)

    # -- registrations ----------------------------------------------------------------------------
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
        _owner, _, tok = holder.rpartition("|")
        self.fence_floor = max(self.fence_floor, parse_int(tok) or 0)
        if self.token:
            self.log.warning("lost the lead to %s; standing by", holder)
        elif self.leader_seen != holder:
            self.log.info("standing by (leader: %s)", holder)
        self.token, self.leader_seen = "", holder
        if pttl < 0:
            return False                       # the lease just expired: look again now
        wake = self.clock.now_ms() + pttl + 1
        if wake >= deadline:
            return True
        return self.clock.wait(self.stop, (wake - self.clock.now_ms()) / 1000.0)

    def shutdown(self) -> None:
        if self.token:
            self.release_lease(self.keys.lease("trader"), f"{self.settings.owner}|{self.token}")
        self.client.hdel(self.keys.traders, self.settings.owner)
        self.log.info("trader stopped")


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
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


if __name__ == "__main__":
    # `python -m redismedian.trader`: the `trader` command on its own.  The command line is
    # imported here only: cli.py imports this module, never the other way round.
    from .cli import run_alone
    run_alone("trader")
