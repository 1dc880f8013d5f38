"""Strategy: reads one or more generators' signals, decides, and submits under its name.

Each epoch it waits (blocking on its generators' ``NS:signals:<g>`` feeds, no polling) until
every one of its generators has written a signal for that epoch, or until ``--signal-timeout``.  It
submits only if every signal is for the current epoch, ``ok`` and finite; otherwise it
submits nothing and records why, which the trader then shows as its reason.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, TypeVar, overload

import redis

from . import keys as K
from .clock import boundary_ms, epoch_of
from .common import FatalError, Settings, as_str, parse_finite, parse_int, plugin_error, plugin_number
from .component import Component, Exit, acquire_name
from .connection import ErrorKind, classify, describe_error
from .replies import xread
from .text import quoted, shown
from .scripts import (StrategyReported, StrategyTicked, strategy_report, strategy_tick_request,
                      strategy_ticked)

MAX_STREAM_ID_SEQ = 18446744073709551615
# A report checks the deployment record (TIME, HMGET) only every this many periods, and at start:
# the hot path stays a few commands.  Data loss shows sooner anyway: the registration vanishes.
META_CHECK_EVERY = 10
FEED_READ_COUNT = 10_000
T = TypeVar("T")


def default_decide(signals: Mapping[str, float]) -> float:
    """The mean of the signals (the original strategies' behaviour for one signal)."""
    values = list(signals.values())
    return sum(values) / len(values)


class _once(Generic[T]):
    """``functools.cached_property`` without its lock (Python < 3.12 takes an RLock on every first
    read, which cost a replay about 1 us per signal): computed at the first read, then found in the
    instance's ``__dict__`` (this is a non-data descriptor) without calling anything.  Two threads
    reading it at once may both compute it: harmless for a pure function of frozen fields."""

    def __init__(self, fn: Callable[[Any], T]):
        self.fn, self.name = fn, fn.__name__
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, cls: type | None = None) -> "_once[T]": ...
    @overload
    def __get__(self, obj: object, cls: type | None = None) -> T: ...

    def __get__(self, obj: object | None, cls: type | None = None) -> "T | _once[T]":
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(frozen=True)
class Reading:
    """One generator's signal as found in Redis (any field may be garbage)."""

    epoch_text: str | None
    value_text: str | None
    status: str | None
    error: str | None
    unreadable: str = ""     # why the key could not be read at all (e.g. it is not a hash)

    @property
    def epoch(self) -> int | None:
        return parse_int(self.epoch_text)

    @_once
    def number(self) -> float | None:
        """The value, a finite number in the strict grammar, or None (parsed once: a replay hands one
        reading to every strategy of its generator)."""
        return parse_finite(self.value_text)

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> "Reading":
        return cls(_get(fields, "epoch"), _get(fields, "value"), _get(fields, "status"), _get(fields, "error"))


def assess(generators: list[str], epoch: int, feed: Mapping[str, Reading],
           stored: Mapping[str, Reading | None]) -> tuple[dict[str, float] | None, str]:
    """Decide whether the strategy may act on ``epoch`` (pure).

    ``feed`` holds this epoch's entries from the signal feed; ``stored`` holds the signal
    hashes (read only when the feed lacks something).  Returns ({generator: value} in
    ``generators`` order, "") when every signal is for ``epoch``, ok and finite, else
    (None, reason) naming every problem.
    """
    values: dict[str, float] = {}
    # The usual case first: every signal in the feed, ok and a finite number (what the loop below
    # returns then, without its bookkeeping; a replay calls this millions of times).
    for g in generators:
        r = feed.get(g)
        if r is None or r.status != "ok":
            break
        x = r.number
        if x is None:
            break
        values[g] = x
    else:
        return values, ""
    values = {}
    problems: list[str] = []
    for g in generators:
        r = feed.get(g)
        if r is None:
            h = stored.get(g)
            if h is None:
                problems.append(f"signal {g} missing (generator not running?)")
                continue
            if h.unreadable:
                problems.append(f"signal {g} unreadable ({h.unreadable})")
                continue
            if h.epoch is None:
                problems.append(f"signal {g} malformed (epoch {quoted(h.epoch_text, 40)})")
                continue
            if h.epoch < epoch:
                problems.append(f"signal {g} stale (last epoch {h.epoch})")
                continue
            if h.epoch > epoch:
                problems.append(f"signal {g} is for a later epoch ({h.epoch})")
                continue
            r = h
        if r.status != "ok":
            if r.status == "error":
                # The generator's message is data: escaped and bounded (it becomes part of our reason).
                problems.append(f"signal {g} error: {shown(r.error) or 'no message'}")
            else:
                problems.append(f"signal {g} has status {quoted(r.status, 40)}")
            continue
        x = r.number
        if x is None:
            problems.append(f"signal {g} is not a finite number ({quoted(r.value_text, 40)})")
            continue
        values[g] = x
    if problems:
        return None, "; ".join(problems)
    return values, ""


