"""Replay: the live code paths over recorded signals agree with what the live components published."""

import pytest

from redismedian import replaying as R
from redismedian.following import Event, Median
from tests.unit_support import Env

TOPOLOGY = """
[strategies.X]
signals = ["g1"]
[strategies.Y]
signals = ["g2", "g3"]
[strategies.Z]
signals = ["g3", "g1"]
decide = "tests.plugins:decide_first"
"""


def topo(tmp_path, text=TOPOLOGY):
    p = tmp_path / "topology.toml"
    p.write_text(text)
    return R.load_topology(p)


# Per epoch offset: each generator's signal (a number, an exception to raise, or None: not running).
SCRIPT = [
    {"g1": 1.0, "g2": 2.0, "g3": 4.0},
    {"g1": 0.1, "g2": 0.7, "g3": -1.0},                       # Z's plug-in raises
    {"g1": 3.0, "g2": float("inf"), "g3": 5.0},               # g2 not finite: Y has none
    {"g1": 3.0, "g2": 1.0},                                   # g3 stopped: stale
    {"g1": 2.5, "g2": RuntimeError("feed down"), "g3": 1.5},  # g2's plug-in raises
    {"g1": 1e308, "g2": 1e308, "g3": 1e308},                  # the median's halves
    {"g1": 9.0, "g2": 6.0, "g3": 7.0},
]


def run_live(env, epochs):
    """Generators, strategies and a trader of TOPOLOGY run ``epochs`` epochs on fakeredis."""
    from tests import plugins
    values = {}

    def sig(name):
        def fn(epoch):
            v = values[name]
            if isinstance(v, Exception):
                raise v
            return v
        return fn
    gens = {g: env.started(env.generator(g, fn=sig(g))) for g in ("g1", "g2", "g3")}
    strats = [env.started(env.strategy("X", ["g1"])), env.started(env.strategy("Y", ["g2", "g3"])),
              env.started(env.strategy("Z", ["g3", "g1"], decide=plugins.decide_first))]
    env.admit("X", "Y", "Z")
    trader = env.trader()
    for i, row in enumerate(epochs):
        e = env.E + 1 + i
        env.at(e, 0.0)
        for g, v in row.items():
            values[g] = v
            gens[g].step(e)
        for s in strats:
            env.at(e, 0.01)
            s.step(e)
        trader.step(e)
    return env.E + 1, env.E + len(epochs)


def test_replay_of_the_feeds_agrees_with_live_exactly(monkeypatch, tmp_path):
    env = Env(monkeypatch)
    first, last = run_live(env, SCRIPT)
    results = list(R.replay(topo(tmp_path), R.feed_signals(env.r, env.k, ["g1", "g2", "g3"])))
    assert [r.epoch for r in results] == list(range(first, last + 1))
    live = R.read_live(env.r, env.k)
    assert sorted(live.medians) + sorted(live.errors) != []
    for r in results:
        assert R.compare(r, live) is None, r
        if r.median is None:     # the very reason text the live trader gave
            assert live.errors[r.epoch].reason == r.reason
    by = {r.epoch: r for r in results}
    assert by[first].median == 3.0 and by[first].decisions == {"X": 1.0, "Y": 3.0, "Z": 4.0}
    assert by[first + 1].median is None and "Z: decide function raised ValueError: negative signal -1.0" in by[first + 1].reason
    assert by[first + 3].reasons["Y"] == f"signal g3 stale (last epoch {first + 2})"
    assert by[first + 5].reasons["Y"] == "decide function returned inf, not a finite number"   # the mean overflows
    assert by[first + 6].median == 7.0


