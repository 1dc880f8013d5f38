"""Unit tests (``-m unit``): components against fakeredis on a fake clock; no server, no processes,
no sleeping."""
from pathlib import Path

import pytest

from tests.unit_support import Env

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # Called with every collected item, from every folder: mark only this folder's.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def env(monkeypatch):
    """Components against one fake Redis on one fake clock (tests/unit_support.py)."""
    return Env(monkeypatch)