def run_decide(fn: Callable[[Mapping[str, float]], float], values: Mapping[str, float]) -> tuple[str, str]:
    """Run the decision plug-in; returns (value text, error message), exactly one non-empty."""
    try:
        raw = fn(dict(values))
    except Exception as e:  # noqa: BLE001 - a failing plug-in is reported, not fatal
        return "", plugin_error("decide function", e)
    return plugin_number(raw, "decide function")


def decide(generators: list[str], epoch: int, feed: Mapping[str, Reading], stored: Mapping[str, Reading | None],
           fn: Callable[[Mapping[str, float]], float]) -> tuple[dict[str, float] | None, str, str]:
    """One strategy's epoch, from the signals it found to its report (pure but for the plug-in):
    (the signals' values or None, the decision's text or "", why there is none or "").  What the
    strategy process submits, and what ``redismedian replay`` computes from recorded signals."""
    values, reason = assess(generators, epoch, feed, stored)
    value = ""
    if values is not None:
        value, reason = run_decide(fn, values)
    return values, value, reason


class Strategy(Component):
    kind = "strategy"
    name: str   # always given (Component allows None for its own tests)

    def __init__(self, settings: Settings, name: str, generators: list[str],
                 decide_fn: Callable[[Mapping[str, float]], float] = default_decide,
                 signal_timeout_ms: int | None = None, **kw: Any) -> None:
        super().__init__(settings, name=name, **kw)
        self.generators = list(generators)
        self.decide_fn = decide_fn
        self.signal_timeout_ms = (signal_timeout_ms if signal_timeout_ms is not None
                                  else default_signal_timeout_ms(self.period_ms))
        self.lease_key = self.keys.lease("strategy", name)
        self.start_ms = 0          # server ms of our start: part of our lease (see scripts.REGISTRY_ADMIT)
        self.registered: bool | None = None   # in the registry at our last report (None: not reported yet)
        self.reports_since_meta_check = META_CHECK_EVERY
        self.deregistered = False  # set when an operator deregistered us: we exit without re-registering

    @property
    def lease_ttl_ms(self) -> int:
        """The name lease is renewed at each report, and two reports can be a period plus the signal
        timeout apart (one at a boundary, the next at the following period's timeout): the lease
        outlives that gap so that a live strategy never loses its name."""
        return super().lease_ttl_ms + self.signal_timeout_ms

    # -- start-up -----------------------------------------------------------
    def startup(self) -> None:
        # Our lease says when we started: a deregistration recorded after that is meant for us, one
        # recorded before it (a previous process under this name) is not.
        # Once: a start-up tried again (e.g. while waiting for the deployment record) already holds
        # the lease under this value, and must not wait for its own lease to expire.
        if not self.start_ms:
            self.start_ms = self.clock.now_ms()
            self.lease_owner = f"{self.settings.owner}|{self.start_ms}"
        acquire_name(self, self.lease_key, f"strategy name {self.name!r}")
        epoch = epoch_of(self.clock.now_ms(), self.period_ms)
        self.report(epoch, "", "starting", "started, waiting for the next period")
        self.log.info("started %s (signals %s, period %gs)%s", self.name, ",".join(self.generators),
                      self.settings.period, "" if self.registered else ": asked the trader to register it")

    # -- one period ---------------------------------------------------------
    def step(self, epoch: int) -> None:
        feed, feed_problem = self.wait_for_signals(epoch)
        if self.stop.is_set():
            return
        stored = self.read_stored([g for g in self.generators if g not in feed])
        values, value, reason = decide(self.generators, epoch, feed, stored, self.decide_fn)
        if feed_problem and values is None:
            reason = f"{reason}; {feed_problem}"
        state = "ok" if value else "error"
        r = self.report(epoch, value, state, reason)
        submitted, reason = r.submitted, r.reason
        if submitted and r.registered:
            self.metrics.submitted()
            self.metrics.state("ok")
            self.log.info("%s submitted %s", self.name, value)
        elif submitted:     # written, but it counts only once the trader admitted us
            self.metrics.state("starting")
            self.log.info("%s decided %s (not registered yet: waiting for the trader to admit it)",
                          self.name, value)
        else:
            self.metrics.state("error")
            self.metrics.error("late" if value else "signals" if values is None else "decide_function")
            self.log.warning("%s: no decision for epoch %d: %s", self.name, epoch, reason)

    def wait_for_signals(self, epoch: int) -> tuple[dict[str, Reading], str]:
        """This epoch's entries on our generators' feeds, waiting until all are in or the timeout.

        Only our own generators' feeds are read, so each blocking read returns with at least one
        of our signals: at most one read per signal per period (usually one in all, as generators
        write at the same boundary), however many generators and strategies there are.
        """
        found: dict[str, Reading] = {}
        start = boundary_ms(epoch, self.period_ms)
        deadline = start + self.signal_timeout_ms
        since = f"{start - 1}-{MAX_STREAM_ID_SEQ}"  # everything written since the boundary
        feeds = {self.keys.signal_feed(g): g for g in self.generators}
        last_ids = {key: since for key in feeds}
        problem = ""
        while not self.stop.is_set():
            remaining = deadline - self.clock.now_ms()
            if remaining <= 0:
                break
            block = max(1, min(self.settings.block_ms, remaining))
            pending = {key: last_ids[key] for key, g in feeds.items() if g not in found}
            try:
                reply = xread(self.client, pending, count=FEED_READ_COUNT, block=block)
            except redis.exceptions.ResponseError as e:
                if classify(e) is not ErrorKind.DATA:
                    raise
                # Somebody else wrote a feed key; its generator repairs it when it next publishes.
                problem = f"signal feed {', '.join(pending)} unreadable: {describe_error(e)}"
                if self.clock.wait(self.stop, block / 1000.0):
                    break
                continue
            problem = ""
            for stream, entries in reply or ():
                key = as_str(stream)
                g = feeds.get(key)
                for entry_id, fields in entries:
                    last_ids[key] = entry_id
                    r = Reading.from_fields(fields or {})
                    if g is not None and _get(fields, "name") == g and r.epoch == epoch:
                        found[g] = r
            if len(found) == len(feeds):
                break
        return found, problem

    def read_stored(self, generators: list[str]) -> dict[str, Reading | None]:
        """The signal hashes of ``generators`` (one round trip), for the reason text."""
        if not generators:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for g in generators:
            pipe.hmget(self.keys.signal(g), "epoch", "value", "status", "error")
        replies = pipe.execute(raise_on_error=False)
        out: dict[str, Reading | None] = {}
        for g, rep in zip(generators, replies):
            if isinstance(rep, Exception):  # wrong type: somebody else wrote this key
                out[g] = Reading(None, None, None, None, f"{self.keys.signal(g)}: {describe_error(rep)}")
            elif rep is None or all(v is None for v in rep):
                out[g] = None
            else:
                e, v, s, err = (x.decode(errors="replace") if isinstance(x, bytes) else x for x in rep)
                out[g] = Reading(e, v, s, err)
        return out

    def report(self, epoch: int, value: str, state: str, reason: str) -> StrategyReported:
        """Write our report for ``epoch`` (the decision when ``value``), in one script call; ask the
        trader to register us while we are not registered."""
        if value and epoch_of(self.clock.now_ms(), self.period_ms) != epoch:
            value, state = "", "error"
            reason = f"decision for epoch {epoch} came too late (the epoch is over)"
        check_meta = self.reports_since_meta_check >= META_CHECK_EVERY or not self.instance
        decision_ttl_ms = K.ttl_ms(self.period_ms, K.DECISION_TTL_PERIODS)
        ready_ttl_ms = K.ttl_ms(self.period_ms, K.READY_TTL_PERIODS)
        r: StrategyReported | None = None
        counted = False
        if self.registered and self.instance:
            fast = self.fast_report(epoch, value, state, reason, decision_ttl_ms, ready_ttl_ms, check_meta)
            if fast.ok:
                r = StrategyReported("ok", fast.now, self.instance, False, True, bool(value), "" if value else reason)
            else:
                self.log.debug("%s: full report (%s)", self.name, fast.why)
                counted = fast.counted
        if r is None:
            r = self.with_meta(lambda: strategy_report(
                self.run_script, self.keys, self.meta_args(), name=self.name, epoch=epoch, value=value, state=state,
                reason=reason, decision_ttl_ms=decision_ttl_ms, ready_ttl_ms=ready_ttl_ms, start_ms=self.start_ms,
                check_meta=check_meta, counted=counted))
        self.reports_since_meta_check = 0 if check_meta else self.reports_since_meta_check + 1
        if r.status == "deregistered":
            self.deregistered = True
            raise Exit(f"{self.name} was deregistered (removed from {self.keys.strategies}); exiting. "
                       "Start it again to register it again.", 0)
        if r.status != "ok":
            raise FatalError(f"unexpected reply from Redis: {r!r}")
        if r.registered and self.registered is False:
            self.log.info("registered %s (admitted by the trader)", self.name)
        elif not r.registered and self.registered:
            self.log.warning("%s is no longer in %s and was not deregistered (Redis lost its data, or the "
                             "registry was deleted); asked the trader to register it again", self.name,
                             self.keys.strategies)
        self.registered = r.registered
        return r

    def fast_report(self, epoch: int, value: str, state: str, reason: str, decision_ttl_ms: int,
                    ready_ttl_ms: int, check_meta: bool) -> StrategyTicked:
        """The report as plain commands and the doorbell script, in one round trip
        (scripts.strategy_tick_request)."""
        m = self.meta_args()
        req = strategy_tick_request(self.keys, m, name=self.name, epoch=epoch, value=value, state=state,
                                    reason=reason, decision_ttl_ms=decision_ttl_ms, ready_ttl_ms=ready_ttl_ms,
                                    check_meta=check_meta)
        t0 = time.perf_counter()
        try:
            pipe = self.client.pipeline(transaction=False)
            for c in req.commands:
                pipe.execute_command(*c)
            fast = strategy_ticked(req, pipe.execute(raise_on_error=False), m)
            if fast.noscript:
                # Redis restarted or flushed its scripts: load them when we may (else the full report
                # that follows waits for the trader to)
                self.load_scripts()
            if fast.now:
                self.clock.observe(fast.now)
        finally:
            self.metrics.script_call(time.perf_counter() - t0)
        return fast

    def shutdown(self) -> None:
        self.release_lease(self.lease_key)
        if self.deregistered:
            self.log.info("strategy %s stopped", self.name)
        else:
            self.log.info("strategy %s stopped (still registered: the trader will report it missing "
                          "until it is back or deregistered)", self.name)


def default_signal_timeout_ms(period_ms: int) -> int:
    """Strategies wait for their signals up to half a period."""
    return period_ms // 2




def _get(fields: Mapping[Any, Any] | None, name: str) -> str | None:
    v = fields.get(name.encode(), fields.get(name)) if fields else None
    return v.decode(errors="replace") if isinstance(v, bytes) else v


if __name__ == "__main__":
    # `python -m redismedian.strategy`: the `strategy` command on its own.  The command line is
    # imported here only: cli.py imports this module, never the other way round.
    from .cli import run_alone
    run_alone("strategy")
