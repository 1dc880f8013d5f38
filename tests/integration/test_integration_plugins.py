"""Plug-ins (--signal, --decide) import from the current directory, whatever the entry point."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, wait_until

CONSOLE_SCRIPT = Path(sys.executable).with_name("redismedian")


@pytest.mark.parametrize("entry", ["console script", "python -m redismedian", "python -m redismedian.generator"])
def test_a_plugin_in_the_current_directory_is_found(redis_server, tmp_path, entry):
    if entry == "console script" and not CONSOLE_SCRIPT.exists():
        pytest.fail(f"no console script at {CONSOLE_SCRIPT}: install the project (./dev does)")
    (tmp_path / "myplug_here.py").write_text("def fn(epoch):\n    return 0.25\n")
    prefix = {"console script": [str(CONSOLE_SCRIPT), "generator"],
              "python -m redismedian": [sys.executable, "-m", "redismedian", "generator"],
              "python -m redismedian.generator": [sys.executable, "-m", "redismedian.generator"]}[entry]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([*prefix, "--name", "g1", "--signal", "myplug_here:fn", "--redis-url", redis_server.url,
                              "--period", "0.5", "--namespace", "plug"], cwd=tmp_path, env=env, stdout=out,
                             stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "g1 signal 0.25" in log.read_text(), 15, what="the plug-in's signal")
        finally:
            p.terminate()
            p.wait(10)
    assert "cannot import" not in log.read_text()
