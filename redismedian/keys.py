"""Every Redis key name and time-to-live used by redismedian, and nowhere else.

All keys live under one namespace (``NS``, default ``redismedian``) so that several
deployments can share a Redis and ``redis-cli --scan --pattern 'NS:*'`` shows
everything one deployment owns.  The README has the same schema as a table.

On Redis Cluster (a ``redis+cluster://`` URL) every key is ``{NS}:<rest>`` instead: the hash tag
``{NS}`` puts a whole namespace in one hash slot, so every script and multi-key command of a
deployment stays on one master, while different namespaces spread over the masters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_NAMESPACE = "redismedian"

# How long data outlives the process that wrote it, in periods.
SIGNAL_TTL_PERIODS = 3       # NS:signal:<g> expires a few periods after its generator dies
DECISION_TTL_PERIODS = 10    # NS:decision:<s> keeps the last report (and its reason) a while
READY_TTL_PERIODS = 2        # NS:count:<E>, the doorbell's counter
JOINS_PER_TICK = 1_000       # registration requests the trader admits at most per period
# The doorbell key NS:count:<slot> of epoch E uses slot E mod DOORBELL_SLOTS:
# a bounded set of shared key names (the ACL allows no other), each cleared by the trader while it is
# not the current epoch's.  At most 10: the ACL pattern is one digit.
DOORBELL_SLOTS = 4
LEASE_TTL_PERIODS = 1.5      # name leases; renewed every period, so a live holder never loses one
# The lease must survive scheduling jitter even at very short periods.
LEASE_MIN_TTL_MS = 300
TRADER_HEARTBEAT_PERIODS = 3  # NS:traders lists a trader that reported within this many periods
TRADER_STATE_TTL_PERIODS = 3  # NS:trader disappears this long after its trader's last write
ACTION_BACKLOG = 100          # --on-median: published epochs acted on per period at most (catching up)

SIGNAL_FEED_MAXLEN = 1_000    # approximate length of each NS:signals:<g> feed stream
DEFAULT_MEDIANS_MAXLEN = 100_000  # approximate length of the NS:medians history stream
# --record-inputs: the inputs of a median are recorded only up to this size (one Redis argument; the
# shipped redis.conf caps each at 1 MB): about 50,000 strategies at 10 characters a decision.
INPUTS_MAX_BYTES = 512 * 1024
# The trader warns (once) when the inputs recorded at this size, over --medians-maxlen epochs, would
# hold more than this: a quarter of the shipped maxmemory (1 GB, deploy/redis/redis.conf).
INPUTS_HISTORY_WARN_BYTES = 256 * 1024 * 1024
MEDIAN_MEMBERS_LIMIT = 64     # list member names in NS:medians only up to this many strategies

KINDS = ("generator", "strategy", "trader")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def ttl_ms(period_ms: int, periods: float) -> int:
    return max(1, int(math.ceil(period_ms * periods)))


def lease_ttl_ms(period_ms: int) -> int:
    return max(LEASE_MIN_TTL_MS, ttl_ms(period_ms, LEASE_TTL_PERIODS))


@dataclass(frozen=True)
class Keys:
    """Key names of one namespace."""

    ns: str = DEFAULT_NAMESPACE
    cluster: bool = False   # Redis Cluster: every key under the hash tag ``{NS}`` (one slot)

    @classmethod
    def for_url(cls, namespace: str, url: str) -> "Keys":
        """The key names of ``namespace`` for the Redis that ``url`` names."""
        return cls(namespace, cluster=is_cluster_url(url))

    @property
    def prefix(self) -> str:
        """What every key of the namespace starts with, before ``:``: ``NS``, or ``{NS}`` on a cluster."""
        return "{" + self.ns + "}" if self.cluster else self.ns

    # -- deployment-wide -------------------------------------------------
    @property
    def meta(self) -> str:
        """Hash: ``period_ms``, ``instance`` (random id; changes when Redis lost its data), ``created``,
        ``registry`` (version of the registry backup, incremented at every change; a backup that lists
        names beside a record without it survived a data loss, scripts.registry_guard)."""
        return f"{self.prefix}:meta"

    @property
    def strategies(self) -> str:
        """Set of registered strategy names (``SREM`` here == ``redismedian deregister``)."""
        return f"{self.prefix}:strategies"

    @property
    def registry_backup(self) -> str:
        """Set: the registry as our own tools last left it (registration adds, deregistration removes).

        A registry that vanishes as a whole (DEL, eviction, expiry, wrong type) is restored from
        this copy; names missing from a registry that still exists were deregistered.
        """
        return f"{self.prefix}:strategies:backup"

    @property
    def deregistered(self) -> str:
        """Hash: strategy name -> server ms of its deregistration (cleared when it registers again).

        A name missing from the registry with no record here was lost, not deregistered: it is
        restored.
        """
        return f"{self.prefix}:deregistered"

    @property
    def traders(self) -> str:
        """Hash: one field per running trader process (owner id) -> ``role|server ms|fence``."""
        return f"{self.prefix}:traders"

    @property
    def trader(self) -> str:
        """Hash: the trader's state, reason, epoch, median, count, ts, fence, leader."""
        return f"{self.prefix}:trader"

    @property
    def medians(self) -> str:
        """Stream: one entry per published median (epoch, median, count, members)."""
        return f"{self.prefix}:medians"

    @property
    def events(self) -> str:
        """Stream: every epoch the trader did not publish, as it happened: ``status`` ``error`` (with
        ``epoch``, ``reason``) or ``missed`` (``epoch`` to ``last``, ``reason``), ``ts``, ``fence``.
        With NS:medians it accounts for every epoch; ``redismedian follow`` reads both."""
        return f"{self.prefix}:events"

    @property
    def settled(self) -> str:
        """String: the last epoch a leading trader settled (published, error, idle or starting).  No
        TTL: a trader taking the lead counts the epochs since then that nobody settled as missed."""
        return f"{self.prefix}:trader:settled"

    @property
    def acted(self) -> str:
        """String: the last epoch the --on-median action ran for (only the leading trader writes it)."""
        return f"{self.prefix}:acted"

    @property
    def acks(self) -> str:
        """Stream: one entry per median that ``--min-replicas`` replicas acknowledged (``epoch``,
        ``replicas``, ``fence``, ``ts``; with ``--wait-aof`` also ``aof`` 1: the master's append-only
        file holds it on disk, and ``replicas`` counts the replicas whose file does).  Written only by
        a trader run with ``--min-replicas`` N > 0 or ``--wait-aof``; then only the medians listed
        here count as published downstream (--on-median, check)."""
        return f"{self.prefix}:acks"

    @property
    def trader_fence(self) -> str:
        """Counter: fencing token, incremented each time a trader takes the lead."""
        return f"{self.prefix}:trader:fence"

    # -- per component ---------------------------------------------------
    def signal(self, generator: str) -> str:
        """Hash: ``value``, ``epoch``, ``ts``, ``status`` (ok/error), ``error``."""
        return f"{self.prefix}:signal:{generator}"

    def signal_feed(self, generator: str) -> str:
        """Stream: one entry per signal the generator wrote (name, epoch, value, status, error, ts).

        One feed per generator, so a strategy blocks only on its own generators' feeds and wakes
        once per signal it reads, however many other generators there are."""
        return f"{self.prefix}:signals:{generator}"

    def decision(self, strategy: str) -> str:
        """String, written only by strategy ``<s>``: its report for its latest epoch, with PX.

        ``<epoch>|<value>`` when it submitted a decision, ``<epoch>|!<state>|<reason>`` when it has
        none (state ``starting`` or ``error``).  The trader reads every registered strategy's key
        with one ``MGET``; ``status`` reads it too.  Nobody else writes it."""
        return f"{self.prefix}:decision:{strategy}"

    def count(self, epoch: int | str) -> str:
        """Counter, shared by the registered strategies: how many submitted for one epoch.  Only a
        hint: the strategy whose submission makes it reach the registry's size rings ``ready_channel``.
        A wrong count can make the trader look early or late, never publish anything else.

        One of DOORBELL_SLOTS keys (``<epoch> mod DOORBELL_SLOTS``; ``"*"``: the pattern of all of
        them, for the ACL): a strategy's credentials can write no other key name here, and the trader
        clears the other slots at every settle, so what anybody writes there lives one period."""
        return f"{self.prefix}:count:{_slot(epoch)}"

    @property
    def ready_channel(self) -> str:
        """Pub/sub channel (PUBLISH only, for the strategies): the doorbell, rung with the epoch's
        number when its count reaches the registry's size.  It only wakes the trader, who then reads
        the decisions.  A channel stores nothing: whatever anybody publishes costs Redis at most the
        subscribing trader's output buffer (``client-output-buffer-limit pubsub``), never memory that
        outlives a flood."""
        return f"{self.prefix}:ready"

    def other_doorbells(self, epoch: int) -> list[str]:
        """The count keys of every slot but ``epoch``'s: the trader clears them when it settles."""
        return [f"{self.prefix}:count:{i}" for i in range(DOORBELL_SLOTS) if i != epoch % DOORBELL_SLOTS]

    @property
    def joins_channel(self) -> str:
        """Pub/sub channel (PUBLISH only, for the strategies): names asking to be registered, each
        published again at every report until it is admitted.  Only a doorbell: the trader admits a
        name only when its own lease shows a live process that was not deregistered.  Stores nothing,
        as ``ready_channel``."""
        return f"{self.prefix}:joins"

    def lease(self, kind: str, name: str | None = None) -> str:
        """String with PX: the owner of a name (``generator``/``strategy``) or of the trader lead."""
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}")
        return f"{self.prefix}:lease:{kind}" if name is None else f"{self.prefix}:lease:{kind}:{name}"

    # -- patterns for status ---------------------------------------------
    @property
    def pattern(self) -> str:
        """Every key of the namespace (for SCAN and the ACL)."""
        return f"{self.prefix}:*"

    @property
    def lease_pattern(self) -> str:
        """Every lease of the namespace (``name_from`` gives ``<kind>`` or ``<kind>:<name>``)."""
        return f"{self.prefix}:lease:*"

    @property
    def signal_pattern(self) -> str:
        return f"{self.prefix}:signal:*"

    @property
    def signal_feed_pattern(self) -> str:
        """Every generator's signal feed (``redismedian signals`` exports them)."""
        return f"{self.prefix}:signals:*"

    @property
    def decision_pattern(self) -> str:
        return f"{self.prefix}:decision:*"

    def name_from(self, key: str, prefix_key: str) -> str:
        """The component name at the end of ``key`` built like ``prefix_key`` (a ``*`` pattern)."""
        return key[len(prefix_key) - 1:]


def _slot(epoch: int | str) -> str:
    if epoch == "*":
        return f"[0-{DOORBELL_SLOTS - 1}]"
    return str(int(epoch) % DOORBELL_SLOTS)
