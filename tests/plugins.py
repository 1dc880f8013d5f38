"""Deterministic plug-ins for tests: the exact median of every epoch is known in advance.

Each signal function depends only on the epoch, so a test can recompute what every
generator wrote and what every strategy decided.  The ``*_unless_file`` variants fail
while a file named by an environment variable exists, so a test can switch a running
generator into its error state and back.
"""
from __future__ import annotations

import os


def sig_a(epoch: int) -> float:
    return (epoch % 97) / 97.0


def sig_b(epoch: int) -> float:
    return ((epoch * 7) % 89) / 89.0 + 0.25


def sig_c(epoch: int) -> float:
    return ((epoch * 13) % 83) / 83.0 - 0.5


def sig_const(epoch: int) -> float:
    return 0.5


SIGNALS = {"sig_a": sig_a, "sig_b": sig_b, "sig_c": sig_c, "sig_const": sig_const}


def sig_a_unless_file(epoch: int) -> float:
    """sig_a, but raises while the file named by $REDISMEDIAN_TEST_FAIL_FILE exists."""
    path = os.environ.get("REDISMEDIAN_TEST_FAIL_FILE")
    if path and os.path.exists(path):
        raise RuntimeError("injected failure")
    return sig_a(epoch)


def sig_nan(epoch: int) -> float:
    return float("nan")


def sig_text(epoch: int):
    return "not a number"


def decide_max(signals) -> float:
    return max(signals.values())


def decide_raises(signals) -> float:
    raise ValueError("decide broke")


def record_median(epoch: int, median: float, fence: int) -> None:
    """--on-median action: appends "epoch median fence" to $REDISMEDIAN_TEST_ACTED; raises while the
    file named by $REDISMEDIAN_TEST_FAIL_FILE exists."""
    path = os.environ.get("REDISMEDIAN_TEST_FAIL_FILE")
    if path and os.path.exists(path):
        raise RuntimeError("injected action failure")
    with open(os.environ["REDISMEDIAN_TEST_ACTED"], "a") as f:
        f.write(f"{epoch} {median!r} {fence}\n")


def decide_first(signals) -> float:
    """The first signal (in the strategy's order); raises on a negative one (replay tests)."""
    x = next(iter(signals.values()))
    if x < 0:
        raise ValueError(f"negative signal {x}")
    return x
