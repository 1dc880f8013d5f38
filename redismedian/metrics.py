"""Prometheus metrics of one component process (``--metrics-port``).

Every series carries the labels ``component`` (generator, strategy, trader) and ``name``
(the generator or strategy name; ``trader`` for the trader), so one dashboard covers a
whole deployment.  Without ``--metrics-port`` the components use :class:`NullMetrics`,
which does nothing and needs no HTTP server.

| metric | type | meaning |
|---|---|---|
| ``redismedian_periods_total`` | counter | periods (epochs) this process acted on |
| ``redismedian_periods_skipped_total`` | counter | periods missed (stalled, or Redis unavailable) |
| ``redismedian_missed_epochs_total`` | counter | trader: epochs nobody settled (a stall, an outage, a takeover) |
| ``redismedian_submissions_total`` | counter | values written: signals, decisions, or published medians |
| ``redismedian_errors_total{kind}`` | counter | errors by kind (see :data:`ERROR_KINDS`) |
| ``redismedian_state{state}`` | gauge (enum) | 1 for the current state, 0 for the others |
| ``redismedian_redis_up`` | gauge | 1 while Redis answers, 0 during an outage |
| ``redismedian_last_success_timestamp_seconds`` | gauge | server time of the last submission |
| ``redismedian_staleness_seconds`` | gauge | seconds since the last submission (since start when none yet) |
| ``redismedian_last_median`` | gauge | the last published median (trader only) |
| ``redismedian_period_latency_seconds`` | histogram | from the period boundary (server clock) to the end of the period's work |
| ``redismedian_redis_script_seconds`` | histogram | round trip of one script call (the per-period write) |
"""  # noqa: E501 - a table row of the metrics list
from __future__ import annotations

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Enum, Gauge, Histogram, Info

