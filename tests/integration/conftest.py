"""Integration tests (``-m integration``): the real processes against a private redis-server, exact
medians end to end, and the page of ``redismedian web`` in headless Chromium."""
from pathlib import Path

import pytest

from tests.support import Cluster


@pytest.fixture
def make_cluster(tmp_path):
    """Clusters with other periods, or against a Redis that is not there yet; all stopped at the end."""
    made: list[Cluster] = []

    def make(url: str, period: float = 0.5, sub: str = "c") -> Cluster:
        d = Path(tmp_path) / f"{sub}{len(made)}"
        d.mkdir()
        c = Cluster(url, d, period=period)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop_all()
