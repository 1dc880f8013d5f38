"""Generator: computes a signal once per period and writes it, timestamped, into Redis.

Each epoch it calls its plug-in (``--signal module:function``, called with the epoch
number) and writes ``NS:signal:<name>`` plus one entry on its ``NS:signals:<name>`` feed, in
one script call.  A plug-in that raises or returns something that is not a finite
number produces ``status=error`` with the message: strategies then stop submitting.
"""
from __future__ import annotations

import random
from typing import Callable

from . import keys as K
from .common import as_str, plugin_error, plugin_number
from .component import Component, acquire_name
from .scripts import GENERATOR_PUBLISH


def default_signal(epoch: int) -> float:
    """The original behaviour: a uniform random number in [0, 1)."""
    return random.random()


def compute_signal(fn: Callable[[int], float], epoch: int) -> tuple[str, str]:
    """Run the plug-in; returns (value text, error message) with exactly one of them non-empty."""
    try:
        raw = fn(epoch)
    except Exception as e:  # noqa: BLE001 - a failing plug-in is reported, not fatal
        return "", plugin_error("signal function", e)
    return plugin_number(raw, "signal function")


class Generator(Component):
    kind = "generator"

    def __init__(self, settings, name: str, signal_fn: Callable[[int], float] = default_signal, **kw):
        super().__init__(settings, name=name, **kw)
        self.signal_fn = signal_fn
        self.lease_key = self.keys.lease("generator", name)

    def startup(self) -> None:
        acquire_name(self, self.lease_key, f"generator name {self.name!r}")
        self.log.info("generator %s started (period %gs)", self.name, self.settings.period)

    def step(self, epoch: int) -> None:
        value, error = compute_signal(self.signal_fn, epoch)
        status = "error" if error else "ok"
        while True:
            reply = self._publish(epoch, value, status, error)
            result = self.check_reply(reply, self.name)
            if result[0] == "early":   # our estimate of the server clock ran ahead: wait for the boundary
                wait_ms = epoch * self.period_ms - int(result[1]) + 1
                if self.clock.wait(self.stop, wait_ms / 1000.0):
                    return
                continue
            break
        if result[0] == "late":
            self.metrics.error("late")
            self.log.warning("%s: epoch %d ended before its signal was written; skipped", self.name, epoch)
            return
        if len(result) > 4 and result[4]:
            self.log.warning("repaired %s (overwritten by another process)", as_str(result[4]))
        if error:
            self.metrics.state("error")
            self.metrics.error("signal_function")
            self.log.error("%s signal error in epoch %d: %s", self.name, epoch, error)
        else:
            self.metrics.submitted(int(result[1]))
            self.metrics.state("ok")
            self.log.info("%s signal %s (epoch %d)", self.name, value, epoch)

    def _publish(self, epoch, value, status, error):
        return self.script(GENERATOR_PUBLISH)(
            keys=[self.keys.meta, self.keys.signal(self.name), self.keys.signal_feed(self.name), self.lease_key],
            args=[*self.meta_args(), epoch, self.name, value, status, error,
                  K.ttl_ms(self.period_ms, K.SIGNAL_TTL_PERIODS), K.SIGNAL_FEED_MAXLEN])

    def shutdown(self) -> None:
        self.release_lease(self.lease_key)
        self.log.info("generator %s stopped", self.name)




def main() -> None:
    from .cli import generator_command
    generator_command(prog_name="python -m redismedian.generator")


if __name__ == "__main__":
    main()