def test_a_changed_plugin_is_named_epoch_by_epoch(monkeypatch, tmp_path):
    env = Env(monkeypatch)
    first, _last = run_live(env, SCRIPT)
    changed = topo(tmp_path, TOPOLOGY.replace("tests.plugins:decide_first", "tests.plugins:decide_max"))
    live = R.read_live(env.r, env.k)
    diffs = {r.epoch: R.compare(r, live) for r in R.replay(changed, R.feed_signals(env.r, env.k, ["g1", "g2", "g3"]))}
    # epoch 0: Z decides max(4, 1) = 4 either way; epoch 1: Z no longer raises
    assert diffs[first] is None
    assert diffs[first + 1] == ("live published no median (trader error: 1 of 3 strategies missing: Z: decide "
                                "function raised ValueError: negative signal -1.0); replay computes 0.1")
    assert diffs[first + 6] == "live published median 7.0; replay computes 9.0"
    assert sum(d is not None for d in diffs.values()) == 2


def test_compare_names_what_live_did_not_record():
    r = R.Replayed(5, 1.0, "", {"X": 1.0}, {"X": ""})
    assert R.compare(r, R.Live([], [])) == R.NOT_COMPARED
    assert R.compare(r, R.Live([], [Event("missed", 3, 9, "trader not running", 0, None, "1-0")])) == R.NOT_COMPARED
    assert R.compare(r, R.Live([Median(5, 1.0, 2, ["X", "W"], 0, 1, "1-0")], [])) == (
        "live counted 2 strategies; the topology has 1")
    assert R.compare(r, R.Live([Median(5, 1.0, 1, ["W"], 0, 1, "1-0")], [])) == (
        "live counted strategies W; the topology has X")
    none = R.Replayed(5, None, "1 of 1 strategy missing: X: signal g1 missing (generator not running?)", {"X": None},
                      {"X": "signal g1 missing (generator not running?)"})
    assert R.compare(none, R.Live([Median(5, 1.0, 1, ["X"], 0, 1, "1-0")], [])) == (
        "live published median 1.0; replay has none: " + none.reason)
    assert R.compare(none, R.Live([], [Event("error", 5, 5, "whatever", 0, 1, "1-0")])) is None


def test_csv_with_and_without_header_and_gaps(tmp_path):
    t = topo(tmp_path)
    a = tmp_path / "a.csv"
    a.write_text("epoch,generator,value,status,error\n10,g1,1,ok,\n10,g2,2,ok,\n10,g3,3,ok,\n"
                 "13,g1,1,error,sensor down\n13,g2,2,,\n13,g3,3,ok,\n")
    b = tmp_path / "b.csv"
    b.write_text("10,g1,1\n10,g2,2\n10,g3,3\n\n13,g1,1,error\n13,g2,2\n13,g3,3\n")
    ra, rb = list(R.replay(t, a)), list(R.replay(t, str(b)))
    assert [r.epoch for r in ra] == [10, 11, 12, 13] == [r.epoch for r in rb]
    assert ra[0].median == rb[0].median == 2.5
    assert ra[1].reasons["X"] == "signal g1 stale (last epoch 10)"
    assert ra[3].reasons["X"] == "signal g1 error: sensor down"
    assert rb[3].reasons["X"] == "signal g1 error: no message"
    assert [r.median for r in ra[1:]] == [None, None, None]
    # a generator gone for longer than its signal hash lives is missing, as live says
    c = tmp_path / "c.csv"
    c.write_text("1,g1,1\n1,g2,1\n1,g3,1\n5,g2,1\n")
    assert list(R.replay(t, c))[-1].reasons["X"] == "signal g1 missing (generator not running?)"
    # the columns may come in any order after a header; rows as tuples work too
    d = tmp_path / "d.csv"
    d.write_text("generator,value,epoch\ng1,1,7\ng2,2,7\ng3,3,7\n")
    assert list(R.replay(t, d))[0].median == 2.5
    assert list(R.replay(t, [(7, "g1", 1.0), (7, "g2", "2"), (7, "g3", 3)]))[0].median == 2.5


