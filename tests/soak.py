"""A seeded, reproducible soak: the fault topology runs for a few hundred periods while random
faults are injected, one at a time, and healed.

    python -m tests.soak --periods 300 --seed 1

Faults: kill -9 and SIGSTOP/SIGCONT of any component (generators, strategies, the leading or the
standby trader), Redis killed and restarted empty, Redis hung, garbage written into the keys the
components read (decision keys and doorbells too), the registry deleted, a second process started
under a name in use.  The fault
schedule comes from the seed (timing on a loaded machine varies a little from run to run).

At the end it prints: periods, faults injected, medians published, wrong medians (must be 0: the
invariant of tests/faultkit.py), and the recovery time after each fault, in periods, from the
moment the failed part is back (a restarted process running again, SIGCONT sent, Redis answering,
garbage removed) to the first median published over every strategy.  The exit status
is 1 when a median was wrong or the pipeline did not recover from a fault.
"""
from __future__ import annotations

import argparse
import collections
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faultkit import ALL, NS, Topology, apply, current_epoch, heal, now_ms, random_garbage_op
from tests.support import Cluster, RedisServer

RECOVERY_CAP_PERIODS = 15


@dataclass
class Result:
    periods: float = 0.0
    faults: collections.Counter = field(default_factory=collections.Counter)
    recoveries: list = field(default_factory=list)   # (fault, periods or None)
    medians: int = 0
    wrong: int = 0
    problems: list = field(default_factory=list)
    crashed: list = field(default_factory=list)

    @property
    def unrecovered(self) -> list:
        return [f for f, p in self.recoveries if p is None]

    @property
    def ok(self) -> bool:
        return self.wrong == 0 and not self.unrecovered and not self.crashed

    def summary(self) -> str:
        times = [p for _f, p in self.recoveries if p is not None]
        lines = [
            f"periods:           {self.periods:.0f}",
            f"faults injected:   {sum(self.faults.values())} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) + ")",
            f"medians published: {self.medians}",
            f"wrong medians:     {self.wrong}",
        ]
        if times:
            lines.append(f"recovery (periods from the failed part back to the next full median): "
                         f"max {max(times):.2f}, mean {statistics.mean(times):.2f}, "
                         f"median {statistics.median(times):.2f}, "
                         f"within 2 periods: {sum(t <= 2 for t in times)}/{len(times)}")
        worst = collections.defaultdict(float)
        for f, p in self.recoveries:
            if p is not None:
                worst[f] = max(worst[f], p)
        lines.append("worst recovery by fault: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(worst.items())))
        if self.unrecovered:
            lines.append(f"NOT RECOVERED after {RECOVERY_CAP_PERIODS} periods: {self.unrecovered}")
        if self.crashed:
            lines.append(f"components that died on their own: {self.crashed}")
        for p in self.problems[:20]:
            lines.append(f"WRONG: {p}")
        return "\n".join(lines)


class Soak:
    def __init__(self, workdir: Path, seed: int, period: float, log=print):
        self.rng = random.Random(seed)
        self.period = period
        self.workdir = workdir
        self.log = log
        self.redis = RedisServer(workdir / "redis").start()
        self.cluster = Cluster(self.redis.url, workdir, period=period, namespace=NS)
        self.topo = Topology(self.cluster, period)
        self.result = Result()
        self.t0 = time.monotonic()

    def elapsed_periods(self) -> float:
        return (time.monotonic() - self.t0) / self.period

    def wait(self, periods: float) -> None:
        time.sleep(periods * self.period)

    # -- faults: each injects, holds for `hold` periods, heals; returns the heal time (ms) ----
    def components(self) -> dict:
        procs = dict(self.topo.procs)
        for i, p in enumerate(self.topo.traders):
            procs[f"trader{i}"] = p
        return procs

    def _restart(self, name: str) -> None:
        """Start the process again and return once it runs (recovery is measured from there:
        interpreter start-up on a loaded machine can take seconds, and is not the pipeline's)."""
        if name.startswith("trader"):
            i = int(name[len("trader"):])
            p = self.topo.traders[i] = self.cluster.trader()
        else:
            p = self.topo.restart(name)
        try:
            self.topo.wait_up(p, timeout=60)
        except AssertionError:
            self.result.crashed.append(f"{name} (restarted, never came up)")

    def fault_kill(self, hold):
        name = self.rng.choice(sorted(self.components()))
        self.components()[name].signal(signal.SIGKILL)
        self.wait(hold)
        self._restart(name)
        return f"kill -9 {name}"

    def fault_stop(self, hold):
        name = self.rng.choice(sorted(self.components()))
        p = self.components()[name]
        p.signal(signal.SIGSTOP)
        self.wait(hold)
        p.signal(signal.SIGCONT)
        return f"SIGSTOP {name}"

    def fault_redis_restart(self, hold):
        self.redis.kill()
        self.wait(hold)
        self.redis.start()
        return "redis restarted empty"

    def fault_redis_hang(self, hold):
        self.redis.pause()
        self.wait(hold)
        self.redis.resume()
        return "redis hung"

    def fault_garbage(self, hold):
        c = self.topo.client()
        ops = [random_garbage_op(self.rng) for _ in range(self.rng.randint(1, 4))]
        e = current_epoch(self.topo)
        for op in ops:
            apply(c, op, e)
        self.wait(hold)
        heal(self.topo)
        return "garbage " + "; ".join(" ".join(str(x)[:30] for x in o[:3]) for o in ops)

    def fault_registry_deleted(self, hold):
        self.topo.client().delete(f"{NS}:strategies")
        self.wait(hold)
        return "registry deleted"

    def fault_duplicate_name(self, hold):
        name = self.rng.choice(sorted(self.topo.procs))
        dup = self.cluster.start(*self.topo.procs[name].args, name=f"{name}-dup")
        code = dup.wait(30)
        if code != 1:
            self.result.problems.append(f"a second {name} was not refused (exit {code})")
            self.result.wrong += 1
        return f"second process named {name}"

    FAULTS = {"kill": 3, "stop": 3, "redis_restart": 1, "redis_hang": 1, "garbage": 3, "registry_deleted": 1,
              "duplicate_name": 1}

    def run(self, periods: int) -> Result:
        self.topo.start(traders=2)
        self.topo.watcher.wait_for_median_after(now_ms(), 30, "first median")
        names, weights = zip(*self.FAULTS.items())
        while self.elapsed_periods() < periods:
            kind = self.rng.choices(names, weights)[0]
            hold = self.rng.choice([1, 2, 3])
            what = getattr(self, f"fault_{kind}")(hold)
            healed = now_ms()
            self.result.faults[kind] += 1
            rec = self.recovery(healed)
            self.result.recoveries.append((kind, rec))
            self.log(f"[period {self.elapsed_periods():6.1f}] {what} ({hold} periods): "
                     + (f"recovered in {rec:.2f} periods" if rec is not None else "NOT RECOVERED"))
            if rec is None:
                break
            self.wait(self.rng.choice([1, 2]))
        return self.finish()

    def recovery(self, healed_ms: float) -> float | None:
        deadline = time.monotonic() + RECOVERY_CAP_PERIODS * self.period
        while time.monotonic() < deadline:
            e = next((x for x in self.topo.watcher.snapshot() if x.ts >= healed_ms and set(x.members) == ALL), None)
            if e is not None:
                return (e.ts - healed_ms) / 1000 / self.period
            time.sleep(0.02)
        return None

    def finish(self) -> Result:
        self.wait(1)
        r = self.result
        r.periods = self.elapsed_periods()
        entries = self.topo.watcher.snapshot()
        r.medians = len(entries)
        r.problems = self.topo.check()
        r.wrong += len(r.problems)
        r.crashed = [n for n, p in self.components().items() if not p.alive()]
        return r

    def close(self) -> None:
        self.topo.close()
        self.cluster.stop_all()
        self.redis.kill()


def run(periods: int, seed: int, period: float = 0.5, workdir: Path | None = None, log=print) -> Result:
    workdir = Path(workdir or tempfile.mkdtemp(prefix="redismedian-soak-"))
    soak = Soak(workdir, seed, period, log)
    try:
        return soak.run(periods)
    finally:
        soak.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--periods", type=int, default=300, help="how long to run, in periods (default 300)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    ap.add_argument("--period", type=float, default=0.5, help="period in seconds (default 0.5)")
    ap.add_argument("--workdir", type=Path, default=None, help="where logs go (default: a new temporary folder)")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="redismedian-soak-"))
    print(f"soak: {args.periods} periods of {args.period}s, seed {args.seed}, logs in {workdir}")
    result = run(args.periods, args.seed, args.period, workdir)
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
