"""Replay against the real pipeline: the recorded feeds, replayed with the deployment's plug-ins,
agree exactly with every median and gap the live trader recorded; a changed plug-in does not."""
import csv
import io
import re

from tests.integ_support import ORIGINAL_STRATEGIES, assert_alive, start_original, wait_medians, wait_registered
from tests.support import wait_until

TOPOLOGY = """
[strategies.X]
signals = ["g1"]
[strategies.Y]
signals = ["g2", "g3"]
"""


def test_replay_of_the_recorded_feeds_agrees_with_live(cluster, redis_server, tmp_path):
    r = redis_server.client(decode_responses=True)
    procs = start_original(cluster)
    e0 = wait_registered(r, ORIGINAL_STRATEGIES, cluster.period)
    first = wait_medians(r, 4, timeout=20, after_epoch=e0)
    # a gap: g3 stops, so Y has no decision and the trader records errors; then g3 is back
    procs["g3"].stop()
    wait_until(lambda: any(int(f["epoch"]) > first[-1]["epoch"] for _id, f in r.xrange("t:events")
                           if f.get("status") == "error"), 20, what="an error event while g3 is stopped")
    procs["g3"] = cluster.generator("g3", "tests.plugins:sig_c")
    errors_before = len(r.xrange("t:events"))
    more = wait_medians(r, 3, timeout=30, after_epoch=first[-1]["epoch"])
    assert_alive(p for name, p in procs.items())
    # the trader stops first: the epochs after it have no live record (not compared), never a
    # decision that a stopping strategy did not make
    procs["trader"].stop()
    for p in procs.values():
        p.stop()

    topology = tmp_path / "topology.toml"
    topology.write_text(TOPOLOGY)
    since = str(e0 + 1)    # medians of e0 and earlier may count only the strategies registered then
    ok = cluster.cli("replay", "--topology", str(topology), "--since", since, "--compare-live", "--csv")
    assert ok.returncode == 0, ok.stderr
    assert "Traceback" not in ok.stderr
    m = re.search(r"all (\d+) compared epochs agree with live exactly", ok.stderr)
    assert m, ok.stderr
    rows = list(csv.DictReader(io.StringIO(ok.stdout)))
    published = {int(x["epoch"]) for x in rows if x["live_median"]}
    assert {e["epoch"] for e in first + more} <= published
    gaps = [x for x in rows if not x["median"] and "Y: signal g3" in x["reason"]]
    assert gaps, "the epochs without g3 replay as gaps"
    assert int(m.group(1)) >= len(first) + len(more) + 1 and errors_before >= 1

    # the same from an exported CSV archive
    export = cluster.cli("signals", "--csv")
    assert export.returncode == 0, export.stderr
    archive = tmp_path / "signals.csv"
    archive.write_text(export.stdout)
    again = cluster.cli("replay", "--topology", str(topology), "--signals-csv", str(archive), "--since", since,
                        "--compare-live", "--csv")
    assert again.returncode == 0, again.stderr
    assert again.stdout == ok.stdout

    # "what if Y had decided with another function": every published epoch differs, and is named
    topology.write_text(TOPOLOGY + 'decide = "tests.plugins:decide_max"\n')
    changed = cluster.cli("replay", "--topology", str(topology), "--since", since, "--compare-live")
    assert changed.returncode == 1, changed.stderr
    named = {int(e) for e in re.findall(r"^epoch (\d+): live published median \S+; replay computes \S+$",
                                        changed.stderr, re.M)}
    assert named == published
    assert re.search(rf"replay: {len(published)} of \d+ compared epochs differ from live", changed.stderr)
