"""Small statistics helpers (no numpy needed)."""
from __future__ import annotations

import statistics


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile with linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def distribution(xs: list[float]) -> dict:
    """p50, p99, max and mean of ``xs`` (all NaN for an empty list)."""
    if not xs:
        nan = float("nan")
        return {"p50": nan, "p99": nan, "max": nan, "mean": nan, "count": 0}
    return {"p50": percentile(xs, 50), "p99": percentile(xs, 99), "max": max(xs),
            "mean": statistics.fmean(xs), "count": len(xs)}
