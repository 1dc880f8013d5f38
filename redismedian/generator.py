"""Generator: computes a signal once per period and writes it, timestamped, into Redis.

Each epoch it calls its plug-in (``--signal module:function``, called with the epoch
number) and writes ``NS:signal:<name>`` plus one entry on its ``NS:signals:<name>`` feed, in
one script call.  A plug-in that raises or returns something that is not a finite
number produces ``status=error`` with the message: strategies then stop submitting.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from . import keys as K
from .common import Settings, plugin_error, plugin_number
from .component import Component, acquire_name
from .scripts import GeneratorPublished, generator_publish


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
    name: str   # always given (Component allows None for its own tests)

    def __init__(self, settings: Settings, name: str, signal_fn: Callable[[int], float] = default_signal,
                 **kw: Any) -> None:
        super().__init__(settings, name=name, **kw)
        self.signal_fn = signal_fn
        self.lease_key = self.keys.lease("generator", name)

    def startup(self) -> None:
        self.check_period_first()
        acquire_name(self, self.lease_key, f"generator name {self.name!r}")
        self.log.info("generator %s started (period %gs)", self.name, self.settings.period)

    def step(self, epoch: int) -> None:
        value, error = compute_signal(self.signal_fn, epoch)
        status = "error" if error else "ok"
        while True:
            result = self.with_meta(lambda: self._publish(epoch, value, status, error))
            if result.status == "early":   # our estimate of the server clock ran ahead: wait for the boundary
                wait_ms = epoch * self.period_ms - result.now + 1
                if self.clock.wait(self.stop, wait_ms / 1000.0):
                    return
                continue
            break
        if result.status == "late":
            self.metrics.error("late")
            self.log.warning("%s: epoch %d ended before its signal was written; skipped", self.name, epoch)
            return
        if result.repaired:
            self.log.warning("repaired %s (overwritten by another process)", result.repaired)
        if error:
            self.metrics.state("error")
            self.metrics.error("signal_function")
            self.log.error("%s signal error in epoch %d: %s", self.name, epoch, error)
        else:
            self.metrics.submitted(result.now)
            self.metrics.state("ok")
            self.log.info("%s signal %s (epoch %d)", self.name, value, epoch)

    def _publish(self, epoch: int, value: str, status: str, error: str) -> GeneratorPublished:
        return generator_publish(self.run_script, self.keys, self.meta_args(), name=self.name, epoch=epoch,
                                 value=value, status=status, error=error,
                                 signal_ttl_ms=K.ttl_ms(self.period_ms, K.SIGNAL_TTL_PERIODS),
                                 feed_maxlen=K.SIGNAL_FEED_MAXLEN)

    def shutdown(self) -> None:
        self.release_lease(self.lease_key)
        self.log.info("generator %s stopped", self.name)


if __name__ == "__main__":
    # `python -m redismedian.generator`: the `generator` command on its own.  The command line is
    # imported here only: cli.py imports this module, never the other way round.
    from .cli import run_alone
    run_alone("generator")
