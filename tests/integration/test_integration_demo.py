"""`redismedian demo`: starts its own redis-server when none answers, then the generators and the
trader, then the strategies (which the trader registers), publishes, stops everything; a child that
dies is reported and the demo goes on; a second demo on a live namespace is refused."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, free_port, harness_client, wait_until

PARTS = ("g1", "g2", "g3", "trader", "X", "Y")


def _start_demo(tmp_path: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDISMEDIAN_")}
    env["PYTHONUNBUFFERED"] = "1"
    log = open(tmp_path / "demo.log", "wb")
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: the demo starts its own Redis
    proc = subprocess.Popen([sys.executable, "-m", "redismedian", "demo", "--redis-url", url, "--period", "0.25",
                             *args], cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, (tmp_path / "demo.log"), url


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _line(text: str, pattern: str) -> int:
    """Where the first line matching ``pattern`` starts (fails when none does)."""
    m = re.search(pattern, text, re.M)
    assert m, (pattern, text)
    return m.start()


def _check_output(text: str, url: str, admitted: bool = True) -> None:
    assert f"no Redis answered at {url}; started a private redis-server" in text, text
    assert re.search(r"^\[trader\] .*median: [-0-9.e]+$", text, re.M), text
    # In order: the generators and the trader first; the strategies once every generator wrote a
    # signal and the trader leads; the trader registers them (the registrar), then they submit.
    second = _line(text, r"^demo: starting the strategies; the trader registers each one at its next period "
                         r"boundary$")
    assert _line(text, r"^demo: starting the generators and the trader$") < second
    # The demo sees each signal and the lead in Redis; the children's own lines about them reach the
    # merged output through their pipes and may come just after the demo's line, but always before
    # anything of a strategy process (which needs a whole interpreter start-up to say anything).
    first_strategy_line = min(_line(text, rf"^\[\s*{s}\] ") for s in ("X", "Y"))
    for g in ("g1", "g2", "g3"):
        assert _line(text, rf"^\[\s*{g}\] .*{g} signal ") < first_strategy_line
    assert _line(text, r"^\[trader\] .*took the lead") < first_strategy_line
    assert _line(text, r"^\[trader\] .*registered: ") > second
    for s in ("X", "Y"):
        assert _line(text, rf"^\[\s*{s}\] ") > second
        assert _line(text, rf"^\[\s*{s}\] .*started {s} .*: asked the trader to register it$") > second
        if admitted:   # (a demo stopped at its first median may stop before the trader admitted both)
            assert _line(text, rf"^\[trader\] .*registered: .*\b{s}\b") > second
            assert _line(text, rf"^\[\s*{s}\] .*registered {s} \(admitted by the trader\)$") < \
                _line(text, rf"^\[\s*{s}\] .*{s} submitted ")
    assert "waiting for the deployment record" not in text, text   # no ACL here: whoever comes first creates it
    for part in PARTS:  # every child stopped cleanly when asked
        assert re.search(rf"^\[\s*{part}\] .*received SIGTERM, stopping", text, re.M), (part, text)
    assert "Traceback" not in text and text.rstrip().endswith("demo: stopped"), text


def test_demo_runs_for_its_duration(tmp_path):
    proc, log, url = _start_demo(tmp_path, "--duration", "6")
    try:
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    _check_output(log.read_text(), url)


def test_demo_stops_every_child_on_ctrl_c(tmp_path):
    proc, log, url = _start_demo(tmp_path)
    try:
        # A median, and every part running (a line from each: its signal handlers are installed).
        # The strategies start last: the first median may come before both are up.
        wait_until(lambda: (lambda text: re.search(r"^\[trader\] .*median: ", text, re.M)
                            and all(re.search(rf"^\[\s*{part}\] ", text, re.M) for part in PARTS))(log.read_text()),
                   40, what="a median and every part in the demo's output")
        children = _children(proc.pid)
        assert len(children) == len(PARTS) + 1, children  # the parts and the private redis-server
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does (children have their own sessions)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: all(_gone(c) for c in children), 5, what="every child of the demo gone")
    _check_output(log.read_text(), url, admitted=False)   # stopped right after the first median


def _private_url(log: Path) -> str:
    m = wait_until(lambda: re.search(r"started a private redis-server \(pid \d+\) at (redis://\S+)", log.read_text()),
                   30, what="the demo's private Redis")
    return m.group(1)


def _pids(text: str) -> dict[str, int]:
    """The pids the demo printed for its children (``demo: started g1 (pid 12), ...``)."""
    return {name: int(pid) for line in re.findall(r"^demo: started (.*)$", text, re.M)
            for name, pid in re.findall(r"(\S+) \(pid (\d+)\)", line)}


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDISMEDIAN_")}
    return subprocess.run([sys.executable, "-m", "redismedian", *args, "--redis-url", url,
                           "--namespace", "redismedian-demo"], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=60)


def _after(text: str, pattern: str, start: int) -> int | None:
    m = re.compile(pattern, re.M).search(text, start)
    return m.start() if m else None


def test_demo_keeps_running_when_a_child_dies(tmp_path):
    """The walkthrough of the README: kill a strategy, see it reported (name, exit status) and the
    demo go on; the trader enters error saying the strategy is not running, status and check say the
    same; deregister it, and the trader publishes again, in the same demo."""
    proc, log, _url = _start_demo(tmp_path, "--period", "0.5")
    try:
        url = _private_url(log)
        wait_until(lambda: re.search(r"^\[trader\] .*registered: .*X", log.read_text(), re.M)
                   and re.search(r"^\[\s*X\] .*X submitted ", log.read_text(), re.M), 40,
                   what="X registered and submitting")
        pid = _pids(log.read_text())["X"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: f"demo: X (pid {pid}) was killed by SIGKILL (signal 9)" in log.read_text(), 15,
                   what="the demo reporting X's death")
        # The trader: error, X not running (once its lease expired: at most 2 periods), never "late".
        wait_until(lambda: re.search(r"^\[trader\] .*error in epoch \d+: 1 of 2 strategies missing: X: not running "
                                     r"\(no live process; last report for epoch \d+, \d+ periods? ago\)$",
                                     log.read_text(), re.M), 15, what="the trader reporting X not running")
        st = _cli(url, "status", "--json")
        assert st.returncode == 0, st.stderr
        data = json.loads(st.stdout)
        x = {s["name"]: s for s in data["strategies"]}["X"]
        assert x["state"] == "down" and x["reason"].startswith("not running (no live process; last report for epoch")
        assert data["trader"]["state"] in ("error", "stale") and "X: not running" in data["trader"]["reason"], \
            data["trader"]     # (stale: a busy machine made the trader miss the last epochs)
        ck = _cli(url, "check", "strategy", "X")
        assert ck.returncode == 1 and ck.stdout.startswith("UNHEALTHY: strategy X: down: not running"), ck.stdout
        assert proc.poll() is None, "the demo goes on"
        # Deregister X: the trader publishes over Y alone, in the same demo.
        dr = _cli(url, "deregister", "X")
        assert dr.returncode == 0 and dr.stdout == "deregistered X\n", (dr.stdout, dr.stderr)
        mark = len(log.read_text())
        wait_until(lambda: _after(log.read_text(), r"^\[trader\] .*median: ", mark), 15,
                   what="a median after X was deregistered")
        # (at a 0.25 s period on a busy machine the trader may miss an epoch: not what is checked here)
        wait_until(lambda: _cli(url, "check", "trader", "--missed-window", "0").returncode == 0, 15,
                   what="check trader healthy again")
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text and text.rstrip().endswith("demo: stopped"), text
    for part in ("g1", "g2", "g3", "trader", "Y"):   # the others ran on to the end
        assert re.search(rf"^\[\s*{part}\] .*received SIGTERM, stopping", text, re.M), (part, text)


def test_a_second_demo_on_a_live_namespace_is_refused(tmp_path):
    """A second demo on the same Redis and namespace names who holds it, exits 1, and changes
    nothing: the first demo goes on publishing, and never sees its data vanish."""
    first, log, _url = _start_demo(tmp_path, "--period", "0.5")
    try:
        url = _private_url(log)
        wait_until(lambda: re.search(r"^\[trader\] .*median: ", log.read_text(), re.M), 40, what="a first median")
        pids = _pids(log.read_text())
        r = harness_client(url=url)
        instance = r.hget("redismedian-demo:meta", "instance")
        keys_before = {k for k in r.scan_iter(match="redismedian-demo:lease:*")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDISMEDIAN_")}
        second = subprocess.run([sys.executable, "-m", "redismedian", "demo", "--redis-url", url, "--period", "0.5",
                                 "--duration", "5"], cwd=str(ROOT), env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1, (second.stdout, second.stderr)
        assert "namespace 'redismedian-demo' at " in second.stderr and "is in use; refusing to start" in second.stderr
        assert f"trader: process {pids['trader']} on " in second.stderr, second.stderr
        assert f"generator g1: process {pids['g1']} on " in second.stderr, second.stderr
        assert "demo: started" not in second.stdout and "cleared" not in second.stdout, second.stdout
        # The first demo is untouched: same deployment record, its leases, and new medians.
        assert r.hget("redismedian-demo:meta", "instance") == instance
        assert keys_before <= {k for k in r.scan_iter(match="redismedian-demo:lease:*")}
        mark = len(log.read_text())
        wait_until(lambda: _after(log.read_text(), r"^\[trader\] .*median: ", mark), 15,
                   what="the first demo publishing on")
        assert first.poll() is None
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(15) == 0, log.read_text()
    finally:
        if first.poll() is None:
            first.kill()
    text = log.read_text()
    assert "lost its data" not in text and "Traceback" not in text, text
