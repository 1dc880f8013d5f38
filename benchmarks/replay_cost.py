"""Benchmark 7: ``redismedian replay`` over a year of minute epochs, beside a floor.

A CSV archive of E epochs (default 525,600: a year of minute epochs) from G generators (3), as
``redismedian signals --csv`` writes it, and a topology of S strategies (10) over them, each on a
different choice of generators with the default ``decide``.  In a fresh Python process (so that its
memory is the replay's alone):

* **the floor**: reading the CSV file alone (``csv.reader`` over every row, nothing else);
* **the replay**: :func:`redismedian.replay` over the file, every result consumed: the CSV parsed
  and checked, each strategy's decision through the live code paths, the trader's tally and median;
  wall and CPU seconds, and the resident memory (VmRSS) at 10 %, 50 % and 100 % of the epochs
  (streaming: it stays flat);

then **the command** as a person runs it, ``redismedian replay --signals-csv FILE --topology FILE
--csv --period 60`` with its output to /dev/null (startup, plug-in loading and CSV output included).
Nothing here uses Redis.  Alone: ``./dev bench --only replay [--replay-epochs N]``.
"""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Callable

PERIOD_MS = 60_000
FIRST_EPOCH = 29_000_000     # mid-2025 in minute epochs


def generator_names(g: int) -> list[str]:
    return [f"g{i + 1}" for i in range(g)]


def topology_text(strategies: int, generators: list[str]) -> str:
    """S strategies, each on its own choice of generators (singles, pairs, ... then again in reverse order)."""
    choices = [list(c) for k in range(1, len(generators) + 1) for c in combinations(generators, k)]
    choices += [list(reversed(c)) for c in choices if len(c) > 1]
    lines = []
    for i in range(strategies):
        signals = choices[i % len(choices)]
        lines += [f"[strategies.S{i:02d}]", "signals = [" + ", ".join(f'"{g}"' for g in signals) + "]", ""]
    return "\n".join(lines)


def write_signals(path: Path, epochs: int, generators: list[str], seed: int = 7) -> int:
    """The archive: one row per generator per epoch, as `redismedian signals --csv` writes it; a
    signal in error now and then (as generators report them). Returns its size in bytes."""
    rnd = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("epoch", "generator", "value", "status", "error", "ts"))
        for e in range(FIRST_EPOCH, FIRST_EPOCH + epochs):
            ts = e * PERIOD_MS + 3
            for g in generators:
                if rnd.random() < 0.001:
                    w.writerow((e, g, "", "error", "signal function raised TimeoutError: feed down", ts))
                else:
                    w.writerow((e, g, repr(rnd.random()), "ok", "", ts))
    return path.stat().st_size


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def child(signals: str, topology: str, epochs: int) -> dict:
    """In a fresh process: the floor, then the replay (with its memory at 10 %, 50 % and 100 %)."""
    import redismedian
    t0, c0 = time.perf_counter(), time.process_time()
    with open(signals, newline="") as f:
        rows = sum(1 for _ in csv.reader(f))
    floor = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "rows": rows}
    marks = {max(1, epochs // 10): "10%", max(1, epochs // 2): "50%"}
    rss = {"start": _rss_mb()}
    published = n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for r in redismedian.replay(topology, signals, period_ms=PERIOD_MS):
        n += 1
        published += r.median is not None
        if n in marks:
            rss[marks[n]] = _rss_mb()
    replay = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "epochs": n,
              "published": published}
    rss["100%"] = _rss_mb()
    return {"floor": floor, "replay": replay, "rss_mb": rss}


def run(epochs: int, generators: int, strategies: int, work: Path, log: Callable[[str], None] = print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    gens = generator_names(generators)
    topology, signals = work / "topology.toml", work / "signals.csv"
    topology.write_text(topology_text(strategies, gens))
    log(f"  writing {epochs:,} epochs x {generators} generators...")
    size = write_signals(signals, epochs, gens)
    log(f"  {size / 1e6:.1f} MB; replaying {strategies} strategies in a fresh process...")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.replay_cost", str(signals), str(topology), str(epochs)],
                          capture_output=True, text=True, env=env, cwd=str(work), check=True)
    got = json.loads(proc.stdout)
    log(f"  floor {got['floor']['wall_s']:.2f} s, replay {got['replay']['wall_s']:.1f} s "
        f"(cpu {got['replay']['cpu_s']:.1f} s); the command...")
    t0 = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        cmd = subprocess.run([sys.executable, "-m", "redismedian", "replay", "--signals-csv", str(signals),
                              "--topology", str(topology), "--csv", "--period", "60"],
                             stdout=devnull, stderr=subprocess.PIPE, text=True, env=env, cwd=str(work))
    command_s = time.perf_counter() - t0
    if cmd.returncode != 0:
        raise RuntimeError(f"redismedian replay failed: {cmd.stderr[-500:]}")
    rep, floor = got["replay"], got["floor"]
    return {
        "epochs": epochs, "generators": generators, "strategies": strategies, "csv_mb": round(size / 1e6, 1),
        "floor": floor, "replay": rep, "rss_mb": got["rss_mb"], "command_s": command_s,
        "us_per_epoch": rep["wall_s"] / max(1, rep["epochs"]) * 1e6,
        "cpu_us_per_epoch": rep["cpu_s"] / max(1, rep["epochs"]) * 1e6,
        "ratio_to_floor": rep["wall_s"] / max(floor["wall_s"], 1e-9),
        "year_s": rep["wall_s"] / max(1, rep["epochs"]) * 525_600,
        "year_cpu_s": rep["cpu_s"] / max(1, rep["epochs"]) * 525_600,
    }


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
