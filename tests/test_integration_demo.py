"""`redismedian demo`: starts its own redis-server when none answers, then the generators and the
trader, then the strategies (which the trader registers), publishes, stops everything."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

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
    for g in ("g1", "g2", "g3"):
        assert _line(text, rf"^\[\s*{g}\] .*{g} signal ") < second
    assert _line(text, r"^\[trader\] .*took the lead") < second
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
