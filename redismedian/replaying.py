"""Replay: the deployment's plug-ins over recorded signals, offline (``redismedian replay``).

A topology file (TOML) says which strategies run, on which generators' signals, with which
``decide`` plug-in::

    [strategies.X]
    signals = ["g1"]
    [strategies.Y]
    signals = ["g2", "g3"]
    decide = "myplugins:weighted"   # optional: the strategy command's default otherwise

For every epoch of the recorded signals (a CSV file ``epoch,generator,value[,status[,error[,ts]]]``,
the namespace's feeds ``NS:signals:<g>``, or signals computed by the ``signal`` plug-ins of the
topology's ``[generators.NAME]`` tables) it computes each strategy's decision, or why it has none,
and the median, or the trader's error, through the very functions the live processes call:
:func:`redismedian.strategy.decide` (the signals' checks, the plug-in, the number grammar),
:func:`redismedian.scripts.report_text` (the decision key the trader reads),
:func:`redismedian.trader.tally` and :func:`redismedian.trader.verdict` (what counts as a decision,
the median, the reason text).  Nothing here decides anything by itself.  For speed (a year of
minute epochs in seconds), an epoch in which every strategy decided is tallied by
:func:`complete_tally` (what ``tally`` finds in those reports, without writing and reading them),
and what does not change from epoch to epoch is worked out once; tests/unit/test_unit_replay.py
proves the replayer equal to the plain composition of the live functions on arbitrary signals.

What a replay cannot know (whether a process was running, whether a decision came too late, a
Redis outage) shows in live reasons only; ``compare`` therefore compares outcomes (the median,
exactly, and who counted; or no median), never reason texts.

Everything streams: one epoch's signals in memory at a time.
"""
from __future__ import annotations

import csv
import heapq
import importlib
import io
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, cast

import redis

from . import keys as K
from .clock import boundary_ms
from .common import as_str, check_name, fmt_value, load_callable, parse_int, parse_number
from .following import Event, Median, parse_event, parse_median
from .generator import compute_signal
from .keys import Keys
from .replies import xrange
from .scripts import report_text
from .strategy import Reading, decide, default_signal_timeout_ms
from .trader import Tally, tally, verdict

log = logging.getLogger("redismedian.replay")

DEFAULT_DECIDE = "redismedian.strategy:default_decide"
DEFAULT_SIGNAL = "redismedian.generator:default_signal"
FEED_CHUNK = 1_000        # entries per XRANGE when reading a feed
# A signal hash (NS:signal:<g>) expires SIGNAL_TTL_PERIODS after it was written; a strategy reads it
# (when the feed lacks its epoch's signal) half a period after the boundary.  So for this many epochs
# after a generator's last signal, a strategy calls it stale; later, missing.  Reason texts only.
STALE_EPOCHS = K.SIGNAL_TTL_PERIODS - 1
PLOT_LEGEND_MAX = 12       # --plot names each strategy in the legend up to this many
CSV_COLUMNS = ("epoch", "generator", "value", "status", "error", "ts")


# -- the topology ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StrategySpec:
    """One strategy of the topology: its name, its generators (in order) and its plug-in."""

    name: str
    signals: tuple[str, ...]
    decide: str                                   # module:function, as written
    fn: Callable[[Mapping[str, float]], float]
    signal_timeout_ms: int | None = None          # its --signal-timeout (None: the default, half a period)


@dataclass(frozen=True)
class GeneratorSpec:
    """A generator listed in the topology (optional), with its ``signal`` plug-in: what a replay
    that computes the signals (:func:`computed_signals`) calls."""

    name: str
    signal: str
    fn: Callable[[int], float]


@dataclass(frozen=True)
class Topology:
    """A deployment's strategies (sorted by name, as the trader reads them) and generators."""

    strategies: tuple[StrategySpec, ...]
    generators: tuple[GeneratorSpec, ...] = ()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.strategies]

    @property
    def signal_names(self) -> list[str]:
        """Every generator a strategy reads, in order of first use."""
        seen: dict[str, None] = {}
        for s in self.strategies:
            for g in s.signals:
                seen.setdefault(g, None)
        return list(seen)


def _toml_loads() -> Callable[[str], dict[str, Any]]:
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib.loads
    try:
        mod = importlib.import_module("tomli")
    except ImportError:
        raise ValueError("reading a topology file needs Python 3.11 or later (tomllib), or the tomli "
                         "package (pip install tomli)") from None
    loads: Callable[[str], dict[str, Any]] = mod.loads
    return loads