@pytest.mark.parametrize("text, needle", [
    ("10,g1,1\n9,g1,1\n", "line 2: epoch 9 comes after epoch 10"),
    ("epoch,generator,value\nten,g1,1\n", "line 2: epoch 'ten' is not a whole number"),
    ("10,g 1,1\n", "line 1: invalid generator name 'g 1'"),
    ("10,g1\n", "line 1: expected epoch,generator,value"),
    ("epoch,gen,value\n1,g1,1\n", "line 1: header without column 'generator'"),
])
def test_a_bad_csv_row_is_named(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        list(R.replay(topo(tmp_path), p))


def test_a_bad_value_is_data_not_an_error(tmp_path):
    (r,) = R.replay(topo(tmp_path), [(1, "g1", " 1"), (1, "g2", "1_0"), (1, "g3", "nan")])
    assert r.median is None
    assert r.reasons == {"X": "signal g1 is not a finite number (' 1')",
                         "Y": "signal g2 is not a finite number ('1_0'); signal g3 is not a finite number ('nan')",
                         "Z": "signal g3 is not a finite number ('nan'); signal g1 is not a finite number (' 1')"}


@pytest.mark.parametrize("text, needle", [
    ("[strategies.X]\nsignals = [\"g1\"\n", "is not valid TOML"),
    ("", "no strategies"),
    ("[strategies.X]\nsignal = [\"g1\"]\n", "strategy 'X': unknown key 'signal'"),
    ("[strategies.X]\n", "strategy 'X': signals missing"),
    ("[strategies.X]\nsignals = []\n", "signals must be a non-empty list"),
    ("[strategies.X]\nsignals = [\"g1\", \"g1\"]\n", "generator listed twice: g1"),
    ("[strategies.\"X Y\"]\nsignals = [\"g1\"]\n", "invalid strategy name 'X Y'"),
    ("[strategies.X]\nsignals = [\"g1\"]\ndecide = \"nosuchmodule:f\"\n",
     "strategy 'X': decide: cannot import module 'nosuchmodule'"),
    ("[strategy.X]\nsignals = [\"g1\"]\n", "unknown table 'strategy'"),
    ("[strategies.X]\nsignals = [\"g1\"]\n[generators.g1]\nsignal = 3\n", "signal must be text"),
    ("[strategies.X]\nsignals = [\"g1\"]\nsignal_timeout = 0\n", "signal_timeout must be a positive number"),
])
def test_a_bad_topology_is_one_clear_line(tmp_path, text, needle):
    with pytest.raises(ValueError, match=needle) as e:
        topo(tmp_path, text)
    assert "\n" not in str(e.value)


def test_a_missing_topology_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read topology .*No such file"):
        R.load_topology(tmp_path / "nope.toml")


def test_feeds_are_read_in_chunks_and_merged_by_epoch(monkeypatch):
    env = Env(monkeypatch)
    for e in range(1, 8):
        for g in ("a", "b"):
            if (e, g) != (4, "b"):
                env.r.xadd(env.k.signal_feed(g), {"name": g, "epoch": e, "value": e * 10, "status": "ok", "error": ""})
    env.r.xadd(env.k.signal_feed("a"), {"name": "other", "epoch": 8, "value": 1, "status": "ok"})   # not a's
    env.r.xadd(env.k.signal_feed("a"), {"name": "a", "epoch": 2, "value": 1, "status": "ok"})       # went back
    got = list(R.feed_signals(env.r, env.k, ["a", "b"], chunk=2))
    assert [(s.epoch, s.generator) for s in got] == [(e, g) for e in range(1, 8) for g in ("a", "b") if (e, g) != (4, "b")]
    assert got[0] == R.Signal(1, "a", "10", "ok", "")
    assert [s.epoch for s in R.feed_signals(env.r, env.k, ["a", "b"], since=6)] == [6, 6, 7, 7]
    # trimmed feeds: start where every feed still has its history
    env.r.xtrim(env.k.signal_feed("b"), maxlen=2, approximate=False)   # b keeps epochs 6 and 7
    assert [(s.epoch, s.generator) for s in R.feed_signals(env.r, env.k, ["a", "b"], aligned=True)] == [
        (6, "a"), (6, "b"), (7, "a"), (7, "b")]
    assert R.feed_signals(env.r, env.k, ["a", "b", "nofeed"], aligned=True, since=5).__next__().epoch == 5


def test_exported_csv_replays_the_same(monkeypatch, tmp_path):
    env = Env(monkeypatch)
    run_live(env, SCRIPT)
    t = topo(tmp_path)
    p = tmp_path / "signals.csv"
    with open(p, "w", newline="") as f:
        n = R.write_csv(R.feed_signals(env.r, env.k, ["g1", "g2", "g3"]), f)
    assert n == sum(len(row) for row in SCRIPT)
    from_feeds = list(R.replay(t, R.feed_signals(env.r, env.k, ["g1", "g2", "g3"])))
    assert list(R.replay(t, p)) == from_feeds


def test_the_package_api(tmp_path):
    import redismedian
    (r,) = redismedian.replay(topo(tmp_path), [(1, "g1", 1.0), (1, "g2", 2.0), (1, "g3", 3.0)])
    assert (r.epoch, r.median, r.counted) == (1, 2.5, 3)
    assert r.as_json()["decisions"] == {"X": 1.0, "Y": 2.5, "Z": 3.0}


def test_a_signal_written_after_the_signal_timeout_does_not_count(tmp_path):
    t = topo(tmp_path, TOPOLOGY + "signal_timeout = 50\n")    # Z waits 50 s; the others half the period (30 s)
    period = 60_000
    b = 11 * period
    rows = [(10, "g1", 1, "ok", "", 10 * period + 5), (10, "g2", 1, "ok", "", 10 * period + 5),
            (10, "g3", 1, "ok", "", 10 * period + 5),
            (11, "g1", 2, "ok", "", b + 29_999), (11, "g2", 3, "ok", "", b + 1), (11, "g3", 4, "ok", "", b + 30_000)]
    r10, r11 = R.replay(t, rows, period_ms=period)
    assert r10.median == 1.0
    assert r11.reasons["Y"] == "signal g3 stale (last epoch 10)"      # written when Y had given up
    assert r11.decisions["X"] == 2.0 and r11.decisions["Z"] == 4.0     # Z still waited
    # without the period (or without ts) every recorded signal counts
    assert list(R.replay(t, rows))[1].decisions["Y"] == 3.5
    assert list(R.replay(t, [row[:5] for row in rows], period_ms=period))[1].decisions["Y"] == 3.5


COMPUTED = TOPOLOGY + """
[generators.g1]
signal = "tests.plugins:sig_a"
[generators.g2]
signal = "tests.plugins:sig_b"
[generators.g3]
signal = "tests.plugins:sig_nan"
"""


def test_signals_computed_by_the_generators_plugins(tmp_path):
    from tests import plugins
    t = topo(tmp_path, COMPUTED)
    sigs = list(R.computed_signals(t, 100, 101))
    assert [(s.epoch, s.generator) for s in sigs] == [(e, g) for e in (100, 101) for g in ("g1", "g2", "g3")]
    assert sigs[0] == R.Signal(100, "g1", repr(plugins.sig_a(100)), "ok", "")
    assert sigs[2] == R.Signal(100, "g3", "", "error", "signal function returned nan, not a finite number")
    r100, r101 = R.replay(t, R.computed_signals(t, 100, 101))
    assert r100.decisions["X"] == plugins.sig_a(100) and r100.median is None
    assert r101.reasons["Y"] == "signal g3 error: signal function returned nan, not a finite number"


def test_computing_needs_every_generator_listed(tmp_path):
    t = topo(tmp_path, TOPOLOGY + '[generators.g1]\nsignal = "tests.plugins:sig_a"\n')
    with pytest.raises(ValueError, match=r"add \[generators.g2\] with signal = \"module:function\" \(and for g3\)"):
        R.computed_signals(t, 1, 2)
    with pytest.raises(ValueError, match="generator 'g1': signal: cannot import module 'nope'"):
        topo(tmp_path, TOPOLOGY + '[generators.g1]\nsignal = "nope:f"\n')


def test_before_python_3_11_without_tomli_the_error_says_so(tmp_path, monkeypatch):
    import importlib
    import sys
    p = tmp_path / "t.toml"
    p.write_text(TOPOLOGY)
    real = importlib.import_module
    monkeypatch.setattr(sys, "version_info", (3, 10, 0, "final", 0))
    monkeypatch.setattr(R.importlib, "import_module",
                        lambda name, *a: (_ for _ in ()).throw(ImportError(name)) if name == "tomli" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs Python 3.11 or later \(tomllib\), or the tomli package"):
        R.load_topology(p)


# -- speed without a second implementation: what the replayer makes faster is proven the same ---------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from redismedian.clock import boundary_ms  # noqa: E402
from redismedian.common import fmt_value, parse_number, plugin_number  # noqa: E402
from redismedian.scripts import report_text  # noqa: E402
from redismedian.strategy import Reading, decide, default_signal_timeout_ms  # noqa: E402
from redismedian.trader import tally, verdict  # noqa: E402

finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=500, deadline=None)
@given(st.lists(finite, min_size=1, max_size=30), st.integers(0, 10**15 - 1))
def test_complete_tally_is_what_the_trader_tallies(xs, epoch):
    texts = [plugin_number(x, "decide function")[0] for x in xs]     # what decide gives for a float
    names = [f"S{i:02d}" for i in range(len(xs))]
    want = tally(epoch, names, [report_text(epoch, t, "ok", "").encode() for t in texts])
    got, values = R.complete_tally(texts)
    assert got == want and not got.problems
    assert [repr(v) for v in got.values] == [repr(v) for v in want.values]    # -0.0 and 0.0 in the same places
    assert verdict(got, len(names)) == verdict(want, len(names))
    assert [repr(v) for v in values] == texts


def plain_replay(t, rows, period_ms=None):
    """The replay as the plain composition of the live functions, one epoch at a time (the first
    version of Replayer.epoch, kept here as the reference the faster one must equal)."""
    last_seen: dict[str, int] = {}
    names = t.names
    groups: list[tuple[int, dict[str, Reading], dict[str, int | None]]] = []
    for s in map(R._as_signal, rows):
        if not groups or groups[-1][0] != s.epoch:
            groups.append((s.epoch, {}, {}))
        groups[-1][1][s.generator] = Reading(str(s.epoch), R._value_text(s.value), s.status, s.error)
        groups[-1][2][s.generator] = s.ts
    filled = []
    for epoch, readings, ts in groups:
        if filled:
            filled += [(e, {}, {}) for e in range(filled[-1][0] + 1, epoch)]
        filled.append((epoch, readings, ts))
    out = []
    for epoch, readings, ts in filled:
        raw, decisions, reasons = [], {}, {}
        for spec in t.strategies:
            feed = readings
            if period_ms is not None:
                wait = spec.signal_timeout_ms if spec.signal_timeout_ms is not None else \
                    default_signal_timeout_ms(period_ms)
                deadline = boundary_ms(epoch, period_ms) + wait
                feed = {g: r for g, r in readings.items() if ts.get(g) is None or ts[g] < deadline}
            stored = {g: Reading(str(last_seen[g]), None, None, None) for g in spec.signals
                      if g not in feed and g in last_seen and epoch - last_seen[g] <= R.STALE_EPOCHS}
            _values, value, reason = decide(list(spec.signals), epoch, feed, stored, spec.fn)
            raw.append(report_text(epoch, value, "ok" if value else "error", reason).encode())
            decisions[spec.name] = float(value) if value else None
            reasons[spec.name] = reason
        outcome, text = verdict(tally(epoch, names, raw), len(names))
        for g in readings:
            last_seen[g] = epoch
        out.append(R.Replayed(epoch, parse_number(text) if outcome == "ok" else None,
                              "" if outcome == "ok" else text, decisions, reasons))
    return out


SPEED_TOPOLOGY = TOPOLOGY + 'signal_timeout = 50\n[strategies.W]\nsignals = ["g2", "g1"]\n' \
                            '[strategies.V]\nsignals = ["g3"]\ndecide = "tests.plugins:decide_max"\nsignal_timeout = 10\n'
values = st.one_of(finite.map(fmt_value), st.integers(-3, 3).map(str),
                   st.sampled_from(["nan", "inf", " 1", "1_0", "", "x", "1e400", "-0", "+3", ".5", "5.", "-0.0"]))
rows = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["g1", "g2", "g3", "g4"]), values,
                          st.sampled_from(["ok", "ok", "ok", "error", "", "weird"]), st.sampled_from(["", "down"]),
                          st.one_of(st.none(), st.integers(0, 60_000),      # ts - boundary, and each deadline's edges
                                    st.sampled_from([9_999, 10_000, 29_999, 30_000, 49_999, 50_000]))),
                max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows, st.sampled_from([None, 60_000]))
