"""`./dev`, the entry point of a fresh clone: `./dev redismedian` runs in the caller's directory
(a plug-in next to the caller is found), a broken `.venv` is rebuilt by itself, and a second
`./dev` waits for the first one's set-up instead of installing into the same `.venv` at once."""
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, wait_until

DEV = ROOT / "dev"
REPO_VENV = ROOT / ".venv"


def _dev_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)   # what a user has: the plug-in must be found without it
    return env


def test_dev_redismedian_finds_a_plugin_next_to_the_caller(redis_server, tmp_path):
    """From a plug-in's folder, `<clone>/dev redismedian generator --signal myplug:fn` imports it
    (./dev changes into the clone to set up .venv, then runs the command from the caller's directory)."""
    if not (REPO_VENV / "bin" / "redismedian").exists():
        pytest.skip("no .venv in the clone (./dev test makes it)")
    (tmp_path / "myplug_dev.py").write_text("def fn(epoch):\n    return 0.375\n")
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([str(DEV), "redismedian", "generator", "--name", "g1", "--signal", "myplug_dev:fn",
                              "--redis-url", redis_server.url, "--period", "0.5", "--namespace", "devplug"],
                             cwd=tmp_path, env=_dev_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "g1 signal 0.375" in log.read_text() or p.poll() is not None, 30,
                       what="the plug-in's signal")
        finally:
            p.terminate()
            p.wait(10)
    assert "g1 signal 0.375" in log.read_text(), log.read_text()


def test_dev_says_where_it_looked_for_a_missing_plugin(tmp_path):
    if not (REPO_VENV / "bin" / "redismedian").exists():
        pytest.skip("no .venv in the clone (./dev test makes it)")
    r = subprocess.run([str(DEV), "redismedian", "generator", "--name", "g1", "--signal", "not_here_plug:fn",
                        "--redis-url", "redis://127.0.0.1:1/0"], cwd=tmp_path, env=_dev_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "cannot import module 'not_here_plug'" in r.stderr
    assert f"looked in the current directory {tmp_path}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def _index_reachable(tmp_path: Path) -> bool:
    """Whether pip can fetch a package the set-up needs (from the index, or the machine's mirror)."""
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(tmp_path / "dl"),
                            "click>=8.1,<9"], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def _copy_clone(dest: Path) -> None:
    """What `./dev` needs of a clone: the script, the package and its metadata (not tests, docs)."""
    dest.mkdir()
    for name in ("dev", "pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "redismedian", dest / "redismedian",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


@pytest.mark.timeout(300)
def test_a_broken_venv_is_rebuilt_and_a_second_dev_waits_for_the_set_up(tmp_path):
    """A `.venv` whose python does not run (with the stamp of a finished set-up) is rebuilt by the
    next `./dev`; a second `./dev` started meanwhile waits for that set-up (the lock) and then runs.
    Costs one install of the requirements (about 30 s from pip's cache)."""
    if shutil.which("flock") is None:
        pytest.skip("flock (util-linux) is not installed: ./dev runs without its lock")
    if not _index_reachable(tmp_path):
        pytest.skip("pip cannot reach the package index")
    clone = tmp_path / "clone"
    _copy_clone(clone)
    venv = clone / ".venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "python"          # a file of its own, never a link into a real interpreter
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes() + (clone / "requirements.txt").read_bytes())
    (venv / f".installed-{digest.hexdigest()[:16]}").touch()   # as if a set-up had finished

    env = _dev_env()
    first_err = tmp_path / "first.err"
    with open(first_err, "w") as err1:
        first = subprocess.Popen([str(clone / "dev"), "redismedian", "--version"], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=err1, text=True)
        try:
            wait_until(lambda: "setting up" in first_err.read_text() or first.poll() is not None, 30,
                       what="the first ./dev to start its set-up")
            assert first.poll() is None, first_err.read_text()
            t0 = time.monotonic()
            second = subprocess.run([str(clone / "dev"), "redismedian", "--version"], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=240)
            waited = time.monotonic() - t0
            out1, _ = first.communicate(timeout=240)
        finally:
            if first.poll() is None:
                first.kill()
    err1_text = first_err.read_text()
    assert first.returncode == 0, err1_text
    assert ".venv is broken" in err1_text and ".venv is ready" in err1_text, err1_text
    assert "redismedian, version" in out1
    assert second.returncode == 0, second.stderr
    assert "waiting for another ./dev to finish setting up .venv" in second.stderr, second.stderr
    assert "setting up .venv (first run" not in second.stderr, "the second ./dev found the set-up done: it installs nothing"
    assert "redismedian, version" in second.stdout
    assert waited > 1, waited
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import pip, redismedian; print(redismedian.__file__)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and str(clone / "redismedian") in r.stdout, (r.stdout, r.stderr)
