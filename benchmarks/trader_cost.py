"""Benchmark 1: the trader's cost per period for N registered strategies whose decisions are in,
the Redis time of one strategy report, and Redis memory per registered strategy.

For each N, N simulated strategies (:mod:`benchmarks.loadgen`) are registered (written into the
registry directly, as the trader's admission would) and then, at each period boundary, submit
their decisions with the real STRATEGY_REPORT script.  Once the last one is in, the real
:class:`redismedian.trader.Trader` runs its per-period step for that epoch, timed from the
benchmark: TRADER_TICK, one read (the pipeline of ``Trader.read_decisions``: the epoch's doorbell
count, the registry's version and size, ``MGET`` of every registered strategy's decision key; the
last report rang the doorbell before the step, so the trader reads at once), ``trader.tally`` (fast path: check,
parse, sort), TRADER_SETTLE.  The first period is a warm-up (the trader takes the lead); the next
``reps`` are measured.

The floor, measured in the same periods right after the trader: one ``MGET`` of the N decision
keys from redis-py (a second client), the least any reader of N separate keys pays.

Also measured in the same periods:

* where the trader's time goes: each of its round trips, ``tally``, the server's own time for the
  ``MGET`` (``INFO commandstats``), and, outside the timed step, what redis-py takes to pack the
  ``MGET`` of N keys and hiredis to parse its reply;
* an incomplete read: what one read costs while the decisions are not all in, as when the
  trader's wait on the doorbell ends without it ringing (every ``block_ms``, at most 1 s, while
  strategies are missing): the read pipeline, then ``tally`` of N decisions
  that are all for the previous epoch, the slow path that judges each one.  Measured at the
  boundary, before the load generator writes;
* Redis time per strategy report: ``usec`` / ``calls`` of ``EVALSHA`` in ``INFO commandstats``
  while only the load generator's reports run;
* Redis memory per registered strategy: ``used_memory`` after the measured periods (every
  strategy registered and reporting; load generator, trader and floor disconnected) minus
  ``used_memory`` before the strategies existed (scripts already loaded, the same single admin
  connection open), divided by N.  It includes the constant part (deployment record, trader
  state, the medians stream): negligible from N = 10k on, not at the smoke test's sizes.
"""
from __future__ import annotations

import math
import statistics
import time

import hiredis

import redismedian.trader as trader_module
from redismedian import scripts
from redismedian.common import Settings
from redismedian.connection import RedisSettings, make_client
from redismedian.keys import DEFAULT_NAMESPACE
from redismedian.trader import Trader, tally

from .harness import BenchClock
from .loadgen import LoadGenerator, strategy_names

CALIBRATION_N = 5000
PRELOADED = (scripts.STRATEGY_REPORT, scripts.TRADER_TICK, scripts.TRADER_SETTLE, scripts.REGISTRY_ADMIT,
             scripts.REGISTRY_RESTORE, scripts.META_CREATE, scripts.LEASE_ACQUIRE, scripts.LEASE_RELEASE)


def commandstats(client) -> dict[str, dict]:
    return {name[len("cmdstat_"):]: v for name, v in client.info("commandstats").items()}


def _delta(after: dict, before: dict, command: str, field: str) -> int:
    return int(after.get(command, {}).get(field, 0)) - int(before.get(command, {}).get(field, 0))


# Commands that the reports run only inside the doorbell script, whose EVALSHA's usec includes them.
DOORBELL_INSIDE = ("sismember", "incr", "scard", "publish")


def report_usec(after: dict, before: dict) -> int:
    """Redis time of the reports made between two ``commandstats`` snapshots: every command, less
    those that ran inside the doorbell script (counted in its EVALSHA already) and the snapshot's own
    INFO.  (The doorbell's PEXPIRE of the epoch's counter and doorbell, twice per epoch, stays in.)"""
    return sum(_delta(after, before, c, "usec") for c in after
               if c not in DOORBELL_INSIDE and not c.startswith(("info", "config")))


def calibrate(url: str, admin) -> float:
    """Decisions per second the load generator writes on this machine (sets the periods): the better of
    two tries, so that one moment of contention does not make every period three times longer."""
    admin.flushall()
    gen = LoadGenerator(url, "bench-calibrate", 3_600_000, strategy_names(CALIBRATION_N))
    try:
        gen.start()
        gen.preregister()
        now_epoch = int(admin.time()[0]) * 1000 // 3_600_000
        gen.submit(now_epoch, starting=True)
        rate = max(gen.submit(now_epoch).rate for _ in range(2))
    finally:
        gen.close()
    admin.flushall()
    return rate


def choose_period_ms(n: int, rate: float, min_period_s: float = 1.0) -> int:
    """Long enough for the load generator to write N decisions well inside one period (twice the time it
    took at calibration, which varies with the machine's load), after an incomplete read (about 1 s at
    N = 100k), and for the trader to settle before its deadline (80 % of the period)."""
    seconds = n / rate * 2 + 0.5 + n / 100_000
    return int(round(max(min_period_s, math.ceil(seconds * 10) / 10) * 1000))