def test_the_replayer_is_the_plain_composition_of_the_live_functions(tmp_path, steps, period_ms):
    t = topo(tmp_path, SPEED_TOPOLOGY)
    sigs, epoch = [], 100
    for step, g, value, status, error, offset in steps:
        epoch += step
        sigs.append(R.Signal(epoch, g, value, status, error, None if offset is None else epoch * 60_000 + offset))
    want = plain_replay(t, sigs, period_ms)
    assert list(R.replay(t, sigs, period_ms=period_ms)) == want
    # the same signals from a CSV file (grouped by epoch as they are read), and the CSV output's rows
    p = tmp_path / "s.csv"
    with open(p, "w", newline="") as f:
        R.write_csv(sigs, f)
    with_texts = list(R.Replayer(t, period_ms).run_texts(R.CsvSignals(p)))
    # (an empty status in a CSV file means ok)
    assert [r for r, _m, _d in with_texts] == plain_replay(t, [s._replace(status=s.status or "ok") for s in sigs],
                                                            period_ms)
    for r, median_text, texts in with_texts:
        assert R.csv_row(r, t.names, None, (median_text, texts)) == R.csv_row(r, t.names)


def test_a_replay_streams(tmp_path):
    """Memory flat in the number of epochs, shown structurally: each result comes out while most of
    the input is still unread (from an iterator, and from a CSV file)."""
    t = topo(tmp_path)
    consumed = 0

    def signals():
        nonlocal consumed
        for e in range(1, 10_001):
            for g in ("g1", "g2", "g3"):
                consumed += 1
                yield (e, g, float(e))
    results = R.replay(t, signals())
    first = next(results)
    assert first.epoch == 1 and first.median == 1.0
    assert consumed == 4          # epoch 1's three signals, and epoch 2's first, which ends epoch 1
    for _ in range(99):
        next(results)
    assert consumed == 301
    p = tmp_path / "big.csv"
    with open(p, "w", newline="") as f:
        R.write_csv((R.Signal(e, g, float(e)) for e in range(1, 50_001) for g in ("g1", "g2", "g3")), f)
    source = R.CsvSignals(p)
    results = R.replay(t, source)
    assert next(results).epoch == 1
    assert 0 < source.bytes_read < source.size / 10


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=20), st.from_regex(r"\A[+-]?[0-9]{1,17}\Z"),
                 st.sampled_from(["²", "١٢", "0" * 15, "9" * 16, "+1", "-0", "1.0", "1e3"])))
def test_the_ts_column_is_read_as_parse_int_reads_it(text):
    from redismedian.common import parse_int
    assert R._ms(text) == parse_int(text)
