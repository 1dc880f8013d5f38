"""Helpers shared by the integration tests (tests/integration/).

The deterministic plug-ins in tests/plugins.py depend only on the epoch, so for every
published median the test recomputes what each strategy must have decided and checks
the median exactly.  Every wait is on a condition with a deadline counted in periods.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence

import redis

from tests import plugins
from tests.support import ROOT, Cluster, Proc, wait_until

# The original topology: generator -> plug-in, strategy -> generators (default decide: the mean).
ORIGINAL_GENERATORS = {"g1": "sig_a", "g2": "sig_b", "g3": "sig_c"}
ORIGINAL_STRATEGIES = {"X": ["g1"], "Y": ["g2", "g3"]}

# Generous deadlines: the machine has 2 cores shared with other test runs.
START_PERIODS = 30   # processes importing and starting up
SETTLE_PERIODS = 12  # a condition that the pipeline reaches within a few periods when idle


def expected_decision(strategy_signals: Sequence[str], epoch: int,
                      generators: Mapping[str, str] = ORIGINAL_GENERATORS) -> float:
    values = [plugins.SIGNALS[generators[g]](epoch) for g in strategy_signals]
    return sum(values) / len(values)


def expected_median(epoch: int, strategies: Mapping[str, Sequence[str]] = ORIGINAL_STRATEGIES,
                    generators: Mapping[str, str] = ORIGINAL_GENERATORS) -> float:
    return statistics.median(expected_decision(s, epoch, generators) for s in strategies.values())


def medians(r: redis.Redis) -> list[dict]:
    """NS:medians entries (namespace t) as dicts with an int ``epoch``."""
    out = []
    for _id, f in r.xrange("t:medians"):
        f = {_s(k): _s(v) for k, v in f.items()}
        f["epoch"] = int(f["epoch"])
        out.append(f)
    return out


def assert_exact(entries: list[dict], strategies: Mapping[str, Sequence[str]] = ORIGINAL_STRATEGIES,
                 generators: Mapping[str, str] = ORIGINAL_GENERATORS) -> None:
    """Every entry is the exact median of the expected decisions, once per epoch, in order."""
    epochs = [e["epoch"] for e in entries]
    assert epochs == sorted(set(epochs)), f"epochs not strictly increasing: {epochs}"
    for e in entries:
        want = expected_median(e["epoch"], strategies, generators)
        assert float(e["median"]) == want, f"epoch {e['epoch']}: median {e['median']} != {want!r}"
        assert e["count"] == str(len(strategies)), e
        assert e["members"] == ",".join(sorted(strategies)), e


def assert_exact_by_members(entries: list[dict], strategies: Mapping[str, Sequence[str]],
                            generators: Mapping[str, str] = ORIGINAL_GENERATORS) -> None:
    """Like assert_exact, for a changing set of strategies: each entry is checked against its members."""
    epochs = [e["epoch"] for e in entries]
    assert epochs == sorted(set(epochs)), f"epochs not strictly increasing: {epochs}"
    for e in entries:
        members = e["members"].split(",")
        assert set(members) <= set(strategies), e
        assert_exact([e], {m: strategies[m] for m in members}, generators)


def server_epoch(r: redis.Redis, period: float) -> int:
    sec, usec = r.time()
    return (int(sec) * 1000 + int(usec) // 1000) // int(round(period * 1000))


def wait_medians(r: redis.Redis, count: int, timeout: float, after_epoch: int = -1) -> list[dict]:
    """Wait until at least ``count`` medians for epochs > ``after_epoch`` are published."""
    return wait_until(lambda: (lambda m: m if len(m) >= count else None)(
        [e for e in medians(r) if e["epoch"] > after_epoch]), timeout,
        what=f"{count} medians after epoch {after_epoch}")


def wait_registered(r: redis.Redis, names, period: float, timeout: float = 25) -> int:
    """Wait until exactly ``names`` are registered; returns the server epoch then.

    Medians of that epoch and earlier may cover only the strategies registered so far
    (a strategy that registers later is simply not part of them): compare after it.
    """
    want = set(names)
    wait_until(lambda: {_s(m) for m in r.smembers("t:strategies")} == want, timeout,
               what=f"registered strategies {sorted(want)}")
    return server_epoch(r, period)


def trader_hash(r: redis.Redis) -> dict[str, str]:
    try:
        return {_s(k): _s(v) for k, v in r.hgetall("t:trader").items()}
    except redis.exceptions.ResponseError:
        return {}


def wait_trader(r: redis.Redis, predicate: Callable[[dict], bool], timeout: float, what: str) -> dict:
    return wait_until(lambda: (lambda h: h if predicate(h) else None)(trader_hash(r)), timeout, what=what)


def start_original(cluster: Cluster, *, trader_args: Sequence[str] = ()) -> dict[str, Proc]:
    procs = {g: cluster.generator(g, f"tests.plugins:{sig}") for g, sig in ORIGINAL_GENERATORS.items()}
    procs["trader"] = cluster.trader(*trader_args)
    for s, gs in ORIGINAL_STRATEGIES.items():
        procs[s] = cluster.strategy(s, ",".join(gs))
    return procs


def start_module(cluster: Cluster, module: str, *args: str, name: str) -> Proc:
    """A component started as ``python -m redismedian.<module> ARGS`` (not through the subcommand)."""
    p = Proc(list(args), cluster.env(), cluster.dir / f"{name}-{len(cluster.procs)}.log", name=name,
             module=f"redismedian.{module}")
    cluster.procs.append(p)
    return p


def run_cli(*args: str, env: dict | None = None, timeout: float = 30, module: str = "redismedian"):
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)


def assert_alive(procs) -> None:
    dead = {p.name: (p.proc.returncode, p.output()[-2000:]) for p in procs if not p.alive()}
    assert not dead, f"processes died: {dead}"


def stop_in_time(proc: Proc, sig: int, limit: float = 2.0) -> tuple[int, float]:
    """Send ``sig`` and return (exit status, seconds it took); fails if it takes longer than ``limit``."""
    t0 = time.monotonic()
    proc.signal(sig)
    try:
        code = proc.wait(limit)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{proc.name} still running {limit}s after signal {sig}:\n{proc.output()[-3000:]}")
    return code, time.monotonic() - t0


def _s(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def running_original(cluster: Cluster, redis_server, medians: int = 1):
    """The original topology started, every strategy registered and ``medians`` published since.

    Returns (a decoding client, the processes by name, the epoch at which all were registered)."""
    r = redis_server.client(decode_responses=True)
    procs = start_original(cluster)
    e0 = wait_registered(r, ORIGINAL_STRATEGIES, cluster.period)
    wait_medians(r, medians, timeout=20, after_epoch=e0)
    return r, procs, e0
