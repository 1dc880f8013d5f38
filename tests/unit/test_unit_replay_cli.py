"""The replay and signals commands: live feeds on fakeredis, output formats, --compare-live's exit status."""
import csv
import io
import json

import pytest
from click.testing import CliRunner

from redismedian import cli as cli_mod
from redismedian import replaying as R
from tests.unit.test_unit_replay import SCRIPT, TOPOLOGY, run_live
from tests.unit_support import Env


@pytest.fixture
def live(monkeypatch, tmp_path):
    """SCRIPT run live on fakeredis, the commands' clients pointed at it, TOPOLOGY in a file."""
    for v in ("REDISMEDIAN_REDIS_URL", "REDISMEDIAN_NAMESPACE"):
        monkeypatch.delenv(v, raising=False)
    env = Env(monkeypatch)
    env.first, env.last = run_live(env, SCRIPT)
    monkeypatch.setattr(cli_mod, "make_client", lambda url, socket_timeout=5.0, **kw: env.r)
    env.topology = tmp_path / "topology.toml"
    env.topology.write_text(TOPOLOGY)
    env.tmp = tmp_path
    return env


def run(*args):
    return CliRunner().invoke(cli_mod.cli, list(args), catch_exceptions=False)   # click 8.2+: stderr apart


def ns(*args):
    return run(*args, "--namespace", "t")


def test_compare_live_agrees_exits_0(live):
    r = ns("replay", "--topology", str(live.topology), "--compare-live", "--csv")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == ["epoch", "median", "live_median", "X", "Y", "Z", "reason"]
    assert [int(x["epoch"]) for x in rows] == list(range(live.first, live.last + 1))
    assert rows[0]["median"] == rows[0]["live_median"] == "3.0" and rows[0]["X"] == "1.0"
    assert rows[1]["median"] == "" and rows[1]["Z"] == "" and "negative signal -1.0" in rows[1]["reason"]
    assert f"all {len(SCRIPT)} compared epochs agree with live exactly" in r.stderr


def test_compare_live_names_each_epoch_that_differs(live):
    live.topology.write_text(TOPOLOGY.replace("decide_first", "decide_max"))
    r = ns("replay", "--topology", str(live.topology), "--compare-live")
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[:2] == [
        f"epoch {live.first + 1}: live published no median (trader error: 1 of 3 strategies missing: Z: decide "
        "function raised ValueError: negative signal -1.0); replay computes 0.1",
        f"epoch {live.last}: live published median 7.0; replay computes 9.0"]
    assert lines[-1] == f"replay: 2 of {len(SCRIPT)} compared epochs differ from live"
    assert "Traceback" not in r.stderr


def test_nothing_to_compare_is_not_agreement(live):
    live.r.delete(live.k.medians, live.k.events)
    r = ns("replay", "--topology", str(live.topology), "--compare-live", "--json")
    assert r.exit_code == 1
    assert "no replayed epoch has a live record to compare with" in r.stderr
    assert [json.loads(x)["epoch"] for x in r.stdout.splitlines()][0] == live.first


