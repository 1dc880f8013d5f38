"""`redismedian demo`: starts its own redis-server when none answers, publishes, stops everything."""
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


def _check_output(text: str, url: str) -> None:
    assert f"no Redis answered at {url}; started a private redis-server" in text, text
    assert re.search(r"^\[trader\] .*median: [-0-9.e]+$", text, re.M), text
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
        wait_until(lambda: re.search(r"^\[trader\] .*median: ", log.read_text(), re.M), 40,
                   what="a median in the demo's output")
        children = _children(proc.pid)
        assert len(children) == len(PARTS) + 1, children  # the parts and the private redis-server
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does (children have their own sessions)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: all(_gone(c) for c in children), 5, what="every child of the demo gone")
    _check_output(log.read_text(), url)
