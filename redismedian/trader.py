"""Trader: each period, checks that every registered strategy submitted, and publishes the median.

Per epoch the leading trader blocks on the epoch's doorbell (``NS:ready:<E>``, rung by
the strategy whose submission completes the set), then runs one script that checks
completeness and publishes atomically.  By ``--decision-timeout`` every registered
strategy must have submitted; otherwise the trader enters ``error`` naming the missing
ones, publishes nothing for the epoch, and recovers by itself when they are back or
deregistered.  Several traders may run: one leads (a fenced lease), the others stand by.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable

import redis

from . import keys as K
from .clock import boundary_ms
from .common import FatalError, as_str, parse_int
from .component import Component
from .connection import TRANSIENT_ERRORS, describe_error, is_auth_error
from .scripts import REGISTRY_RESTORE, TRADER_COLLECT

REASONS_LIMIT = 20   # name at most this many missing strategies in the reason
MAX_REGISTRY_CHECKS = 20  # registry re-reads within one epoch before giving the epoch up


def median(values: Iterable[float]) -> float:
    """The reference median: middle value, or the mean of the two middle values.

    Same as the trader's Lua: statistics.median, except that two finite middle values whose
    sum overflows give their halves' sum instead of inf.
    """
    data = sorted(values)
    m = statistics.median(data)
    if math.isinf(m) and all(math.isfinite(x) for x in data):
        m = data[len(data) // 2 - 1] / 2 + data[len(data) // 2] / 2
    return m


def default_decision_timeout_ms(period_ms: int) -> int:
    """The trader gives up on an epoch at 80% of the period (strategies give up on signals at 50%)."""
    return period_ms * 4 // 5


@dataclass
class RegistryMemory:
    """The registry as this trader last saw it: what it restores when Redis loses names."""

    instance: str
    version: int
    names: frozenset


class Trader(Component):
    kind = "trader"

    def __init__(self, settings, decision_timeout_ms: int | None = None,
                 medians_maxlen: int = K.DEFAULT_MEDIANS_MAXLEN, **kw):
        super().__init__(settings, name=None, **kw)
        self.decision_timeout_ms = (decision_timeout_ms if decision_timeout_ms is not None
                                    else default_decision_timeout_ms(self.period_ms))
        self.medians_maxlen = medians_maxlen
        self.token = ""          # fencing token while we lead, "" while standing by
        self.leader_seen = None  # who leads while we stand by (logged when it changes)
        self.state = None        # last state we logged: ok / error / idle
        self.memory: RegistryMemory | None = None
        self.fence_floor = 0     # highest fencing token seen: a new token is always above it
        self.last_published = -1
        self.restored_instance = ""  # deployment record into which we restored every registration we knew

    def startup(self) -> None:
        self.log.info("trader started (period %gs, decision timeout %gs)", self.settings.period,
                      self.decision_timeout_ms / 1000)

    def collect(self, epoch: int, final: bool) -> list:
        k = self.keys
        m = self.memory
        reply = self.script(TRADER_COLLECT)(
            keys=[k.meta, k.strategies, k.decisions(epoch), k.trader, k.medians, k.lease("trader"),
                  k.trader_fence, k.ready(epoch), k.decisions_scratch(epoch), k.registry_backup, k.traders,
                  k.deregistered],
            args=[*self.meta_args(), epoch, "1" if final else "0", self.medians_maxlen,
                  K.MEDIAN_MEMBERS_LIMIT, k.strategy_status(""), REASONS_LIMIT, self.token,
                  m.instance if m else "", m.version if m else 0, len(m.names) if m else 0,
                  self.fence_floor, self.last_published,
                  K.ttl_ms(self.period_ms, K.TRADER_HEARTBEAT_PERIODS), self.restored_instance])
        return [as_str(x) if isinstance(x, bytes) else x for x in self.check_reply(reply, "trader")]

    def step(self, epoch: int) -> None:
        deadline = boundary_ms(epoch, self.period_ms) + self.decision_timeout_ms
        ready_key = self.keys.ready(epoch)
        checks = 0
        first = True
        while not self.stop.is_set():
            now = self.clock.now_ms()
            final = now >= deadline
            # The first collect of each epoch comes before any blocking: it renews the lead's lease
            # (1.5 periods) at the boundary.  Blocking first would leave up to period + block_ms
            # (1.5 periods when the period is at most 2 s) between renewals when a strategy is late,
            # and the lease would lapse.
            if self.token and not final and not first:
                # Leading: sleep until the set completes (or a short step passes), then check.
                block = max(1, min(self.settings.block_ms, deadline - now))
                try:
                    self.client.blpop([ready_key], timeout=block / 1000.0)
                except redis.exceptions.ResponseError as e:
                    if is_auth_error(e) or isinstance(e, TRANSIENT_ERRORS):
                        raise
                    # Not a list: somebody else wrote it.  The doorbell is ours to clear.
                    self.log.warning("removed %s (%s); waiting for the epoch's decisions goes on",
                                     ready_key, describe_error(e))
                    self.client.delete(ready_key)
                final = self.clock.now_ms() >= deadline
            first = False
            result = self.collect(epoch, final)
            if result[-1]:   # every reply ends with: registry version, backup size, repair note
                self.log.warning("registry repaired: %s", result[-1])
            if result[0] == "registry":
                checks += 1
                if checks > MAX_REGISTRY_CHECKS:   # the registry keeps changing under us: next period
                    self.problem(f"the registry kept changing during epoch {epoch}; not publishing it")
                    return
                self.sync_registry(str(result[2]))
                continue
            if self.memory is None:
                self.sync_registry(str(result[2]))
            if result[0] == "standby":
                if self.stand_by(result, deadline):
                    return
                continue
            if self.handle(epoch, result):
                return

    # -- registrations survive Redis data loss -------------------------------------------------
    def sync_registry(self, instance: str) -> None:
        """The registry moved since we last looked (the collect script refused to go on): adopt it,
        after putting back every name we knew that left it without a deregistration record."""
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
            self.problem(f"cannot read the registry backup {k.registry_backup}: {describe_error(e)}")
            return None
        if inst is None:
            return None
        v = parse_int(version)
        return RegistryMemory(as_str(inst), v if v is not None and 0 <= v <= 10**15 else 0,
                              frozenset(as_str(n) for n in names))

    def restore(self, names: list[str], why: str) -> None:
        """Put back registrations that Redis lost (never a silent smaller population)."""
        m = self.memory
        k = self.keys
        reply = self.script(REGISTRY_RESTORE)(
            keys=[k.meta, k.strategies, k.registry_backup, k.deregistered],
            args=[*self.meta_args(), m.version if m else 0, *names])
        result = self.check_reply(reply, "trader")
        if result[0] == "changed":
            return          # another data loss in between: the next collect says so again
        added = int(result[5])
        shown = [as_str(x) for x in result[6:]]
        if added:
            self.log.warning("%s; restored %d registration(s): %s%s", why, added, ", ".join(shown),
                             " ..." if added > len(shown) else "")
        if m is None or m.instance != as_str(result[2]):
            # A new deployment record: remember the registry as it is there now (what we restored,
            # and whoever registered meanwhile).  It is complete: no need to wait for strategies
            # to register again before publishing.
            self.restored_instance = as_str(result[2])
            self.memory = self.read_registry()

    # -- leading and standing by ----------------------------------------------------------------
    def stand_by(self, result: list, deadline: int) -> bool:
        """Another trader leads.  Check again the moment its lease would expire if that is still
        before this epoch's deadline (a dead leader is replaced within its lease time); True when
        the epoch is settled."""
        self.metrics.state("standby")
        holder, pttl = str(result[3]), int(result[4])
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

    def handle(self, epoch: int, result: list) -> bool:
        """Act on one collect reply while leading; True when the epoch is settled."""
        status = result[0]
        token, took = str(result[3]), int(result[4])
        if took:
            self.log.info("took the lead (fencing token %s)", token)
        self.token = token
        self.fence_floor = max(self.fence_floor, parse_int(token) or 0)
        if status == "waiting":
            return False
        if status == "published":
            self.last_published = epoch
            self.log.info("median: %s", repr(float(result[5])))
            self.state = "ok"
            self.metrics.state("ok")
            self.metrics.median(float(result[5]))
            self.metrics.submitted(int(result[1]))
        elif status == "error":
            self.log.warning("error in epoch %d: %s", epoch, result[5])
            self.state = "error"
            self.metrics.state("error")   # before the counter: a scrape never sees the count without the state
            self.metrics.error("missing_decisions" if "strategies missing" in str(result[5]) else "bad_data")
        elif status == "idle":
            if self.state != "idle":
                self.log.info("idle: no strategies registered")
            self.state = "idle"
        elif status == "starting":
            if self.state != "starting":
                self.log.info("not publishing in epoch %d: %s", epoch, result[5])
            self.state = "starting"
        elif status == "expired":
            self.metrics.error("late")
        elif status == "done":
            pass
        else:
            raise FatalError(f"unexpected reply from Redis: {result!r}")
        if self.state:
            self.metrics.state(self.state)
        return True

    def shutdown(self) -> None:
        if self.token:
            self.release_lease(self.keys.lease("trader"), f"{self.settings.owner}|{self.token}")
        self.client.hdel(self.keys.traders, self.settings.owner)
        self.log.info("trader stopped")


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")




def main() -> None:
    from .cli import trader_command
    trader_command(prog_name="python -m redismedian.trader")


if __name__ == "__main__":
    main()