def test_signals_export_replays_like_the_feeds(live):
    r = ns("signals", "--csv")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0] == "epoch,generator,value,status,error,ts"
    assert len(r.stdout.splitlines()) == 1 + sum(len(row) for row in SCRIPT)
    path = live.tmp / "signals.csv"
    path.write_text(r.stdout)
    from_csv = ns("replay", "--topology", str(live.topology), "--signals-csv", str(path), "--compare-live")
    from_feeds = ns("replay", "--topology", str(live.topology))
    assert from_csv.exit_code == 0, from_csv.stderr
    assert from_csv.stdout.splitlines()[1:] != [] and "live median" in from_csv.stdout.splitlines()[0]
    assert len(from_csv.stdout.splitlines()) == len(from_feeds.stdout.splitlines()) == 1 + len(SCRIPT)
    # --since and --no-header: what a timer appends to an archive
    later = ns("signals", "--csv", "--since", str(live.last), "--no-header", "--generators", "g1,g2")
    assert [x.rsplit(",", 1)[0] for x in later.stdout.splitlines()] == [f"{live.last},g1,9.0,ok,",
                                                                        f"{live.last},g2,6.0,ok,"]
    assert all(int(x.rsplit(",", 1)[1]) // live.period_ms == live.last for x in later.stdout.splitlines())


def test_the_table_and_the_json(live):
    t = ns("replay", "--topology", str(live.topology))
    assert t.exit_code == 0 and t.stderr == "", "no progress bar when stderr is not a terminal"
    head, first = t.stdout.splitlines()[:2]
    assert head.split() == ["epoch", "median", "X", "Y", "Z", "reason"]
    assert first.split() == [str(live.first), "3.0", "1.0", "3.0", "4.0"]
    j = ns("replay", "--topology", str(live.topology), "--json", "--since", str(live.last))
    (obj,) = [json.loads(x) for x in j.stdout.splitlines()]
    assert obj == {"epoch": live.last, "median": 7.0, "reason": "", "decisions": {"X": 9.0, "Y": 6.5, "Z": 7.0},
                   "reasons": {}}


def test_bad_input_is_one_line(live):
    bad = live.tmp / "bad.csv"
    bad.write_text("1,g1,1\n0,g1,1\n")
    r = ns("replay", "--topology", str(live.topology), "--signals-csv", str(bad))
    assert r.exit_code == 1 and "line 2: epoch 0 comes after epoch 1" in r.stderr and "Traceback" not in r.stderr
    live.topology.write_text("[strategies.X]\n")
    r = ns("replay", "--topology", str(live.topology), "--signals-csv", str(bad))
    assert r.exit_code == 2 and "strategy 'X': signals missing" in r.stderr
    r = ns("replay", "--topology", str(live.topology), "--csv", "--json")
    assert r.exit_code == 2 and "choose one of --csv and --json" in r.stderr


def test_plot(live):
    out = live.tmp / "replay.png"
    r = ns("replay", "--topology", str(live.topology), "--compare-live", "--plot", str(out))
    try:
        R.require_matplotlib()
    except ValueError:
        assert r.exit_code == 2 and "--plot needs matplotlib" in r.stderr and not out.exists()
    else:
        assert r.exit_code == 0, r.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_option_has_help():
    for name in ("replay", "signals"):
        cmd = cli_mod.cli.commands[name]
        assert cmd.help
        for p in cmd.params:
            if p.name not in ("help",):
                assert getattr(p, "help", None), (name, p.name)


def test_a_progress_bar_on_a_terminal(live, monkeypatch):
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    err, out = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    topo = R.load_topology(live.topology)
    signals = R.feed_signals(live.r, live.k, topo.signal_names)
    n = cli_mod._replay_out(R, topo, signals, live.period_ms, True, False, None, None, 18, lambda: 18)
    assert n == len(SCRIPT)
    assert "replaying" in err.getvalue() and "100%" in err.getvalue()
    assert out.getvalue().startswith("epoch,median,X,Y,Z,reason\n") and "replaying" not in out.getvalue()


def test_epochs_computes_the_signals(live):
    from tests.unit.test_unit_replay import COMPUTED
    live.topology.write_text(COMPUTED.replace("sig_nan", "sig_c"))
    r = ns("replay", "--topology", str(live.topology), "--epochs", "100:102", "--csv")
    assert r.exit_code == 0, r.stderr
    assert [x.split(",")[0] for x in r.stdout.splitlines()] == ["epoch", "100", "101", "102"]
    bad = ns("replay", "--topology", str(live.topology), "--epochs", "102:100")
    assert bad.exit_code == 2 and "FIRST <= LAST" in bad.stderr
    both = ns("replay", "--topology", str(live.topology), "--epochs", "1:2", "--signals-csv", str(live.topology))
    assert both.exit_code == 2 and "choose one of --signals-csv" in both.stderr
    live.topology.write_text(TOPOLOGY)
    missing = ns("replay", "--topology", str(live.topology), "--epochs", "1:2")
    assert missing.exit_code == 2 and "add [generators.g1]" in missing.stderr


def test_signals_table_for_a_person(live):
    r = ns("signals", "--generators", "g2")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["epoch", "generator", "value", "status", "error"]
    assert len(lines) == 1 + sum("g2" in row for row in SCRIPT)
    assert lines[1].split() == [str(live.first), "g2", "2.0", "ok"]
    assert lines[5].split()[:3] == [str(live.first + 4), "g2", "error"]      # no value: in error
    assert lines[5].split(None, 3)[3] == "signal function raised RuntimeError: feed down"


def test_a_generator_without_a_feed_is_named(live):
    live.topology.write_text(TOPOLOGY + '[strategies.W]\nsignals = ["g9"]\n')
    r = ns("replay", "--topology", str(live.topology), "--csv")
    assert r.exit_code == 0
    assert r.stderr.splitlines() == ["replay: no signal recorded for generator g9 (t:signals:g9 is empty or missing): "
                                     "the strategies that read it have no decision"]
    assert all(row["W"] == "" and row["median"] == "" for row in csv.DictReader(io.StringIO(r.stdout)))