STATES = ("starting", "ok", "error", "idle", "standby")
ERROR_KINDS = (
    "redis_unavailable",   # an outage started (counted once per outage, not per retry)
    "redis_refused",       # Redis refused a command (e.g. a wrong key type)
    "data_problem",        # something in Redis was not what it should be; the period was skipped
    "signal_function",     # generator: the --signal plug-in raised or returned no finite number
    "signals",             # strategy: a signal was missing, stale, in error or not a number
    "decide_function",     # strategy: the --decide plug-in raised or returned no finite number
    "late",                # the period ended before the value was written
    "missing_decisions",   # trader: a registered strategy had no decision by the deadline
    "bad_data",            # trader: a decision or the registry was unusable
    "on_median",           # trader: the --on-median action raised (retried next period)
    "doorbell_overcounted",  # trader: NS:count:<E> went past the registry's size; it polled for the decisions
    "doorbell_early",      # trader: NS:ready rang for the epoch before every decision was in; it paced its reads
    "joins_flooded",       # trader: far more messages on NS:joins in a period than any deployment asks with
    "doorbell_junk",       # trader: messages on NS:ready or NS:joins that were no ring and no name
    "replicas",            # trader: fewer than --min-replicas replicas acknowledged a median in time
    "restored",            # trader: a master lacked acknowledged medians after a failover; written back
    "conflict",            # trader: a master holds another median for an epoch acknowledged with this one
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SCRIPT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
LABELS = ("component", "name")


class NullMetrics:
    """The metrics interface, doing nothing (no ``--metrics-port``)."""

    def period(self, latency_s: float) -> None: ...
    def skipped(self, n: int) -> None: ...
    def missed(self, n: int) -> None: ...
    def submitted(self, server_ms: int | None = None) -> None: ...
    def error(self, kind: str) -> None: ...
    def state(self, state: str) -> None: ...
    def redis_up(self, up: bool) -> None: ...
    def median(self, value: float) -> None: ...
    def script_call(self, seconds: float) -> None: ...


class Metrics(NullMetrics):
    """The series of one component process, registered in ``registry`` (the default one)."""

    def __init__(self, component: str, name: str | None, namespace: str, period_s: float,
                 registry: CollectorRegistry | None = None, version: str = ""):
        r = registry if registry is not None else REGISTRY
        self.registry = r
        lv = {"component": component, "name": name or component}
        self._periods = Counter("redismedian_periods", "Periods (epochs) this process acted on.",
                                LABELS, registry=r).labels(**lv)
        self._skipped = Counter("redismedian_periods_skipped", "Periods missed (stalled, or Redis unavailable).",
                                LABELS, registry=r).labels(**lv)
        self._missed = Counter("redismedian_missed_epochs",
                               "Trader: epochs that no trader settled (neither published nor an error), as this "
                               "trader found them: a stall, a Redis outage, a takeover.", LABELS,
                               registry=r).labels(**lv)
        self._submissions = Counter("redismedian_submissions",
                                    "Values written: signals (generator), decisions (strategy), medians (trader).",
                                    LABELS, registry=r).labels(**lv)
        errors = Counter("redismedian_errors", "Errors by kind.", LABELS + ("kind",), registry=r)
        self._errors = {k: errors.labels(kind=k, **lv) for k in ERROR_KINDS}
        self._state = Enum("redismedian_state", "Current state of this component.", LABELS, states=list(STATES),
                           registry=r).labels(**lv)
        self._redis_up = Gauge("redismedian_redis_up", "1 while Redis answers, 0 during an outage.",
                               LABELS, registry=r).labels(**lv)
        self._last_success = Gauge("redismedian_last_success_timestamp_seconds",
                                   "Server time (seconds) of the last submission.", LABELS, registry=r).labels(**lv)
        self._staleness = Gauge("redismedian_staleness_seconds",
                                "Seconds since the last submission (since start when there was none).",
                                LABELS, registry=r).labels(**lv)
        self._median = Gauge("redismedian_last_median", "The last published median (trader).",
                             LABELS, registry=r).labels(**lv)
        self._latency = Histogram("redismedian_period_latency_seconds",
                                  "From the period boundary (server clock) to the end of this process's work "
                                  "for the period.", LABELS, buckets=LATENCY_BUCKETS, registry=r).labels(**lv)
        self._script = Histogram("redismedian_redis_script_seconds",
                                 "Round trip of one script call (each period's atomic write).", LABELS,
                                 buckets=SCRIPT_BUCKETS, registry=r).labels(**lv)
        Info("redismedian", "Build and deployment of this process.", LABELS, registry=r).labels(**lv).info(
            {"version": version, "namespace": namespace, "period_seconds": f"{period_s:g}"})
        self._state.state("starting")
        self._redis_up.set(1)
        self._last_ok = time.monotonic()
        self._staleness.set_function(lambda: time.monotonic() - self._last_ok)

    def period(self, latency_s: float) -> None:
        self._periods.inc()
        self._latency.observe(max(0.0, latency_s))

    def skipped(self, n: int) -> None:
        self._skipped.inc(n)

    def missed(self, n: int) -> None:
        self._missed.inc(n)

    def submitted(self, server_ms: int | None = None) -> None:
        self._submissions.inc()
        self._last_ok = time.monotonic()
        self._last_success.set((server_ms / 1000.0) if server_ms is not None else time.time())

    def error(self, kind: str) -> None:
        c = self._errors.get(kind)
        if c is not None:
            c.inc()

    def state(self, state: str) -> None:
        if state in STATES:
            self._state.state(state)

    def redis_up(self, up: bool) -> None:
        self._redis_up.set(1 if up else 0)

    def median(self, value: float) -> None:
        self._median.set(value)

    def script_call(self, seconds: float) -> None:
        self._script.observe(seconds)


def serve(metrics: Metrics, host: str, port: int) -> int:
    """Serve ``metrics`` over HTTP at ``host:port`` (``/metrics``); returns the port (0 picks one).

    Raises OSError when the address is taken or unusable.
    """
    from prometheus_client import start_http_server
    server, _ = start_http_server(port, addr=host, registry=metrics.registry)  # prometheus_client >= 0.17
    return server.server_address[1]
