"""Run the benchmarks: ``./dev bench`` (full run, a few minutes) or ``./dev bench --smoke`` (seconds).

Starts a private redis-server on a free loopback port, runs the benchmarks against it, prints
a markdown table, and writes ``results.json``, ``results.md`` and ``cost.png`` into ``--out``.
A full run into the default folder also rewrites the results section of benchmarks/README.md.
Figures are reported, never judged: the exit status is 0 whenever the benchmarks ran.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
SECTIONS = ("cost", "latency", "roundtrips", "capacity", "web", "replay", "replicas")


def _ints(text: str) -> list[int]:
    try:
        values = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _many(text: str) -> int:
    value = _positive(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"expected at least 3 (2 strategies is the original topology), got {text!r}")
    return value


def _sections(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SECTIONS)} (comma-separated), got {text!r}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="redismedian benchmarks against a private redis-server: trader cost per period for N "
                    "strategies (with the MGET floor), Redis time per strategy report and memory per strategy, "
                    "end-to-end latency (with a one-hop floor), round trips per component, idle CPU and memory, "
                    "capacity at a 1 s period, the page server's Redis cost per period (with a floor), replaying a year of minute epochs (with a "
                    "floor), the latency of trader --min-replicas 1 (with --min-replicas 0 and a one-hop floor). Prints a "
                    "markdown table and writes results.json, results.md and cost.png.")
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds' run with small N and a few short periods (what CI runs); "
                        "writes into a temporary folder unless --out is given")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for results.json, results.md and cost.png [default: {DEFAULT_OUT}]")
    p.add_argument("--only", type=_sections, default=list(SECTIONS),
                   help="run only these benchmarks: " + ", ".join(SECTIONS) + " (comma-separated; idle cost "
                        "is measured during latency)")
    p.add_argument("--sizes", type=_ints, default=None,
                   help="trader cost: numbers of strategies N [default: 1000,10000,100000]")
    p.add_argument("--reps", type=_positive, default=None, help="trader cost: measured periods per N [default: 5]")
    p.add_argument("--period", type=float, default=None,
                   help="latency, round trips (at least) and capacity: period in seconds [default: 1]")
    p.add_argument("--latency-periods", type=_positive, default=None,
                   help="latency: periods measured per topology [default: 60]")
    p.add_argument("--many", type=_many, default=None,
                   help="latency: strategy processes in the second topology [default: 50]")
    p.add_argument("--rt-sizes", type=_ints, default=None,
                   help="round trips: numbers of registered strategies [default: 10,10000]")
    p.add_argument("--rt-periods", type=_positive, default=None,
                   help="round trips: periods counted per N [default: 5]")
    p.add_argument("--capacity-sizes", type=_ints, default=None,
                   help="capacity: numbers of strategies, each run at the --period [default: 20000,50000]")
    p.add_argument("--capacity-periods", type=_positive, default=None,
                   help="capacity: periods watched per N [default: 20]")
    p.add_argument("--web-size", type=_positive, default=None,
                   help="web (the page server, redismedian web): number of registered strategies [default: 10000]")
    p.add_argument("--web-periods", type=_positive, default=None,
                   help="web: periods measured, and periods counted per number of browsers [default: 10]")
    p.add_argument("--web-browsers", type=_positive, default=None,
                   help="web: browsers connected in the second count (the first has 1) [default: 20]")
    p.add_argument("--replay-epochs", type=_positive, default=None,
                   help="replay: epochs in the CSV archive replayed, 3 generators x 10 strategies "
                        "[default: 525600, a year of minute epochs]")
    p.add_argument("--replay-reps", type=_positive, default=None,
                   help="replay: runs, each in fresh processes (the table gives their medians) [default: 3]")
    p.add_argument("--replicas-periods", type=_positive, default=None,
                   help="replicas (trader --min-replicas 1 against 0, a master and a replica): periods measured per "
                        "part, at the --period [default: 20]")
    p.add_argument("--replicas-runs", type=_positive, default=None,
                   help="replicas: runs of the two parts; the table gives the median over the runs [default: 3]")
    p.add_argument("--no-readme", action="store_true",
                   help="do not rewrite the results section of benchmarks/README.md")
    p.add_argument("--keep-logs", action="store_true", help="keep the Redis and component logs")
    return p


FULL = dict(sizes=[1000, 10_000, 100_000], reps=5, period=1.0, latency_periods=60, many=50,
            rt_sizes=[10, 10_000], rt_periods=5, capacity_sizes=[20_000, 50_000], capacity_periods=20,
            web_size=10_000, web_periods=10, web_browsers=20, replay_epochs=525_600, replay_reps=3,
            replicas_periods=20, replicas_runs=3)
SMOKE = dict(sizes=[10, 200], reps=2, period=0.3, latency_periods=3, many=3, rt_sizes=[10, 50], rt_periods=4,
             capacity_sizes=[200], capacity_periods=3, web_size=200, web_periods=3, web_browsers=3,
             replay_epochs=2_000, replay_reps=3, replicas_periods=3, replicas_runs=1)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    preset = SMOKE if args.smoke else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.period < 0.05:
        parser().error("--period must be at least 0.05 seconds")

    from .harness import REDIS_SERVER, RedisServer, machine
    from . import capacity, latency, report, roundtrips, trader_cost

    if not REDIS_SERVER:
        print("benchmarks: redis-server is not installed (./dev bench installs it)", file=sys.stderr)
        return 1
    out = args.out or (Path(tempfile.mkdtemp(prefix="redismedian-bench-")) if args.smoke else DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="redismedian-bench-work-"))
    argv_text = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = {
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": ("./dev bench " + argv_text).strip(), "smoke": args.smoke, "machine": machine(),
        "settings": {k: getattr(args, k) for k in preset},
    }
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    results["load_average_by_section"] = {}

    def section(key: str, title: str) -> None:
        load = [round(x, 2) for x in os.getloadavg()]
        results["load_average_by_section"][key] = load
        log(f"{title} [load average {' / '.join(map(str, load))}]")

    started = time.monotonic()
    log(f"load average at the start: {' / '.join(map(str, results['machine']['load_average_at_start']))} "
        f"({results['machine']['cores']} cores)")
    server = RedisServer(work / "redis").start()
    ok = False
    try:
        admin = server.client(socket_timeout=120)
        rate = None
        # The parts run in this order (the tables keep their numbers): the latency part, with its 54
        # processes, comes last (the page server's part runs after capacity), so that the 1-minute load average it leaves behind is not printed for
        # another part, and the CPU-bound parts (cost, capacity) do not run in its wake.
        if "cost" in args.only:
            section("cost", "1. trader cost per period, Redis time per strategy report, memory per strategy")
            results["trader_cost"] = trader_cost.run(server.url, admin, args.sizes, args.reps,
                                                     min_period_s=args.period if args.smoke else 1.0, log=log)
            rate = results["trader_cost"]["calibration_decisions_per_s"]
        if "capacity" in args.only:
            section("capacity", f"5. capacity at a {args.period:g} s period")
            results["capacity"] = []
            for n in args.capacity_sizes:
                admin.flushall()
                results["capacity"].append(capacity.run(server.url, admin, n, args.capacity_periods, args.period,
                                                        work / "logs", log=log))
        if "web" in args.only:
            from . import web_cost   # needs the web extra (./dev bench installs it)
            section("web", f"6. the page server (redismedian web) at N = {args.web_size:,}")
            admin.flushall()
            if rate is None:
                rate = trader_cost.calibrate(server.url, admin)
            results["web"] = web_cost.run(server.url, admin, args.web_size, args.web_periods, args.web_browsers, rate,
                                          work / "logs", min_period_s=args.period if args.smoke else 1.0, log=log)
        if "replay" in args.only:
            from . import replay_cost
            section("replay", f"7. replay of {args.replay_epochs:,} minute epochs, 3 generators x 10 strategies")
            results["replay"] = replay_cost.run(args.replay_epochs, 3, 10, work / "replay", args.replay_reps, log=log)
        if "roundtrips" in args.only:
            section("roundtrips", "3. round trips per component per period")
            admin.flushall()
            if rate is None:
                rate = trader_cost.calibrate(server.url, admin)
            results["round_trips"] = []
            for n in args.rt_sizes:
                admin.flushall()
                results["round_trips"].append(roundtrips.run(server.url, admin, server.port, n, args.rt_periods,
                                                             rate, work / "logs", min_period_s=args.period, log=log))
        if "replicas" in args.only:
            from . import replicas_cost
            section("replicas", f"8. trader --min-replicas 1 against 0: boundary -> acknowledged median, "
                                f"{args.replicas_runs} run(s) of {args.replicas_periods} periods")
            results["replicas"] = replicas_cost.run_section(args.replicas_periods, args.period, args.replicas_runs,
                                                            work / "replicas", log=log)
        if "latency" in args.only:
            section("latency", "2. end-to-end latency, with the one-hop floor (and 4. idle cost)")
            results["latency"] = []
            for strategies in (2, args.many):
                admin.flushall()
                results["latency"].append(latency.run_topology(server.url, admin, strategies, args.latency_periods,
                                                               args.period, work / "logs", log=log))
        ok = True
    finally:
        server.kill()
        if ok and not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"benchmarks: logs kept in {work}", file=sys.stderr)
    results["duration_s"] = time.monotonic() - started
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    log(f"load average at the end: {' / '.join(map(str, results['load_average_at_end']))}")
    results["targets"] = [{"target": t, "measured": m, "met": met} for t, m, met in report.targets(results)]
    table = report.markdown(results)
    report.write_json(results, out / "results.json")
    (out / "results.md").write_text(table + "\n")
    why_not = report.plot(results, out / "cost.png")
    results["plot"] = None if why_not else str(out / "cost.png")
    results["plot_skipped"] = why_not
    report.write_json(results, out / "results.json")
    print()
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}"
          + (f", {out / 'cost.png'}" if not why_not else f" (no plot: {why_not})"))
    if not args.smoke and args.out is None and not args.no_readme and set(args.only) == set(SECTIONS):
        if report.update_readme(HERE / "README.md", table):
            print(f"updated the results section of {HERE / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
