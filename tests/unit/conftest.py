"""Unit tests (``-m unit``): components against fakeredis on a fake clock; no server, no processes,
no sleeping."""

import pytest

from tests.unit_support import Env


@pytest.fixture
def env(monkeypatch):
    """Components against one fake Redis on one fake clock (tests/unit_support.py)."""
    return Env(monkeypatch)