def _plugin(text: object, where: str, what: str) -> tuple[str, Any]:
    """A topology's ``module:function`` text and the function it names, or one clear error."""
    if not isinstance(text, str):
        raise ValueError(f"{where}: {what} must be text of the form module:function")
    try:
        return text, load_callable(text)
    except ValueError as e:
        raise ValueError(f"{where}: {what}: {e}") from None


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read a topology file; ValueError with one line saying what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read topology {os.fspath(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    loads = _toml_loads()
    try:
        data = loads(text)
    except ValueError as e:   # tomllib.TOMLDecodeError is a ValueError
        raise ValueError(f"topology {os.fspath(path)!r} is not valid TOML: {e}") from None
    return topology_from(data, f"topology {os.fspath(path)!r}")


def _names(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: signals must be a non-empty list of generator names, e.g. [\"g1\", \"g2\"]")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise ValueError(f"{where}: signals must be generator names, got {v!r}")
        out.append(check_name(v, "generator name"))
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: generator listed twice: {', '.join(dupes)}")
    return tuple(out)


def topology_from(data: Mapping[str, Any], source: str = "topology") -> Topology:
    """A topology from its parsed TOML (a mapping); plug-ins are loaded here, once."""
    unknown = sorted(set(data) - {"strategies", "generators"})
    if unknown:
        raise ValueError(f"{source}: unknown table {unknown[0]!r} (expected [strategies.NAME] and "
                         "[generators.NAME])")
    table = data.get("strategies")
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{source}: no strategies: add one table per strategy, e.g. [strategies.X] with "
                         "signals = [\"g1\"]")
    strategies = []
    for name in sorted(table):
        where = f"{source}: strategy {name!r}"
        try:
            check_name(name, "strategy name")
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        spec = table[name]
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a table [strategies.{name}] with signals = [...]")
        extra = sorted(set(spec) - {"signals", "decide", "signal_timeout"})
        if extra:
            raise ValueError(f"{where}: unknown key {extra[0]!r} (a strategy has signals, decide and "
                             "signal_timeout)")
        if "signals" not in spec:
            raise ValueError(f"{where}: signals missing, e.g. signals = [\"g1\"]")
        signals = _names(spec["signals"], where)
        decide_spec, fn = _plugin(spec.get("decide", DEFAULT_DECIDE), where, "decide")
        timeout = spec.get("signal_timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < math.inf):
            raise ValueError(f"{where}: signal_timeout must be a positive number of seconds (its --signal-timeout)")
        strategies.append(StrategySpec(name, signals, decide_spec, fn,
                                       None if timeout is None else int(round(timeout * 1000))))
    generators = []
    gtable = data.get("generators", {})
    if not isinstance(gtable, Mapping):
        raise ValueError(f"{source}: generators must be tables [generators.NAME]")
    for name in sorted(gtable):
        spec = gtable[name]
        try:
            check_name(name, "generator name")
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        if not isinstance(spec, Mapping) or sorted(set(spec) - {"signal"}):
            raise ValueError(f"{source}: generator {name!r}: expected a table with at most "
                             "signal = \"module:function\"")
        sig, sig_fn = _plugin(spec.get("signal", DEFAULT_SIGNAL), f"{source}: generator {name!r}", "signal")
        generators.append(GeneratorSpec(name, sig, sig_fn))
    return Topology(tuple(strategies), tuple(generators))


# -- signals ---------------------------------------------------------------------------------------
class Signal(NamedTuple):
    """One recorded signal: what a generator wrote on its feed for an epoch.  ``value`` is the text
    as written (a number is accepted too, and written as the generator would)."""

    epoch: int
    generator: str
    value: str | float
    status: str = "ok"
    error: str = ""
    ts: int | None = None    # server ms at which it was written (on the feeds; optional in a CSV file)


class CsvSignals:
    """The signals of a CSV file, streamed: ``epoch,generator,value[,status[,error]]``, with or
    without that header (with it, the columns may come in any order).  A bad row is a ValueError
    naming its line; ``bytes_read`` follows the progress through the file.  Iterated, the rows as
    :class:`Signal`; :meth:`epochs`, the same rows grouped by epoch, as a replay reads them.  With
    ``since``, the rows of earlier epochs are checked but skipped."""

    def __init__(self, path: str | os.PathLike[str], since: int | None = None):
        self.path = os.fspath(path)
        self.since = since
        try:
            self.size = os.path.getsize(self.path)
        except OSError as e:
            raise ValueError(f"cannot read signals {self.path!r}: {e.strerror or e}") from None
        self._raw: _Counting | None = None

    @property
    def bytes_read(self) -> int:
        return self._raw.count if self._raw is not None else 0

    def __iter__(self) -> Iterator[Signal]:
        for epoch, rows in self._groups():
            for g, value, status, error, ts in rows:
                yield Signal(epoch, g, value, status, error, ts)

    def epochs(self) -> Iterator[tuple[int, Found]]:
        """The signals of each epoch, in epoch order (what :func:`by_epoch` makes of the rows: the
        last of two signals of one generator for one epoch wins), without a :class:`Signal` per row."""
        for epoch, rows in self._groups():
            epoch_text = str(epoch)
            readings: dict[str, Reading] = {}
            ts: dict[str, int | None] = {}
            for g, value, status, error, t in rows:
                readings[g] = Reading(epoch_text, value, status, error)
                ts[g] = t
            yield epoch, Found(readings, ts)

    def _groups(self) -> Iterator[tuple[int, list[tuple[str, str, str, str, int | None]]]]:
        try:
            raw = open(self.path, "rb")   # noqa: SIM115 - closed below
        except OSError as e:
            raise ValueError(f"cannot read signals {self.path!r}: {e.strerror or e}") from None
        self._raw = _Counting(raw)
        with io.TextIOWrapper(io.BufferedReader(self._raw, 1 << 16), encoding="utf-8", newline="") as f:
            try:
                for epoch, rows in _csv_groups(csv.reader(f), self.path):
                    if self.since is None or epoch >= self.since:
                        yield epoch, rows
            except UnicodeDecodeError as e:
                raise ValueError(f"{self.path}: not UTF-8 text ({e.reason})") from None
            except csv.Error as e:
                raise ValueError(f"{self.path}: not CSV ({e})") from None


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read from it."""

    def __init__(self, f: IO[bytes]):
        self.f, self.count = f, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)   # type: ignore[attr-defined]
        self.count += n or 0
        return int(n or 0)

    def close(self) -> None:
        self.f.close()
        super().close()


NO_COLUMN = 1 << 30     # the index of a column the header does not have (beyond any row)


def _ms(text: str) -> int | None:
    """``parse_int`` of a ts column (stripped), with plain ASCII digits taken without the regex: the
    same answer (INT_RE takes 1 to 15 ASCII digits after an optional sign)."""
    if len(text) <= 15 and text.isdigit() and text.isascii():
        return int(text)
    return parse_int(text)


def _csv_groups(rows: Any, name: str) -> Iterator[tuple[int, list[tuple[str, str, str, str, int | None]]]]:
    """The rows of ``rows`` (a csv.reader: its ``line_num`` names the line of a bad row), checked and
    grouped by epoch: (epoch, [(generator, value, status, error, ts), ...] in file order)."""
    i_epoch, i_gen, i_value, i_status, i_error, i_ts = range(len(CSV_COLUMNS))
    need = 3                    # the row's length that holds epoch, generator and value
    last_epoch = -1
    last_text = ""
    last_ts_text, last_ts = "", None   # the rows of one epoch often share their ts
    first = True
    names: set[str] = set()     # generator names already checked
    group: list[tuple[str, str, str, str, int | None]] = []
    for row in rows:
        n = len(row)
        if not row or (n == 1 and not row[0].strip()):
            continue
        if first:
            first = False
            if "epoch" in (c.strip().lower() for c in row) and parse_int(row[0].strip()) is None:
                header = [c.strip().lower() for c in row]
                missing = [c for c in CSV_COLUMNS[:3] if c not in header]
                if missing:
                    raise ValueError(f"{name}, line {rows.line_num}: header without column {missing[0]!r} "
                                     f"(expected {','.join(CSV_COLUMNS)})")
                i_epoch, i_gen, i_value, i_status, i_error, i_ts = (
                    header.index(c) if c in header else NO_COLUMN for c in CSV_COLUMNS)
                need = max(i_epoch, i_gen, i_value) + 1
                continue
        if n < need:
            raise ValueError(f"{name}, line {rows.line_num}: expected epoch,generator,value[,status[,error]], "
                             f"got {row!r:.80}")
        epoch_text = row[i_epoch]
        if epoch_text != last_text:     # the rows of one epoch follow each other
            epoch = parse_int(epoch_text.strip())
            if epoch is None or epoch < 0:
                raise ValueError(f"{name}, line {rows.line_num}: epoch {epoch_text!r:.40} is not a whole number")
            if epoch < last_epoch:
                raise ValueError(f"{name}, line {rows.line_num}: epoch {epoch} comes after epoch {last_epoch}: the "
                                 "rows must be in epoch order (sort -t, -k1,1n -s)")
            if epoch != last_epoch and group:
                yield last_epoch, group
                group = []
            last_epoch, last_text = epoch, epoch_text
        g = row[i_gen].strip()
        if g not in names:
            try:
                check_name(g, "generator name")
            except ValueError as e:
                raise ValueError(f"{name}, line {rows.line_num}: {e}") from None
            names.add(g)
        status = (row[i_status].strip() if i_status < n else "") or "ok"
        ts_text = row[i_ts].strip() if i_ts < n else ""
        if ts_text != last_ts_text:
            ts = _ms(ts_text) if ts_text else None
            if ts_text and ts is None:
                raise ValueError(f"{name}, line {rows.line_num}: ts {ts_text!r:.40} is not a whole number of ms")
            last_ts_text, last_ts = ts_text, ts
        group.append((g, row[i_value], status, row[i_error] if i_error < n else "", last_ts))
    if group:
        yield last_epoch, group


def feed_signals(client: redis.Redis, keys: Keys, generators: Sequence[str], since: int | None = None,
                 chunk: int = FEED_CHUNK, aligned: bool = False) -> Iterator[Signal]:
    """The signals on the generators' feeds (``NS:signals:<g>``), merged in epoch order, read with
    ``XRANGE`` in chunks.  Entries a strategy would ignore (another generator's name, an epoch that
    is not a whole number, or one older than the feed's previous one) are skipped.

    ``aligned`` (without ``since``): start at the first epoch that every feed still holds.  The feeds
    are trimmed each on its own (about SIGNAL_FEED_MAXLEN entries), so before that epoch some hold
    signals the others no longer have, and a replay would take the trimmed ones for missing."""
    if aligned and since is None:
        firsts = [e for e in (first_epoch(client, keys.signal_feed(g), g) for g in generators) if e is not None]
        since = max(firsts) if firsts else None
    feeds = [_feed(client, keys.signal_feed(g), g, since, chunk) for g in generators]
    return heapq.merge(*feeds, key=lambda s: s.epoch)


def first_epoch(client: redis.Redis, key: str, g: str) -> int | None:
    """The epoch of the oldest signal on a feed (None: empty, or none of its first entries is one)."""
    for s in _feed(client, key, g, None, 100):
        return s.epoch
    return None


def _stream(client: redis.Redis, key: str, chunk: int, what: str) -> Iterator[tuple[Any, Any]]:
    """Every entry of the stream ``key``, read ``chunk`` at a time; none when ``key`` is not a stream
    (said once, as ``what``, when given)."""
    start = "-"
    while True:
        try:
            entries = xrange(client, key, min=start, count=chunk)
        except redis.exceptions.ResponseError as e:
            if "WRONGTYPE" not in str(e):
                raise
            if what:
                log.warning("%s is not a stream: no %s read from it", key, what)
            return
        yield from entries
        if len(entries) < chunk:
            return
        start = "(" + as_str(entries[-1][0])


def _feed(client: redis.Redis, key: str, g: str, since: int | None, chunk: int) -> Iterator[Signal]:
    last = -1
    for _entry_id, fields in _stream(client, key, chunk, "signals"):
        f = {as_str(k): as_str(v) for k, v in (fields or {}).items()}
        epoch = parse_int(f.get("epoch"))
        if f.get("name") != g or epoch is None or epoch < last or (since is not None and epoch < since):
            continue
        last = epoch
        yield Signal(epoch, g, f.get("value", ""), f.get("status", ""), f.get("error", ""), parse_int(f.get("ts")))


def computed_signals(topology: Topology, first: int, last: int) -> Iterator[Signal]:
    """The signals of epochs ``first`` to ``last``, computed by the generators' ``signal`` plug-ins
    of the topology as the generator process computes them (:func:`redismedian.generator.compute_signal`:
    a plug-in that raises or returns no finite number gives a signal in error).  ValueError when a
    strategy reads a generator that the topology does not list."""
    plugins = {g.name: g.fn for g in topology.generators}
    missing = [g for g in topology.signal_names if g not in plugins]
    if missing:
        raise ValueError(f"computing the signals needs every generator the strategies read in the topology: add "
                         f"[generators.{missing[0]}] with signal = \"module:function\""
                         + (f" (and for {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    if first > last:
        raise ValueError(f"epochs {first}:{last}: the first epoch comes after the last")
    return _computed(plugins, topology.signal_names, first, last)


def _computed(plugins: Mapping[str, Callable[[int], float]], names: Sequence[str], first: int,
              last: int) -> Iterator[Signal]:
    for epoch in range(first, last + 1):
        for g in names:
            value, error = compute_signal(plugins[g], epoch)
            yield Signal(epoch, g, value, "error" if error else "ok", error)


def write_csv(signals: Iterable[Signal], out: IO[str], header: bool = True) -> int:
    """Write signals as the CSV that ``replay --signals-csv`` reads; returns the number of rows."""
    w = csv.writer(out, lineterminator="\n")
    if header:
        w.writerow(CSV_COLUMNS)
    n = 0
    for s in signals:
        w.writerow((s.epoch, s.generator, _value_text(s.value), s.status, s.error, "" if s.ts is None else s.ts))
        n += 1
    return n


def _value_text(v: object) -> str:
    if isinstance(v, str):
        return v
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return str(v)
    return fmt_value(x) if math.isfinite(x) else repr(x)


# -- the replay ------------------------------------------------------------------------------------
class Replayed(NamedTuple):
    """One replayed epoch.  ``median`` is what the trader would publish (None: it would not, and
    ``reason`` is the trader's error text); ``decisions`` maps each strategy to its decision (None:
    none, and ``reasons`` says why)."""

    epoch: int
    median: float | None
    reason: str
    decisions: dict[str, float | None]
    reasons: dict[str, str]

    @property
    def counted(self) -> int:
        """Strategies counted in the median (0 without one)."""
        return len(self.decisions) if self.median is not None else 0

    def as_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "median": self.median, "reason": self.reason, "decisions": self.decisions,
                "reasons": {k: v for k, v in self.reasons.items() if v}}


def _as_signal(s: Signal | Sequence[Any]) -> Signal:
    if isinstance(s, Signal):
        return s
    return Signal(*s)


class Found(NamedTuple):
    """One epoch's signals: {generator: Reading}, and when each was written (None: not known)."""

    readings: dict[str, Reading]
    ts: dict[str, int | None]


def by_epoch(signals: Iterable[Signal | Sequence[Any]]) -> Iterator[tuple[int, Found]]:
    """Group signals (in epoch order) by epoch; the last of two signals of one generator for one
    epoch wins."""
    cur: int | None = None
    found = Found({}, {})
    for item in signals:
        s = _as_signal(item)
        if s.epoch != cur:
            if cur is not None:
                if s.epoch < cur:
                    raise ValueError(f"signal for epoch {s.epoch} after epoch {cur}: signals must be in epoch order")
                yield cur, found
            cur, found = s.epoch, Found({}, {})
        found.readings[s.generator] = Reading(str(s.epoch), _value_text(s.value), s.status, s.error)
        found.ts[s.generator] = s.ts
    if cur is not None:
        yield cur, found


NOTHING_STORED: Mapping[str, Reading | None] = {}    # what decide reads (never writes) when the feed has it all


def complete_tally(texts: Sequence[str]) -> tuple[Tally, list[float]]:
    """What :func:`redismedian.trader.tally` finds in an epoch's reports when every strategy decided,
    and the decisions as numbers (in ``texts``' order).  ``texts``: each decision as
    ``strategy.decide`` gives it (``plugin_number``: the repr of a finite float).  The same Tally as
    ``tally(epoch, names, [report_text(epoch, t, "ok", "").encode() for t in texts])`` (its fast
    path: ``float`` of each number after ``<epoch>|``, sorted, stably), without writing the reports
    and reading them back (of a replay's 34 us per epoch of ten strategies, 4 us went there):
    tests/unit/test_unit_replay.py::test_complete_tally_is_what_the_trader_tallies proves it on
    arbitrary floats and epochs."""
    values = [float(t) for t in texts]
    return Tally(sorted(values), []), values


class Replayer:
    """Replays one topology epoch by epoch (keeps only each generator's last epoch between them).

    With ``period_ms``, a signal whose write time is known counts for a strategy only when it was
    written before the strategy stopped waiting for it (the epoch's boundary plus its signal
    timeout), as live: a late signal is one the strategy did not see.

    What does not change from epoch to epoch is worked out once, here: each strategy's generators,
    plug-in and signal timeout (strategies with the same timeout see the same signals)."""

    def __init__(self, topology: Topology, period_ms: int | None = None):
        self.topology = topology
        self.names = topology.names                          # sorted, as the trader reads them
        self.period_ms = period_ms
        self.last_seen: dict[str, int] = {}
        timeouts: dict[int | None, int] = {}                 # signal timeout -> its index in self.waits
        self.plan = [(list(s.signals), frozenset(s.signals), s.fn,
                      timeouts.setdefault(s.signal_timeout_ms, len(timeouts)))
                     for s in topology.strategies]
        # how long after the boundary each group of strategies waits for its signals
        self.waits = [None if period_ms is None else
                      (t if t is not None else default_signal_timeout_ms(period_ms)) for t in timeouts]

    def _feeds(self, epoch: int, found: Found) -> list[Mapping[str, Reading]]:
        """The signals each group of strategies (by signal timeout) saw in time."""
        readings = found.readings
        if self.period_ms is None:
            return [readings] * len(self.waits)
        ts = found.ts.values()
        latest = (max(cast("Iterable[int]", ts), default=None) if None not in ts      # the usual case, in C
                  else max((t for t in ts if t is not None), default=None))
        start = boundary_ms(epoch, self.period_ms)
        out: list[Mapping[str, Reading]] = []
        for wait in self.waits:
            deadline = start + (wait or 0)
            if latest is None or latest < deadline:     # the usual case: every signal in time
                out.append(readings)
            else:
                out.append({g: r for g, r in readings.items() if (t := found.ts.get(g)) is None or t < deadline})
        return out

    def epoch(self, epoch: int, found: Found | Mapping[str, Reading]) -> Replayed:
        """Every strategy's report for ``epoch`` from the signals found, then the trader's verdict."""
        if not isinstance(found, Found):
            found = Found(dict(found), {})
        return self._epoch(epoch, found)[0]

    def _epoch(self, epoch: int, found: Found) -> tuple[Replayed, str, list[str]]:
        """:meth:`epoch`, with the texts its numbers were read from: the median as the trader
        publishes it ("" without one) and each strategy's decision as it writes it ("" without one).
        ``repr`` of each number gives its text back (the shortest repr round-trips), at a cost."""
        feeds = self._feeds(epoch, found)
        texts: list[str] = []
        reasons: list[str] = []
        for signals, wanted, fn, group in self.plan:
            feed = feeds[group]
            stored = NOTHING_STORED if feed.keys() >= wanted else self._stored(signals, feed, epoch)
            _values, value, reason = decide(signals, epoch, feed, stored, fn)
            texts.append(value)
            reasons.append(reason)
        names = self.names
        if all(texts):     # every strategy decided (the usual epoch)
            got, values = complete_tally(texts)
            decisions: dict[str, float | None] = dict(zip(names, values))
        else:
            raw = [report_text(epoch, v, "ok" if v else "error", r).encode() for v, r in zip(texts, reasons)]
            got = tally(epoch, names, raw)
            # value: a finite float's repr (plugin_number), read back exactly as the trader reads it
            decisions = dict(zip(names, [float(v) if v else None for v in texts]))
        outcome, text = verdict(got, len(names))
        for g in found.readings:
            self.last_seen[g] = epoch
        why = dict(zip(names, reasons))
        if outcome == "ok":
            return Replayed(epoch, parse_number(text), "", decisions, why), text, texts
        return Replayed(epoch, None, text, decisions, why), "", texts

    def _stored(self, signals: Sequence[str], feed: Mapping[str, Reading], epoch: int) -> dict[str, Reading | None]:
        """What a strategy finds in the signal hashes of the generators missing from the feed."""
        out: dict[str, Reading | None] = {}
        for g in signals:
            if g not in feed:
                last = self.last_seen.get(g)
                if last is not None and epoch - last <= STALE_EPOCHS:
                    out[g] = Reading(str(last), None, None, None)
        return out

    def _found(self, signals: Iterable[Signal | Sequence[Any]], fill_gaps: bool) -> Iterator[tuple[int, Found]]:
        """Each epoch's signals, the epochs without any in between included (``fill_gaps``)."""
        groups = signals.epochs() if isinstance(signals, CsvSignals) else by_epoch(signals)
        prev: int | None = None
        for epoch, found in groups:
            if fill_gaps and prev is not None:
                for e in range(prev + 1, epoch):
                    yield e, Found({}, {})
            prev = epoch
            yield epoch, found

    def run(self, signals: Iterable[Signal | Sequence[Any]], fill_gaps: bool = True) -> Iterator[Replayed]:
        """One :class:`Replayed` per epoch, as the signals stream in."""
        for epoch, found in self._found(signals, fill_gaps):
            yield self._epoch(epoch, found)[0]

    def run_texts(self, signals: Iterable[Signal | Sequence[Any]],
                  fill_gaps: bool = True) -> Iterator[tuple[Replayed, str, list[str]]]:
        """:meth:`run`, each result with its median's and decisions' texts (for ``csv_row``)."""
        for epoch, found in self._found(signals, fill_gaps):
            yield self._epoch(epoch, found)


def _as_topology(topology: Topology | Mapping[str, Any] | str | os.PathLike[str]) -> Topology:
    if isinstance(topology, (str, os.PathLike)):
        return load_topology(topology)
    if not isinstance(topology, Topology):
        return topology_from(topology)
    return topology


def replay(topology: Topology | Mapping[str, Any] | str | os.PathLike[str],
           signals: Iterable[Signal | Sequence[Any]] | str | os.PathLike[str],
           fill_gaps: bool = True, period_ms: int | None = None) -> Iterator[Replayed]:
    """Replay ``topology`` (a :class:`Topology`, a TOML file's path, or its parsed mapping) over
    ``signals`` (a CSV file's path, or (epoch, generator, value[, status[, error]]) rows in epoch
    order): one :class:`Replayed` per epoch, the epochs without any signal in between included.
    With ``period_ms`` (the deployment's period), signals written after a strategy's signal timeout
    (when their ``ts`` is known) do not count for it, as live.  It streams: each result is yielded
    as soon as its epoch's signals are read (and the next epoch's first one, which ends it)."""
    topology = _as_topology(topology)
    if isinstance(signals, (str, os.PathLike)):
        signals = CsvSignals(signals)
    return Replayer(topology, period_ms).run(signals, fill_gaps)


# -- comparing with what live published ------------------------------------------------------------
class Live:
    """What the live trader recorded: published medians, error events and missed ranges, by epoch."""

    def __init__(self, medians: Iterable[Median], events: Iterable[Event]):
        self.medians = {m.epoch: m for m in medians}
        self.errors: dict[int, Event] = {}
        self.missed: list[tuple[int, int]] = []
        for e in events:
            if e.status == "error":
                self.errors[e.epoch] = e
            else:
                self.missed.append((e.epoch, e.last))

    def was_missed(self, epoch: int) -> bool:
        return any(a <= epoch <= b for a, b in self.missed)


def read_live(client: redis.Redis, keys: Keys, chunk: int = 10_000) -> Live:
    """Every entry of NS:medians and NS:events (garbage entries skipped, as ``follow`` does)."""
    def entries(key: str, parse: Callable[[object, Any], Any]) -> Iterator[Any]:
        for entry_id, fields in _stream(client, key, chunk, ""):
            item = parse(entry_id, fields)
            if item is not None:
                yield item
    return Live(entries(keys.medians, parse_median), entries(keys.events, parse_event))


NOT_COMPARED = "not compared"


def compare(r: Replayed, live: Live) -> str | None:
    """How the replayed epoch differs from what live recorded: None when they agree exactly,
    NOT_COMPARED when live has nothing to compare with (missed, or no record), else the difference."""
    m = live.medians.get(r.epoch)
    if m is not None:
        if r.median is None:
            return f"live published median {m.median!r}; replay has none: {r.reason}"
        if m.median != r.median:
            return f"live published median {m.median!r}; replay computes {r.median!r}"
        names = list(r.decisions)
        if m.count != len(names):
            return f"live counted {m.count} strategies; the topology has {len(names)}"
        if m.members and sorted(m.members) != sorted(names):
            return (f"live counted strategies {','.join(sorted(m.members))}; the topology has "
                    f"{','.join(sorted(names))}")
        return None
    e = live.errors.get(r.epoch)
    if e is not None:
        if r.median is not None:
            return f"live published no median (trader error: {e.reason}); replay computes {r.median!r}"
        return None
    return NOT_COMPARED


class Comparison:
    """Every replayed epoch compared with live: how many agree, which differ and how."""

    def __init__(self, live: Live):
        self.live = live
        self.compared = self.not_compared = 0
        self.differences: list[tuple[int, str]] = []

    def add(self, r: Replayed) -> str | None:
        """Compare one epoch; returns its difference (None when it agrees or was not compared)."""
        diff = compare(r, self.live)
        if diff == NOT_COMPARED:
            self.not_compared += 1
            return None
        self.compared += 1
        if diff is not None:
            self.differences.append((r.epoch, diff))
        return diff

    def live_median(self, epoch: int) -> float | None:
        m = self.live.medians.get(epoch)
        return m.median if m is not None else None

    @property
    def agrees(self) -> bool:
        return self.compared > 0 and not self.differences

    def summary(self, replayed: int) -> str:
        skipped = (f"; {self.not_compared} without a live record (missed, or outside NS:medians and NS:events) "
                   "not compared" if self.not_compared else "")
        if not self.compared:
            return (f"no replayed epoch has a live record to compare with ({replayed} replayed): nothing proven"
                    + skipped)
        if self.differences:
            return f"{len(self.differences)} of {self.compared} compared epochs differ from live{skipped}"
        return f"all {self.compared} compared epochs agree with live exactly{skipped}"


# -- output -------------------------------------------------------------------------------------------
def _num(x: float | None) -> str:
    return "" if x is None else repr(x)


def csv_header(names: Sequence[str], live: bool = False) -> list[str]:
    """``epoch,median,<strategy>...,reason`` (and ``live_median`` after ``median`` with live)."""
    return ["epoch", "median", *(["live_median"] if live else []), *names, "reason"]


def csv_row(r: Replayed, names: Sequence[str], comparison: Comparison | None = None,
            texts: tuple[str, list[str]] | None = None) -> list[str]:
    """One epoch's CSV row.  ``texts``: the median's and the decisions' texts that
    :meth:`Replayer.run_texts` gives with ``r`` (``names`` then in the topology's order): the same
    row, without a ``repr`` per number."""
    live = [_num(comparison.live_median(r.epoch))] if comparison is not None else []
    if texts is not None:
        return [str(r.epoch), texts[0], *live, *texts[1], r.reason]
    return [str(r.epoch), _num(r.median), *live, *(_num(r.decisions[n]) for n in names), r.reason]


class Table:
    """Fixed-width lines for a person: epoch, median, each strategy's decision, the reason."""

    def __init__(self, names: Sequence[str], live: bool = False):
        self.names = list(names)
        self.live = live
        self.widths = [max(10, len(n)) for n in self.names]

    def header(self) -> str:
        cols = [f"{'epoch':>10}", f"{'median':>22}"] + ([f"{'live median':>22}"] if self.live else [])
        cols += [f"{n:>{w}}" for n, w in zip(self.names, self.widths)]
        return "  ".join(cols + ["reason"]).rstrip()

    def row(self, r: Replayed, comparison: Comparison | None = None) -> str:
        cols = [f"{r.epoch:>10}", f"{_num(r.median) or '-':>22}"]
        if comparison is not None:
            cols.append(f"{_num(comparison.live_median(r.epoch)) or '-':>22}")
        cols += [f"{_num(r.decisions[n]) or '-':>{w}}" for n, w in zip(self.names, self.widths)]
        return "  ".join(cols + [r.reason]).rstrip()


class Series:
    """What ``--plot`` draws, kept as it streams by (NaN for a gap, so that a line breaks there)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.epochs: list[int] = []
        self.median: list[float] = []
        self.live: list[float] = []
        self.decisions: dict[str, list[float]] = {n: [] for n in names}

    def add(self, r: Replayed, comparison: Comparison | None = None) -> None:
        nan = math.nan
        self.epochs.append(r.epoch)
        self.median.append(nan if r.median is None else r.median)
        if comparison is not None:
            m = comparison.live_median(r.epoch)
            self.live.append(nan if m is None else m)
        for n in self.names:
            d = r.decisions[n]
            self.decisions[n].append(nan if d is None else d)


def require_matplotlib() -> Any:
    """matplotlib, set to draw into files; ValueError saying how to install it when it is missing."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'redismedian[bench]' (or pip install matplotlib)") \
            from None
    matplotlib.use("Agg")
    return matplotlib


def plot(series: Series, path: str) -> None:
    """Draw the replayed median, each strategy's decisions and (when compared) the live median into a
    PNG file.  Needs matplotlib (the ``bench`` extra): ValueError saying so when it is missing."""
    require_matplotlib()
    plt = importlib.import_module("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    try:
        few = len(series.names) <= PLOT_LEGEND_MAX
        for i, n in enumerate(series.names):
            label = f"decision {n}" if few else (f"decisions ({len(series.names)} strategies)" if i == 0 else None)
            ax.plot(series.epochs, series.decisions[n], linewidth=0.8, alpha=0.6, label=label,
                    color=None if few else "tab:blue")
        if series.live:
            ax.plot(series.epochs, series.live, linewidth=3, alpha=0.35, color="black", label="live median")
        ax.plot(series.epochs, series.median, linewidth=1.6, color="tab:red", label="replayed median")
        gaps = [e for e, m in zip(series.epochs, series.median) if math.isnan(m)]
        if gaps:   # each epoch without a median, as a tick along the bottom
            ax.plot(gaps, [0] * len(gaps), "|", transform=ax.get_xaxis_transform(), color="tab:gray",
                    markersize=8, label=f"no median ({len(gaps)} epochs)")
        ax.set_xlabel("epoch")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.set_ylabel("value")
        ax.set_title("redismedian replay")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        fig.tight_layout()
        try:
            fig.savefig(path)
        except OSError as e:
            raise ValueError(f"cannot write {path!r}: {e.strerror or e}") from None
    finally:
        plt.close(fig)


def feed_generators(client: redis.Redis, keys: Keys) -> list[str]:
    """The generators that have a signal feed in the namespace (SCAN), sorted."""
    pattern = keys.signal_feed_pattern
    names = {keys.name_from(as_str(k), pattern) for k in client.scan_iter(match=pattern, count=1000)}
    out = []
    for n in sorted(names):
        try:
            out.append(check_name(n))
        except ValueError:
            continue   # not a generator's feed (somebody else's key)
    return out


def feed_lengths(client: redis.Redis, keys: Keys, generators: Sequence[str]) -> dict[str, int]:
    """How many entries each generator's feed holds (0: none, or not a stream)."""
    pipe = client.pipeline(transaction=False)
    for g in generators:
        pipe.xlen(keys.signal_feed(g))
    return {g: n if isinstance(n, int) else 0 for g, n in zip(generators, pipe.execute(raise_on_error=False))}
