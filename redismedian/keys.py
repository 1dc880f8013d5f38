"""Every Redis key name and time-to-live used by redismedian, and nowhere else.

All keys live under one namespace (``NS``, default ``redismedian``) so that several
deployments can share a Redis and ``redis-cli --scan --pattern 'NS:*'`` shows
everything one deployment owns.  The README has the same schema as a table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_NAMESPACE = "redismedian"

# How long data outlives the process that wrote it, in periods.
SIGNAL_TTL_PERIODS = 3       # NS:signal:<g> expires a few periods after its generator dies
DECISION_TTL_PERIODS = 3     # NS:decision:<s> and the per-epoch index
STATUS_TTL_PERIODS = 10      # NS:strategy:<s> keeps the last known reason a little longer
READY_TTL_PERIODS = 2        # NS:ready:<E> doorbell for the trader
LEASE_TTL_PERIODS = 1.5      # name leases; renewed every period, so a live holder never loses one
# The lease must survive scheduling jitter even at very short periods.
LEASE_MIN_TTL_MS = 300

SIGNAL_FEED_MAXLEN = 1_000    # approximate length of each NS:signals:<g> feed stream
DEFAULT_MEDIANS_MAXLEN = 100_000  # approximate length of the NS:medians history stream
MEDIAN_MEMBERS_LIMIT = 64     # list member names in NS:medians only up to this many strategies

KINDS = ("generator", "strategy", "trader")


def ttl_ms(period_ms: int, periods: float) -> int:
    return max(1, int(math.ceil(period_ms * periods)))


def lease_ttl_ms(period_ms: int) -> int:
    return max(LEASE_MIN_TTL_MS, ttl_ms(period_ms, LEASE_TTL_PERIODS))


@dataclass(frozen=True)
class Keys:
    """Key names of one namespace."""

    ns: str = DEFAULT_NAMESPACE

    # -- deployment-wide -------------------------------------------------
    @property
    def meta(self) -> str:
        """Hash: ``period_ms``, ``instance`` (random id; changes when Redis lost its data), ``created``."""
        return f"{self.ns}:meta"

    @property
    def strategies(self) -> str:
        """Set of registered strategy names (``SREM`` here == ``redismedian deregister``)."""
        return f"{self.ns}:strategies"

    @property
    def trader(self) -> str:
        """Hash: the trader's state, reason, epoch, median, count, ts, fence, leader."""
        return f"{self.ns}:trader"

    @property
    def medians(self) -> str:
        """Stream: one entry per published median (epoch, median, count, members)."""
        return f"{self.ns}:medians"

    @property
    def trader_fence(self) -> str:
        """Counter: fencing token, incremented each time a trader takes the lead."""
        return f"{self.ns}:trader:fence"

    # -- per component ---------------------------------------------------
    def signal(self, generator: str) -> str:
        """Hash: ``value``, ``epoch``, ``ts``, ``status`` (ok/error), ``error``."""
        return f"{self.ns}:signal:{generator}"

    def signal_feed(self, generator: str) -> str:
        """Stream: one entry per signal the generator wrote (name, epoch, value, status, error, ts).

        One feed per generator, so a strategy blocks only on its own generators' feeds and wakes
        once per signal it reads, however many other generators there are."""
        return f"{self.ns}:signals:{generator}"

    def decision(self, strategy: str) -> str:
        """Hash: ``value``, ``epoch``, ``ts`` of the strategy's latest submitted decision."""
        return f"{self.ns}:decision:{strategy}"

    def strategy_status(self, strategy: str) -> str:
        """Hash: ``state``, ``reason``, ``epoch``, ``value``, ``ts``, ``signals`` as last reported."""
        return f"{self.ns}:strategy:{strategy}"

    def decisions(self, epoch: int) -> str:
        """Sorted set: strategy name scored by its decision for one epoch (what the trader reads)."""
        return f"{self.ns}:decisions:{epoch}"

    def decisions_scratch(self, epoch: int) -> str:
        """Sorted set, transient: an epoch's decisions restricted to registered strategies."""
        return f"{self.ns}:decisions:{epoch}:registered"

    def ready(self, epoch: int) -> str:
        """List: doorbell pushed when an epoch's index holds as many decisions as there are strategies."""
        return f"{self.ns}:ready:{epoch}"

    def lease(self, kind: str, name: str | None = None) -> str:
        """String with PX: the owner of a name (``generator``/``strategy``) or of the trader lead."""
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}")
        return f"{self.ns}:lease:{kind}" if name is None else f"{self.ns}:lease:{kind}:{name}"

    # -- patterns for status ---------------------------------------------
    @property
    def signal_pattern(self) -> str:
        return f"{self.ns}:signal:*"

    @property
    def strategy_status_pattern(self) -> str:
        return f"{self.ns}:strategy:*"

    def name_from(self, key: str, prefix_key: str) -> str:
        """The component name at the end of ``key`` built like ``prefix_key`` (a ``*`` pattern)."""
        return key[len(prefix_key) - 1:]
