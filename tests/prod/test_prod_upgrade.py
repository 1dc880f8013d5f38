"""Rolling upgrade from the release with the shared decision index (docs/operations.md,
"Upgrading from the release with the shared decision index").

The previous release is taken from git history (its package only) and runs as real processes next
to this one on a real redis-server: components are replaced one at a time while the pipeline runs.
Publication may pause while the two releases mix, but every median ever published is exact over
exactly the registered strategies, no epoch is published twice, nobody is deregistered, and the new
pipeline publishes again once every part runs the new release.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import plugins
from tests.support import ROOT, wait_until

PREVIOUS_RELEASE = "27aa6b4d787a97d0ff6bce3435730d0d903e167c"   # the last commit with NS:decisions:<E>
NS = "up"
PERIOD = 0.5
STRATEGIES = {"X": ("g1", plugins.sig_a), "Y": ("g2", plugins.sig_b), "Z": ("g3", plugins.sig_c)}
GENERATORS = {"g1": "sig_a", "g2": "sig_b", "g3": "sig_c"}


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """The previous release's package, extracted from git history."""
    if not shutil.which("git") or subprocess.run(["git", "cat-file", "-e", PREVIOUS_RELEASE + "^{commit}"],
                                                 cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("the previous release is not in this checkout's git history (shallow clone?)")
    out = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(["git", "archive", PREVIOUS_RELEASE, "redismedian"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    assert (out / "redismedian" / "scripts.py").exists()
    return out


class Part:
    """One component process of either release."""

    def __init__(self, args: list[str], release: Path, url: str, log: Path):
        env = dict(os.environ, REDISMEDIAN_REDIS_URL=url, REDISMEDIAN_NAMESPACE=NS, REDISMEDIAN_PERIOD=str(PERIOD),
                   PYTHONUNBUFFERED="1", PYTHONPATH=f"{release}{os.pathsep}{ROOT}")
        self.log = log
        self._out = open(log, "ab")
        # cwd = the release's folder: `python -m` puts it first on sys.path, ahead of the installed package.
        self.proc = subprocess.Popen([sys.executable, "-m", "redismedian", *args], cwd=str(release), env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


def _args(name: str) -> list[str]:
    if name == "trader":
        return ["trader"]
    if name in GENERATORS:
        return ["generator", "--name", name, "--signal", f"tests.plugins:{GENERATORS[name]}"]
    return ["strategy", "--name", name, "--signals", STRATEGIES[name][0]]


def _check_every_median(admin) -> list[dict]:
    entries = [f for _i, f in admin.xrange(f"{NS}:medians")]
    epochs = [int(f["epoch"]) for f in entries]
    assert epochs == sorted(set(epochs)), f"an epoch published twice or out of order: {epochs}"
    full = False
    for f in entries:
        e = int(f["epoch"])
        members = f["members"].split(",")
        full = full or members == sorted(STRATEGIES)
        if full:        # once all three registered (the old release publishes while they start)
            assert members == sorted(STRATEGIES), f"a median left a registered strategy out: {f}"
        assert float(f["median"]) == statistics.median(STRATEGIES[m][1](e) for m in members), f
    return entries


@pytest.mark.parametrize("order", ["trader first (as documented)", "strategies first"])
def test_rolling_upgrade_never_publishes_a_wrong_median(previous_release, redis_server, tmp_path, order):
    admin = redis_server.client(decode_responses=True)
    parts: dict[str, Part] = {}

    def start(name: str, release: Path) -> None:
        parts[name] = Part(_args(name), release, redis_server.url, tmp_path / f"{name}-{len(parts)}.log")

    def replace(name: str) -> None:
        parts[name].stop()
        start(name, ROOT)

    def medians() -> int:
        return admin.xlen(f"{NS}:medians")
    try:
        for name in [*GENERATORS, *STRATEGIES, "trader"]:
            start(name, previous_release)
        wait_until(lambda: [f for _i, f in admin.xrange(f"{NS}:medians") if f["members"] == "X,Y,Z"][2:], 30,
                   what="three medians of X, Y and Z from the previous release")
        old_fence = int(admin.hget(f"{NS}:trader", "fence"))

        sequence = (["trader", *STRATEGIES, *GENERATORS] if order.startswith("trader")
                    else [*STRATEGIES, "trader", *GENERATORS])
        for name in sequence:
            replace(name)
            time.sleep(PERIOD)   # pacing only (one period per replacement, as an operator would)
            _check_every_median(admin)
        upgraded_at = medians()
        # Every part runs the new release: publication is back within a few periods.
        wait_until(lambda: medians() >= upgraded_at + 3, 10 * PERIOD + 10,
                   what="three medians once every part runs the new release")
        entries = _check_every_median(admin)
        assert int(entries[-1]["fence"]) > old_fence, "the last medians come from the new trader"
        assert admin.smembers(f"{NS}:strategies") == set(STRATEGIES), "nobody was deregistered"
        assert admin.hgetall(f"{NS}:deregistered") == {}
        for name, part in parts.items():
            assert part.proc.poll() is None, f"{name} exited:\n{part.log.read_text()[-3000:]}"
        assert admin.type(f"{NS}:decision:X") == "string"
    finally:
        for part in parts.values():
            part.stop()
