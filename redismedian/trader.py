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
from typing import Iterable

import redis

from . import keys as K
from .clock import boundary_ms
from .common import FatalError
from .component import Component
from .connection import TRANSIENT_ERRORS, describe_error, is_auth_error
from .scripts import TRADER_COLLECT

REASONS_LIMIT = 20   # name at most this many missing strategies in the reason


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

    def startup(self) -> None:
        self.log.info("trader started (period %gs, decision timeout %gs)", self.settings.period,
                      self.decision_timeout_ms / 1000)

    def collect(self, epoch: int, final: bool) -> list:
        k = self.keys
        reply = self.script(TRADER_COLLECT)(
            keys=[k.meta, k.strategies, k.decisions(epoch), k.trader, k.medians, k.lease("trader"),
                  k.trader_fence, k.ready(epoch), k.decisions_scratch(epoch)],
            args=[*self.meta_args(), epoch, "1" if final else "0", self.medians_maxlen,
                  K.MEDIAN_MEMBERS_LIMIT, k.strategy_status(""), REASONS_LIMIT, self.token])
        return [_s(x) if isinstance(x, bytes) else x for x in self.check_reply(reply, "trader")]

    def step(self, epoch: int) -> None:
        deadline = boundary_ms(epoch, self.period_ms) + self.decision_timeout_ms
        ready_key = self.keys.ready(epoch)
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
            if self.handle(epoch, result):
                return

    def handle(self, epoch: int, result: list) -> bool:
        """Act on one collect reply; True when the epoch is settled."""
        status = result[0]
        if status == "standby":
            self.metrics.state("standby")
            if self.token:
                self.log.warning("lost the lead to %s; standing by", result[3])
            elif self.leader_seen != result[3]:
                self.log.info("standing by (leader: %s)", result[3])
            self.token, self.leader_seen = "", result[3]
            return True
        token, took = str(result[3]), int(result[4])
        if took:
            self.log.info("took the lead (fencing token %s)", token)
        self.token = token
        if status == "waiting":
            return False
        if status == "published":
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
        self.log.info("trader stopped")


def _s(x) -> str:
    return x.decode(errors="replace")


def main() -> None:
    from .cli import trader_command
    trader_command(prog_name="python -m redismedian.trader")


if __name__ == "__main__":
    main()
