"""Benchmark 7: ``redismedian replay`` over a year of minute epochs, beside a floor.

A CSV archive of E epochs (default 525,600: a year of minute epochs) from G generators (3), as
``redismedian signals --csv`` writes it, and a topology of S strategies (10) over them, each on a
different choice of generators with the default ``decide``.  Each run, in fresh processes (so that
each one's CPU time and peak memory are its own, from ``wait4``):

* **the floor**: reading the CSV file alone (``csv.reader`` over every row, nothing else), in a
  Python process started the same way;
* **the replay**, as a person runs it: ``redismedian replay --signals-csv FILE --topology FILE --csv
  --period 60`` with its output into a file (startup, plug-in loading, every strategy's decision
  through the live code paths, the trader's tally and median, the CSV output included): wall, CPU
  (user + sys) and peak resident memory;
* **the same command over the first 50,000 epochs** (a tenth of E when that is less): its peak
  memory beside the year's says whether a replay streams (flat: about the same).

Three runs (``--replay-reps``), the load average before each; the table gives the medians.  Nothing
here uses Redis.  Alone: ``./dev bench --only replay [--replay-epochs N]``.
"""
from __future__ import annotations

import csv
import os
import random
import statistics
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Callable

PERIOD_MS = 60_000
FIRST_EPOCH = 29_000_000     # mid-2025 in minute epochs
YEAR = 525_600
SMALL_EPOCHS = 50_000        # the run whose peak memory the year's is compared with
FLOOR = "import csv, sys\nwith open(sys.argv[1], newline='') as f:\n    print(sum(1 for _ in csv.reader(f)))\n"


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


def timed(argv: list[str], out: Path, env: dict[str, str], cwd: Path) -> dict:
    """Run ``argv`` with its output into ``out``: wall s, CPU s (user + sys) and peak RSS MB of that
    process alone (``wait4``)."""
    err = out.with_suffix(".stderr")
    with open(out, "wb") as f, open(err, "wb") as e:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=f, stderr=e, env=env, cwd=str(cwd))
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({code}): {err.read_text(errors='replace')[-500:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def replayed(path: Path) -> tuple[int, int]:
    """Epochs and published medians in a replay's CSV output."""
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        i = header.index("median")
        n = published = 0
        for row in rows:
            n += 1
            published += row[i] != ""
    return n, published


def _median(runs: list[dict], part: str) -> dict:
    return {k: statistics.median(r[part][k] for r in runs) for k in ("wall_s", "cpu_s", "rss_mb")}


def run(epochs: int, generators: int, strategies: int, work: Path, reps: int = 3,
        log: Callable[[str], None] = print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    gens = generator_names(generators)
    small_epochs = min(SMALL_EPOCHS, max(1, epochs // 10))
    topology, signals, small = work / "topology.toml", work / "signals.csv", work / "signals-small.csv"
    topology.write_text(topology_text(strategies, gens))
    log(f"  writing {epochs:,} epochs x {generators} generators (and the first {small_epochs:,} apart)...")
    size = write_signals(signals, epochs, gens)
    write_signals(small, small_epochs, gens)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def command(path: Path) -> list[str]:
        return [sys.executable, "-m", "redismedian", "replay", "--signals-csv", str(path), "--topology",
                str(topology), "--csv", "--period", str(PERIOD_MS // 1000)]

    runs = []
    for i in range(reps):
        load = [round(x, 2) for x in os.getloadavg()]
        floor = timed([sys.executable, "-c", FLOOR, str(signals)], work / "floor.out", env, work)
        rows = int((work / "floor.out").read_text())
        year = timed(command(signals), work / "replayed.csv", env, work)
        part = timed(command(small), work / "replayed-small.csv", env, work)
        runs.append({"load_average": load, "floor": floor, "replay": year, "small": part})
        log(f"  run {i + 1}/{reps} [load average {' / '.join(map(str, load))}]: floor {floor['wall_s']:.2f} s, "
            f"replay {year['wall_s']:.1f} s (CPU {year['cpu_s']:.1f} s, peak RSS {year['rss_mb']:.1f} MB; "
            f"{part['rss_mb']:.1f} MB over {small_epochs:,} epochs)")
    n, published = replayed(work / "replayed.csv")
    small_n, _ = replayed(work / "replayed-small.csv")
    if (n, small_n) != (epochs, small_epochs):
        raise RuntimeError(f"replay wrote {n:,} and {small_n:,} epochs, expected {epochs:,} and {small_epochs:,}")
    floor, rep, part = _median(runs, "floor"), _median(runs, "replay"), _median(runs, "small")
    floor["rows"] = rows
    rep.update(epochs=n, published=published, epochs_per_s=n / rep["wall_s"],
               epochs_per_cpu_s=n / max(rep["cpu_s"], 1e-9))
    part["epochs"] = small_n
    return {
        "epochs": epochs, "generators": generators, "strategies": strategies, "csv_mb": round(size / 1e6, 1),
        "reps": reps, "runs": runs, "load_average": [r["load_average"] for r in runs],
        "floor": floor, "replay": rep, "small": part,
        "us_per_epoch": rep["wall_s"] / n * 1e6, "cpu_us_per_epoch": rep["cpu_s"] / n * 1e6,
        "ratio_to_floor": rep["cpu_s"] / max(floor["cpu_s"], 1e-9),
        "rss_growth_mb": rep["rss_mb"] - part["rss_mb"],
        # measured on a year when epochs is a year; scaled from fewer epochs otherwise (startup included)
        "year_s": rep["wall_s"] / n * YEAR, "year_cpu_s": rep["cpu_s"] / n * YEAR,
    }