def _summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": xs} if xs else {}


class _Timed:
    """Wall time of each call of a function, per period."""

    def __init__(self, fn):
        self.fn = fn
        self.ms: list[float] = []

    def __call__(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.ms.append((time.perf_counter() - t0) * 1000)

    def take(self) -> list[float]:
        out, self.ms = self.ms, []
        return out


def _resp(values: list) -> bytes:
    """The RESP reply of an MGET that returned ``values`` (to time hiredis's parsing alone)."""
    parts = [b"*%d\r\n" % len(values)]
    for v in values:
        parts.append(b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v))
    return b"".join(parts)


def measure(url: str, admin, clock: BenchClock, n: int, reps: int, rate: float, min_period_s: float = 1.0,
            log=print, record_inputs: bool = True) -> dict:
    period_ms = choose_period_ms(n, rate, min_period_s)
    ns = DEFAULT_NAMESPACE     # the key names a deployment has (memory depends on their length)
    names = strategy_names(n)
    admin.flushall()
    for source in PRELOADED:
        admin.script_load(source)
    time.sleep(0.2)   # let Redis drop the buffers of connections closed before
    memory_before = int(admin.info("memory")["used_memory"])   # only this connection is open
    gen = LoadGenerator(url, ns, period_ms, names).start()
    floor_client = make_client(url, 60.0, client_name="bench-floor")
    log(f"  N={n}: period {period_ms / 1000:g}s, registering {n} strategies ...")
    gen.preregister()
    reg = gen.submit(clock.now_ms() // period_ms, starting=True)
    if reg.submitted != n or reg.registered != n:
        raise RuntimeError(f"registration of {n} strategies failed: {reg}")
    trader = Trader(Settings(RedisSettings(url, socket_timeout=60.0), namespace=ns, period_ms=period_ms),
                    client=make_client(url, 60.0, client_name="redismedian-trader"), record_inputs=record_inputs)
    trader.clock.sync(trader.client)
    keys = trader.keys
    ordered = sorted(names)                       # the trader's read plan: sorted names, their keys
    decision_keys = [keys.decision(x) for x in ordered]
    # Time the trader's parts (the same calls Trader.step makes, wrapped in this process only).
    timed = {part: _Timed(getattr(trader, part)) for part in ("tick", "read_decisions", "settle")}
    for part, t in timed.items():
        setattr(trader, part, t)
    timed_tally = _Timed(tally)
    conn = floor_client.connection_pool.get_connection()

    rows: dict[str, list] = {k: [] for k in (
        "trader_ms", "trader_server_ms", "floor_ms", "floor_server_ms", "write_s", "report_us", "incomplete_ms",
        "tick_ms", "read_ms", "reads", "tally_ms", "settle_ms", "mget_server_ms", "pack_ms", "parse_ms")}
    skipped = []
    attempts = 0
    trader_module.tally = timed_tally
    try:
        while len(rows["trader_ms"]) < reps and attempts < reps + 4:
            attempts += 1
            plan = gen.plan()
            epoch = clock.next_boundary(period_ms, offset_ms=2)
            # An incomplete read: what a read costs while no decision of the epoch is in yet.
            t0 = time.perf_counter()
            incomplete = tally(epoch, ordered, Trader.read_decisions(trader, epoch, decision_keys, 0).decisions,
                          keys.decision)
            incomplete_ms = (time.perf_counter() - t0) * 1000
            s0 = commandstats(admin)
            sub = gen.submit(epoch, plan=plan)
            s1 = commandstats(admin)
            if sub.submitted != n:
                skipped.append({"epoch": epoch, "why": f"load generator: {sub.submitted}/{n} in time {sub.refused}"})
                continue
            for t in (*timed.values(), timed_tally):
                t.take()
            t0 = time.perf_counter()
            trader.step(epoch)
            dt = (time.perf_counter() - t0) * 1000
            s2 = commandstats(admin)
            t0 = time.perf_counter()
            got = floor_client.mget(decision_keys)
            floor = (time.perf_counter() - t0) * 1000
            s3 = commandstats(admin)
            assert len(got) == n
            published, count = admin.hmget(keys.trader, "published", "count")
            if published is None or int(published) != epoch or int(count or 0) != n:
                skipped.append({"epoch": epoch, "why": f"trader did not publish (published={published}, "
                                                       f"count={count})"})
                continue
            parts = {p: t.take() for p, t in timed.items()}
            tally_ms = timed_tally.take()
            if attempts == 1:
                continue   # warm-up: the trader took the lead in this period
            assert incomplete.problems and not incomplete.values, "the incomplete read found decisions for the epoch"
            t0 = time.perf_counter()
            conn.pack_command("MGET", *decision_keys)
            pack = (time.perf_counter() - t0) * 1000
            reply = _resp(got)
            t0 = time.perf_counter()
            reader = hiredis.Reader()
            reader.feed(reply)
            reader.gets()
            parse = (time.perf_counter() - t0) * 1000
            rows["trader_ms"].append(dt)
            rows["trader_server_ms"].append(sum(_delta(s2, s1, c, "usec") for c in ("evalsha", "mget"))
                                            / 1000)
            rows["floor_ms"].append(floor)
            rows["floor_server_ms"].append(_delta(s3, s2, "mget", "usec") / 1000)
            rows["write_s"].append(sub.seconds)
            rows["report_us"].append(report_usec(s1, s0) / max(1, sub.commands))
            rows["incomplete_ms"].append(incomplete_ms)
            rows["tick_ms"].append(sum(parts["tick"]))
            rows["read_ms"].append(sum(parts["read_decisions"]))
            rows["reads"].append(len(parts["read_decisions"]))
            rows["tally_ms"].append(sum(tally_ms))
            rows["settle_ms"].append(sum(parts["settle"]))
            rows["mget_server_ms"].append(_delta(s2, s1, "mget", "usec") / 1000)
            rows["pack_ms"].append(pack)
            rows["parse_ms"].append(parse)
    finally:
        trader_module.tally = tally
        floor_client.connection_pool.release(conn)
    # What one published epoch keeps in NS:medians (with --record-inputs: the inputs field too).
    last_entry = admin.xrevrange(keys.medians, count=1)
    entry_bytes = sum(len(k) + len(v) for k, v in last_entry[0][1].items()) if last_entry else 0
    lease_bytes = admin.memory_usage(keys.lease("strategy", names[0])) or 0
    decision_bytes = admin.memory_usage(keys.decision(names[0])) or 0
    gen.close()
    trader.client.close()
    floor_client.close()
    time.sleep(0.2)   # let Redis drop the closed connections and their buffers
    memory_after = int(admin.info("memory")["used_memory"])   # only this connection is open again
    if not rows["trader_ms"]:
        raise RuntimeError(f"N={n}: no period could be measured: {skipped}")
    t, f = statistics.median(rows["trader_ms"]), statistics.median(rows["floor_ms"])
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    out = {
        "n": n, "period_s": period_ms / 1000, "reps": len(rows["trader_ms"]),
        "trader_ms": _summary(rows["trader_ms"]), "trader_server_ms": _summary(rows["trader_server_ms"]),
        "floor_ms": _summary(rows["floor_ms"]), "floor_server_ms": _summary(rows["floor_server_ms"]),
        "ratio_to_floor": t / f, "decisions_per_s": n / (t / 1000),
        "incomplete_read_ms": _summary(rows["incomplete_ms"]),
        "breakdown_ms": {k: med[k] for k in ("tick_ms", "read_ms", "mget_server_ms", "pack_ms", "parse_ms",
                                              "tally_ms", "settle_ms")},
        "reads_per_step": med["reads"],
        "report_us": _summary(rows["report_us"]),
        "memory": {"used_before": memory_before, "used_after": memory_after,
                   "bytes_per_strategy": (memory_after - memory_before) / n,
                   "memory_usage_lease_key": lease_bytes, "memory_usage_decision_key": decision_bytes,
                   "name_length": len(names[0]), "namespace": ns},
        "loadgen_write_s": _summary(rows["write_s"]),
        "loadgen_decisions_per_s": n / statistics.median(rows["write_s"]),
        "skipped": skipped,
        "record_inputs": record_inputs,
        "median_entry_bytes": entry_bytes,
        "medians_stream_bytes": admin.memory_usage(keys.medians, samples=0) or 0,
        "medians_entries": admin.xlen(keys.medians),
    }
    b = out["breakdown_ms"]
    log(f"  N={n}: trader {t:.2f} ms/period (inside Redis {med['trader_server_ms']:.2f} ms), floor {f:.2f} ms, "
        f"ratio {t / f:.2f}; tick {b['tick_ms']:.2f} + read {b['read_ms']:.2f} (MGET in Redis "
        f"{b['mget_server_ms']:.2f}, packing {b['pack_ms']:.2f}, parsing {b['parse_ms']:.2f}) + tally "
        f"{b['tally_ms']:.2f} + settle {b['settle_ms']:.2f}; incomplete read {med['incomplete_ms']:.1f} ms; "
        f"{med['report_us']:.2f} us/report; {out['memory']['bytes_per_strategy']:.0f} bytes/strategy; "
        f"load generator {out['loadgen_decisions_per_s']:.0f} decisions/s")
    return out


def run(url: str, admin, sizes: list[int], reps: int, min_period_s: float = 1.0, log=print) -> dict:
    clock = BenchClock(admin)
    rate = calibrate(url, admin)
    log(f"  load generator calibrated at {rate:.0f} decisions/s")
    results = []
    for n in sizes:
        results.append(measure(url, admin, clock, n, reps, rate, min_period_s, log))
        admin.flushall()
    return {"calibration_decisions_per_s": rate, "sizes": results}
